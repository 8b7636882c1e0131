"""An instance's authentication status as the manage connectors page words it, and its changes in the audit log.

Used by credential checks (`instances/checks.py`) and by token refreshes
(`instances/outbound/auth.py`).
"""

from __future__ import annotations

from instances.models import Instance
from patchworks_site import audit


def status_text(ok: bool | None, reauth_reason: str = "") -> str:
    """The authentication status as the manage connectors page words it."""
    if reauth_reason:
        return "Re-authentication needed"
    return {None: "Not checked", True: "Authenticated", False: "Failed"}[ok]


def note_status_change(instance: Instance, before: str, after: str, why: str = "") -> None:
    """A change of authentication status goes to the audit log (not the first check of a new instance)."""
    if before != after and before != "Not checked":
        audit.record_note(instance, "instance", {
            "authentication status": f"{before} → {after}" + (f": {why}" if why and after != "Authenticated" else ""),
        })
