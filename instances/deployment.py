"""Deployment values that a connector variable's default may name as ``{{deployment.<name>}}``.

Some defaults depend on where this deployment runs, such as the address of an
API the dashboard serves itself, which follows the port. An installed app offers
such values through a ``deployment_values(request)`` method on its AppConfig;
`request` is the page the default is shown on, or None. The wizard shows the
default filled in, so the instance stores the real address; a name that no app
offers is left as written.
"""

from __future__ import annotations

import re

from django.apps import apps
from django.http import HttpRequest

_PLACEHOLDER = re.compile(r"\{\{\s*deployment\.([A-Za-z0-9_]+)\s*\}\}")


def deployment_values(request: HttpRequest | None = None) -> dict[str, str]:
    """Every value the installed apps offer, by name."""
    offered: dict[str, str] = {}
    for config in apps.get_app_configs():
        offer = getattr(config, "deployment_values", None)
        if offer is not None:
            offered.update(offer(request))
    return offered


def filled_in(default: str, request: HttpRequest | None = None) -> str:
    """`default` with its ``{{deployment.<name>}}`` placeholders replaced by the values offered."""
    if "deployment." not in default:
        return default
    offered = deployment_values(request)
    return _PLACEHOLDER.sub(lambda m: offered.get(m.group(1), m.group(0)), default)
