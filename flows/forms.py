from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.db.models import Q

from connectors.manifest import PLACEHOLDER_RE, RUN_PLACEHOLDERS
from connectors.models import Direction, Endpoint, Variable
from flows import parameters, schedules
from flows.models import FlowRunShape, ProcessFlow, RunStatus, RunTrigger, ScheduleKind, Shape, ShapeKind
from flows.schedules import MINUTE_INTERVALS
from flows.shapes import filter as filter_shape
from instances.models import Instance
from patchworks_site.models import Company
from patchworks_site.widgets import QuickSelect


class FlowForm(forms.ModelForm):
    class Meta:
        model = ProcessFlow
        fields = ["name"]

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Enter a name for the process flow.")
        return name


class ConnectionShapeForm(forms.Form):
    """One choice per (instance, endpoint of its connector), grouped by instance; works without JavaScript."""

    target = forms.ChoiceField(label="Instance and endpoint")

    def __init__(self, *args, company: Company, **kwargs):
        super().__init__(*args, **kwargs)
        instances = Instance.objects.for_company(company).select_related("connector").prefetch_related("connector__endpoints")
        choices = []
        self._lookup: dict[str, tuple[Instance, Endpoint]] = {}
        for instance in instances:
            group = []
            for endpoint in instance.connector.endpoints.all():
                key = f"{instance.pk}:{endpoint.pk}"
                self._lookup[key] = (instance, endpoint)
                group.append((key, f"{endpoint.name} ({endpoint.direction}: {endpoint.method} {endpoint.path})"))
            if group:
                choices.append((f"{instance.name} — {instance.connector.name}", group))
        self.fields["target"].choices = [("", "Choose an instance and endpoint")] + choices
        self.fields["target"].error_messages["invalid_choice"] = "Choose an endpoint of one of your instances."

    def clean_target(self) -> tuple[Instance, Endpoint]:
        return self._lookup[self.cleaned_data["target"]]


class ScheduleForm(forms.Form):
    """A trigger schedule: the kind decides which of the other fields count (all times in UTC).

    Only the chosen kind's fields are shown, validated and used: fields of other
    kinds that a page without JavaScript still posts are ignored.
    """

    kind = forms.ChoiceField(label="Frequency", choices=ScheduleKind.choices, initial=ScheduleKind.DAILY)
    every = forms.TypedChoiceField(
        label="Every", coerce=int, required=False, initial=15,
        choices=[(n, "minute" if n == 1 else f"{n} minutes") for n in MINUTE_INTERVALS],
    )
    day = forms.IntegerField(label="Day of the month", min_value=1, max_value=31, required=False, initial=1,
                             help_text="Months without this day are skipped.")
    hour = forms.IntegerField(label="Hour (UTC)", min_value=0, max_value=23, required=False, initial=0)
    minute = forms.IntegerField(label="Minute", min_value=0, max_value=59, required=False, initial=0)
    cron = forms.CharField(label="Cron expression (UTC)", required=False, max_length=120,
                           help_text="5 fields: minute hour day-of-month month day-of-week, e.g. 30 6 * * 1-5.")

    FIELDS_OF_KIND = {
        ScheduleKind.MINUTES: ("every",),
        ScheduleKind.HOURLY: ("minute",),
        ScheduleKind.DAILY: ("hour", "minute"),
        ScheduleKind.MONTHLY: ("day", "hour", "minute"),
        ScheduleKind.ADVANCED: ("cron",),
    }

    @classmethod
    def with_defaults(cls, data) -> ScheduleForm:
        """A bound form where the chosen kind's missing fields take their initial values (the frequency just changed)."""
        data = data.copy()
        kind = data.get("kind")
        for name in cls.FIELDS_OF_KIND.get(kind, ()):
            if name not in data and cls.base_fields[name].initial is not None:
                data[name] = cls.base_fields[name].initial
        return cls(data)

    @property
    def chosen_kind(self) -> str:
        kind = self.data.get("kind") if self.is_bound else self.initial.get("kind")
        return kind if kind in self.FIELDS_OF_KIND else ScheduleKind.DAILY

    def kind_fields(self) -> list:
        """The bound fields of the chosen kind, in the order they are shown."""
        return [self[name] for name in self.FIELDS_OF_KIND[self.chosen_kind]]

    def clean(self) -> dict:
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if not kind:
            return cleaned
        for name in set(self.fields) - {"kind", *self.FIELDS_OF_KIND[kind]}:
            self.errors.pop(name, None)
            cleaned.pop(name, None)
        for name in self.FIELDS_OF_KIND[kind]:
            if name not in self.errors and cleaned.get(name) in (None, ""):
                self.add_error(name, "Enter a value for this schedule.")
        if kind == ScheduleKind.ADVANCED and cleaned.get("cron"):
            problem = schedules.cron_error(cleaned["cron"])
            if problem:
                self.add_error("cron", problem)
        return cleaned

    def schedule_fields(self) -> dict:
        """The fields create_schedule needs for the chosen kind."""
        kind = self.cleaned_data["kind"]
        return {name: self.cleaned_data[name] for name in self.FIELDS_OF_KIND[kind]}

    def preview(self, now: datetime) -> dict:
        """What the schedule means: its description and next runs (UTC), or why there is none."""
        if self.is_bound and not self.is_valid():
            return {"problems": [error for errors in self.errors.values() for error in errors]}
        if self.is_bound:
            kind, fields = self.cleaned_data["kind"], self.schedule_fields()
        else:
            kind = self.chosen_kind
            fields = {name: self.fields[name].initial for name in self.FIELDS_OF_KIND[kind]}
            if kind == ScheduleKind.ADVANCED:
                return {"problems": ["Enter a cron expression to see its next runs."]}
        expression = schedules.cron_for(kind, **fields)
        return {"description": schedules.describe(kind, **fields), "cron": expression,
                "times": schedules.upcoming(expression, now)}


class RunLogFilterForm(forms.Form):
    """The run log's filters (GET). Invalid values show an error next to the filter and are not applied."""

    # Plain (pk, name) choices: a company may have hundreds of flows (see QuickSelect).
    flow = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, widget=QuickSelect)
    status = forms.ChoiceField(choices=[("", "All outcomes"), *RunStatus.choices], required=False)
    trigger = forms.ChoiceField(choices=[("", "All triggers"), *RunTrigger.choices], required=False)
    instance = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, widget=QuickSelect)
    warnings = forms.ChoiceField(choices=[("", "Any"), ("yes", "With warnings"), ("no", "Without warnings")],
                                 required=False)
    queued_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    queued_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, company: Company, **kwargs):
        super().__init__(*args, **kwargs)
        self.time_zone = company_zone(company)
        flows = ProcessFlow.objects.for_company(company).order_by("name", "pk").values_list("pk", "name")
        # The instances the company's flows use in connection shapes.
        instances = Instance.objects.for_company(company).filter(
            pk__in=Shape.objects.filter(flow__company=company, instance__isnull=False).values("instance")
        ).order_by("name", "pk").values_list("pk", "name")
        # Callables: read only when the field is shown or checked (a flow's own run log shows no flow filter).
        self.fields["flow"].choices = lambda: [("", "All process flows"), *flows]
        self.fields["instance"].choices = lambda: [("", "All instances"), *instances]
        for name, field in self.fields.items():
            field.widget.attrs["class"] = "form-control form-control-sm" if name.startswith("queued") else "form-select form-select-sm"

    def clean(self) -> dict:
        cleaned = super().clean()
        start, end = cleaned.get("queued_from"), cleaned.get("queued_to")
        if start and end and start > end:
            self.add_error("queued_to", "Choose a date on or after the from date.")
            cleaned.pop("queued_from", None)
        return cleaned

    LABELS = {"flow": "Process flow", "status": "Outcome", "trigger": "Trigger", "instance": "Instance",
              "warnings": "Warnings", "queued_from": "Queued from", "queued_to": "Queued to"}

    def error_list(self) -> list[tuple[str, str]]:
        return [(self.LABELS.get(name, "Filters"), error) for name, errors in self.errors.items() for error in errors]

    def filter(self, runs):
        """`runs` narrowed by the valid filters (an invalid value is shown as an error and not applied)."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        if data.get("flow"):
            runs = runs.filter(flow_id=data["flow"])
        if data.get("status"):
            runs = runs.filter(status=data["status"])
        if data.get("trigger"):
            runs = runs.filter(trigger=data["trigger"])
        if data.get("instance"):
            runs = runs.filter(flow__in=Shape.objects.filter(instance_id=data["instance"]).values("flow"))
        if data.get("warnings"):
            with_warnings = ~Q(warnings=[]) | Q(pk__in=FlowRunShape.objects.exclude(warnings=[]).values("run"))
            runs = runs.filter(with_warnings if data["warnings"] == "yes" else ~with_warnings)
        # Dates are days in the company's time zone.
        if data.get("queued_from"):
            runs = runs.filter(queued_at__gte=_midnight(data["queued_from"], self.time_zone))
        if data.get("queued_to") and data["queued_to"] < date.max:
            # The day after is the bound; the last representable day has none (everything is before it ends).
            runs = runs.filter(queued_at__lt=_midnight(data["queued_to"] + timedelta(days=1), self.time_zone))
        return runs


def company_zone(company: Company) -> ZoneInfo:
    """The company's time zone (an IANA name); UTC if it is not one this machine knows."""
    try:
        return ZoneInfo(company.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    """00:00 of `day` in `zone`, in UTC; clamped to the representable range at years 1 and 9999."""
    try:
        return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC) if day.year == 1 else datetime.max.replace(tzinfo=UTC)


# --- the shape editor ------------------------------------------------------------------------------

PLACEHOLDER_HELP = (
    "{{variables}} allowed: {{since}}, {{run_time}}, {{last_success}} (in the instance's time zone and date format), "
    "{{instance.time_zone}}, {{instance.date_format}} and the connector's variables that are not secret."
)
PATH_RE = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")
PATH_HELP = "A dotted path, e.g. customer.email."
MAX_ROWS = 50


def _dotted_path(value: str, what: str = "path") -> str:
    value = value.strip()
    if value and not PATH_RE.fullmatch(value):
        raise forms.ValidationError(f"Enter a dotted {what} without spaces, e.g. customer.email.")
    return value


class ConnectionSettingsForm(forms.Form):
    """Instance and endpoint, request settings and the endpoint's optional parameters of a connection shape."""

    target = forms.ChoiceField(label="Instance and endpoint")
    timeout = forms.IntegerField(label="Timeout (seconds per request)", min_value=1, max_value=120)
    retries = forms.TypedChoiceField(
        label="Retries", coerce=int, choices=[(0, "none"), (1, "1 extra attempt"), (2, "2 extra attempts")],
        help_text="On a network error, a 5xx or a 429 answer the client gave up on.",
    )
    allow_unsuccessful = forms.BooleanField(
        label="Allow unsuccessful statuses", required=False,
        help_text="A 4xx or 5xx answer is recorded as a warning and the run goes on.",
    )
    send_as = forms.ChoiceField(
        label="Send as", widget=forms.RadioSelect,
        choices=[("item", "one request per item"), ("batch", "one request per page of items (the body is the list)")],
    )

    def __init__(self, *args, shape: Shape, **kwargs):
        config = shape.config if isinstance(shape.config, dict) else {}
        super().__init__(*args, **kwargs)
        targets = ConnectionShapeForm(company=shape.flow.company)
        self._lookup = targets._lookup
        self.fields["target"].choices = targets.fields["target"].choices
        self.fields["target"].error_messages["invalid_choice"] = "Choose an endpoint of one of your instances."
        self.shape = shape
        key = self.data.get("target") if self.is_bound else None
        instance, endpoint = self._lookup.get(key, (shape.instance, shape.endpoint))
        self.endpoint = endpoint
        self.initial.setdefault("target", f"{shape.instance_id}:{shape.endpoint_id}" if shape.endpoint_id else "")
        self.initial.setdefault("timeout", config.get("timeout", 30))
        self.initial.setdefault("retries", config.get("retries", 0))
        self.initial.setdefault("allow_unsuccessful", bool(config.get("allow_unsuccessful")))
        self.initial.setdefault("send_as", config.get("send_as") or "item")
        if endpoint is None or endpoint.direction != Direction.SEND:
            del self.fields["send_as"]
        self.parameter_fields: dict[str, str] = {}  # form field name -> request parameter name
        self.parameter_locations: dict[str, str] = {}  # form field name -> query, header or body
        saved = config.get("parameters") if isinstance(config.get("parameters"), dict) else {}
        for parameter in self.optional_parameters(endpoint):
            # Named after the parameter, so a value typed for one endpoint never lands on another's parameter.
            name = "parameter_" + re.sub(r"[^A-Za-z0-9_-]", "_", parameter["name"])
            while name in self.fields:
                name += "_"
            default = str(parameter.get("default") or "")
            self.fields[name] = forms.CharField(
                label=parameter.get("label") or parameter["name"], required=False, max_length=500,
                help_text=(f'Sent as the {parameter.get("location", "query")} parameter "{parameter["name"]}". '
                           f'Empty: the endpoint\'s default{f" ({default})" if default else " (not sent)"}. '
                           + PLACEHOLDER_HELP),
            )
            if default:
                self.fields[name].widget.attrs["placeholder"] = default
            self.initial.setdefault(name, saved.get(parameter["name"], ""))
            self.parameter_fields[name] = parameter["name"]
            self.parameter_locations[name] = parameter.get("location") or "query"
        variables = Variable.objects.filter(connector_id=endpoint.connector_id) if endpoint else Variable.objects.none()
        self.known_placeholders = set(RUN_PLACEHOLDERS) | set(variables.values_list("key", flat=True))
        self.secret_placeholders = parameters.secret_keys(endpoint.connector_id if endpoint else None)

    @staticmethod
    def optional_parameters(endpoint: Endpoint | None) -> list[dict]:
        if endpoint is None or not isinstance(endpoint.request_parameters, list):
            return []
        return [p for p in endpoint.request_parameters
                if isinstance(p, dict) and p.get("name") and not p.get("required")]

    def clean_target(self) -> tuple[Instance, Endpoint]:
        return self._lookup[self.cleaned_data["target"]]

    def clean(self) -> dict:
        cleaned = super().clean()
        for name in self.parameter_fields:
            value = cleaned.get(name) or ""
            if value.count("{{") != value.count("}}"):
                self.add_error(name, "Close every {{ with }}.")
                continue
            secrets = parameters.secrets_used(value, self.secret_placeholders)
            if secrets:
                self.add_error(name, parameters.refusal(self.parameter_locations[name], self.parameter_fields[name], secrets))
                continue
            unknown = sorted({m.strip() for m in PLACEHOLDER_RE.findall(value)} - self.known_placeholders)
            if unknown:
                self.add_error(name, "Unknown variable " + ", ".join(f"{{{{{u}}}}}" for u in unknown) + ".")
        return cleaned

    def config(self) -> dict:
        """The shape's config as flows.execution reads it."""
        data = self.cleaned_data
        return {
            "timeout": data["timeout"],
            "retries": data["retries"],
            "allow_unsuccessful": data["allow_unsuccessful"],
            "send_as": data.get("send_as") or "item",
            "parameters": {parameter: data[name] for name, parameter in self.parameter_fields.items() if data.get(name)},
        }


COMPARISONS = [
    ("equals", "equals"),
    ("not_equals", "does not equal"),
    ("contains", "contains"),
    ("greater_than", "is greater than"),
    ("less_than", "is less than"),
    ("is_empty", "is empty"),
    ("in_last", "is in the last"),
    ("since_last_success", "is since the last successful run"),
]
UNITS = [("", "—"), ("minutes", "minutes"), ("hours", "hours"), ("days", "days")]
NEEDS_VALUE = {"contains", "greater_than", "less_than", "in_last"}
NO_VALUE = {"is_empty", "since_last_success"}


class _RowForm(forms.Form):
    """A row of a shape's settings table: small Bootstrap inputs, marked invalid when they have errors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            widget = field.widget
            if isinstance(widget, forms.CheckboxInput):
                widget.attrs["class"] = "form-check-input"
            else:
                widget.attrs["class"] = "form-select form-select-sm" if isinstance(widget, forms.Select) else "form-control form-control-sm"

    def full_clean(self) -> None:
        super().full_clean()
        for name in self.errors:
            if name in self.fields:
                self.fields[name].widget.attrs["class"] += " is-invalid"


class FilterRuleForm(_RowForm):
    field = forms.CharField(label="Field", max_length=200, required=False, help_text=PATH_HELP)
    comparison = forms.ChoiceField(label="Comparison", choices=COMPARISONS, initial="equals")
    value = forms.CharField(label="Value", max_length=500, required=False,
                            help_text="For “in the last”: a whole number, with a unit.")
    unit = forms.ChoiceField(label="Unit", choices=UNITS, required=False)

    def clean_field(self) -> str:
        return _dotted_path(self.cleaned_data["field"])

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.cleaned_data.get("DELETE"):
            return cleaned
        comparison, value = cleaned.get("comparison"), (cleaned.get("value") or "").strip()
        if not cleaned.get("field") and "field" not in self.errors:
            self.add_error("field", "Enter the field this rule compares.")
        if comparison == "in_last":
            if not (value.isascii() and value.isdigit() and 0 < int(value) <= filter_shape.MAX_IN_LAST):
                self.add_error("value", "Enter a whole number of minutes, hours or days, at least 1.")
            if not cleaned.get("unit"):
                self.add_error("unit", "Choose minutes, hours or days.")
        elif comparison in NEEDS_VALUE and not value:
            self.add_error("value", "Enter the value to compare with.")
        return cleaned

    def rule(self) -> dict:
        data = self.cleaned_data
        comparison = data["comparison"]
        value = "" if comparison in NO_VALUE else data["value"].strip() if comparison == "in_last" else data["value"]
        return {"field": data["field"], "comparison": comparison, "value": value,
                "unit": data["unit"] if comparison == "in_last" else ""}


class MapFieldForm(_RowForm):
    target = forms.CharField(label="Output field", max_length=200, required=False, help_text=PATH_HELP)
    source = forms.CharField(label="From input field", max_length=200, required=False, help_text=PATH_HELP)
    constant = forms.CharField(label="Or constant text", max_length=500, required=False)
    convert_date = forms.BooleanField(
        label="Convert date", required=False,
        help_text="Read in the source instance's date format and time zone, written in the target instance's.",
    )

    def clean_target(self) -> str:
        return _dotted_path(self.cleaned_data["target"])

    def clean_source(self) -> str:
        return _dotted_path(self.cleaned_data["source"])

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("DELETE"):
            return cleaned
        if not cleaned.get("target") and "target" not in self.errors:
            self.add_error("target", "Enter the output field.")
        source, constant = cleaned.get("source"), cleaned.get("constant")
        if "source" in self.errors:
            return cleaned
        if source and constant:
            self.add_error("constant", "Use either an input field or a constant, not both.")
        elif not source and not constant:
            self.add_error("source", "Enter an input field or a constant.")
        elif cleaned.get("convert_date") and not source:
            self.add_error("convert_date", "Only a value from an input field can be converted.")
        return cleaned

    def field_config(self) -> dict:
        data = self.cleaned_data
        return {"target": data["target"], "source": data["source"], "constant": data["constant"],
                "convert_date": data["convert_date"]}


class RowsFormSet(forms.BaseFormSet):
    """Rows of a shape's settings: saved rows first, then a few empty ones.

    Once posted every row counts alike: a blank row is skipped, a filled one is
    validated, one marked "remove" is dropped.
    """

    def initial_form_count(self) -> int:
        return 0 if self.is_bound else super().initial_form_count()

    def add_fields(self, form, index) -> None:
        super().add_fields(form, index)
        if "DELETE" in form.fields:
            form.fields["DELETE"].label = "Remove"


def _rows_formset(form_class, extra: int):
    return forms.formset_factory(form_class, formset=RowsFormSet, extra=extra, can_delete=True, max_num=MAX_ROWS,
                                 absolute_max=MAX_ROWS, validate_max=True)


FilterRuleFormSet = _rows_formset(FilterRuleForm, extra=2)
MapFieldFormSet = _rows_formset(MapFieldForm, extra=3)


class _RowsShapeForm(forms.Form):
    """A shape form with a formset of rows (`rows`); valid when the form and every kept row are."""

    formset_class = None
    prefix_rows = ""
    config_key = ""

    def __init__(self, data=None, *, shape: Shape, **kwargs):
        super().__init__(data, **kwargs)
        self.shape = shape
        config = shape.config if isinstance(shape.config, dict) else {}
        rows = [r for r in config.get(self.config_key) or [] if isinstance(r, dict)]
        self.rows = self.formset_class(data, prefix=self.prefix_rows, initial=None if data is not None else rows or None)

    def is_valid(self) -> bool:
        form_ok = super().is_valid()
        rows_ok = self.rows.is_valid()
        return form_ok and rows_ok

    def kept_rows(self) -> list[forms.Form]:
        return [f for f in self.rows.forms if f.has_changed() and not self.rows._should_delete_form(f)]

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.rows.total_error_count())


class FilterShapeForm(_RowsShapeForm):
    formset_class = FilterRuleFormSet
    prefix_rows = "rules"
    config_key = "rules"

    match = forms.ChoiceField(label="Keep an item when", widget=forms.RadioSelect, initial="all",
                              choices=[("all", "all rules match (AND)"), ("any", "any rule matches (OR)")])

    def __init__(self, data=None, *, shape: Shape, **kwargs):
        super().__init__(data, shape=shape, **kwargs)
        config = shape.config if isinstance(shape.config, dict) else {}
        self.initial.setdefault("match", config.get("match") if config.get("match") in ("all", "any") else "all")

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.rows.is_valid() and not self.kept_rows():
            raise forms.ValidationError("Add at least one rule.")
        return cleaned

    def config(self) -> dict:
        return {"match": self.cleaned_data["match"], "rules": [f.rule() for f in self.kept_rows()]}


class MapShapeForm(_RowsShapeForm):
    formset_class = MapFieldFormSet
    prefix_rows = "fields"
    config_key = "fields"

    keep_unmapped = forms.BooleanField(label="Keep unmapped fields", required=False,
                                       help_text="Start every output item from a copy of the input item.")

    def __init__(self, data=None, *, shape: Shape, **kwargs):
        super().__init__(data, shape=shape, **kwargs)
        config = shape.config if isinstance(shape.config, dict) else {}
        self.initial.setdefault("keep_unmapped", bool(config.get("keep_unmapped")))

    def offer_paths(self, datalist_id: str) -> None:
        """Let every source input offer the paths of a datalist (a test step's sample, see flows.test_steps)."""
        for row in self.rows.forms:
            row.fields["source"].widget.attrs["list"] = datalist_id

    def clean(self) -> dict:
        cleaned = super().clean()
        if not self.rows.is_valid():
            return cleaned
        kept = self.kept_rows()
        if not kept and not cleaned.get("keep_unmapped"):
            raise forms.ValidationError("Add at least one output field, or keep unmapped fields.")
        seen: set[str] = set()
        for row in kept:
            target = row.cleaned_data["target"]
            if target in seen:
                raise forms.ValidationError(f'The output field "{target}" is set twice.')
            seen.add(target)
        return cleaned

    def config(self) -> dict:
        return {"fields": [f.field_config() for f in self.kept_rows()],
                "keep_unmapped": self.cleaned_data["keep_unmapped"]}


SHAPE_FORMS = {ShapeKind.CONNECTION: ConnectionSettingsForm, ShapeKind.FILTER: FilterShapeForm, ShapeKind.MAP: MapShapeForm}
