"""Tenancy: companies own everything a customer creates; users belong to one company."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


def duration_text(minutes: int) -> str:
    """60 -> "1 hour", 90 -> "90 minutes", 360 -> "6 hours"."""
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours:,} hour{'s' if hours != 1 else ''}"
    return f"{minutes:,} minute{'s' if minutes != 1 else ''}"


class Company(models.Model):
    name = models.CharField(max_length=120, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # How long flow run logs, and the payload samples within them, are kept.
    run_log_retention_days = models.PositiveIntegerField(default=7)
    payload_retention_hours = models.PositiveIntegerField(default=72)
    # A run still going after this many minutes is stopped and fails (within FLOW_RUN_MAX_DURATION_CEILING_MINUTES).
    max_run_duration_minutes = models.PositiveIntegerField(default=60)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "companies"

    def __str__(self) -> str:
        return self.name

    @property
    def run_duration_limit(self) -> timedelta:
        """How long one of the company's runs may take: its own setting, within the platform's ceiling."""
        return timedelta(minutes=min(self.max_run_duration_minutes, settings.FLOW_RUN_MAX_DURATION_CEILING_MINUTES))

    @property
    def run_duration_text(self) -> str:
        """The limit in words, and whose it is ("1 hour, the company's maximum run duration")."""
        ceiling = settings.FLOW_RUN_MAX_DURATION_CEILING_MINUTES
        if self.max_run_duration_minutes > ceiling:
            return f"{duration_text(ceiling)}, the platform's maximum run duration (FLOW_RUN_MAX_DURATION_CEILING_MINUTES)"
        return f"{duration_text(self.max_run_duration_minutes)}, the company's maximum run duration"


class Role(models.TextChoices):
    ADMINISTRATOR = "administrator", "Administrator"
    MANAGER = "manager", "Manager"
    USER = "user", "User"
    READ_ONLY = "read_only", "Read-only"


class User(AbstractUser):
    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, related_name="users", null=True, blank=True
    )
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.READ_ONLY)

    @property
    def can_manage_connectors(self) -> bool:
        """Install, update, modify and remove connectors; manage connection pools."""
        return self.company_id is not None and self.role in {Role.ADMINISTRATOR, Role.MANAGER}

    @property
    def can_manage_instances(self) -> bool:
        """Add, update and remove instances and process flows."""
        return self.company_id is not None and self.role in {
            Role.ADMINISTRATOR,
            Role.MANAGER,
            Role.USER,
        }

    @property
    def is_company_administrator(self) -> bool:
        return self.company_id is not None and self.role == Role.ADMINISTRATOR


class AuditAction(models.TextChoices):
    ADDED = "added", "added"
    UPDATED = "updated", "updated"
    DELETED = "deleted", "deleted"


class AuditEntryQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> AuditEntryQuerySet:
        return self.filter(company=company)

    def search(self, query: str = "", action: str = "") -> AuditEntryQuerySet:
        entries = self
        if action:
            entries = entries.filter(action=action)
        for word in query.split():
            entries = entries.filter(
                models.Q(object_repr__icontains=word)
                | models.Q(object_type__icontains=word)
                | models.Q(user__username__icontains=word)
                | models.Q(user__first_name__icontains=word)
                | models.Q(user__last_name__icontains=word)
            )
        return entries


class AuditEntry(models.Model):
    """One change to a company-owned object: who, when, and which fields changed.

    `changes` maps a field name to [old, new] for updates and to the value for
    added and deleted objects. Secret fields only ever say "set" or "changed".
    """

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="audit_entries")
    user = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    action = models.CharField(max_length=10, choices=AuditAction.choices)
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    changes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["company", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.object_type} {self.object_repr} {self.action}"


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
    they survive a rotation). The account key is a random credential: the Sandbox
    keeps only its SHA-256 (`key_hash`); the instance client holds it encrypted
    under the credential keys (`key_ciphertext`, written and read by the
    instances app) and sends it only to the Sandbox this deployment serves.
    Rotating empties both, so the old key stops working at once and the client
    issues a new one the next time it calls the Sandbox.
    """

    company = models.OneToOneField(Company, on_delete=models.CASCADE, related_name="sandbox_account")
    account = models.CharField(max_length=64, unique=True, default=_new_sandbox_account_id, editable=False)
    key_hash = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    key_ciphertext = models.TextField(blank=True, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = SandboxAccountQuerySet.as_manager()

    def __str__(self) -> str:
        return f"Sandbox account of company {self.company_id}"

    def rotate(self) -> None:
        """Revoke the current key (a new one is issued on the next call to the Sandbox)."""
        from django.utils import timezone

        self.rotated_at = timezone.now()
        SandboxAccount.objects.filter(pk=self.pk).update(key_hash="", key_ciphertext="", rotated_at=self.rotated_at)
        self.key_hash = self.key_ciphertext = ""


class SandboxReceivedOrder(models.Model):
    """An order the Sandbox API received (POST /sandbox/api/orders), so a flow's result can be seen.

    The Sandbox is one practice API shared by the whole dashboard, so it keeps
    one account per company: the instance client sends its company's Sandbox
    account key (see SandboxAccount) with every request to this deployment's
    Sandbox, and each company sees only what its own flows sent. Requests
    without a key share the anonymous account "". Each account keeps its newest
    orders within SANDBOX_MAX_ORDERS_PER_ACCOUNT and SANDBOX_MAX_BYTES_PER_ACCOUNT.
    """

    received_at = models.DateTimeField(db_index=True)
    account = models.CharField(max_length=64, blank=True, db_index=True)
    body = models.JSONField()
    size = models.PositiveIntegerField(default=0, help_text="Bytes of the order as JSON (for the storage bounds).")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Sandbox order received {self.received_at:%Y-%m-%d %H:%M:%S}"
