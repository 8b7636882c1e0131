"""Shared steps of the OAuth 2 authorisation code tests: a provider connector, Connect, the callback."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

from connectors import manifest as manifests
from connectors.models import Connector
from tests.wizard_helpers import run_wizard


def provider_connector(company, base: str, name: str = "App API") -> Connector:
    """A custom connector whose one auth method is the authorisation code grant against `base`."""
    data = {
        "name": name,
        "system_type": "Other",
        "version": "1",
        "base_url": base,
        "rate_limit": {"amount": 100, "unit": "second"},
        "auth_methods": [
            {
                "key": "oauth2",
                "name": "OAuth 2 app",
                "type": "oauth2_authorization_code",
                "authorize_url": f"{base}/authorize",
                "token_url": f"{base}/token",
                "scope": "read write",
                "variables": [
                    {"key": "client_id", "label": "Client ID", "required": True},
                    {"key": "client_secret", "label": "Client secret", "required": True, "secret": True},
                ],
                "test_request": {"path": "/me"},
            }
        ],
        "endpoints": [
            {"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET", "path": "/orders"}
        ],
    }
    return manifests.apply(manifests.validate(data), connector=Connector(company=company))


def provider_url(response) -> str:
    """The authorise URL the Connect step sends the browser to (the page without JavaScript)."""
    assert response.status_code == 200, response.content.decode()[:3000]
    match = re.search(r'href="([^"]+)" data-testid="continue-to-provider"', response.content.decode())
    assert match, response.content.decode()[:3000]
    return html.unescape(match.group(1))


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def connect(client, connector, credentials: dict, name: str = "Main", auth_method=None) -> str:
    """Run the wizard up to Connect; the authorise URL."""
    return provider_url(run_wizard(client, connector, name=name, auth_method=auth_method, credentials=credentials))


def callback(client, **params):
    return client.get("/instances/oauth/callback/", params)
