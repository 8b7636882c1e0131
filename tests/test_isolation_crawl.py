"""Every URL of the project, as every role of one company and anonymously, filled with another company's ids.

Another company's object is a 404 (or a 403 when the role may not act at all,
or the login page for anonymous visitors), never its data and never a 500.
Every POST needs a CSRF token. The route table lives in tests/crawl.py; a new
URL pattern without an entry there fails the coverage test.
"""

from __future__ import annotations

import pytest
from django.test import Client

from alerts.models import AlertRule
from connectors.models import Connector
from flows.models import ProcessFlow, Shape
from instances.models import ConnectionPool, CredentialCheck, Instance
from patchworks_site.models import AuditEntry, Role
from tests import crawl
from tests.crawl import ADMIN, ANONYMOUS, COMPANY, GLOBAL, OBJECT, PUBLIC

OWN_MARKER = "ACMEKWQ"
OTHER_MARKER = "GLOBEXZQ"  # long enough never to appear by chance in a token or hash
POST_DATA = {
    # enough for the destructive forms to go ahead if the object were found
    "confirm": "confirm",
    "enabled": "1",
    "choice": "overwrite",
    "name": f"{OWN_MARKER} posted name",
    "limit": "2",
    "timeout_seconds": "30",
}


@pytest.fixture
def worlds(db):
    own = crawl.build_world(OWN_MARKER)
    other = crawl.build_world(OTHER_MARKER)
    return own, other


def _body(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def _snapshot(world: crawl.World) -> dict:
    """What the other company holds; the crawl must leave it exactly as it was."""
    company = world.company
    return {
        "connectors": sorted(Connector.objects.filter(company=company).values_list("pk", "name", "description", "version")),
        "instances": sorted(
            Instance.objects.filter(company=company).values_list("pk", "name", "secrets_ciphertext", "connection_pool_id")
        ),
        "pools": sorted(ConnectionPool.objects.filter(company=company).values_list("pk", "name", "limit")),
        "pool_connectors": sorted(
            ConnectionPool.connectors.through.objects.filter(connectionpool__company=company).values_list("pk", flat=True)
        ),
        "flows": sorted(ProcessFlow.objects.filter(company=company).values_list("pk", "name", "enabled")),
        "shapes": sorted(Shape.objects.filter(flow__company=company).values_list("pk", "instance_id", "endpoint_id")),
        "checks": CredentialCheck.objects.filter(company=company).count(),
        "audit": AuditEntry.objects.filter(company=company).count(),
        "users": sorted(company.users.values_list("pk", "username", "password", "role", "is_staff")),
    }


def test_every_url_pattern_is_covered():
    """The route table names every pattern the resolver knows, and nothing else."""
    enumerated = {route.route for route in crawl.enumerate_routes()}
    assert len(enumerated) > 100  # the apps, the Sandbox API and the whole admin
    missing = enumerated - set(crawl.ROUTES)
    stale = set(crawl.ROUTES) - enumerated
    assert not missing, f"URL patterns not covered by the isolation crawl (add them to tests/crawl.py ROUTES): {sorted(missing)}"
    assert not stale, f"ROUTES entries that are no URL pattern any more: {sorted(stale)}"
    assert crawl.registered_admin_models() == set(crawl.ADMIN_MODELS)


def _expected_statuses(role: str, fill: crawl.Fill, method: str) -> set[int]:
    if fill.kind == PUBLIC:
        return set()  # anything but a 500, checked separately
    if role == ANONYMOUS:
        return {302}
    if fill.kind == ADMIN:
        return {302}  # non-staff users are sent to the admin's login
    if fill.kind == OBJECT:
        if method == "GET" and fill.post_only:
            return {405}
        # Administrators may do everything: only "not found" is right for them.
        return {404, 405} if role == Role.ADMINISTRATOR else {403, 404, 405}
    if fill.kind in (COMPANY, GLOBAL):
        return {200, 302, 403, 405, 422} | fill.also
    raise AssertionError(f"unknown kind {fill.kind}")


def test_no_role_reaches_another_companys_objects(worlds, capsys):
    own, other = worlds
    before = _snapshot(other)
    clients = crawl.role_clients(own)
    requests = crawl.requests_for(own, other)
    failures: list[str] = []
    count = 0
    marker = OTHER_MARKER.lower()

    def check(role: str, method: str, route: crawl.Route, fill: crawl.Fill, url: str, response) -> None:
        body = _body(response)
        where = f"{role} {method} {url} ({route.route})"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.status_code}")
        if marker in body.lower() or marker in str(response.headers).lower():
            failures.append(f"{where}: shows the other company's data")
        expected = _expected_statuses(role, fill, method if method == "GET" else "POST")
        if expected and response.status_code not in expected:
            failures.append(f"{where}: {response.status_code}, expected one of {sorted(expected)}")
        if response.status_code == 302 and (role == ANONYMOUS or fill.kind == ADMIN) and fill.kind != PUBLIC:
            location = response["Location"]
            logins = ("/login/?next=", "/admin/login/") if role == ANONYMOUS else ("/admin/",)
            if not location.startswith(logins):
                failures.append(f"{where}: redirected to {location}, not to {' or '.join(logins)}")

    for role, (user, client) in clients.items():
        tokenless = Client(enforce_csrf_checks=True)
        tokenless.cookies["csrftoken"] = crawl.CSRF_SECRET
        if user is not None:
            tokenless.force_login(user)
        for route, fill, url in requests:
            check(role, "GET", route, fill, url, client.get(url))
            check(role, "POST", route, fill, url, client.post(url, {**POST_DATA, "csrfmiddlewaretoken": crawl.CSRF_SECRET}))
            if fill.logs_out and user is not None:
                client.force_login(user)
            # The same POST without the token is refused before any view runs.
            response = tokenless.post(url, POST_DATA)
            if not fill.csrf_exempt and response.status_code != 403:
                failures.append(f"{role} POST without CSRF token {url}: {response.status_code}, expected 403")
            if marker in _body(response).lower():
                failures.append(f"{role} POST without CSRF token {url}: shows the other company's data")
            count += 3

    assert not failures, f"{len(failures)} problems in {count} requests:\n" + "\n".join(failures[:60])
    assert _snapshot(other) == before, "the crawl changed the other company's data"
    routes = len({route.route for route, _, _ in requests})
    with capsys.disabled():
        print(f"\nisolation crawl: {routes} URL patterns, {len(requests)} filled URLs x {len(clients)} roles "
              f"x 3 (GET, POST with token, POST without) = {count} requests")
    assert count == len(requests) * len(clients) * 3
    assert routes == len(crawl.ROUTES)


def test_each_role_sees_its_own_objects_so_the_crawl_can_tell(worlds):
    """The other side of the coin: the same pages filled with the company's own ids do show its data."""
    own, _ = worlds
    _, client = crawl.role_clients(own)[Role.READ_ONLY]
    for url in (f"/connectors/{own.connector.pk}/", f"/instances/{own.instance.pk}/", f"/flows/{own.flow.pk}/",
                f"/instances/pools/{own.pool.pk}/", f"/connectors/{own.connector.pk}/history/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert OWN_MARKER in response.content.decode(), url
    # The run page and its timeline show what the run recorded; the run logs show the run.
    timeline = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "run-timeline"}
    for headers in ({}, timeline):
        page = client.get(f"/flows/runs/{own.run.pk}/", **headers).content.decode()
        for text in ("sample item in", "sample item out", "shape warning", "shape error", "failed exchange body",
                     "run warning", "failure reason"):
            assert f"{OWN_MARKER} {text}" in page, (text, headers)
    for url in ("/flows/runs/", f"/flows/{own.flow.pk}/runs/"):
        assert f"{OWN_MARKER} flow" in client.get(url).content.decode(), url
    # The flow editor shows the shape's test step, and its poll answers with it.
    assert f"{OWN_MARKER} test record" in client.get(f"/flows/{own.flow.pk}/").content.decode()
    poll = client.get(f"/flows/{own.flow.pk}/shapes/{own.shape.pk}/test/{own.test_run.pk}/", HTTP_HX_REQUEST="true")
    assert poll.status_code == 200 and f"{OWN_MARKER} test record" in poll.content.decode()


def test_forms_refuse_another_companys_ids_in_posted_data(worlds):
    """Ids of another company in a form's fields are refused like ids in the URL."""
    own, other = worlds
    _, client = crawl.role_clients(own)[Role.ADMINISTRATOR]
    token = {"csrfmiddlewaretoken": crawl.CSRF_SECRET}

    response = client.post(
        f"/flows/{own.flow.pk}/", {**token, "instance": other.instance.pk, "endpoint": other.connector.endpoints.first().pk}
    )
    assert response.status_code in (200, 422)
    assert not Shape.objects.filter(flow=own.flow, instance=other.instance).exists()

    response = client.post("/alerts/rules/", {**token, "section": "rule", "rule-event": "run_failed",
                                              "rule-channels": [other.alert_channel.pk]})
    assert response.status_code == 422
    assert not AlertRule.objects.filter(company=own.company, event="run_failed").exists()
    response = client.post(f"/alerts/rules/{own.alert_rule.pk}/", {**token, "event": "run_failed",
                                                                  "channels": [other.alert_channel.pk]})
    assert response.status_code == 422 and list(own.alert_rule.channels.all()) == [own.alert_channel]

    response = client.post("/instances/pools/new/", {**token, "name": "Mixed pool", "limit": "2", "timeout_seconds": "30",
                                                     "connectors": [other.connector.pk]})
    assert response.status_code in (200, 422)
    assert not ConnectionPool.objects.filter(name="Mixed pool").exists()

    details = {"name": own.instance.name, "time_zone": "UTC", "date_format": "%Y-%m-%d", "rate_limit_amount": "10",
               "rate_limit_unit": "minute", "connection_pool": other.pool.pk, "auth_method": own.instance.auth_method_id}
    response = client.post(f"/instances/{own.instance.pk}/", {**token, **details})
    assert response.status_code == 422
    own.instance.refresh_from_db()
    assert own.instance.connection_pool_id == own.pool.pk

    response = client.post(f"/instances/{own.instance.pk}/", {**token, **details, "connection_pool": own.pool.pk,
                                                              "auth_method": other.instance.auth_method_id})
    assert response.status_code == 422
    own.instance.refresh_from_db()
    assert own.instance.auth_method.connector_id == own.connector.pk
    assert OTHER_MARKER not in response.content.decode()


def test_htmx_partials_ignore_another_companys_ids(worlds):
    """The partials htmx asks for, given another company's ids in the query, show only the user's own data."""
    own, other = worlds
    _, client = crawl.role_clients(own)[Role.ADMINISTRATOR]
    htmx = {"HTTP_HX_REQUEST": "true"}
    for method in other.connector.auth_methods.all():
        response = client.get(f"/instances/{own.instance.pk}/?auth_method={method.pk}", **htmx)
        assert response.status_code == 200
        assert OTHER_MARKER not in response.content.decode()
    response = client.get(f"/flows/runs/{other.run.pk}/", HTTP_HX_TARGET="run-timeline", **htmx)
    assert response.status_code == 404 and OTHER_MARKER not in response.content.decode()
    # Another company's test run named as the one to open on the flow page: only the own shapes' tests show.
    page = client.get(f"/flows/{own.flow.pk}/?test_run={other.test_run.pk}").content.decode()
    assert OTHER_MARKER not in page.upper() and f"{OWN_MARKER} test record" in page
    for url, target, shows_own in (
        (f"/connectors/?highlight=instance-{other.instance.pk}", "connector-list", True),
        (f"/instances/pools/?highlight={other.pool.pk}", "pool-list", True),
        ("/audit/?q=flow", "audit-list", True),
        ("/marketplace/?q=sandbox", "listing-grid", False),
    ):
        response = client.get(url, HTTP_HX_TARGET=target, **htmx)
        page = response.content.decode()
        assert response.status_code == 200, url
        assert OTHER_MARKER not in page.upper(), url
        assert (OWN_MARKER in page) == shows_own, url


def test_non_staff_users_of_every_role_are_kept_out_of_the_admin(worlds):
    own, _ = worlds
    for role, (_, client) in crawl.role_clients(own).items():
        response = client.get("/admin/")
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), role
