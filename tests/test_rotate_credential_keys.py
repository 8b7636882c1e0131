import base64

import pytest
from django.core.management import CommandError, call_command

from instances import crypto
from instances.models import Instance

OLD = "test-1:" + base64.b64encode(b"k" * 32).decode()
NEW = "test-2:" + base64.b64encode(b"n" * 32).decode()


def test_rotation_re_encrypts_every_instance_under_the_newest_key(settings, company, make_connector, make_instance):
    connector = make_connector(company)
    first = make_instance(connector, "One", secrets={"api_token": "first-secret"})
    second = make_instance(connector, "Two", secrets={"api_token": "second-secret"})
    assert first.secrets_key_id == "test-1"

    settings.CREDENTIAL_KEYS = f"{OLD},{NEW}"
    call_command("rotate_credential_keys")
    for instance, secret in ((first, "first-secret"), (second, "second-secret")):
        instance.refresh_from_db()
        assert instance.secrets_key_id == "test-2"
        assert instance.get_secrets() == {"api_token": secret}

    settings.CREDENTIAL_KEYS = NEW  # the old key can now be dropped
    first.refresh_from_db()
    assert first.get_secrets() == {"api_token": "first-secret"}


def test_a_decrypt_failure_stops_rotation_loudly_and_changes_nothing(settings, company, make_connector, make_instance):
    connector = make_connector(company)
    good = make_instance(connector, "Good", secrets={"api_token": "good-secret"})
    bad = make_instance(connector, "Bad", secrets={"api_token": "bad-secret"})
    Instance.objects.filter(pk=bad.pk).update(secrets_ciphertext=bad.secrets_ciphertext[:-8] + "AAAAAAA=")
    settings.CREDENTIAL_KEYS = f"{OLD},{NEW}"
    with pytest.raises(CommandError) as exc:
        call_command("rotate_credential_keys")
    assert f"Instance {bad.pk}" in str(exc.value) and "Nothing was re-encrypted" in str(exc.value)
    good.refresh_from_db()
    assert good.secrets_key_id == "test-1"


def test_a_missing_key_is_a_loud_error_not_a_fallback(settings, company, make_connector, make_instance):
    instance = make_instance(make_connector(company), secrets={"api_token": "secret"})
    settings.CREDENTIAL_KEYS = NEW
    with pytest.raises(crypto.CredentialDecryptError, match="not configured"):
        Instance.objects.get(pk=instance.pk).get_secrets()


def test_generate_key_prints_a_usable_entry(capsys, settings):
    call_command("rotate_credential_keys", "--generate-key", "2027-01")
    entry = capsys.readouterr().out.strip()
    assert entry.startswith("2027-01:")
    assert len(crypto.parse_keys(entry)["2027-01"]) == 32
