"""No secret and no token obtained during a run comes back out of the run page's steps, in any spelling.

The echoing API of tests/test_run_time_secret_canaries.py repeats every header,
query value and token answer it gets into its records and answers (plain,
JSON-escaped, Base64, URL-encoded, as Python's repr), for every authentication
method: basic (password), a token in a header (API key), in the query, a
bearer token, OAuth 2 client credentials (client secret, and the access token
its token endpoint hands out during the run), authorisation code (refreshed in
the middle of the run) and OAuth 1. Every step page, records page (searched
too), request (both tabs) and htmx fragment is read as a Read-only user and as
an Administrator; the stored rows are searched too.
"""

from __future__ import annotations

from django.test import Client

from connectors import editing
from connectors.models import Connector, ConnectorChange
from flows import execution, queueing
from flows.models import FlowRunPayload, FlowRunRequest, RunTrigger
from patchworks_site.models import Role
from tests import crawl
from tests.flow_helpers import connection, flow_of
from tests.test_run_time_secret_canaries import MARKER, echo, echo_manifest, instances_of  # noqa: F401 - fixture
from tests.test_secret_canaries import _database_text, _summary, find_leaks


def step_urls(run) -> list[tuple[str, dict]]:
    """Every URL of the run's steps, with the htmx headers of its fragment (or none)."""
    urls: list[tuple[str, dict]] = [(f"/flows/runs/{run.pk}/", {})]
    for shape_run in run.shape_runs.all():
        url = f"/flows/runs/{run.pk}/steps/{shape_run.pk}/"
        urls += [(url, {}), (url, {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": f"step-{shape_run.pk}"})]
    for payload in FlowRunPayload.objects.filter(run=run):
        url = f"/flows/runs/{run.pk}/payloads/{payload.pk}/"
        urls += [(url, {}), (f"{url}?q=you_sent", {}), (f"{url}?q=Bearer&page=1", {
            "HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": f"payload-{payload.pk}-results"})]
    for request in FlowRunRequest.objects.filter(run=run):
        url = f"/flows/runs/{run.pk}/requests/{request.pk}/"
        urls += [(f"{url}?tab=request", {}), (f"{url}?tab=response", {}),
                 (url, {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": f"request-{request.pk}"})]
    return urls


def test_no_secret_or_run_time_token_comes_back_out_of_a_run_s_steps(db, httpserver, echo, settings):
    settings.FLOW_RETRY_DELAY_SECONDS = 0
    base_url = httpserver.url_for("").rstrip("/")
    world = crawl.build_world(MARKER, base_url=base_url)
    connector = Connector(company=world.company)
    editing.save_definition(connector, echo_manifest(base_url), user=world.users[Role.ADMINISTRATOR],
                            action=ConnectorChange.Action.CREATED, summary="created")
    runs = []
    for instance in instances_of(connector, echo):
        flow = flow_of(world.company, connection(instance, "orders"),
                       connection(instance, "stock", allow_unsuccessful=True), connection(instance, "reject"),
                       name=f"{MARKER} steps {instance.auth_method.key}")
        echo.last_answer = {}
        runs.append(execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk))
    # The canaries went out and came back in the records and answers the steps keep.
    assert FlowRunPayload.objects.filter(body__contains="you_sent").count() >= 7 * 3
    assert FlowRunRequest.objects.filter(request_headers__has_key="Authorization").exists()
    cc_token = next(t for t, label in echo.canaries.values.items() if label.endswith("client_credentials-access-token"))
    assert cc_token  # the client credentials token was issued during the run

    texts = []
    for role in (Role.READ_ONLY, Role.ADMINISTRATOR):
        client = Client()
        client.force_login(world.users[role])
        for run in runs:
            for url, headers in step_urls(run):
                response = client.get(url, **headers)
                assert response.status_code == 200, (role, url)
                texts.append((f"{role} GET {url} {headers}", response.content.decode(errors="replace")))
    assert len(texts) > 100
    texts += _database_text()
    index = echo.canaries.index()
    leaks = [f"{where}: {leak}" for where, text in texts for leak in find_leaks(text, index)]
    places = sorted({leak.split(": ", 1)[0] for leak in leaks})
    assert not leaks, f"leaks in {len(places)} places: {places[:60]}\n" + _summary(leaks)
