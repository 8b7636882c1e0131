"""Drive the new instance wizard through plain form posts, as a browser without JavaScript would."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit


def state_from(response) -> str:
    return parse_qs(urlsplit(response["Location"]).query)["state"][0]


def settings_data(**overrides) -> dict:
    return {
        "time_zone": "Europe/London",
        "date_format": "%d/%m/%Y",
        "rate_limit_amount": "30",
        "rate_limit_unit": "minute",
        **overrides,
    }


def run_wizard(client, connector, name="Main", settings=None, auth_method=None, credentials=None):
    """Post every step; returns the final response (and fails loudly if a step is refused)."""
    url = f"/instances/new/{connector.pk}/"
    response = client.post(url, {"step": "name", "state": "", "name": name})
    assert response.status_code == 302, response.content.decode()[:2000]
    response = client.post(url, {"step": "settings", "state": state_from(response), **(settings or settings_data())})
    assert response.status_code == 302, response.content.decode()[:2000]
    state = state_from(response)
    if "step=auth" in response["Location"]:
        method = auth_method or connector.auth_methods.first()
        response = client.post(url, {"step": "auth", "state": state, "auth_method": method.pk})
        assert response.status_code == 302, response.content.decode()[:2000]
        state = state_from(response)
    data = {"step": "credentials", "state": state}
    data.update({f"var_{k}": v for k, v in (credentials or {}).items()})
    return client.post(url, data)
