import copy

import pytest

from connectors import manifest as manifests

VALID = {
    "name": "Example",
    "system_type": "CRM",
    "version": "1.0.0",
    "base_url": "https://{{subdomain}}.example.com/api",
    "rate_limit": {"amount": 10, "unit": "second"},
    "variables": [{"key": "subdomain", "label": "Subdomain", "required": True}],
    "auth_methods": [
        {
            "key": "basic",
            "name": "Basic",
            "type": "basic",
            "variables": [
                {"key": "username", "label": "Username"},
                {"key": "password", "label": "Password", "secret": True},
            ],
            "test_request": {"path": "/me"},
        },
        {
            "key": "token",
            "name": "Token",
            "type": "token",
            "variables": [{"key": "api_key", "label": "API key", "secret": True}],
            "headers": {"X-Api-Key": "{{api_key}}"},
            "test_request": {"path": "/me", "expected_status": [200, 204]},
        },
    ],
    "endpoints": [
        {"key": "list_contacts", "name": "List contacts", "entity": "Contact", "direction": "receive", "method": "GET", "path": "/contacts"}
    ],
}


def errors_for(mutate) -> list[str]:
    data = copy.deepcopy(VALID)
    mutate(data)
    with pytest.raises(manifests.ManifestError) as exc:
        manifests.validate(data)
    return exc.value.errors


def test_a_valid_manifest_is_normalised_with_defaults():
    result = manifests.validate(copy.deepcopy(VALID))
    assert result["colour"] == "blue"
    assert result["time_zone"] == "UTC"
    assert result["concurrency_limit"] is None
    assert result["auth_methods"][0]["test_request"] == {"method": "GET", "path": "/me", "expected_status": [200]}
    assert result["auth_methods"][0]["variables"][1]["secret"] is True
    assert list(result)[:3] == ["name", "description", "system_type"]


def test_a_missing_nested_key_names_its_exact_path():
    assert errors_for(lambda d: d["auth_methods"][1]["variables"][0].pop("key")) == [
        "auth_methods[1].variables[0].key: required"
    ]


def test_wrong_types_and_choices_name_their_paths():
    def mutate(d):
        d["system_type"] = "Spreadsheet"
        d["rate_limit"]["amount"] = "lots"
        d["endpoints"][0]["direction"] = "sideways"

    errors = errors_for(mutate)
    assert "system_type: must be one of Accounting, CRM, eCommerce, ERP, Marketplaces, Other, PIM, POS, 3PL, WMS, Database" in errors
    assert "rate_limit.amount: must be a whole number" in errors
    assert "endpoints[0].direction: must be one of receive, send" in errors


def test_rate_limit_must_be_positive():
    assert errors_for(lambda d: d["rate_limit"].update(amount=0)) == ["rate_limit.amount: must be at least 1"]


def test_unknown_fields_are_reported():
    assert errors_for(lambda d: d["endpoints"][0].update(verb="GET")) == ["endpoints[0].verb: unknown field"]


def test_duplicate_keys_are_reported():
    assert errors_for(lambda d: d["endpoints"].append(dict(d["endpoints"][0]))) == [
        'endpoints[1].key: duplicate key "list_contacts"'
    ]


def test_basic_auth_needs_username_and_password_variables():
    assert errors_for(lambda d: d["auth_methods"][0]["variables"].pop()) == [
        'auth_methods[0].variables: a basic method needs a "password" variable'
    ]


def test_placeholders_must_name_declared_variables():
    def mutate(d):
        d["auth_methods"][1]["headers"]["X-Api-Key"] = "{{api_kee}}"
        d["base_url"] = "https://{{tenant}}.example.com"

    errors = errors_for(mutate)
    assert 'auth_methods[1].headers: unknown variable "{{api_kee}}"' in errors
    assert 'base_url: unknown variable "{{tenant}}" (declare it in variables)' in errors


def test_a_connector_needs_an_auth_method_and_an_endpoint():
    errors = errors_for(lambda d: d.update(auth_methods=[], endpoints=[]))
    assert "auth_methods: at least one authentication method is required" in errors
    assert "endpoints: at least one endpoint is required" in errors


def test_bad_time_zone_date_format_and_status_codes():
    def mutate(d):
        d["time_zone"] = "Mars/Olympus"
        d["date_format"] = "%Q-%m"
        d["auth_methods"][0]["test_request"]["expected_status"] = [200, 999]

    errors = errors_for(mutate)
    assert 'time_zone: unknown time zone "Mars/Olympus"' in errors
    assert 'date_format: unknown directive "%Q"' in errors
    assert "auth_methods[0].test_request.expected_status[1]: must be an HTTP status code (100-599)" in errors


def test_invalid_yaml_is_reported_with_its_position():
    with pytest.raises(manifests.ManifestError) as exc:
        manifests.loads("name: [unclosed\n")
    assert exc.value.errors[0].startswith("manifest: not valid YAML at line")


def test_a_manifest_that_is_not_a_mapping_is_refused():
    with pytest.raises(manifests.ManifestError) as exc:
        manifests.loads("- just\n- a list\n")
    assert exc.value.errors == ["manifest: must be a mapping"]


def test_yaml_aliases_are_refused():
    with pytest.raises(manifests.ManifestError) as exc:
        manifests.loads("a: &x [1, 2]\nb: *x\n")
    assert exc.value.errors == ["manifest: not valid YAML at line 2, column 4 (aliases are not allowed in a manifest)"]


def test_a_secret_variable_cannot_carry_a_default_value():
    """The definition is exported and shown in plain: a secret is entered per instance, never defined with it."""
    def mutate(d):
        d["auth_methods"][1]["variables"][0]["default"] = "sk_live_in_the_definition"
        d["variables"].append({"key": "signing_key", "label": "Signing key", "secret": True, "default": "also-secret"})

    assert errors_for(mutate) == [
        "variables[1].default: a secret variable cannot have a default value; each instance enters its own "
        "(the connector's definition is not encrypted)",
        "auth_methods[1].variables[0].default: a secret variable cannot have a default value; each instance "
        "enters its own (the connector's definition is not encrypted)",
    ]
    public_default = copy.deepcopy(VALID)
    public_default["variables"][0]["default"] = "acme"
    assert manifests.validate(public_default)["variables"][0]["default"] == "acme"


def test_an_unknown_field_is_reported_even_when_it_is_empty():
    assert errors_for(lambda d: d["endpoints"][0].update(verb=None)) == ["endpoints[0].verb: unknown field"]


def test_an_empty_choice_is_required_or_names_the_choices():
    errors = errors_for(lambda d: d.update(colour="", system_type=" "))
    assert "system_type: required" in errors
    assert any(error.startswith("colour: must be one of blue, cyan, ") for error in errors), errors


def test_text_fields_take_numbers_as_text_but_flags_and_numbers_stay_strict():
    def mutate(d):
        d["version"] = 2.5
        d["variables"][0]["required"] = "yes"
        d["rate_limit"]["amount"] = "10"

    assert sorted(errors_for(mutate)) == ["rate_limit.amount: must be a whole number", "variables[0].required: must be true or false"]
