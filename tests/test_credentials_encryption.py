"""Credentials at rest: encrypted, bound to their instance, and never shown back."""

from __future__ import annotations

import base64
import io
from urllib.parse import quote, quote_plus

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.urls import reverse

from instances.crypto import CredentialDecryptError
from instances.models import Instance
from patchworks_site.models import User

SECRET = "sk_live/Zq9+Wx7=Tt"
TEST_KEY = "test-1:a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="


def spellings(secret: str = SECRET) -> list[str]:
    return [secret, quote(secret, safe=""), quote_plus(secret), base64.b64encode(secret.encode()).decode()]


def another_key(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(bytes(range(32))).decode()}"


@pytest.fixture
def connector(company, make_connector):
    return make_connector(company)


@pytest.fixture
def instance(connector, make_instance) -> Instance:
    return make_instance(connector, secrets={"api_token": SECRET}, values={"region": "eu-west"})


def test_secrets_come_back_as_they_were_set(instance):
    stored = Instance.objects.get(pk=instance.pk)

    assert stored.get_secrets() == {"api_token": SECRET}
    assert stored.secrets_key_id == "test-1"
    assert stored.secrets_ciphertext.startswith("v1:test-1:")
    assert all(spelling not in stored.secrets_ciphertext for spelling in spellings())


def test_the_same_secret_encrypts_differently_each_time(instance):
    first = instance.secrets_ciphertext
    instance.set_secrets({"api_token": SECRET})

    assert instance.secrets_ciphertext != first
    assert instance.get_secrets() == {"api_token": SECRET}


def test_no_secrets_are_stored_as_an_empty_value(instance):
    instance.set_secrets({})

    assert instance.secrets_ciphertext == ""
    assert instance.get_secrets() == {}


def test_a_ciphertext_copied_to_another_instance_does_not_decrypt(instance, connector, make_instance):
    other = make_instance(connector, name="Second", secrets={"api_token": "other-token-1"})
    Instance.objects.filter(pk=other.pk).update(secrets_ciphertext=instance.secrets_ciphertext)

    with pytest.raises(CredentialDecryptError, match="could not be decrypted"):
        Instance.objects.get(pk=other.pk).get_secrets()


def test_a_ciphertext_is_bound_to_the_company_too(instance, other_company):
    # Same instance uid, other company: only the company part of the binding differs.
    moved = Instance(company=other_company, uid=instance.uid, secrets_ciphertext=instance.secrets_ciphertext)

    with pytest.raises(CredentialDecryptError):
        moved.get_secrets()


@pytest.mark.parametrize("position", [10, -1])
def test_tampered_ciphertext_does_not_decrypt(instance, position):
    fmt, key_id, payload = instance.secrets_ciphertext.split(":", 2)
    raw = bytearray(base64.b64decode(payload))
    raw[position] ^= 0x01
    instance.secrets_ciphertext = f"{fmt}:{key_id}:{base64.b64encode(bytes(raw)).decode()}"

    with pytest.raises(CredentialDecryptError, match="wrong key or tampered data"):
        instance.get_secrets()


@pytest.mark.parametrize("garbage", ["not-a-ciphertext", "v1:test-1:!!!", "v1:test-1:AAAA", "v2:test-1:AAAA"])
def test_malformed_ciphertext_is_an_error_not_an_empty_result(instance, garbage):
    instance.secrets_ciphertext = garbage

    with pytest.raises(CredentialDecryptError):
        instance.get_secrets()


def test_a_ciphertext_under_a_key_that_is_no_longer_configured_fails_loudly(instance, settings):
    settings.CREDENTIAL_KEYS = another_key("test-2")

    with pytest.raises(CredentialDecryptError, match=r"credential key 'test-1' is not configured \(CREDENTIAL_KEYS\)"):
        Instance.objects.get(pk=instance.pk).get_secrets()


def test_after_a_key_rotation_old_secrets_still_decrypt_and_new_ones_use_the_new_key(instance, settings):
    settings.CREDENTIAL_KEYS = f"{TEST_KEY},{another_key('test-2')}"
    stored = Instance.objects.get(pk=instance.pk)

    assert stored.get_secrets() == {"api_token": SECRET}
    stored.set_secrets({"api_token": SECRET})
    assert stored.secrets_key_id == "test-2"
    assert stored.get_secrets() == {"api_token": SECRET}


def test_encrypting_without_any_key_is_a_configuration_error(instance, settings):
    settings.CREDENTIAL_KEYS = ""

    with pytest.raises(ImproperlyConfigured, match="CREDENTIAL_KEYS is empty"):
        instance.set_secrets({"api_token": SECRET})


def test_a_database_dump_contains_no_secret(instance):
    out = io.StringIO()
    call_command("dumpdata", stdout=out)
    dump = out.getvalue()

    assert f'"name": "{instance.name}"' in dump and "eu-west" in dump  # the instance is in it ...
    for spelling in spellings():
        assert spelling not in dump  # ... but not its secret, in any spelling


def test_the_admin_change_page_shows_that_a_secret_is_set_but_not_the_secret(instance, client, db):
    staff = User.objects.create_superuser(username="root", email="root@example.com", password="pw-for-tests")
    client.force_login(staff)

    response = client.get(reverse("admin:instances_instance_change", args=[instance.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "encrypted under key test-1" in page
    assert instance.secrets_ciphertext not in page
    for spelling in spellings():
        assert spelling not in page
