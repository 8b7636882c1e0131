"""Changing a connector's definition: every change is a new manifest, applied and recorded.

The builder, modifying a prebuilt connector, manifest uploads, imports and
marketplace installs and updates all come through `save_definition`, so the
history (who, when, the manifest before and after) is complete.
"""

from __future__ import annotations

import re

from django.db import transaction

from connectors import manifest as manifests
from connectors.models import Connector, ConnectorChange
from connectors.signals import definition_saved
from patchworks_site import audit


def fresh(connector: Connector) -> Connector:
    """The connector reloaded without prefetched relations (they go stale when applying)."""
    return Connector.objects.get(pk=connector.pk)


def save_definition(
    connector: Connector,
    manifest: dict,
    *,
    user=None,
    action: str = ConnectorChange.Action.EDITED,
    summary: str = "",
    draft: bool = False,
    detach_reason: str = "",
) -> ConnectorChange | None:
    """Validate `manifest`, apply it to `connector` and record the change; None when nothing changed.

    Raises ManifestError (nothing saved) or ProtectedError (a removed part is
    still in use; the transaction leaves the old definition intact).
    """
    before = manifests.export(fresh(connector)) if connector.pk else None
    manifest = manifests.validate(manifest, draft=draft)
    getattr(connector, "_prefetched_objects_cache", {}).clear()  # apply() must see the database
    if before == manifest and action == ConnectorChange.Action.EDITED:
        return None
    with transaction.atomic():
        manifests.apply(manifest, connector=connector, user=user, detach_removed_endpoints=detach_reason)
        if not summary:
            summary = manifests.compare(before, manifest).summary() if before else "created"
        if before is not None:
            audit.record_definition_change(connector, summary)
        definition_saved.send(sender=Connector, connector=connector)
        return ConnectorChange.objects.create(
            connector=connector, user=user if getattr(user, "pk", None) else None, action=action,
            summary=summary[:300], before=before, after=manifest,
        )


def unique_key(text: str, taken: set[str], fallback: str = "item") -> str:
    """A manifest key (a-z, 0-9, _) made from `text`, not in `taken`."""
    key = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:56] or fallback
    if not key[0].isalpha():
        key = f"{fallback}_{key}"[:56]
    candidate, n = key, 2
    while candidate in taken:
        candidate, n = f"{key}_{n}", n + 1
    return candidate


def parse_pairs(text: str) -> dict[str, str]:
    """ "Name: value" lines (headers, parameters) as a dict; ValueError names the bad line."""
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f'line {number}: write "Name: value"')
        pairs[name.strip()] = value.strip()
    return pairs


def format_pairs(pairs: dict[str, str]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in pairs.items())
