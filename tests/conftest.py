from __future__ import annotations

import os
import uuid

import pytest
from django.test import Client

from connectors import manifest as manifests
from connectors.models import Connector
from instances.models import Instance
from marketplace import catalog
from marketplace.models import Listing
from patchworks_site.models import Company, Role, User


@pytest.fixture(autouse=True)
def _limits_namespace(settings):
    """Rate limit and pool state of one test never meets another's (pool pks repeat across test databases)."""
    settings.LIMITS_KEY_PREFIX = f"test-{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def _live_server_connections_end(request):
    """After a test that served pages with the live server, the instance client's kept-alive connections to it end.

    Each is held open by one of the live server's request threads, and with it that thread's database
    connection: PostgreSQL then refuses to drop the test database at the end of the session.
    """
    yield
    if "live_server" in request.fixturenames:
        from instances.outbound import transport

        transport.adapters.clear()


@pytest.fixture(scope="session", autouse=True)
def _test_database_sessions_end(django_db_setup, django_db_blocker):
    """At the end of the session, sessions this process's threads left open on its test database are ended.

    Threads of the test process that touched the database (a live server's request thread held by a
    kept-alive connection, a test's racing claimers) keep their connections: PostgreSQL then refuses
    to drop the test database ("being accessed by other users"). Nothing runs any more at this point.
    """
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture
def company(db) -> Company:
    return Company.objects.create(name="Acme Retail")


@pytest.fixture
def other_company(db) -> Company:
    return Company.objects.create(name="Globex Trading")


@pytest.fixture
def make_user(db):
    def make(company: Company | None, role: str = Role.ADMINISTRATOR, username: str | None = None) -> User:
        username = username or f"{role}-{company.pk if company else 'none'}-{User.objects.count()}"
        return User.objects.create_user(username=username, password="pw-for-tests", company=company, role=role)

    return make


@pytest.fixture
def admin_user(make_user, company) -> User:
    return make_user(company, Role.ADMINISTRATOR, "ada")


@pytest.fixture
def client_for():
    def login(user: User) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return login


@pytest.fixture
def admin_client(client_for, admin_user) -> Client:
    return client_for(admin_user)


@pytest.fixture
def sandbox_listing(db) -> Listing:
    """The Sandbox listing with both of its catalog versions published."""
    for entry in catalog.iter_catalog():
        if entry.slug == "sandbox":
            catalog.publish(entry.slug, entry.manifest, entry.changelog)
    return Listing.objects.get(slug="sandbox")


@pytest.fixture
def install(db):
    def do(listing: Listing, company: Company, version: str | None = None) -> Connector:
        listing_version = listing.versions.get(version=version) if version else listing.latest_version
        return catalog.install(listing_version, company)

    return do


@pytest.fixture
def make_connector(db):
    """A custom connector built from a minimal manifest."""

    def make(company: Company, name: str = "Custom API", **overrides) -> Connector:
        data = {
            "name": name,
            "system_type": "Other",
            "version": "1",
            "base_url": "https://api.example.com",
            "rate_limit": {"amount": 5, "unit": "second"},
            "concurrency_limit": None,
            "auth_methods": [
                {
                    "key": "token",
                    "name": "API token",
                    "type": "token",
                    "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
                    "headers": {"Authorization": "Bearer {{api_token}}"},
                    "test_request": {"path": "/me"},
                }
            ],
            "endpoints": [
                {"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET", "path": "/orders"}
            ],
            **overrides,
        }
        return manifests.apply(manifests.validate(data), connector=Connector(company=company))

    return make


@pytest.fixture
def make_instance(db):
    def make(connector: Connector, name: str = "Main", secrets: dict | None = None, **fields) -> Instance:
        method = fields.pop("auth_method", None) or connector.auth_methods.first()
        instance = Instance.with_connector_defaults(connector, name=name, auth_method=method, **fields)
        instance.set_secrets(secrets if secrets is not None else {"api_token": "tok-123456"})
        instance.save()
        return instance

    return make


# --- browser tests -----------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM_ARGS, chromium_or_skip

    executable = chromium_or_skip()
    # Playwright's sync API runs an event loop in this thread; the ORM calls the
    # tests make between page actions are still synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def log_in(page):
    def do(username: str, password: str = "pw-for-tests") -> None:
        page.goto("/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/connectors/")

    return do
