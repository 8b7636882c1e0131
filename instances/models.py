"""Instances (a company's credentials and settings for one connector) and connection pools."""

from __future__ import annotations

import math
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from connectors.models import AuthMethod, Connector, RateLimitUnit
from instances import crypto, destinations
from patchworks_site.models import Company


class ConnectionPoolQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> ConnectionPoolQuerySet:
        return self.filter(company=company)


class ConnectionPool(models.Model):
    """A named concurrency limit shared by the instances assigned to it."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="connection_pools")
    name = models.CharField(max_length=120)
    limit = models.PositiveIntegerField(help_text="Concurrent requests in flight.")
    timeout_seconds = models.PositiveIntegerField(
        default=30, help_text="How long a request waits for a free slot."
    )
    connectors = models.ManyToManyField(Connector, related_name="connection_pools", blank=True)

    objects = ConnectionPoolQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["company", "name"], name="unique_pool_name_per_company")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.limit} concurrent)"

    @staticmethod
    def shortest_timeout() -> int:
        """The shortest timeout a pool may be given (whole seconds): longer than a slot's lease by a third of it."""
        from instances.outbound.limits.store import shortest_pool_timeout

        return math.ceil(round(shortest_pool_timeout(), 6))

    def clean(self) -> None:
        """A waiter must outlast a slot's lease: a crashed worker's slot comes back only when its lease runs out."""
        super().clean()
        from instances.outbound.limits.store import pool_lease_seconds

        shortest = self.shortest_timeout()
        if self.timeout_seconds is not None and self.timeout_seconds < shortest:
            raise ValidationError({
                "timeout_seconds": (
                    f"The timeout must be at least {shortest} seconds: longer than the {pool_lease_seconds():g} s "
                    "lease of a pool slot, after which the slot of a crashed worker comes back, "
                    "so that a waiting request is still there to take it."
                )
            })


DESTINATION_CHANGED = "The API address changed"


def destination_changed_message(unapproved: list[str]) -> str:
    return (
        f"{DESTINATION_CHANGED} to {destinations.describe(unapproved)}: the stored credentials are not sent there "
        "until they are entered again."
    )[:300]


class InstanceQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> InstanceQuerySet:
        return self.filter(company=company)


class Instance(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="instances")
    connector = models.ForeignKey(Connector, on_delete=models.PROTECT, related_name="instances")
    name = models.CharField(max_length=120)
    auth_method = models.ForeignKey(AuthMethod, on_delete=models.PROTECT, related_name="instances")
    time_zone = models.CharField(max_length=64, default="UTC")
    date_format = models.CharField(max_length=64)
    rate_limit_amount = models.PositiveIntegerField()
    rate_limit_unit = models.CharField(max_length=10, choices=RateLimitUnit.choices)
    rate_limit_group = models.CharField(
        "shared rate limit",
        max_length=120,
        blank=True,
        help_text="Instances of your company with the same shared rate limit name share one rate limit.",
    )
    connection_pool = models.ForeignKey(
        ConnectionPool, on_delete=models.PROTECT, null=True, blank=True, related_name="instances"
    )
    values = models.JSONField(default=dict, blank=True, help_text="Non-secret variable values.")
    secrets_ciphertext = models.TextField(blank=True, editable=False)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    # When a flow run last sent a request with this instance (set by the flow runner).
    last_used_by_run_at = models.DateTimeField(null=True, blank=True)
    last_check_ok = models.BooleanField(null=True, blank=True)
    last_check_message = models.CharField(max_length=300, blank=True)
    # The origins (scheme://host:port) the stored secrets were entered for; see
    # instances/destinations.py. Filled on the first save that stores secrets.
    credentials_approved_for = models.JSONField(default=list, blank=True)
    reauth_reason = models.CharField(
        max_length=300, blank=True, help_text="Why the credentials must be entered again (empty when they need not)."
    )
    # OAuth 2 authorisation code: when the stored access token is to be refreshed
    # (its expiry less a safety margin); null when it does not expire or there is none.
    token_refresh_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = InstanceQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["connector", "name"], name="unique_instance_name_per_connector")
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def with_connector_defaults(cls, connector: Connector, **fields) -> Instance:
        """A new (unsaved) instance whose settings start from the connector's defaults."""
        defaults = {
            "company": connector.company,
            "time_zone": connector.time_zone,
            "date_format": connector.date_format,
            "rate_limit_amount": connector.rate_limit_amount,
            "rate_limit_unit": connector.rate_limit_unit,
        }
        return cls(connector=connector, **{**defaults, **fields})

    @property
    def _aad(self) -> str:
        return f"company:{self.company_id}:instance:{self.uid}"

    def save(self, *args, **kwargs) -> None:
        if self.secrets_ciphertext and not self.credentials_approved_for:
            # Secrets stored for the first time are entered for today's destination.
            self.credentials_approved_for = self.current_destinations()
        super().save(*args, **kwargs)

    def current_destinations(self, values: dict[str, str] | None = None, auth_method: AuthMethod | None = None) -> list[str]:
        """Where requests with this instance's credentials go now (or with other `values` / method)."""
        return destinations.for_method(self.connector, auth_method or self.auth_method, self.values if values is None else values)

    def unapproved_destinations(self, values: dict[str, str] | None = None, auth_method: AuthMethod | None = None) -> list[str]:
        """Origins the stored secrets would now go to but were not entered for (empty without secrets)."""
        if not self.secrets_ciphertext:
            return []
        approved = set(self.credentials_approved_for)
        return [d for d in self.current_destinations(values, auth_method) if d not in approved]

    @property
    def needs_reauth(self) -> bool:
        return bool(self.reauth_reason)

    def refresh_reauth_status(self) -> None:
        """Mark (or clear) "re-authentication needed" after the destination of the credentials changed."""
        unapproved = self.unapproved_destinations()
        if unapproved:
            reason = destination_changed_message(unapproved)
        elif self.reauth_reason.startswith(DESTINATION_CHANGED):
            reason = ""
        else:
            return
        if reason != self.reauth_reason:
            self.reauth_reason = reason
            Instance.objects.filter(pk=self.pk).update(reauth_reason=reason)

    def get_secrets(self) -> dict[str, str]:
        return crypto.decrypt(self.secrets_ciphertext, self._aad)

    def set_secrets(self, values: dict[str, str]) -> None:
        self.secrets_ciphertext = crypto.encrypt(values, self._aad) if values else ""

    @property
    def secrets_key_id(self) -> str:
        return crypto.key_id_of(self.secrets_ciphertext)

    def take_connected(
        self, auth_method: AuthMethod, values: dict[str, str], secrets: dict[str, str], refresh_due_at, **details
    ) -> None:
        """Take on the credentials an OAuth Connect obtained and checked, with the settings given beside them.

        `details` are settings (name, time zone, date format, rate limit, connection_pool: a pool, its pk or
        None). Once saved, the credentials are approved for where they go now; no re-authentication is due.
        """
        if "connection_pool" in details:
            pool = details.pop("connection_pool")
            self.connection_pool_id = pool.pk if isinstance(pool, models.Model) else pool
        for name, value in details.items():
            setattr(self, name, value)
        self.auth_method = auth_method
        self.values = values
        self.reauth_reason = ""
        self.token_refresh_due_at = refresh_due_at
        self.credentials_approved_for = []  # approved for today's destinations when saved (see save)
        self.set_secrets(secrets)

    def flows_using(self) -> list:
        """Process flows with a connection shape on this instance, by name.

        Read through the reverse relation: the flows app sits above instances.
        """
        shapes = self.connection_shapes.select_related("flow").order_by("flow__name")
        return list({shape.flow_id: shape.flow for shape in shapes}.values())

    @property
    def rate_limit_display(self) -> str:
        return f"{self.rate_limit_amount} {self.get_rate_limit_unit_display()}"

    def sharing_rate_limit(self) -> InstanceQuerySet:
        """The other instances of the company in the same shared rate limit."""
        if not self.rate_limit_group:
            return Instance.objects.none()
        return (
            Instance.objects.for_company(self.company)
            .filter(rate_limit_group__iexact=self.rate_limit_group)
            .exclude(pk=self.pk)
        )


class CredentialCheckQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> CredentialCheckQuerySet:
        return self.filter(company=company)


class CredentialCheck(models.Model):
    """One live check of credentials: the test request and its response, redacted before saving.

    Checks made by the new instance wizard with credentials that were refused
    have no instance (nothing was created), but are kept for staff to review.
    """

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="credential_checks")
    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="credential_checks")
    instance = models.ForeignKey(
        Instance, on_delete=models.CASCADE, null=True, blank=True, related_name="checks"
    )
    auth_method = models.ForeignKey(AuthMethod, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    ok = models.BooleanField()
    message = models.CharField(max_length=300)
    request_method = models.CharField(max_length=10)
    request_url = models.TextField()
    request_headers = models.JSONField(default=dict)
    request_body = models.TextField(blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict)
    response_body = models.TextField(blank=True)
    response_truncated = models.BooleanField(default=False)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    rate_limit_note = models.CharField(max_length=300, blank=True, help_text="429 answers met and retried.")

    objects = CredentialCheckQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{'OK' if self.ok else 'Failed'}: {self.request_method} {self.request_url}"


class CheckSchedule(models.Model):
    """How often a company's instances have their stored credentials re-checked."""

    company = models.OneToOneField(Company, on_delete=models.CASCADE, related_name="check_schedule")
    INTERVALS = [
        (0, "never (only when someone clicks check now)"),
        (15, "every 15 minutes"),
        (60, "every hour"),
        (6 * 60, "every 6 hours"),
        (24 * 60, "every day"),
        (7 * 24 * 60, "every week"),
    ]
    interval_minutes = models.PositiveIntegerField(
        default=24 * 60, choices=INTERVALS, help_text="Re-check every instance's credentials this often (0: never)."
    )

    def __str__(self) -> str:
        return f"every {self.interval_minutes} minutes"


class OAuthAuthorizationQuerySet(models.QuerySet):
    def for_user(self, user) -> OAuthAuthorizationQuerySet:
        return self.filter(company_id=user.company_id, user=user)


class OAuthAuthorization(models.Model):
    """One Connect step in progress: the browser was sent to the provider's authorise page.

    The random `state` ties the callback to the user, company and wizard (or
    instance) that started it, and is used once. The client secret the user
    typed and the PKCE verifier are kept encrypted until the callback.
    """

    state = models.CharField(max_length=64, unique=True)
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="+")
    auth_method = models.ForeignKey(AuthMethod, on_delete=models.CASCADE, related_name="+")
    # Set when an existing instance is (re)connected; null for the new instance wizard.
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    wizard_state = models.JSONField(default=dict, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Instance details to save with the tokens.")
    values = models.JSONField(default=dict, blank=True)
    secrets_ciphertext = models.TextField(blank=True)
    redirect_uri = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    objects = OAuthAuthorizationQuerySet.as_manager()

    @property
    def _aad(self) -> str:
        return f"company:{self.company_id}:oauth-authorization:{self.state}"

    def get_secrets(self) -> dict[str, str]:
        return crypto.decrypt(self.secrets_ciphertext, self._aad) if self.secrets_ciphertext else {}

    def set_secrets(self, values: dict[str, str]) -> None:
        self.secrets_ciphertext = crypto.encrypt(values, self._aad) if values else ""
