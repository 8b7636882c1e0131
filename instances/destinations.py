"""Where an instance's credentials go: the origins (scheme, host, port) of its API addresses.

Stored secrets are approved for the origins they were entered for. When the
destination changes — a URL-bearing variable, the connector's base URL, an
OAuth token or authorise URL, or the host a placeholder renders to — the
stored secrets are not sent there until the user enters them again (or an
Administrator confirms, which the audit log records).

Origins are computed from non-secret values only, so they can be stored and
shown (and audited) without revealing anything.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from connectors.manifest import PLACEHOLDER_RE
from instances import deployment


def origin(url: str) -> str:
    """``scheme://host:port`` of `url` (explicit default port), or the text itself when it is no URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        return url.strip()
    if not parts.scheme or not parts.hostname:
        return url.strip()
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}:{port}"


def _render(template: str, values: dict[str, str]) -> str:
    # A placeholder without a (non-secret) value stays as written: the origin
    # then names the template, which still changes when the template does.
    return PLACEHOLDER_RE.sub(lambda m: str(values.get(m.group(1)) or m.group(0)), template)


def destinations(urls: list[str], values: dict[str, str]) -> list[str]:
    """The sorted origins of the non-empty `urls` templates rendered with `values`."""
    return sorted({origin(_render(url, values)) for url in urls if url})


def for_method(connector, auth_method, values: dict[str, str], variables: list | None = None) -> list[str]:
    """Where an instance of `connector` with `values` sends credentials of `auth_method`.

    The connector's base URL and the method's token and authorise URLs, rendered
    with the non-secret values and the non-secret variables' defaults.
    `variables`: the connector's variables when the caller has them (else they are read).
    """
    if variables is None:
        variables = connector.variables.all()
    variables = [v for v in variables if v.auth_method_id in (None, auth_method.pk)]
    secret_keys = {v.key for v in variables if v.secret}
    public = {v.key: deployment.filled_in(v.default) for v in variables if v.default and not v.secret}
    public.update({k: v for k, v in values.items() if v not in (None, "") and k not in secret_keys})
    return destinations([connector.base_url, auth_method.token_url, auth_method.authorize_url], public)


def describe(origins: list[str] | set[str]) -> str:
    """Origins for a message: host names (with a port only when it is not the scheme's default)."""
    names = []
    for item in sorted(origins):
        parts = urlsplit(item)
        try:
            default = {"https": 443, "http": 80}.get(parts.scheme) == parts.port
            names.append(parts.hostname if default else f"{parts.hostname}:{parts.port}")
        except ValueError:
            names.append(item)
    return ", ".join(n or "?" for n in names)
