"""Endpoint request parameters, body encoding, records path and pagination in the manifest."""

import copy
import importlib

import pytest
from django.apps import apps

from connectors import editing
from connectors import manifest as manifests
from connectors.models import Connector, ConnectorChange, Endpoint
from marketplace import catalog
from marketplace.models import Listing, ListingVersion
from tests.test_manifest_validation import VALID

ORDERS = {
    "key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET",
    "path": "/orders",
    "request_parameters": [
        {"name": "updated_since", "default": "{{since}}", "label": "Updated since"},
        {"name": "X-Time-Zone", "location": "header", "default": "{{instance.time_zone}}"},
        {"name": "status", "required": True, "default": "{{subdomain}}-open"},
    ],
    "body_encoding": "json",
    "records_path": "data.orders",
    "pagination": {"style": "page_number", "page_parameter": "page", "limit_parameter": "per_page", "limit": 50,
                   "first_page": 0, "max_pages": 20},
}


def with_endpoint(**changes) -> dict:
    data = copy.deepcopy(VALID)
    data["endpoints"] = [{**copy.deepcopy(ORDERS), **changes}]
    return data


def errors_of(data: dict) -> list[str]:
    with pytest.raises(manifests.ManifestError) as exc:
        manifests.validate(data)
    return exc.value.errors


def test_old_endpoints_get_the_defaults_in_a_fixed_order():
    endpoint = manifests.validate(copy.deepcopy(VALID))["endpoints"][0]
    assert list(endpoint) == [
        "key", "name", "entity", "direction", "method", "path", "parameters",
        "request_parameters", "body_encoding", "records_path", "pagination", "follow_redirects_to_other_origins",
        "idempotency",
    ]
    assert endpoint["idempotency"] == {"in": "none", "name": ""}
    assert endpoint["request_parameters"] == [] and endpoint["body_encoding"] == "json" and endpoint["records_path"] == ""
    assert endpoint["pagination"] == {
        "style": "none", "next_url_path": "", "page_parameter": "", "limit_parameter": "", "limit": 0,
        "offset_parameter": "", "cursor_path": "", "cursor_parameter": "", "first_page": 1, "max_pages": 0,
    }
    assert list(endpoint["pagination"]) == list(manifests.PAGINATION)


def test_declared_parameters_are_normalised_and_run_placeholders_are_accepted():
    endpoint = manifests.validate(with_endpoint())["endpoints"][0]
    assert endpoint["request_parameters"] == [
        {"name": "updated_since", "location": "query", "required": False, "default": "{{since}}", "label": "Updated since"},
        {"name": "X-Time-Zone", "location": "header", "required": False, "default": "{{instance.time_zone}}",
         "label": "X-Time-Zone"},  # no label: the name
        {"name": "status", "location": "query", "required": True, "default": "{{subdomain}}-open", "label": "status"},
    ]
    assert endpoint["pagination"]["style"] == "page_number" and endpoint["pagination"]["first_page"] == 0


DOTTED_PATH_ERROR = "endpoints[0].records_path: must be a dotted path of names (letters, digits, _ and -), e.g. data.items"


@pytest.mark.parametrize(("changes", "expected"), [
    ({"body_encoding": "xml"}, "endpoints[0].body_encoding: must be one of json, form"),
    ({"records_path": "data..orders"}, DOTTED_PATH_ERROR),
    ({"records_path": "data[0]"}, DOTTED_PATH_ERROR),
    ({"records_path": "x" * 201}, "endpoints[0].records_path: must be at most 200 characters"),
    ({"request_parameters": [{"location": "query"}]}, "endpoints[0].request_parameters[0].name: required"),
    ({"request_parameters": [{"name": "a", "location": "cookie"}]},
     "endpoints[0].request_parameters[0].location: must be one of query, header, body"),
    ({"request_parameters": [{"name": "a", "required": "yes"}]}, "endpoints[0].request_parameters[0].required: must be true or false"),
    ({"request_parameters": [{"name": "a", "default": "x" * 2049}]},
     "endpoints[0].request_parameters[0].default: must be at most 2048 characters"),
    ({"request_parameters": [{"name": "a", "label": "x" * 121}]},
     "endpoints[0].request_parameters[0].label: must be at most 120 characters"),
    ({"request_parameters": [{"name": "x" * 201}]}, "endpoints[0].request_parameters[0].name: must be at most 200 characters"),
    ({"request_parameters": [{"name": "a", "colour": "red"}]}, "endpoints[0].request_parameters[0].colour: unknown field"),
    ({"request_parameters": [{"name": "Bad Header", "location": "header"}]},
     'endpoints[0].request_parameters[0].name: "Bad Header" is not a valid header name (letters, digits and -, no spaces)'),
    ({"request_parameters": [{"name": "X-A", "location": "header", "default": "a\nb"}]},
     "endpoints[0].request_parameters[0].default: must not contain line breaks"),
    ({"request_parameters": [{"name": "a"}, {"name": "a"}]}, 'endpoints[0].request_parameters[1].name: duplicate query parameter "a"'),
    ({"request_parameters": [{"name": "X-A", "location": "header"}, {"name": "x-a", "location": "header"}]},
     'endpoints[0].request_parameters[1].name: duplicate header parameter "x-a"'),
    ({"request_parameters": [{"name": "a", "location": "body"}]},
     "endpoints[0].request_parameters[0].location: a GET request has no body (use query or header)"),
    ({"request_parameters": [{"name": "a", "default": "{{nope}}"}]},
     'endpoints[0].request_parameters[0].default: unknown variable "{{nope}}"'),
    ({"pagination": {"style": "pages"}},
     "endpoints[0].pagination.style: must be one of none, next_url, link_header, page_number, limit_offset, cursor"),
    ({"pagination": "page_number"}, "endpoints[0].pagination: must be a mapping"),
    ({"pagination": {"style": "page_number"}}, "endpoints[0].pagination.page_parameter: required for page_number pagination"),
    ({"pagination": {"style": "page_number", "page_parameter": "page", "limit": 10}},
     "endpoints[0].pagination.limit_parameter: required when a limit is set"),
    ({"pagination": {"style": "page_number", "page_parameter": "page", "limit_parameter": "per_page"}},
     "endpoints[0].pagination.limit: give the page size to send in per_page"),
    ({"pagination": {"style": "next_url"}}, "endpoints[0].pagination.next_url_path: required for next_url pagination"),
    ({"pagination": {"style": "next_url", "next_url_path": "links next"}},
     "endpoints[0].pagination.next_url_path: must be a dotted path of names (letters, digits, _ and -), e.g. data.items"),
    ({"pagination": {"style": "cursor", "cursor_parameter": "cursor"}},
     "endpoints[0].pagination.cursor_path: required for cursor pagination"),
    ({"pagination": {"style": "cursor", "cursor_path": "meta.next"}},
     "endpoints[0].pagination.cursor_parameter: required for cursor pagination"),
    ({"pagination": {"style": "limit_offset", "limit_parameter": "limit", "limit": 100}},
     "endpoints[0].pagination.offset_parameter: required for limit_offset pagination"),
    ({"pagination": {"style": "link_header", "page_parameter": "page"}},
     "endpoints[0].pagination.page_parameter: not used by link_header pagination (leave it out)"),
    ({"pagination": {"style": "none", "max_pages": 5}}, "endpoints[0].pagination.max_pages: not used by none pagination (leave it out)"),
    ({"pagination": {"style": "link_header", "max_pages": 100001}}, "endpoints[0].pagination.max_pages: must be at most 100000"),
    ({"pagination": {"style": "link_header", "max_pages": -1}}, "endpoints[0].pagination.max_pages: must be at least 0"),
    ({"pagination": {"style": "page_number", "page_parameter": "p", "first_page": 2}},
     "endpoints[0].pagination.first_page: must be at most 1"),
    ({"pagination": {"style": "page_number", "page_parameter": "p", "limit_parameter": "n", "limit": "ten"}},
     "endpoints[0].pagination.limit: must be a whole number"),
    ({"pagination": {"style": "link_header", "pages": 3}}, "endpoints[0].pagination.pages: unknown field"),
    ({"direction": "send", "method": "POST"}, "endpoints[0].pagination.style: only receive endpoints are paginated"),
])
def test_every_problem_names_its_exact_path(changes, expected):
    base = {"request_parameters": [], "pagination": {"style": "none"}}
    if "pagination" not in changes and "request_parameters" not in changes:
        base = {}
    assert expected in errors_of(with_endpoint(**{**base, **changes}))


def test_null_numbers_in_pagination_take_their_defaults():
    endpoint = manifests.validate(with_endpoint(pagination={"style": "link_header", "max_pages": None, "limit": None}))["endpoints"][0]
    assert endpoint["pagination"]["max_pages"] == 0 and endpoint["pagination"]["limit"] == 0


def test_run_placeholders_are_only_accepted_in_request_parameter_defaults():
    data = with_endpoint(path="/orders/{{since}}")
    assert 'endpoints[0].path: unknown variable "{{since}}"' in errors_of(data)


def test_export_then_apply_carries_the_new_fields(company):
    manifest = manifests.validate(with_endpoint())
    connector = editing.fresh(manifests.apply(manifest, connector=Connector(company=company)))
    endpoint = Endpoint.objects.get(connector=connector)
    assert endpoint.records_path == "data.orders" and endpoint.pagination["page_parameter"] == "page"
    assert endpoint.request_parameters[1]["location"] == "header"
    exported = manifests.export(connector)
    assert exported == manifest
    assert manifests.loads(manifests.dumps(exported)) == manifest  # through YAML text as well

    copy_ = editing.fresh(manifests.apply(manifests.loads(manifests.dumps(exported)), connector=Connector(company=company)))
    assert manifests.export(copy_) == manifest


def test_an_endpoint_saved_before_the_new_fields_exports_their_defaults(company):
    connector = editing.fresh(manifests.apply(manifests.validate(copy.deepcopy(VALID)), connector=Connector(company=company)))
    Endpoint.objects.filter(connector=connector).update(pagination={}, request_parameters=[])
    assert manifests.export(editing.fresh(connector)) == manifests.validate(copy.deepcopy(VALID))


# --- stored manifests from before the new fields ---------------------------------

def _old_style(manifest: dict) -> dict:
    """A manifest as stored before endpoints had the new keys."""
    old = copy.deepcopy(manifest)
    for endpoint in old["endpoints"]:
        for key in ("request_parameters", "body_encoding", "records_path", "pagination"):
            endpoint.pop(key)
    return old


def test_the_data_migration_keeps_connectors_installed_before_unmodified(company, admin_user):
    migration = importlib.import_module("marketplace.migrations.0003_normalise_endpoint_runtime_fields")
    entry = next(e for e in catalog.iter_catalog() if e.slug == "sandbox" and e.manifest["version"] == "1.2.0")
    listing = Listing.objects.create(slug="sandbox", name="Sandbox", system_type="Other")
    version = ListingVersion.objects.create(listing=listing, version="1.2.0", manifest=_old_style(entry.manifest))
    listing.latest_version = version
    listing.save()
    connector = catalog.install(version, company, admin_user)
    ConnectorChange.objects.filter(connector=connector).update(after=_old_style(entry.manifest))
    assert connector.installation.is_modified  # what the schema change alone would show

    migration.forwards(apps, None)

    connector = Connector.objects.get(pk=connector.pk)
    assert not connector.installation.is_modified
    assert ListingVersion.objects.get(pk=version.pk).manifest == entry.manifest
    assert ConnectorChange.objects.get(connector=connector).after == entry.manifest
    # Loading the catalog now publishes the newer versions without refusing the stored one.
    catalog.load_catalog()
    connector = Connector.objects.get(pk=connector.pk)
    assert connector.installation.update_available and not connector.installation.is_modified


def test_the_data_migration_leaves_normalised_and_odd_manifests_alone():
    migration = importlib.import_module("marketplace.migrations.0003_normalise_endpoint_runtime_fields")
    normal = manifests.validate(copy.deepcopy(VALID))
    assert migration.normalised(copy.deepcopy(normal)) is None
    assert migration.normalised(None) is None and migration.normalised({"endpoints": "x"}) is None
    assert migration.normalised(_old_style(normal)) == normal
