from __future__ import annotations

from django import forms

from connectors.models import Endpoint
from flows import schedules
from flows.models import ProcessFlow, RunStatus, RunTrigger, ScheduleKind
from flows.schedules import MINUTE_INTERVALS
from instances.models import Instance
from patchworks_site.models import Company


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
    """A trigger schedule: the kind decides which of the other fields count (all times in UTC)."""

    kind = forms.ChoiceField(label="Frequency", choices=ScheduleKind.choices, initial=ScheduleKind.DAILY)
    every = forms.TypedChoiceField(
        label="Every", coerce=int, required=False, initial=15,
        choices=[(n, "minute" if n == 1 else f"{n} minutes") for n in MINUTE_INTERVALS],
    )
    day = forms.IntegerField(label="Day of the month", min_value=1, max_value=31, required=False, initial=1)
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

    def clean(self) -> dict:
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if not kind:
            return cleaned
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


class RunLogFilterForm(forms.Form):
    flow = forms.ModelChoiceField(queryset=ProcessFlow.objects.none(), required=False, empty_label="All process flows")
    status = forms.ChoiceField(choices=[("", "All outcomes"), *RunStatus.choices], required=False)
    trigger = forms.ChoiceField(choices=[("", "All triggers"), *RunTrigger.choices], required=False)

    def __init__(self, *args, company: Company, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["flow"].queryset = ProcessFlow.objects.for_company(company)
        for field in self.fields.values():
            field.widget.attrs["class"] = "form-select form-select-sm"

    def filter(self, runs):
        """`runs` narrowed by the valid filters (an invalid value is ignored, not an error page)."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        if data.get("flow"):
            runs = runs.filter(flow=data["flow"])
        if data.get("status"):
            runs = runs.filter(status=data["status"])
        if data.get("trigger"):
            runs = runs.filter(trigger=data["trigger"])
        return runs
