"""The audit log: who added, updated or deleted which company-owned object, and what changed.

Apps register their models with `track()` in their AppConfig.ready(); signals
then record an AuditEntry in the same transaction as the change, so a rolled
back change leaves no entry. The acting user comes from a context variable set
by AuditUserMiddleware (or `acting_as()` outside requests).
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.http import HttpRequest, HttpResponse

from patchworks_site.models import AuditAction, AuditEntry, Company

SECRET_ADDED = "set"
SECRET_CHANGED = "changed"

_current_user: ContextVar = ContextVar("audit_current_user", default=None)
# The entry last recorded in this request (or `acting_as` block), so a form's
# save() and its save_m2m() (remove + add) end up as one entry, not three.
# Outside such a scope nothing is merged.
_in_scope: ContextVar[bool] = ContextVar("audit_in_scope", default=False)
_last_entry: ContextVar[AuditEntry | None] = ContextVar("audit_last_entry", default=None)


@dataclass
class Tracked:
    object_type: str
    company_field: str
    fields: list[models.Field]
    secret_fields: frozenset[str]
    labels: dict[str, str] = field(default_factory=dict)


_registry: dict[type[models.Model], Tracked] = {}
_labels_by_type: dict[str, dict[str, str]] = {}


class AuditUserMiddleware:
    """Makes request.user the acting user of every change recorded during the request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with acting_as(getattr(request, "user", None)):
            return self.get_response(request)


@contextmanager
def acting_as(user) -> Iterator[None]:
    """Attribute changes made outside a request (commands, tasks) to `user`."""
    tokens = (_current_user.set(user), _in_scope.set(True), _last_entry.set(None))
    try:
        yield
    finally:
        for var, token in zip((_current_user, _in_scope, _last_entry), tokens):
            var.reset(token)


def _acting_user_id() -> int | None:
    user = _current_user.get()
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


def _json(value):
    """A JSON-friendly form of a field value (related objects as their str())."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"binary data ({len(bytes(value))} bytes)"  # e.g. an uploaded icon: never the content
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json(v) for v in value]
    return str(value)


def _raw(obj: models.Model, f: models.Field):
    """The stored value (an FK's id), cheap to compare."""
    return getattr(obj, f.attname)


def _display(obj: models.Model, f: models.Field):
    if f.is_relation:
        return _json(getattr(obj, f.name)) if getattr(obj, f.attname) is not None else None
    return _json(getattr(obj, f.attname))


def _is_empty(value) -> bool:
    return value is None or value in ("", b"") or value == {} or value == [] or (
        isinstance(value, memoryview) and not value.nbytes
    )


def _snapshot(obj: models.Model, tracked: Tracked) -> dict:
    """Every non-empty tracked value (for added and deleted objects)."""
    values = {}
    for f in tracked.fields:
        raw = _raw(obj, f)
        if _is_empty(raw):
            continue
        values[f.name] = SECRET_ADDED if f.name in tracked.secret_fields else _display(obj, f)
    return values


def _record(obj: models.Model, tracked: Tracked, action: str, changes: dict) -> AuditEntry | None:
    company_id = getattr(obj, f"{tracked.company_field}_id", None)
    if company_id is None:
        return None
    entry = AuditEntry.objects.create(
        company_id=company_id,
        user_id=_acting_user_id(),
        action=action,
        object_type=tracked.object_type,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        changes=changes,
    )
    if _in_scope.get():
        _last_entry.set(entry)
    return entry


def record_note(obj: models.Model, object_type: str, changes: dict[str, str]) -> AuditEntry:
    """An "updated" entry for a decision the field signals cannot see (e.g. a confirmation)."""
    return AuditEntry.objects.create(
        company_id=obj.company_id,
        user_id=_acting_user_id(),
        action=AuditAction.UPDATED,
        object_type=object_type,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        changes=changes,
    )


def record_definition_change(obj: models.Model, summary: str) -> AuditEntry | None:
    """An "updated" entry for a change the field signals cannot see (e.g. a connector's endpoints)."""
    return AuditEntry.objects.create(
        company_id=obj.company_id,
        user_id=_acting_user_id(),
        action=AuditAction.UPDATED,
        object_type="connector",
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        changes={"definition": summary[:300]},
    )


# --- signal receivers ----------------------------------------------------------


def _remember_old_values(sender, instance: models.Model, raw: bool = False, update_fields=None, **kwargs) -> None:
    instance._audit_old = None
    if raw or instance.pk is None or instance._state.adding:
        return
    tracked = _registry[sender]
    names = [f.name for f in tracked.fields if update_fields is None or f.name in update_fields]
    if not names:
        return  # e.g. save(update_fields=["last_checked_at"]): nothing tracked can change
    instance._audit_old = sender._base_manager.filter(pk=instance.pk).only(*names).first()


def _record_save(sender, instance: models.Model, created: bool, raw: bool = False, update_fields=None, **kwargs) -> None:
    if raw:
        return
    tracked = _registry[sender]
    if created:
        _record(instance, tracked, AuditAction.ADDED, _snapshot(instance, tracked))
        return
    old = getattr(instance, "_audit_old", None)
    instance._audit_old = None
    if old is None:
        return
    changes = {}
    for f in tracked.fields:
        if update_fields is not None and f.name not in update_fields:
            continue
        if _raw(old, f) == _raw(instance, f):
            continue
        if f.name in tracked.secret_fields:
            changes[f.name] = SECRET_CHANGED
        else:
            changes[f.name] = [_display(old, f), _display(instance, f)]
    if changes:
        _record(instance, tracked, AuditAction.UPDATED, changes)


def _record_delete(sender, instance: models.Model, origin=None, **kwargs) -> None:
    origin_model = origin.model if isinstance(origin, models.QuerySet) else type(origin)
    if origin_model is Company:
        return  # the company's log goes with it; an entry would point at the deleted company
    tracked = _registry[sender]
    _record(instance, tracked, AuditAction.DELETED, _snapshot(instance, tracked))


def _m2m_receiver(model: type[models.Model], field_name: str) -> Callable:
    def receiver(sender, instance, action: str, reverse: bool, **kwargs) -> None:
        if reverse or not isinstance(instance, model):
            return  # changed from the other side (e.g. connector.connection_pools): not tracked
        related = getattr(instance, field_name)
        if action in {"pre_add", "pre_remove", "pre_clear"}:
            if not hasattr(instance, "_audit_m2m_old"):
                instance._audit_m2m_old = {}
            instance._audit_m2m_old.setdefault(field_name, sorted(str(o) for o in related.all()))
            return
        if action not in {"post_add", "post_remove", "post_clear"}:
            return
        old = getattr(instance, "_audit_m2m_old", {}).pop(field_name, None)
        if old is None:
            return
        new = sorted(str(o) for o in related.all())
        _record_m2m(instance, _registry[model], field_name, old, new)

    return receiver


def _record_m2m(instance: models.Model, tracked: Tracked, field_name: str, old: list[str], new: list[str]) -> None:
    last = _last_entry.get()
    same_object = (
        last is not None
        and last.object_type == tracked.object_type
        and last.object_id == str(instance.pk)
        and last.action != AuditAction.DELETED
    )
    if same_object:
        changes = dict(last.changes)
        if last.action == AuditAction.ADDED:
            if new:
                changes[field_name] = new
            else:
                changes.pop(field_name, None)
        else:
            first_old = changes[field_name][0] if field_name in changes else old
            if first_old == new:
                changes.pop(field_name, None)
            else:
                changes[field_name] = [first_old, new]
        if not changes and last.action == AuditAction.UPDATED:
            last.delete()  # removed and added back: nothing changed after all
            _last_entry.set(None)
            return
        last.changes = changes
        if AuditEntry.objects.filter(pk=last.pk).update(changes=changes):
            return
    if old != new:
        _record(instance, tracked, AuditAction.UPDATED, {field_name: [old, new]})


# --- registration -------------------------------------------------------------


def track(
    model: type[models.Model],
    *,
    object_type: str,
    company_field: str = "company",
    exclude: Iterable[str] = (),
    secret_fields: Iterable[str] = (),
    m2m_fields: Iterable[str] = (),
    labels: dict[str, str] | None = None,
) -> None:
    """Record added/updated/deleted entries for `model` (call from AppConfig.ready()).

    Tracked: concrete fields except the primary key, the company, auto
    timestamps and `exclude`. `secret_fields` are recorded only as set/changed.
    `m2m_fields` are recorded as the sorted names of the related objects.
    """
    excluded = set(exclude) | {company_field}
    fields = [
        f
        for f in model._meta.concrete_fields
        if not f.primary_key
        and f.name not in excluded
        and not getattr(f, "auto_now", False)
        and not getattr(f, "auto_now_add", False)
    ]
    field_labels = {f.name: str(f.verbose_name) for f in fields}
    for name in m2m_fields:
        field_labels[name] = str(model._meta.get_field(name).verbose_name)
    field_labels.update(labels or {})
    tracked = Tracked(object_type, company_field, fields, frozenset(secret_fields), field_labels)
    _registry[model] = tracked
    _labels_by_type[object_type] = field_labels
    uid = f"audit-{model._meta.label_lower}"
    pre_save.connect(_remember_old_values, sender=model, dispatch_uid=f"{uid}-pre-save")
    post_save.connect(_record_save, sender=model, dispatch_uid=f"{uid}-post-save")
    post_delete.connect(_record_delete, sender=model, dispatch_uid=f"{uid}-post-delete")
    for name in m2m_fields:
        through = getattr(model, name).through
        m2m_changed.connect(_m2m_receiver(model, name), sender=through, weak=False, dispatch_uid=f"{uid}-{name}-m2m")


# --- display ------------------------------------------------------------------


@dataclass
class ChangeRow:
    label: str
    old: object = None
    new: object = None
    value: object = None
    kind: str = "value"  # "value" (added/deleted), "change" (old → new) or "secret"


def change_rows(entry: AuditEntry) -> list[ChangeRow]:
    """The entry's changes as labelled rows for the audit log page."""
    labels = _labels_by_type.get(entry.object_type, {})
    rows = []
    for name, value in (entry.changes or {}).items():
        label = labels.get(name, name.replace("_", " "))
        if value in (SECRET_ADDED, SECRET_CHANGED) and name in _secret_names(entry.object_type):
            rows.append(ChangeRow(label, value=value, kind="secret"))
        elif entry.action == AuditAction.UPDATED and isinstance(value, list) and len(value) == 2:
            rows.append(ChangeRow(label, old=_text(value[0]), new=_text(value[1]), kind="change"))
        else:
            rows.append(ChangeRow(label, value=_text(value)))
    return rows


def _secret_names(object_type: str) -> frozenset[str]:
    for tracked in _registry.values():
        if tracked.object_type == object_type:
            return tracked.secret_fields
    return frozenset()


def _text(value) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) if value else "none"
    return str(value)
