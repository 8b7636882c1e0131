"""Forms for the new instance wizard and the instance settings page (shared field rules)."""

from __future__ import annotations

from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest

from connectors.manifest import MAX_RATE_LIMIT, PLACEHOLDER_RE, date_format_error, header_value_error, is_time_zone
from connectors.models import AuthMethod, Connector, RateLimitUnit, Variable
from instances import deployment
from instances.models import CheckSchedule, ConnectionPool, Instance
from patchworks_site.params import object_id

NAME_HELP = (
    "This is what your users see when they choose an instance for a connection shape. "
    "Make it say what the instance is for, e.g. Shopify - UK for a UK instance of a connector."
)


class NameForm(forms.Form):
    name = forms.CharField(max_length=120, help_text=NAME_HELP)

    def __init__(self, *args, connector: Connector, instance: Instance | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.connector = connector
        self.instance = instance

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Enter a name for this instance.")
        clash = Instance.objects.filter(connector=self.connector, name__iexact=name)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError(f'{self.connector.name} already has an instance called "{name}".')
        return name


def pools_for(connector: Connector) -> QuerySet[ConnectionPool]:
    """Pools offered for an instance: only when the connector has a concurrency limit."""
    if not connector.concurrency_limit:
        return ConnectionPool.objects.none()
    return ConnectionPool.objects.for_company(connector.company).filter(connectors=connector)


class SettingsForm(forms.Form):
    time_zone = forms.CharField(
        max_length=64,
        help_text="Used to convert the time in any date/time filters applied when this instance is used in process flows.",
        widget=forms.TextInput(attrs={"list": "time-zones", "autocomplete": "off", "spellcheck": "false"}),
    )
    date_format = forms.CharField(
        max_length=64,
        help_text="The expected date format when this instance is used in process flows (strftime codes such as %Y-%m-%d).",
        widget=forms.TextInput(attrs={"spellcheck": "false"}),
    )
    rate_limit_amount = forms.IntegerField(
        min_value=1,
        max_value=MAX_RATE_LIMIT,
        help_text=(
            "How many API requests Patchworks may make with this instance. If the rate limit is exceeded, "
            "remaining requests are queued and sent when the rate limit is released again."
        ),
    )
    rate_limit_unit = forms.ChoiceField(choices=RateLimitUnit.choices)
    connection_pool = forms.ModelChoiceField(
        queryset=ConnectionPool.objects.none(),
        required=False,
        empty_label="No connection pool",
        help_text="Shares a concurrency limit with the other instances in the pool.",
    )

    def __init__(self, *args, connector: Connector, **kwargs):
        super().__init__(*args, **kwargs)
        self.connector = connector
        pools = pools_for(connector)
        if connector.concurrency_limit and pools.exists():
            self.fields["connection_pool"].queryset = pools
        else:
            del self.fields["connection_pool"]

    @property
    def offers_pools(self) -> bool:
        return "connection_pool" in self.fields

    def clean_time_zone(self) -> str:
        value = self.cleaned_data["time_zone"].strip()
        if not is_time_zone(value):
            raise forms.ValidationError(f'"{value}" is not a time zone. Pick one from the list, e.g. Europe/London or UTC.')
        return value

    def clean_date_format(self) -> str:
        value = self.cleaned_data["date_format"]
        problem = date_format_error(value)
        if problem:
            raise forms.ValidationError(f"The date format {problem}.")
        return value

    @staticmethod
    def initial_for(connector: Connector) -> dict:
        return {
            "time_zone": connector.time_zone or "UTC",
            "date_format": connector.date_format,
            "rate_limit_amount": connector.rate_limit_amount,
            "rate_limit_unit": connector.rate_limit_unit,
        }

    def state(self) -> dict:
        """The cleaned values as JSON-friendly data (for the signed wizard state)."""
        data = {k: self.cleaned_data[k] for k in ("time_zone", "date_format", "rate_limit_amount", "rate_limit_unit")}
        pool = self.cleaned_data.get("connection_pool")
        data["connection_pool"] = pool.pk if pool else None
        return data


def earlier_steps(connector: Connector, state: dict) -> tuple[NameForm, SettingsForm]:
    """The wizard's name and settings steps validated again against the database (whatever the signed state says)."""
    name_form = NameForm({"name": state["name"]}, connector=connector)
    settings_form = SettingsForm(
        {k: ("" if v is None else v) for k, v in state["settings"].items()}, connector=connector
    )
    name_form.is_valid()
    settings_form.is_valid()
    return name_form, settings_form


class AuthMethodForm(forms.Form):
    auth_method = forms.ModelChoiceField(
        queryset=AuthMethod.objects.none(), empty_label=None, widget=forms.RadioSelect,
        label="Authentication method",
    )

    def __init__(self, *args, connector: Connector, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["auth_method"].queryset = connector.auth_methods.all()
        self.fields["auth_method"].error_messages["invalid_choice"] = "Choose one of this connector's authentication methods."


def credential_variables(connector: Connector, auth_method: AuthMethod) -> list[Variable]:
    """Variables an instance supplies for this method: configurable connector ones, then the method's."""
    variables = list(connector.variables.all())
    return [v for v in variables if v.auth_method_id is None and v.configurable] + [
        v for v in variables if v.auth_method_id == auth_method.pk
    ]


def _default(variable: Variable, request: HttpRequest | None) -> str:
    """A variable's default, with the deployment values it names filled in (instances.deployment)."""
    return deployment.filled_in(variable.default, request)


class CredentialsForm(forms.Form):
    """One field per variable. Secret fields never render their value back.

    With `stored_secrets` (the settings page), a blank secret keeps the stored
    value and is not required.
    """

    def __init__(
        self,
        *args,
        connector: Connector,
        auth_method: AuthMethod,
        stored_values: dict[str, str] | None = None,
        stored_secrets: dict[str, str] | None = None,
        request: HttpRequest | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.auth_method = auth_method
        self.variables = credential_variables(connector, auth_method)
        # Values that end up in a request header must be sendable as one.
        self.header_keys = {key for value in auth_method.headers.values() for key in PLACEHOLDER_RE.findall(value)}
        self.stored_secrets = stored_secrets or {}
        stored_values = stored_values or {}
        for variable in self.variables:
            has_stored_secret = variable.secret and bool(self.stored_secrets.get(variable.key))
            field = forms.CharField(
                label=variable.label,
                max_length=1024,
                required=variable.required and not has_stored_secret,
                strip=not variable.secret,
                initial=None if variable.secret else stored_values.get(variable.key, _default(variable, request)),
                help_text=f"Sent as {variable.alias}." if variable.alias else "",
                widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
                if variable.secret
                else forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
            )
            if has_stored_secret:
                hint = self.stored_secrets[variable.key][-4:] if len(self.stored_secrets[variable.key]) >= 8 else ""
                field.help_text = (f"Set (ends in {hint}). " if hint else "Set. ") + "Leave blank to keep the stored value."
                field.widget.attrs["placeholder"] = "•••••••• (unchanged)"
            field.advanced = variable.advanced
            field.secret = variable.secret
            self.fields[f"var_{variable.key}"] = field

    def clean(self) -> dict:
        cleaned = super().clean()
        for key in self.header_keys:
            value = cleaned.get(f"var_{key}")
            problem = header_value_error(value) if value else None
            if problem:
                self.add_error(f"var_{key}", f"This value {problem}.")
        return cleaned

    @property
    def basic_fields(self) -> list:
        return [self[name] for name, f in self.fields.items() if not f.advanced]

    @property
    def advanced_fields(self) -> list:
        return [self[name] for name, f in self.fields.items() if f.advanced]

    def split(self) -> tuple[dict[str, str], dict[str, str]]:
        """(non-secret values, secret values) from the cleaned data; blank secrets keep stored ones."""
        values: dict[str, str] = {}
        secrets: dict[str, str] = {}
        for variable in self.variables:
            value = self.cleaned_data.get(f"var_{variable.key}", "") or ""
            if variable.secret:
                value = value or self.stored_secrets.get(variable.key, "")
                if value:
                    secrets[variable.key] = value
            elif value != "":
                values[variable.key] = value
        return values, secrets

    def kept_secrets(self) -> list[str]:
        """Names of the secret fields left blank, so that the stored value is used."""
        return [
            f"var_{v.key}" for v in self.variables
            if v.secret and not self.cleaned_data.get(f"var_{v.key}") and self.stored_secrets.get(v.key)
        ]

    def secrets_entered(self) -> bool:
        return any(self.cleaned_data.get(f"var_{v.key}") for v in self.variables if v.secret)


class DetailsForm(SettingsForm):
    """The details tab of the instance settings page: name plus the settings fields."""

    name = NameForm.base_fields["name"]
    field_order = [
        "name", "connection_pool", "time_zone", "date_format", "rate_limit_amount", "rate_limit_unit", "rate_limit_group",
    ]
    clean_name = NameForm.clean_name

    def clean_rate_limit_group(self) -> str:
        name = " ".join(self.cleaned_data["rate_limit_group"].split())
        # Keep the spelling already in use, so one shared rate limit shows under one name.
        existing = (
            Instance.objects.for_company(self.instance.company)
            .filter(rate_limit_group__iexact=name).exclude(pk=self.instance.pk)
            .values_list("rate_limit_group", flat=True).first()
        )
        return existing or name if name else ""

    def group_names(self) -> list[str]:
        """The company's shared rate limit names, for the field's suggestions."""
        names = Instance.objects.for_company(self.instance.company).exclude(rate_limit_group="")
        return sorted(names.order_by().values_list("rate_limit_group", flat=True).distinct(), key=str.casefold)

    def share_rate_limit(self, instance: Instance) -> int:
        """Give every other instance in the shared rate limit this one's amount and unit; how many were changed.

        One shared limit has one amount: the bucket they share is counted
        against the limit of whichever instance sends, so they must agree.
        """
        return instance.sharing_rate_limit().exclude(
            rate_limit_amount=instance.rate_limit_amount, rate_limit_unit=instance.rate_limit_unit
        ).update(rate_limit_amount=instance.rate_limit_amount, rate_limit_unit=instance.rate_limit_unit)

    rate_limit_group = forms.CharField(
        label="Shared rate limit",
        max_length=120,
        required=False,
        help_text=(
            "Instances of your company with the same shared rate limit name share one rate limit, e.g. several "
            "instances that use one API account. Saving gives all of them this instance's rate limit."
        ),
        widget=forms.TextInput(attrs={"list": "rate-limit-groups", "autocomplete": "off", "spellcheck": "false"}),
    )

    def __init__(self, *args, connector: Connector, instance: Instance, **kwargs):
        super().__init__(*args, connector=connector, **kwargs)
        self.instance = instance
        self.initial.setdefault("rate_limit_group", instance.rate_limit_group)
        if instance.connection_pool_id and "connection_pool" not in self.fields:
            # Keep the current pool visible (so it can be removed) even when no longer offered.
            self.fields["connection_pool"] = forms.ModelChoiceField(
                queryset=ConnectionPool.objects.filter(pk=instance.connection_pool_id),
                required=False, empty_label="No connection pool",
            )
        self.order_fields(self.field_order)


POOL_LIMIT_MAX = 1000
POOL_TIMEOUT_MAX = 3600


class PoolConnectorsField(forms.ModelMultipleChoiceField):
    def _check_values(self, value):
        # An id the database cannot hold (30 digits) is an invalid choice, not an overflow in the query.
        for pk in value:
            if object_id(str(pk)) is None:
                raise forms.ValidationError(
                    self.error_messages["invalid_choice"], code="invalid_choice", params={"value": str(pk)[:40]}
                )
        return super()._check_values(value)

    def label_from_instance(self, obj: Connector) -> str:
        if obj.concurrency_limit:
            return f"{obj.name} (up to {obj.concurrency_limit} concurrent requests)"
        return f"{obj.name} (no concurrency limit any more)"


class ConnectionPoolForm(forms.ModelForm):
    """A connection pool: its limit may not exceed the concurrency limit of any connector it serves."""

    name = forms.CharField(max_length=120, help_text="Shown when choosing a pool in an instance's settings.")
    limit = forms.IntegerField(
        min_value=1, max_value=POOL_LIMIT_MAX, label="Limit",
        help_text="How many requests the instances in this pool may have in flight at once.",
    )
    timeout_seconds = forms.IntegerField(
        min_value=1, max_value=POOL_TIMEOUT_MAX, initial=30, label="Timeout (seconds)",
        help_text="How long a request waits for a free slot before it fails.",
    )
    connectors = PoolConnectorsField(
        queryset=Connector.objects.none(), required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Instances of these connectors can use this pool. Only connectors with a concurrency limit can be pooled.",
    )

    class Meta:
        model = ConnectionPool
        fields = ["name", "limit", "timeout_seconds", "connectors"]

    def __init__(self, *args, company, **kwargs):
        super().__init__(*args, **kwargs)
        self.company = company
        self.instance.company = company
        offered = Connector.objects.for_company(company).filter(concurrency_limit__isnull=False)
        if self.instance.pk:
            # Keep connectors that lost their concurrency limit visible, so they can be removed.
            offered = offered | Connector.objects.for_company(company).filter(connection_pools=self.instance)
        self.fields["connectors"].queryset = offered.distinct().order_by("name", "id")
        self.fields["limit"].error_messages["max_value"] = f"A pool can allow at most {POOL_LIMIT_MAX} concurrent requests."
        self.fields["timeout_seconds"].error_messages["max_value"] = (
            f"The timeout can be at most {POOL_TIMEOUT_MAX} seconds (one hour)."
        )
        # The shortest timeout follows the lease (a setting): the model refuses less.
        self.fields["timeout_seconds"].help_text = (
            f"How long a request waits for a free slot before it fails: at least "
            f"{ConnectionPool.shortest_timeout()} seconds, longer than a slot's lease."
        )
        self.blocking_instances: list[Instance] = []

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Enter a name for this connection pool.")
        clash = ConnectionPool.objects.for_company(self.company).filter(name__iexact=name)
        if self.instance.pk:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError(f'There is already a connection pool called "{name}". Choose another name.')
        return name

    def clean(self) -> dict:
        cleaned = super().clean()
        limit = cleaned.get("limit")
        connectors = list(cleaned.get("connectors") or [])
        if limit:
            for connector in connectors:
                if connector.concurrency_limit and limit > connector.concurrency_limit:
                    self.add_error(
                        "limit",
                        f"{connector.name} allows at most {connector.concurrency_limit} concurrent requests, "
                        f"so this pool's limit can be at most {connector.concurrency_limit} while it serves {connector.name}.",
                    )
        if self.instance.pk and "connectors" in cleaned:
            kept = {c.pk for c in connectors}
            self.blocking_instances = list(
                self.instance.instances.exclude(connector__in=kept).select_related("connector").order_by("connector__name", "name")
            )
            for connector_name in dict.fromkeys(i.connector.name for i in self.blocking_instances):
                using = [i.name for i in self.blocking_instances if i.connector.name == connector_name]
                which = f"its instance {using[0]} uses" if len(using) == 1 else f"its instances {', '.join(using)} use"
                self.add_error(
                    "connectors",
                    f"{connector_name} can't be removed from this pool: {which} the pool. "
                    f"Assign {'it' if len(using) == 1 else 'them'} to another pool (or none) in the instance settings first.",
                )
        return cleaned


class CheckScheduleForm(forms.ModelForm):
    class Meta:
        model = CheckSchedule
        fields = ["interval_minutes"]
        labels = {"interval_minutes": "Re-check every instance's credentials"}
        help_texts = {"interval_minutes": "A change of authentication status is written to the audit log."}
