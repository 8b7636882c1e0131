"""Credentials at rest: AES-GCM under a key id, bound to the owning company and instance.

Keys come from settings.CREDENTIAL_KEYS ("id:base64key,id2:base64key"; the last
one encrypts). The associated data ties a ciphertext to one instance of one
company, so a ciphertext copied onto another row does not decrypt. Any failure
to decrypt raises CredentialDecryptError: there is no silent fallback.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

FORMAT = "v1"

logger = logging.getLogger(__name__)


class CredentialDecryptError(Exception):
    pass


def parse_keys(spec: str) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key_id, sep, encoded = part.partition(":")
        if not sep or not key_id:
            raise ImproperlyConfigured('CREDENTIAL_KEYS entries look like "key-id:base64key"')
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise ImproperlyConfigured(f"CREDENTIAL_KEYS: key {key_id!r} is not base64") from exc
        if len(key) != 32:
            raise ImproperlyConfigured(f"CREDENTIAL_KEYS: key {key_id!r} must be 32 bytes")
        keys[key_id] = key
    return keys


@lru_cache(maxsize=4)
def _keyring(spec: str) -> tuple[dict[str, bytes], str]:
    keys = parse_keys(spec)
    if not keys:
        raise ImproperlyConfigured("CREDENTIAL_KEYS is empty: no key to encrypt credentials with.")
    return keys, list(keys)[-1]


def keyring() -> tuple[dict[str, bytes], str]:
    """(all keys by id, id of the current key)."""
    return _keyring(settings.CREDENTIAL_KEYS)


def current_key_id() -> str:
    return keyring()[1]


def new_key_entry(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def ensure_dev_key_file(path: Path) -> bool:
    """Create a development key file if missing (never used when DEBUG is off)."""
    if path.exists():
        return False
    path.write_text(new_key_entry("dev-1") + "\n")
    os.chmod(path, 0o600)
    return True


def encrypt(values: dict[str, str], aad: str) -> str:
    keys, key_id = keyring()
    nonce = secrets.token_bytes(12)
    ciphertext = AESGCM(keys[key_id]).encrypt(nonce, json.dumps(values).encode(), aad.encode())
    return f"{FORMAT}:{key_id}:{base64.b64encode(nonce + ciphertext).decode()}"


def key_id_of(token: str) -> str:
    return token.split(":", 2)[1] if token.count(":") >= 2 else ""


def decrypt(token: str, aad: str) -> dict[str, str]:
    if not token:
        return {}
    try:
        fmt, key_id, payload = token.split(":", 2)
    except ValueError:
        raise CredentialDecryptError("stored credentials are not in a known format") from None
    keys, _ = keyring()
    if fmt != FORMAT:
        raise CredentialDecryptError(f"stored credentials use unknown format {fmt!r}")
    if key_id not in keys:
        raise CredentialDecryptError(f"credential key {key_id!r} is not configured (CREDENTIAL_KEYS)")
    try:
        raw = base64.b64decode(payload)
        plain = AESGCM(keys[key_id]).decrypt(raw[:12], raw[12:], aad.encode())
        return json.loads(plain)
    except (InvalidTag, ValueError) as exc:
        raise CredentialDecryptError(
            "stored credentials could not be decrypted (wrong key or tampered data)"
        ) from exc


def encrypt_cached(value: str, cache_key: str) -> str:
    """`value` as it may go into a shared cache (Redis): encrypted like stored credentials, bound to `cache_key`."""
    return encrypt({"value": value}, f"cache:{cache_key}")


def decrypt_cached(stored: object, cache_key: str) -> str | None:
    """What `encrypt_cached` put under `cache_key`; None (a cache miss) when absent or not decryptable.

    A value that does not decrypt (a rotated-out key, an entry from before
    cached values were encrypted, tampering) is logged without its content.
    """
    if not isinstance(stored, str) or not stored:
        return None
    try:
        value = decrypt(stored, f"cache:{cache_key}").get("value")
    except (CredentialDecryptError, AttributeError) as exc:
        logger.warning("A cached value under %s could not be decrypted (%s); treated as not cached.", cache_key, exc)
        return None
    return value if isinstance(value, str) and value else None
