"""Connector definitions: the connector, its variables, authentication methods and endpoints.

The relational rows are what instances and connection shapes point at; the
manifest (see `connectors.manifest`) is their one serialised form.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Min, Q, Subquery

from connectors.idempotency import idempotency_name_error
from patchworks_site.models import Company


class SystemType(models.TextChoices):
    ACCOUNTING = "Accounting", "Accounting"
    CRM = "CRM", "CRM"
    ECOMMERCE = "eCommerce", "eCommerce"
    ERP = "ERP", "ERP"
    MARKETPLACES = "Marketplaces", "Marketplaces"
    OTHER = "Other", "Other"
    PIM = "PIM", "PIM"
    POS = "POS", "POS"
    THREE_PL = "3PL", "3PL"
    WMS = "WMS", "WMS"
    DATABASE = "Database", "Database"


_BASE_COLOURS = ["blue", "cyan", "gray", "green", "orange", "pink", "purple", "red", "yellow"]
Colour = models.TextChoices(
    "Colour",
    [(c.upper(), c) for c in _BASE_COLOURS]
    + [(f"{c.upper()}_INVERTED", f"{c}_inverted") for c in _BASE_COLOURS],
)


class Protocol(models.TextChoices):
    HTTP = "HTTP", "HTTP"


class RateLimitUnit(models.TextChoices):
    SECOND = "second", "per second"
    MINUTE = "minute", "per minute"
    HOUR = "hour", "per hour"
    DAY = "day", "per day"


class AuthType(models.TextChoices):
    BASIC = "basic", "Basic"
    TOKEN = "token", "Token-based"
    OAUTH2_CLIENT_CREDENTIALS = "oauth2_client_credentials", "OAuth 2 (client credentials)"
    OAUTH2_AUTHORIZATION_CODE = "oauth2_authorization_code", "OAuth 2 (authorisation code)"
    OAUTH1 = "oauth1", "OAuth 1"


class Direction(models.TextChoices):
    RECEIVE = "receive"
    SEND = "send"


class HttpMethod(models.TextChoices):
    # Labelled as written everywhere else (without labels Django would show "Get").
    GET = "GET", "GET"
    POST = "POST", "POST"
    PUT = "PUT", "PUT"
    PATCH = "PATCH", "PATCH"
    DELETE = "DELETE", "DELETE"


class ConnectorQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> ConnectorQuerySet:
        return self.filter(company=company)

    def search(self, query: str = "", system_type: str = "") -> ConnectorQuerySet:
        qs = self
        if query:
            qs = qs.filter(name__icontains=query)
        if system_type:
            qs = qs.filter(system_type=system_type)
        return qs


class Connector(models.Model):
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="connectors")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    system_type = models.CharField(max_length=20, choices=SystemType.choices)
    colour = models.CharField(max_length=20, choices=Colour.choices, default="blue")
    protocol = models.CharField(max_length=10, choices=Protocol.choices, default=Protocol.HTTP)
    version = models.CharField(max_length=40)
    version_name = models.CharField(max_length=120, blank=True)
    base_url = models.CharField(max_length=500)
    date_format = models.CharField(max_length=64, help_text="Default for new instances.")
    rate_limit_amount = models.PositiveIntegerField(help_text="Default for new instances.")
    rate_limit_unit = models.CharField(max_length=10, choices=RateLimitUnit.choices)
    time_zone = models.CharField(max_length=64, default="UTC", help_text="Default for new instances.")
    concurrency_limit = models.PositiveIntegerField(null=True, blank=True)
    # The icon is not part of the manifest: it is an uploaded image, served by
    # connectors:icon with a restrictive Content-Security-Policy.
    icon = models.BinaryField(blank=True, editable=False, default=b"")
    icon_content_type = models.CharField(max_length=40, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = ConnectorQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["company", "name"])]

    def __str__(self) -> str:
        # A copy installed alongside is already named "Name (version)".
        suffix = f"({self.version})"
        return self.name if self.name.endswith(suffix) else f"{self.name} {suffix}"

    @property
    def initials(self) -> str:
        words = [w for w in self.name.replace("-", " ").split() if w[:1].isalnum()]
        return "".join(w[0] for w in words[:2]).upper() or "?"

    @property
    def is_ready(self) -> bool:
        """Usable for instances: at least one authentication method and one endpoint."""
        return bool(self.auth_methods.all()) and bool(self.endpoints.all())

    @property
    def connector_variables(self) -> list[Variable]:
        """Connector-level variables (uses the prefetched `variables` when present)."""
        return [v for v in self.variables.all() if v.auth_method_id is None]

    @staticmethod
    def note_alongside_copies(company: Company, connectors: list[Connector]) -> None:
        """Mark each out-of-date prebuilt connector whose latest version is installed alongside.

        Sets `connector.alongside_copy` (the newer copy, or None) with one query for the page.
        The query returns one copy per listing (the oldest: lowest pk), however many there are.
        """
        listing_ids = {
            c.installation.listing_version.listing_id
            for c in connectors
            if hasattr(c, "installation") and c.installation.update_available
        }
        copies: dict[int, Connector] = {}
        if listing_ids:
            first_of_each_listing = (
                Connector.objects.for_company(company)
                .filter(
                    installation__listing_version__listing_id__in=listing_ids,
                    installation__listing_version=F("installation__listing_version__listing__latest_version"),
                )
                .order_by()
                .values("installation__listing_version__listing_id")
                .annotate(first=Min("pk"))
                .values("first")
            )
            latest = (
                Connector.objects.filter(pk__in=Subquery(first_of_each_listing))
                .only("pk", "name", "version")
                .annotate(listing_id=F("installation__listing_version__listing_id"))
            )
            copies = {copy.listing_id: copy for copy in latest}
        for connector in connectors:
            installation = getattr(connector, "installation", None)
            connector.alongside_copy = (
                copies.get(installation.listing_version.listing_id)
                if installation is not None and installation.update_available else None
            )


class Variable(models.Model):
    """A value an instance supplies: connector-level, or belonging to one auth method."""

    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="variables")
    auth_method = models.ForeignKey(
        "AuthMethod", on_delete=models.CASCADE, null=True, blank=True, related_name="variables"
    )
    key = models.CharField(max_length=64)
    label = models.CharField(max_length=120)
    alias = models.CharField(max_length=120, blank=True, help_text="Name the target system uses.")
    default = models.CharField(max_length=1024, blank=True)
    required = models.BooleanField(default=False)
    configurable = models.BooleanField(default=True)
    advanced = models.BooleanField(default=False, help_text="For advanced users only.")
    secret = models.BooleanField(default=False)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connector", "key"],
                condition=Q(auth_method__isnull=True),
                name="unique_connector_variable_key",
            ),
            models.UniqueConstraint(
                fields=["auth_method", "key"],
                condition=Q(auth_method__isnull=False),
                name="unique_auth_variable_key",
            ),
        ]

    def __str__(self) -> str:
        return self.key


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


class AuthMethod(models.Model):
    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="auth_methods")
    key = models.CharField(max_length=64)
    name = models.CharField(max_length=120)
    type = models.CharField(max_length=32, choices=AuthType.choices)
    headers = models.JSONField(default=dict, blank=True)
    query_params = models.JSONField(default=dict, blank=True)
    body = models.JSONField(default=dict, blank=True)
    token_url = models.CharField(max_length=500, blank=True)
    authorize_url = models.CharField(max_length=500, blank=True)
    scope = models.CharField(max_length=500, blank=True)
    test_method = models.CharField(max_length=10, choices=HttpMethod.choices, default=HttpMethod.GET)
    test_path = models.CharField(max_length=500)
    test_expected_status = models.JSONField(default=list)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["connector", "key"], name="unique_auth_method_key")
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """The name, with the type only when the name does not already say it.

        "API token (Token-based)", but "OAuth 2 client credentials", not
        "OAuth 2 client credentials (OAuth 2 (client credentials))".
        """
        type_label = self.get_type_display()
        type_words = set(_words(type_label))
        if type_words <= set(_words(self.name)):
            return self.name
        return f"{self.name} ({type_label})"


class BodyEncoding(models.TextChoices):
    JSON = "json", "JSON"
    FORM = "form", "Form (URL-encoded)"


class PaginationStyle(models.TextChoices):
    NONE = "none", "None (one request)"
    NEXT_URL = "next_url", "Next page URL in the response"
    LINK_HEADER = "link_header", "Link header"
    PAGE_NUMBER = "page_number", "Page number parameter"
    LIMIT_OFFSET = "limit_offset", "Limit and offset"
    CURSOR = "cursor", "Next page token / cursor"


class IdempotencyKeyIn(models.TextChoices):
    """Where an endpoint's API takes an idempotency key, as the vendor documents it."""

    NONE = "none", "Not sent"
    HEADER = "header", "In a header"
    BODY = "body", "In a body field"


class Endpoint(models.Model):
    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="endpoints")
    key = models.CharField(max_length=64)
    name = models.CharField(max_length=120)
    entity = models.CharField(max_length=80)
    direction = models.CharField(max_length=10, choices=Direction.choices)
    method = models.CharField(max_length=10, choices=HttpMethod.choices)
    path = models.CharField(max_length=500)
    # Fixed query parameters sent on every request (name -> value, {{variables}} allowed).
    parameters = models.JSONField(default=dict, blank=True)
    # Declared parameters: a list of {"name", "location" (query | header | body),
    # "required", "default", "label"}; the optional ones are settings of the
    # connection shapes that use the endpoint (see connectors/manifest.py ENDPOINT).
    request_parameters = models.JSONField(default=list, blank=True)
    body_encoding = models.CharField(max_length=10, choices=BodyEncoding.choices, default=BodyEncoding.JSON)
    # Where the records are in a response, as a dotted path ("orders", "data.items");
    # empty: a top-level list, or the first list value of an object.
    records_path = models.CharField(max_length=200, blank=True)
    # {"style": none | next_url | link_header | page_number | limit_offset | cursor, ...}
    # with the keys of manifest.PAGINATION, normalised (every key present).
    pagination = models.JSONField(default=dict, blank=True)
    # In a run, a redirect to another origin (scheme, host, port) is followed
    # (without credentials) only when this is set; otherwise the request fails.
    follow_redirects_to_other_origins = models.BooleanField(default=False)
    # How the API takes an idempotency key (manifest: "idempotency": {"in", "name"}):
    # a run that resumes after a lost worker sends the same key again for the
    # same batch, so an API that honours keys stores the batch once. The name is
    # the header's name or the JSON body field's name; empty when not sent.
    idempotency_key_in = models.CharField(max_length=10, choices=IdempotencyKeyIn.choices, default=IdempotencyKeyIn.NONE)
    idempotency_key_name = models.CharField(max_length=100, blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["connector", "key"], name="unique_endpoint_key")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.method} {self.path})"

    def clean(self) -> None:
        """The idempotency declaration as the manifest allows it (the admin edits rows directly)."""
        if self.idempotency_key_in == IdempotencyKeyIn.NONE:
            if self.idempotency_key_name:
                raise ValidationError({"idempotency_key_name": "Leave it blank when the key is not sent."})
            return
        if self.direction != Direction.SEND:
            raise ValidationError({"idempotency_key_in": "Only send endpoints take an idempotency key."})
        problem = idempotency_name_error(self.idempotency_key_in, self.idempotency_key_name.strip())
        if problem:
            raise ValidationError({"idempotency_key_name": problem[:1].upper() + problem[1:] + "."})


class ConnectorChange(models.Model):
    """One change to a connector's definition: who, when, and the manifest before and after."""

    class Action(models.TextChoices):
        CREATED = "created"
        INSTALLED = "installed"
        EDITED = "edited"
        UPDATED = "updated"
        OVERWRITTEN = "overwritten"
        IMPORTED = "imported"

    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="changes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    action = models.CharField(max_length=20, choices=Action.choices)
    summary = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.connector.name}: {self.action} {self.created_at:%Y-%m-%d %H:%M}"
