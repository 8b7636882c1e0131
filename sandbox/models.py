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
    reference = models.CharField(
        max_length=255, blank=True, db_index=True,
        help_text="The order's reference (its reference, number or id, as the received-orders page shows it), "
                  "kept apart so duplicates are counted by the database.")
    idempotency_key = models.CharField(
        max_length=255, blank=True, db_index=True,
        help_text="The Idempotency-Key of the request that stored the order (blank: sent without one).")

    class Meta:
        db_table = "patchworks_site_sandboxreceivedorder"  # created when the Sandbox lived in patchworks_site
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Sandbox order received {self.received_at:%Y-%m-%d %H:%M:%S}"


class SandboxIdempotencyKey(models.Model):
    """An Idempotency-Key a Sandbox account used on POST /orders, with the request's hash and the first answer.

    The Sandbox honours the header the way Stripe does, so that a client that
    retries or resumes (a flow run sending the same batch again) can prove it
    delivers each order once: the same key with the same body gets the first
    answer again (nothing new is stored); with another body, 409. The row is
    written in the transaction that stores the orders, and the unique
    constraint on (account, key) makes a concurrent second request with the key
    fail at its insert, so only one of them stores anything. Only answers that
    stored orders (201) are kept: a refused request stored nothing, so its key
    may be used again, as Stripe does for requests that never began executing.
    Keys live KEY_LIFETIME (24 hours) and each account keeps as many as it keeps
    orders (see sandbox.idempotency).
    """

    account = models.CharField(max_length=64, blank=True)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(
        max_length=64, help_text="SHA-256 (hex) of the request body as canonical JSON (sorted keys, no spaces).")
    status_code = models.PositiveSmallIntegerField()
    response_body = models.TextField(help_text="The first answer's body, replayed byte for byte.")
    size = models.PositiveIntegerField(default=0, help_text="Bytes of the stored answer (for the storage bounds).")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "key"], name="sandbox_idempotency_key_once_per_account")]

    def __str__(self) -> str:
        return f"Sandbox idempotency key {self.key[:40]}"
