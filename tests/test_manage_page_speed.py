"""The manage connectors page: "modified" answered from a cache that every edit invalidates, and "Last run"."""

import copy
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import editing
from connectors import manifest as manifests
from connectors.models import Endpoint, Variable
from instances.models import Instance
from marketplace.models import Installation
from patchworks_site.templatetags.pk_urls import pk_url

MODIFIED = 'data-testid="modified-info"'


def _manage(client) -> str:
    response = client.get("/connectors/")
    assert response.status_code == 200
    return response.content.decode()


def _with_refunds(connector) -> dict:
    changed = copy.deepcopy(manifests.export(connector))
    changed["endpoints"].append(
        {"key": "list_refunds", "name": "List refunds", "entity": "Refund", "direction": "receive",
         "method": "GET", "path": "/refunds", "parameters": {}}
    )
    return changed


def test_an_edit_shows_modified_at_once_although_the_answer_was_cached(admin_client, admin_user, company,
                                                                       sandbox_listing, install):
    connector = install(sandbox_listing, company)
    assert MODIFIED not in _manage(admin_client)  # cached: not modified
    editing.save_definition(connector, _with_refunds(connector), user=admin_user)
    page = _manage(admin_client)
    installed = Installation.objects.get(connector=connector).listing_version.version
    assert MODIFIED in page and f"modified from version {installed}" in page
    # Editing it back to the published definition: not modified again, at once.
    published = Installation.objects.get(connector=connector).listing_version.manifest
    editing.save_definition(editing.fresh(connector), published, user=admin_user)
    assert MODIFIED not in _manage(admin_client)


def test_a_part_changed_on_its_own_shows_modified_at_once(admin_client, company, sandbox_listing, install):
    """The admin (or a shell) saves or deletes one endpoint or variable: the connector's answer changes too."""
    connector = install(sandbox_listing, company)
    assert MODIFIED not in _manage(admin_client)
    endpoint = connector.endpoints.first()
    endpoint.path = "/somewhere-else"
    endpoint.save()
    assert MODIFIED in _manage(admin_client)

    other = install(sandbox_listing, company, version="1.0.0")
    assert _manage(admin_client).count(MODIFIED) == 1
    Endpoint.objects.filter(pk=other.endpoints.last().pk).delete()  # a queryset delete, too
    assert _manage(admin_client).count(MODIFIED) == 2

    third = install(sandbox_listing, company)
    assert _manage(admin_client).count(MODIFIED) == 2
    variable = Variable.objects.filter(connector=third).first()
    variable.label = "Another label"
    variable.save()
    assert _manage(admin_client).count(MODIFIED) == 3


def test_the_admin_change_form_of_an_endpoint_shows_modified_at_once(admin_client, admin_user, company,
                                                                     sandbox_listing, install):
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    connector = install(sandbox_listing, company)
    assert MODIFIED not in _manage(admin_client)
    endpoint = connector.endpoints.first()
    response = admin_client.post(f"/admin/connectors/endpoint/{endpoint.pk}/change/", {
        "connector": connector.pk, "key": endpoint.key, "name": "Renamed in the admin", "entity": endpoint.entity,
        "direction": endpoint.direction, "method": endpoint.method, "path": endpoint.path,
        "parameters": "{}", "request_parameters": "[]", "body_encoding": endpoint.body_encoding,
        "records_path": endpoint.records_path, "pagination": "{}", "position": endpoint.position,
        "idempotency_key_in": endpoint.idempotency_key_in, "idempotency_key_name": endpoint.idempotency_key_name,
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Endpoint.objects.get(pk=endpoint.pk).name == "Renamed in the admin"
    assert MODIFIED in _manage(admin_client)


def test_modified_is_cached_so_a_page_of_prebuilt_connectors_does_not_export_them_again(
    admin_client, company, sandbox_listing, install
):
    for _ in range(3):
        install(sandbox_listing, company, version="1.0.0")
    cache.clear()
    # Another page first: with Redis the cache also holds sessions (cached_db), and reading
    # the session again after the clear is not what this test counts.
    admin_client.get("/flows/")
    with CaptureQueriesContext(connection) as cold:
        _manage(admin_client)
    with CaptureQueriesContext(connection) as warm:
        _manage(admin_client)
    # Cold: the definitions and installed manifests in one query each; warm: none of them.
    assert len(cold) == len(warm) + 4
    assert not [q for q in warm.captured_queries if "connectors_endpoint" in q["sql"] and "EXISTS" not in q["sql"]]


def test_the_last_run_of_each_instance_shows_with_its_exact_time(admin_client, company, make_connector,
                                                                 make_instance):
    connector = make_connector(company, name="Warehouse API")
    used = make_instance(connector, "Used by a flow")
    make_instance(connector, "Never used")
    when = timezone.now() - timedelta(hours=3)
    Instance.objects.filter(pk=used.pk).update(last_used_by_run_at=when)

    for url in ("/connectors/", reverse("connectors:instances", args=[connector.pk])):
        page = admin_client.get(url).content.decode()
        assert ">Last run</th>" in page
        used_row = page[page.index(f'id="instance-{used.pk}"'):]
        used_row = used_row[:used_row.index("</tr>")]
        assert "3\xa0hours ago" in used_row or "3 hours ago" in used_row
        assert f'datetime="{when.isoformat()}"' in used_row
        assert f'title="{when.strftime("%-d %b %Y, %H:%M:%S")} UTC"' in used_row
        never_row = page[page.index('Never used'):]
        never_row = never_row[:never_row.index("</tr>")]
        assert ">never<" in never_row


def test_check_now_buttons_post_to_their_instance(admin_client, company, make_connector, make_instance):
    connector = make_connector(company, name="Warehouse API")
    instance = make_instance(connector, "Main")
    page = _manage(admin_client)
    assert f'form="check-form-{connector.pk}" formaction="{reverse("instances:check", args=[instance.pk])}"' in page
    form = page[page.index(f'<form id="check-form-{connector.pk}"'):]
    form = form[:form.index("</form>")]
    assert 'method="post"' in form and "csrfmiddlewaretoken" in form and 'name="next" value="manage"' in form


def test_pk_url_is_the_same_as_reverse():
    for name in ("instances:settings", "instances:check", "connectors:detail", "flows:detail"):
        assert pk_url(name, 1234) == reverse(name, args=[1234])


def test_the_signed_in_user_comes_with_their_company_in_one_query(admin_client):
    with CaptureQueriesContext(connection) as ctx:
        page = _manage(admin_client)
    assert 'data-testid="company-name"' in page and "Acme Retail" in page
    user_queries = [q["sql"] for q in ctx.captured_queries if 'FROM "patchworks_site_user"' in q["sql"]]
    assert len(user_queries) == 1 and 'JOIN "patchworks_site_company"' in user_queries[0]
    assert not [q for q in ctx.captured_queries if 'FROM "patchworks_site_company"' in q["sql"]]


def test_a_session_signed_in_by_the_model_backend_stays_signed_in(admin_user):
    from django.test import Client

    client = Client()
    client.force_login(admin_user, backend="django.contrib.auth.backends.ModelBackend")
    assert "Acme Retail" in _manage(client)


def test_a_deactivated_user_is_signed_out_at_their_next_request(admin_client, admin_user):
    admin_user.is_active = False
    admin_user.save()
    response = admin_client.get("/connectors/")
    assert response.status_code == 302 and "/login" in response["Location"]


def test_of_several_copies_installed_alongside_the_oldest_of_the_company_is_named(
        admin_client, company, other_company, sandbox_listing, install):
    """The page asks for one copy per listing; another company's copy is never named."""
    install(sandbox_listing, other_company)
    old = install(sandbox_listing, company, version="1.0.0")
    first, second = install(sandbox_listing, company), install(sandbox_listing, company)
    page = _manage(admin_client)
    note = page.split(f'id="connector-{old.pk}"', 1)[1].split("</section>", 1)[0]
    assert 'data-testid="alongside-note"' in note
    assert f'href="/connectors/{first.pk}/">{first.name}</a>' in note and f"/connectors/{second.pk}/" not in note


def test_instance_rows_show_the_first_five_by_name_with_their_pool_and_rate_limit_as_they_are_now(
        admin_client, company, make_connector, make_instance):
    from instances.models import ConnectionPool

    connector = make_connector(company, name="Orders API")
    pool = ConnectionPool.objects.create(company=company, name="Shared pool", limit=3)
    for name in ["Gamma", "alpha", "Epsilon", "Beta", "Zeta", "Delta", "Eta"]:
        make_instance(connector, name, rate_limit_amount=7, rate_limit_unit="minute",
                      connection_pool=pool if name == "Beta" else None)
    names = re.findall(r'<td class="ps-3 fw-medium">(.*?)</td>', _manage(admin_client))
    expected = [i.name for i in Instance.objects.filter(connector=connector)][:5]  # the instances' own order
    assert names == expected and len(names) == 5
    page = _manage(admin_client)
    assert "Shared pool <span" in page and "(3 concurrent)" in page and "7 per minute" in page
    # A check result, a rename, a run and a pool's new limit show at once.
    beta = Instance.objects.get(connector=connector, name="Beta")
    Instance.objects.filter(pk=beta.pk).update(name="Beta (EU)", last_check_ok=False, last_check_message="401 <no>",
                                               last_checked_at=timezone.now(), last_used_by_run_at=timezone.now())
    ConnectionPool.objects.filter(pk=pool.pk).update(limit=9)
    page = _manage(admin_client)
    row = page.split(f'id="instance-{beta.pk}"', 1)[1].split("</tr>", 1)[0]
    assert "Beta (EU)" in row and 'title="401 &lt;no&gt;"' in row and "Failed" in row and "(9 concurrent)" in row
    assert "checked <time" in row and "never" not in row


@settings(max_examples=300, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                           timezones=st.sampled_from([ZoneInfo("UTC"), ZoneInfo("Europe/London"), UTC])))
def test_the_rows_exact_time_is_the_date_format_of_the_templates(moment):
    from django.utils.dateformat import format as date_format

    from patchworks_site.jinja2 import exact_time

    assert exact_time(moment) == date_format(moment, "j M Y, H:i:s T")


def test_fixed_url_is_the_same_as_reverse():
    from patchworks_site.templatetags.pk_urls import fixed_url

    for name in ("home", "flows:list", "connectors:manage", "instances:pools", "marketplace:browse", "logout"):
        assert fixed_url(name) == reverse(name)


def test_connector_cards_escape_every_value_the_company_typed(admin_client, company, make_connector, make_instance):
    connector = make_connector(company, name='<b>"Orders" & co</b>')
    page = _manage(admin_client)
    card = page.split(f'id="connector-{connector.pk}"', 1)[1].split("</section>", 1)[0]
    card = card.replace("&#34;", "&quot;")  # the same character reference, as Jinja2 writes it
    assert "<b>" not in card
    escaped = "&lt;b&gt;&quot;Orders&quot; &amp; co&lt;/b&gt;"
    assert f'<h2 class="h5 mb-0" id="connector-{connector.pk}-name">{escaped}</h2>' in card
    assert 'aria-label="Settings for connector &lt;b&gt;&quot;Orders&quot; &amp; co&lt;/b&gt;"' in card
    assert "No instances yet." in card and "your credentials for &lt;b&gt;" in card
    make_instance(connector, "Main")
    card = _manage(admin_client).split(f'id="connector-{connector.pk}"', 1)[1].split("</section>", 1)[0]
    assert "No instances yet." not in card and 'data-testid="instance"' in card and "csrfmiddlewaretoken" in card
