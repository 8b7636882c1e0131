"""The company's key for the Sandbox this deployment serves: issued on first use, held encrypted.

The Sandbox (sandbox.api) keeps only the key's hash; the plain
key is encrypted here under the credential keys, bound to its account, and the
instance client sends it only to the Sandbox's own origin (sandbox_api.is_own_sandbox).
"""

from __future__ import annotations

import secrets

from instances import crypto
from sandbox.models import SandboxAccount, sandbox_key_hash


def _aad(account: SandboxAccount) -> str:
    return f"sandbox-account:{account.company_id}:{account.pk}"


def encrypt_key(account: SandboxAccount, key: str) -> str:
    return crypto.encrypt({"key": key}, _aad(account))


def decrypt_key(account: SandboxAccount) -> str:
    """The account's key; CredentialDecryptError when it cannot be decrypted (never a fallback)."""
    return crypto.decrypt(account.key_ciphertext, _aad(account))["key"]


def account_key(company_id: int) -> str:
    """The company's Sandbox account key, issuing a new random one when there is none (first use, or rotated)."""
    for _ in range(3):
        account = SandboxAccount.objects.for_company(company_id)
        if account.key_ciphertext:
            return decrypt_key(account)
        key = secrets.token_urlsafe(32)
        # Only one process issues the key: the others read the one that won.
        issued = SandboxAccount.objects.filter(pk=account.pk, key_hash="", key_ciphertext="").update(
            key_hash=sandbox_key_hash(key), key_ciphertext=encrypt_key(account, key),
        )
        if issued:
            return key
    raise RuntimeError("The Sandbox account key changed while it was being issued; try again.")
