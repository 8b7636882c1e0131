"""The connector builder (custom connectors), modifying prebuilt connectors, manifest import/export.

Every change builds a new manifest from the current one and goes through
`editing.save_definition`, so validation and history are the same everywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import zoneinfo

from django import forms
from django.contrib import messages
from django.core import signing
from django.core.exceptions import BadRequest
from django.db.models import ProtectedError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from connectors import editing, openapi, safe_loading
from connectors import manifest as manifests
from connectors.forms import (
    AuthMethodForm,
    DetailsForm,
    EndpointForm,
    ManifestTextForm,
    NewAuthMethodForm,
    UploadForm,
    VariableForm,
)
from connectors.models import AuthType, Connector, ConnectorChange, SystemType
from patchworks_site.models import Company
from patchworks_site.tenancy import company_of, require

STEPS = [
    ("details", "basic details"),
    ("variables", "variables"),
    ("auth", "authentication methods"),
    ("endpoints", "endpoints"),
]
EMPTY_MANIFEST = {
    "name": "", "description": "", "system_type": "Other", "colour": "blue", "protocol": "HTTP",
    "version": "", "version_name": "", "base_url": "", "date_format": "%Y-%m-%dT%H:%M:%S%z",
    "rate_limit": {"amount": 60, "unit": "minute"}, "time_zone": "UTC", "concurrency_limit": None,
    "variables": [], "auth_methods": [], "endpoints": [],
}


def _get_editable_connector(request: HttpRequest, pk: int) -> tuple[Company, Connector]:
    company = require(request, "can_manage_connectors")
    connector = get_object_or_404(Connector.objects.for_company(company), pk=pk)
    return company, connector


def is_prebuilt(connector: Connector) -> bool:
    return hasattr(connector, "installation")


# Manifest paths whose last part is not the name of the form field that edits it.
FIELD_ALIASES = {"amount": "rate_limit_amount", "unit": "rate_limit_unit", "style": "pagination_style"}


def _field_for(error: str, form: forms.Form | None) -> str | None:
    """The field of `form` a manifest error (`rate_limit.amount: must be ...`) belongs to, if any."""
    if form is None:
        return None
    segments = [re.sub(r"\[\d+\]$", "", part) for part in error.partition(": ")[0].split(".")]
    for index, segment in enumerate(segments):
        if segment == "idempotency":  # idempotency.name is not the endpoint's name
            name = "idempotency_key_name" if segments[index + 1:index + 2] == ["name"] else "idempotency_key_in"
            return name if name in form.fields else None
        name = f"test_{segment}" if index and segments[index - 1] == "test_request" else FIELD_ALIASES.get(segment, segment)
        if name in form.fields:
            return name
    return None


def _save(request: HttpRequest, connector: Connector, manifest: dict, success: str, form: forms.Form | None = None) -> bool:
    """Save and say so; on failure return False (nothing saved) with the reasons as errors.

    A reason about a field of `form` becomes that field's error; the others
    are shown as a message.
    """
    try:
        change = editing.save_definition(
            connector, manifest, user=request.user, draft=not is_prebuilt(connector),
            action=ConnectorChange.Action.EDITED if connector.pk else ConnectorChange.Action.CREATED,
        )
    except manifests.ManifestError as exc:
        unplaced = []
        for error in exc.errors:
            field = _field_for(error, form)
            if field:
                form.add_error(field, error.partition(": ")[2])
            else:
                unplaced.append(error)
        if unplaced:
            messages.error(request, "Nothing was saved: " + "; ".join(unplaced))
        request.definition_refused = True
        return False
    except ProtectedError as exc:
        request.definition_refused = True
        users = sorted({str(obj) for obj in exc.protected_objects})
        messages.error(request, "Nothing was saved: it is still in use by " + ", ".join(users[:10]) + ". Change those first.")
        return False
    if change is None:
        messages.info(request, "Nothing changed.")
    else:
        messages.success(request, success)
    return True


def _status(request: HttpRequest, *forms_: forms.Form | None) -> int:
    """422 when a form has errors or the definition was refused, else 200."""
    invalid = any(f is not None and f.is_bound and f.errors for f in forms_)
    return 422 if invalid or getattr(request, "definition_refused", False) else 200


# --- builder steps UI: next step and what is still missing -------------------------


def _next_step(step: str) -> tuple[str, str] | None:
    keys = [key for key, _ in STEPS]
    index = keys.index(step)
    return STEPS[index + 1] if index + 1 < len(STEPS) else None


def _missing(manifest: dict) -> list[tuple[str, str]]:
    """What the connector still needs before instances can use it: (step, what) pairs."""
    missing = []
    if not manifest["auth_methods"]:
        missing.append(("auth", "at least one authentication method"))
    if not manifest["endpoints"]:
        missing.append(("endpoints", "at least one endpoint"))
    return missing


def _context(connector: Connector, step: str, **extra) -> dict:
    manifest = manifests.export(editing.fresh(connector))
    missing = _missing(manifest)
    return {
        "connector": connector,
        "manifest": manifest,
        "steps": STEPS,
        "step": step,
        "next_step": _next_step(step),
        "missing": missing,
        "prebuilt": is_prebuilt(connector),
        "ready": not missing,
        **extra,
    }


# --- end of builder steps UI -------------------------------------------------------


def _step_url(connector: Connector, step: str, **query) -> str:
    url = reverse("connectors:build", args=[connector.pk, step])
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


# --- basic details -------------------------------------------------------------


def new_connector(request: HttpRequest) -> HttpResponse:
    """Connector builder, step 1: basic details of a new custom connector."""
    company = require(request, "can_manage_connectors")
    form = DetailsForm(request.POST or None, request.FILES or None, initial={"protocol": "HTTP"})
    if request.method == "POST" and form.is_valid():
        connector = Connector(company=company)
        manifest = form.apply_to(copy.deepcopy(EMPTY_MANIFEST))
        if _save(request, connector, manifest, f"{manifest['name']} created. Next, add its variables.", form):
            _store_icon(connector, form.cleaned_data.get("icon"))
            return redirect(_step_url(connector, "variables"))
    return render(request, "connectors/builder.html", {
        "steps": STEPS, "step": "details", "form": form, "new": True, "time_zones": _time_zones(),
    }, status=_status(request, form))


def _store_icon(connector: Connector, icon: tuple[bytes, str] | None) -> None:
    if icon:
        connector.icon, connector.icon_content_type = icon
        connector.save(update_fields=["icon", "icon_content_type"])


@functools.cache
def _time_zones() -> tuple[str, ...]:
    """The IANA time zones for the datalist, sorted once per process (not on every request)."""
    return tuple(sorted(zoneinfo.available_timezones()))


def build(request: HttpRequest, pk: int, step: str) -> HttpResponse:
    handlers = {"details": _details, "variables": _variables, "auth": _auth, "endpoints": _endpoints}
    if step not in handlers:
        return redirect(_step_url(*_get_editable_connector(request, pk)[1:], "details"))
    company, connector = _get_editable_connector(request, pk)
    return handlers[step](request, connector)


def _details(request: HttpRequest, connector: Connector) -> HttpResponse:
    current = manifests.export(editing.fresh(connector))
    form = DetailsForm(request.POST or None, request.FILES or None, initial=DetailsForm.initial_from(current))
    if request.method == "POST":
        if form.is_valid():
            # The icon changes only with the definition: a refused change saves nothing.
            if _save(request, connector, form.apply_to(copy.deepcopy(current)), "Basic details saved.", form):
                if request.POST.get("remove_icon"):
                    connector.icon, connector.icon_content_type = b"", ""
                    connector.save(update_fields=["icon", "icon_content_type"])
                _store_icon(connector, form.cleaned_data.get("icon"))
                return redirect(_step_url(connector, "details"))
    return render(request, "connectors/builder.html", _context(connector, "details", form=form, time_zones=_time_zones()),
                  status=_status(request, form))


# --- variables -------------------------------------------------------------------


def _variable_initial(variable: dict) -> dict:
    return {k: variable[k] for k in ("label", "key", "alias", "default", "required", "configurable", "advanced", "secret")}


def _upsert_variable(request, items: list[dict], form: VariableForm, original_key: str) -> str | None:
    """Add or replace a variable in `items`; an error message, or None."""
    taken = {v["key"] for v in items} - {original_key}
    key = form.cleaned_data["key"].strip() or original_key or editing.unique_key(form.cleaned_data["label"], taken, "variable")
    if key in taken:
        return f'A variable with the key "{key}" already exists.'
    entry = form.as_manifest(key)
    for i, item in enumerate(items):
        if item["key"] == original_key:
            items[i] = entry
            break
    else:
        items.append(entry)
    return None


def _variables(request: HttpRequest, connector: Connector) -> HttpResponse:
    current = manifests.export(editing.fresh(connector))
    editing_key = request.GET.get("edit", "")
    existing = next((v for v in current["variables"] if v["key"] == editing_key), None)
    form = VariableForm(initial=_variable_initial(existing) if existing else None)
    if request.method == "POST":
        manifest = copy.deepcopy(current)
        if request.POST.get("action") == "delete":
            key = request.POST.get("key", "")
            manifest["variables"] = [v for v in manifest["variables"] if v["key"] != key]
            _save(request, connector, manifest, f'Variable "{key}" removed.')
            return redirect(_step_url(connector, "variables"))
        form = VariableForm(request.POST)
        if form.is_valid():
            problem = _upsert_variable(request, manifest["variables"], form, request.POST.get("original_key", ""))
            if problem:
                form.add_error("key", problem)
            elif _save(request, connector, manifest, f'Variable "{form.cleaned_data["label"]}" saved.', form):
                return redirect(_step_url(connector, "variables"))
    return render(request, "connectors/builder.html", _context(connector, "variables", form=form, editing=existing),
                  status=_status(request, form))


# --- authentication methods ----------------------------------------------------------


def _new_auth_method(name: str, auth_type: str, key: str, base_url: str) -> dict:
    token_base = base_url.rstrip("/") if base_url.startswith(("http", "{{")) else "https://example.com"
    method = {
        "key": key, "name": name, "type": auth_type, "token_url": "", "authorize_url": "", "scope": "",
        "variables": [], "headers": {}, "query_params": {}, "body": {},
        "test_request": {"method": "GET", "path": "/", "expected_status": [200]},
    }
    secret = {"required": True, "configurable": True, "advanced": False, "alias": "", "default": ""}
    if auth_type == AuthType.BASIC:
        method["variables"] = [
            {"key": "username", "label": "Username", **secret, "secret": False},
            {"key": "password", "label": "Password", **secret, "secret": True},
        ]
    elif auth_type == AuthType.TOKEN:
        method["variables"] = [{"key": "api_key", "label": "API key", **secret, "secret": True}]
        method["headers"] = {"Authorization": "Bearer {{api_key}}"}
    elif auth_type == AuthType.OAUTH2_CLIENT_CREDENTIALS:
        method["variables"] = [
            {"key": "client_id", "label": "Client ID", **secret, "secret": False},
            {"key": "client_secret", "label": "Client secret", **secret, "secret": True},
        ]
        method["token_url"] = f"{token_base}/oauth/token"
    elif auth_type == AuthType.OAUTH2_AUTHORIZATION_CODE:
        method["variables"] = [{"key": "access_token", "label": "Access token", **secret, "secret": True}]
        method["token_url"] = f"{token_base}/oauth/token"
        method["authorize_url"] = f"{token_base}/oauth/authorize"
    elif auth_type == AuthType.OAUTH1:
        method["variables"] = [
            {"key": key_, "label": label, **secret, "secret": key_ != "consumer_key"}
            for key_, label in (("consumer_key", "Consumer key"), ("consumer_secret", "Consumer secret"),
                                ("token_id", "Token ID"), ("token_secret", "Token secret"))
        ]
    return method


def _auth_method_initial(method: dict) -> dict:
    return {
        "name": method["name"], "token_url": method["token_url"], "authorize_url": method["authorize_url"],
        "scope": method["scope"], "headers": editing.format_pairs(method["headers"]),
        "query_params": editing.format_pairs(method["query_params"]), "body": editing.format_pairs(method["body"]),
        "test_method": method["test_request"]["method"], "test_path": method["test_request"]["path"],
        "test_expected_status": ", ".join(map(str, method["test_request"]["expected_status"])),
    }


AUTH_ACTIONS = {"add", "update", "delete", "delete_variable", "save_variable"}


def _auth(request: HttpRequest, connector: Connector) -> HttpResponse:
    current = manifests.export(editing.fresh(connector))
    editing_key = request.GET.get("edit") or request.POST.get("method_key", "")
    method = next((m for m in current["auth_methods"] if m["key"] == editing_key), None)
    new_form = NewAuthMethodForm()
    form = AuthMethodForm(initial=_auth_method_initial(method)) if method else None
    variable_form = VariableForm(prefix="var", initial={"required": True}) if method else None
    action = request.POST.get("action", "")
    if request.method == "POST":
        if action not in AUTH_ACTIONS:
            raise BadRequest("Unknown action.")
        if action != "add" and method is None:
            messages.error(request, "That authentication method no longer exists.")
            return redirect(_step_url(connector, "auth"))
        manifest = copy.deepcopy(current)
        if action == "add":
            new_form = NewAuthMethodForm(request.POST)
            if new_form.is_valid():
                taken = {m["key"] for m in manifest["auth_methods"]}
                key = editing.unique_key(new_form.cleaned_data["name"], taken, "auth")
                manifest["auth_methods"].append(
                    _new_auth_method(new_form.cleaned_data["name"], new_form.cleaned_data["type"], key, manifest["base_url"])
                )
                added = f'Authentication method "{new_form.cleaned_data["name"]}" added. Check its test request below.'
                if _save(request, connector, manifest, added, new_form):
                    return redirect(_step_url(connector, "auth", edit=key))
        elif method is not None:
            target = next(m for m in manifest["auth_methods"] if m["key"] == method["key"])
            if action == "delete":
                manifest["auth_methods"].remove(target)
                if _save(request, connector, manifest, f'Authentication method "{method["name"]}" removed.'):
                    return redirect(_step_url(connector, "auth"))
                return redirect(_step_url(connector, "auth", edit=method["key"]))
            if action == "update":
                form = AuthMethodForm(request.POST)
                if form.is_valid():
                    data = form.cleaned_data
                    target.update({k: data[k] for k in ("name", "token_url", "authorize_url", "scope", "headers", "query_params", "body")})
                    target["test_request"] = {
                        "method": data["test_method"], "path": data["test_path"], "expected_status": data["test_expected_status"],
                    }
                    if _save(request, connector, manifest, f'Authentication method "{data["name"]}" saved.', form):
                        return redirect(_step_url(connector, "auth", edit=method["key"]))
            elif action == "delete_variable":
                key = request.POST.get("key", "")
                target["variables"] = [v for v in target["variables"] if v["key"] != key]
                _save(request, connector, manifest, f'Variable "{key}" removed.')
                return redirect(_step_url(connector, "auth", edit=method["key"]))
            elif action == "save_variable":
                variable_form = VariableForm(request.POST, prefix="var")
                if variable_form.is_valid():
                    problem = _upsert_variable(request, target["variables"], variable_form, request.POST.get("original_key", ""))
                    if problem:
                        variable_form.add_error("key", problem)
                    elif _save(request, connector, manifest, f'Variable "{variable_form.cleaned_data["label"]}" saved.', variable_form):
                        return redirect(_step_url(connector, "auth", edit=method["key"]))
    return render(
        request, "connectors/builder.html",
        _context(connector, "auth", new_form=new_form, form=form, variable_form=variable_form, method=method),
        status=_status(request, new_form, form, variable_form),
    )


# --- endpoints ---------------------------------------------------------------------


def _endpoints(request: HttpRequest, connector: Connector) -> HttpResponse:
    current = manifests.export(editing.fresh(connector))
    editing_key = request.GET.get("edit", "")
    existing = next((e for e in current["endpoints"] if e["key"] == editing_key), None)
    initial = EndpointForm.initial_from(existing) if existing else None
    form = EndpointForm(initial=initial)
    if request.method == "POST":
        manifest = copy.deepcopy(current)
        action = request.POST.get("action", "")
        key = request.POST.get("key", "")
        target = next((e for e in manifest["endpoints"] if e["key"] == key), None)
        if action in ("delete", "clone") and target is None:
            messages.error(request, "That endpoint no longer exists.")
            return redirect(_step_url(connector, "endpoints"))
        if action == "delete":
            manifest["endpoints"].remove(target)
            _save(request, connector, manifest, f'Endpoint "{target["name"]}" removed.')
            return redirect(_step_url(connector, "endpoints"))
        if action == "clone":
            taken = {e["key"] for e in manifest["endpoints"]}
            copy_ = {
                **copy.deepcopy(target),
                "key": editing.unique_key(target["key"] + "_copy", taken),
                "name": f'{target["name"]} (copy)'[:120],
            }
            manifest["endpoints"].insert(manifest["endpoints"].index(target) + 1, copy_)
            if _save(request, connector, manifest, f'Endpoint "{target["name"]}" cloned.'):
                return redirect(_step_url(connector, "endpoints", edit=copy_["key"]))
            return redirect(_step_url(connector, "endpoints"))
        form = EndpointForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            entry = form.as_manifest()
            if target is not None:
                target.update(entry)
            else:
                taken = {e["key"] for e in manifest["endpoints"]}
                manifest["endpoints"].append({"key": editing.unique_key(data["name"], taken, "endpoint"), **entry})
            if _save(request, connector, manifest, f'Endpoint "{data["name"]}" saved.', form):
                return redirect(_step_url(connector, "endpoints"))
    return render(request, "connectors/builder.html", _context(connector, "endpoints", form=form, editing=existing),
                  status=_status(request, form))


# --- manifests ------------------------------------------------------------------------


def edit_manifest(request: HttpRequest, pk: int) -> HttpResponse:
    """Advanced: edit the whole definition as a manifest, validated like any other change."""
    company, connector = _get_editable_connector(request, pk)
    form = ManifestTextForm(request.POST or None, initial={"manifest": manifests.dumps(manifests.export(editing.fresh(connector)))})
    errors: list[str] = []
    if request.method == "POST" and form.is_valid():
        try:
            data = manifests.parse(form.cleaned_data["manifest"])
        except manifests.ManifestError as exc:
            errors = exc.errors
        else:
            if _save(request, connector, data, "Manifest saved."):
                return redirect("connectors:detail", pk=connector.pk)
    return render(request, "connectors/edit_manifest.html", {"connector": connector, "form": form, "errors": errors},
                  status=422 if request.method == "POST" else 200)


def download_manifest(request: HttpRequest, pk: int) -> HttpResponse:
    company = company_of(request)
    connector = get_object_or_404(
        Connector.objects.for_company(company).prefetch_related("variables", "auth_methods", "endpoints"), pk=pk
    )
    response = HttpResponse(manifests.dumps(manifests.export(connector)), content_type="application/yaml; charset=utf-8")
    filename = f"{slugify(connector.name) or 'connector'}-{slugify(connector.version) or 'version'}.yaml"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def import_manifest(request: HttpRequest) -> HttpResponse:
    """Create a custom connector from an uploaded manifest (YAML or JSON)."""
    company = require(request, "can_manage_connectors")
    form = UploadForm(request.POST or None, request.FILES or None, max_bytes=manifests.MANIFEST_LIMITS.max_bytes)
    errors: list[str] = []
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        deadline = safe_loading.Deadline()
        try:
            manifest = manifests.loads(upload.read().decode("utf-8-sig"), deadline)
            deadline.check()
        except UnicodeDecodeError:
            errors = ["manifest: the file is not UTF-8 text"]
        except safe_loading.DocumentError as exc:
            errors = [f"manifest: {exc.describe()}"]
        except manifests.ManifestError as exc:
            errors = exc.errors
        else:
            connector = Connector(company=company)
            editing.save_definition(connector, manifest, user=request.user, action=ConnectorChange.Action.IMPORTED,
                                    summary="imported from a manifest")
            messages.success(request, f"{connector.name} was created from the manifest as a custom connector.")
            return redirect("connectors:detail", pk=connector.pk)
    return render(request, "connectors/import.html", {"form": form, "errors": errors, "kind": "manifest"},
                  status=422 if request.method == "POST" else 200)


@require_POST
def remove(request: HttpRequest, pk: int) -> HttpResponse:
    """Remove a connector after the user typed `confirm`; refused while it has instances."""
    company, connector = _get_editable_connector(request, pk)
    if request.POST.get("confirm", "").strip().lower() != "confirm":
        messages.error(request, "Type confirm to remove this connector.")
        return redirect(reverse("connectors:detail", args=[pk]) + "?remove=1")
    name = connector.name
    try:
        connector.delete()  # instances PROTECT their connector
    except ProtectedError:
        instances = ", ".join(connector.instances.order_by("name").values_list("name", flat=True))
        messages.error(request, f"{name} still has instances ({instances}). Remove them first, then try again.")
        return redirect(reverse("connectors:detail", args=[pk]) + "?remove=1")
    messages.success(request, f"Connector {name} was removed.")
    return redirect("connectors:manage")


def icon(request: HttpRequest, pk: int) -> HttpResponse:
    company = company_of(request)
    connector = get_object_or_404(Connector.objects.for_company(company).only("icon", "icon_content_type"), pk=pk)
    if not connector.icon_content_type:
        return HttpResponse(status=404)
    response = HttpResponse(bytes(connector.icon), content_type=connector.icon_content_type)
    # An SVG opened directly must not run anything.
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=300"
    return response


OPENAPI_SALT = "connectors.openapi-import"


def _load_draft(raw: str) -> openapi.ImportDraft:
    data = signing.loads(raw, salt=OPENAPI_SALT, max_age=60 * 60)
    data["operations"] = [openapi.Operation(**op) for op in data["operations"]]
    return openapi.ImportDraft(**data)


def import_openapi(request: HttpRequest) -> HttpResponse:
    """Import from an OpenAPI 3 document: upload it, then pick the operations to keep as endpoints."""
    company = require(request, "can_manage_connectors")
    form = UploadForm(request.POST or None, request.FILES or None, max_bytes=openapi.MAX_BYTES)
    errors: list[str] = []
    if request.method == "POST" and "draft" in request.POST:
        try:
            draft = _load_draft(request.POST["draft"])
        except (signing.BadSignature, TypeError, KeyError):
            errors = ["The import expired or was changed. Upload the document again."]
            return render(request, "connectors/import.html", {"form": UploadForm(), "errors": errors, "kind": "openapi"}, status=400)
        selected = [key for key in request.POST.getlist("operations") if key in {op.key for op in draft.operations}]
        name = request.POST.get("name", "").strip()[:120] or draft.name
        system_type = request.POST.get("system_type", "Other")
        if system_type not in SystemType.values:
            system_type = "Other"
        if not selected:
            errors = ["Pick at least one operation to import as an endpoint."]
        else:
            try:
                manifest = openapi.to_manifest(draft, selected, name=name, system_type=system_type)
            except manifests.ManifestError as exc:
                errors = exc.errors
            else:
                connector = Connector(company=company)
                editing.save_definition(connector, manifest, user=request.user, action=ConnectorChange.Action.IMPORTED,
                                        summary=f"imported from an OpenAPI document ({len(selected)} endpoints)")
                messages.success(
                    request,
                    f"{connector.name} was imported with {len(selected)} endpoints. Check each authentication method's test request.",
                )
                return redirect(_step_url(connector, "auth"))
        return _render_pick(request, draft, errors, selected=set(selected), name=name, system_type=system_type, status=422)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        deadline = safe_loading.Deadline()
        try:
            draft = openapi.draft_from_openapi(openapi.parse(upload.read(), upload.name, deadline), deadline)
        except openapi.OpenAPIError as exc:
            errors = [str(exc)]
        else:
            return _render_pick(request, draft, [], selected=set(), name=draft.name, system_type="Other")
    return render(request, "connectors/import.html", {"form": form, "errors": errors, "kind": "openapi"},
                  status=422 if request.method == "POST" else 200)


def _render_pick(request, draft, errors, *, selected, name, system_type, status=200) -> HttpResponse:
    return render(request, "connectors/import_openapi_pick.html", {
        "draft": draft, "errors": errors, "selected": selected, "name": name, "system_type": system_type,
        "system_types": SystemType.choices,
        "state": signing.dumps(dataclasses.asdict(draft), salt=OPENAPI_SALT, compress=True),
    }, status=status)
