"""Every page carries a Content-Security-Policy without inline scripts; pages behind the login are never cached."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from patchworks_site.models import Role


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in header.split(";")) if d}


def test_pages_forbid_inline_and_foreign_scripts(admin_client):
    response = admin_client.get("/connectors/")
    directives = policy(response)
    assert directives["script-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in directives["style-src"]


def test_the_login_page_has_the_policy_too():
    assert "script-src 'self'" in Client().get("/login/")["Content-Security-Policy"]


@pytest.mark.parametrize(
    "url",
    ["/connectors/", "/marketplace/", "/instances/pools/", "/flows/", "/audit/"],
)
def test_pages_behind_the_login_are_never_stored_by_a_cache(url, admin_client):
    response = admin_client.get(url)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]


def test_instance_settings_with_its_check_records_are_never_cached(
    company, make_connector, make_instance, client_for, make_user
):
    instance = make_instance(make_connector(company))
    response = client_for(make_user(company, Role.READ_ONLY)).get(f"/instances/{instance.pk}/?tab=response")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


def test_templates_have_no_inline_scripts_or_event_handlers():
    from django.conf import settings

    offenders = []
    for path in settings.TEMPLATES[0]["DIRS"][0].rglob("*.html"):
        text = path.read_text()
        for match in re.finditer(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=\s*[\"']|javascript:", text):
            offenders.append(f"{path.name}: {match.group(0)}")
    assert offenders == []


def test_a_request_body_over_the_limit_is_refused_before_it_is_read(admin_client, settings):
    from connectors.models import Connector

    settings.MAX_REQUEST_BYTES = 64 * 1024
    body = b"x" * (64 * 1024 + 1)
    response = admin_client.post("/connectors/import/openapi/", data=body, content_type="application/octet-stream")
    assert response.status_code == 413
    assert "larger than" in response.content.decode()
    assert not Connector.objects.exists()
    small = admin_client.post("/connectors/import/openapi/", data=b"x" * 100, content_type="application/octet-stream")
    assert small.status_code != 413
