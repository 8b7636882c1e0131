"""Tenancy: companies own everything a customer creates; users belong to one company."""

from __future__ import annotations

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
    # The time zone the dashboard gives run times in where a wall-clock time matters (until when a run waits).
    time_zone = models.CharField(max_length=64, default="UTC")
    # At most this many of the company's runs hold a worker at once (within FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING);
    # the others wait queued, so one company's backlog never holds every worker.
    max_concurrent_runs = models.PositiveIntegerField(default=4)
    # When a worker last started one of the company's runs: companies take turns (flows.fairness).
    last_run_started_at = models.DateTimeField(null=True, blank=True, editable=False)

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


    @property
    def concurrent_run_limit(self) -> int:
        """How many of the company's runs may hold a worker at once: its own setting, within the platform's ceiling."""
        return self.run_limit_of(self.max_concurrent_runs)

    @staticmethod
    def run_limit_of(max_concurrent_runs: int) -> int:
        return max(1, min(max_concurrent_runs, settings.FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING))

    @property
    def at_limit_text(self) -> str:
        """What a run held back by the limit says on the run page and in the run log."""
        limit = self.concurrent_run_limit
        return f"queued: {self.name} is at its limit of {limit} concurrent run{'s' if limit != 1 else ''}"


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
