"""The Sandbox's accounts and the orders it received (tables kept from when it lived in patchworks_site)."""

from __future__ import annotations

import hashlib
import secrets

from django.db import models

from patchworks_site.models import Company


def _new_sandbox_account_id() -> str:
    return secrets.token_hex(16)


class SandboxAccountQuerySet(models.QuerySet):
    def for_company(self, company_id: int) -> SandboxAccount:
        """The company's Sandbox account, created on first use (without a key until one is issued)."""
        account, _ = self.get_or_create(company_id=company_id)
        return account

    def account_with_key(self, key: str) -> str | None:
        """The account id `key` opens, or None (unknown, or replaced by a rotation)."""
        if not key:
            return None
        return self.filter(key_hash=sandbox_key_hash(key)).values_list("account", flat=True).first()


def sandbox_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class SandboxAccount(models.Model):
    """A company's account at the built-in Sandbox API: where what its flows send is kept apart.

    `account` is the account's public id (received orders are stored under it, so
    they survive a rotation). The account key is a random credential that an
    Administrator issues on the received-orders page and is shown once; the
    Sandbox keeps only its SHA-256 (`key_hash`). Instances send it as their
    "Sandbox account key", an ordinary secret variable of the Sandbox connector,
    so it is encrypted, write-only and sent only where the instance's
    credentials are approved to go. Issuing a new key refuses the old one at once.
    """

    company = models.OneToOneField(Company, on_delete=models.CASCADE, related_name="sandbox_account")
    account = models.CharField(max_length=64, unique=True, default=_new_sandbox_account_id, editable=False)
    key_hash = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = SandboxAccountQuerySet.as_manager()

    class Meta:
        db_table = "patchworks_site_sandboxaccount"  # created when the Sandbox lived in patchworks_site

    def __str__(self) -> str:
        return f"Sandbox account of company {self.company_id}"

    def issue_key(self) -> str:
        """A new random key for the account, replacing the current one (refused from now on); only its hash is kept."""
        from django.utils import timezone

        key = secrets.token_urlsafe(32)
        self.key_hash = sandbox_key_hash(key)
        self.rotated_at = timezone.now()
        SandboxAccount.objects.filter(pk=self.pk).update(key_hash=self.key_hash, rotated_at=self.rotated_at)
        return key


class SandboxReceivedOrder(models.Model):
    """An order the Sandbox API received (POST /sandbox/api/orders), so a flow's result can be seen.

    The Sandbox is one practice API shared by the whole dashboard, so it keeps
    one account per company: a company's instances send its Sandbox account key
    (see SandboxAccount) in the X-Sandbox-Account header, and each company sees
    only what its own flows sent. Requests
    without a key share the anonymous account "". Each account keeps its newest
    orders within SANDBOX_MAX_ORDERS_PER_ACCOUNT and SANDBOX_MAX_BYTES_PER_ACCOUNT.
    """

    received_at = models.DateTimeField(db_index=True)
    account = models.CharField(max_length=64, blank=True, db_index=True)
    body = models.JSONField()
    size = models.PositiveIntegerField(default=0, help_text="Bytes of the order as JSON (for the storage bounds).")

    class Meta:
        db_table = "patchworks_site_sandboxreceivedorder"  # created when the Sandbox lived in patchworks_site
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Sandbox order received {self.received_at:%Y-%m-%d %H:%M:%S}"
