from __future__ import annotations

from zoneinfo import available_timezones

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator

from patchworks_site.models import Company, duration_text


class RetentionForm(forms.ModelForm):
    """How long the company's flow run logs, and the payload samples in them, are kept."""

    run_log_retention_days = forms.IntegerField(
        label="Keep run logs for (days)", min_value=1, max_value=90,
        help_text="1 to 90 days. Older runs, with their timelines, are deleted.",
    )
    payload_retention_hours = forms.IntegerField(
        label="Keep payload samples for (hours)", min_value=1, max_value=720,
        help_text="1 to 720 hours (30 days). The few items a run stores per shape are cleared after this; the log stays.",
    )

    class Meta:
        model = Company
        fields = ["run_log_retention_days", "payload_retention_hours"]


class RunDurationForm(forms.ModelForm):
    """How long one of the company's process flow runs may take before it is stopped (within the platform's ceiling)."""

    max_run_duration_minutes = forms.IntegerField(label="Maximum run duration (minutes)", min_value=1)
    max_concurrent_runs = forms.IntegerField(
        label="Maximum concurrent runs", min_value=1, required=False,
        error_messages={"min_value": "At least 1 run must be able to go at once."},
    )
    time_zone = forms.CharField(
        label="Company time zone", max_length=64,
        help_text="An IANA time zone such as Europe/London. Run pages say in it until when a waiting run waits.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    class Meta:
        model = Company
        fields = ["max_run_duration_minutes", "max_concurrent_runs", "time_zone"]

    def clean_max_concurrent_runs(self) -> int:
        """Left out of the form (an older page), the company keeps its maximum."""
        value = self.cleaned_data.get("max_concurrent_runs")
        return self.instance.max_concurrent_runs if value is None else value

    def clean_time_zone(self) -> str:
        value = self.cleaned_data["time_zone"].strip()
        if value not in available_timezones() and value != "UTC":
            raise forms.ValidationError(f'"{value[:64]}" is not a time zone. Use an IANA name such as Europe/London or UTC.')
        return value

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        ceiling = settings.FLOW_RUN_MAX_DURATION_CEILING_MINUTES
        field = self.fields["max_run_duration_minutes"]
        field.max_value = ceiling
        field.validators.append(MaxValueValidator(ceiling))
        field.widget.attrs["max"] = ceiling
        field.help_text = (
            f"1 to {ceiling:,} minutes ({duration_text(ceiling)}, the platform's ceiling). A run still going after "
            "this long is stopped and fails."
        )
        most = settings.FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING
        runs = self.fields["max_concurrent_runs"]
        runs.max_value = most
        runs.validators.append(MaxValueValidator(most, message=(
            f"At most {most} runs of a company can go at once on this platform "
            "(FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING). Enter 1 to %(limit_value)s."
        )))
        runs.widget.attrs.update({"min": 1, "max": most})
        runs.help_text = (
            f"1 to {most}. At most this many of the company's runs go at once; the others wait queued, saying so, "
            "and start oldest first as runs end, or at once when this is raised. Other companies' runs are never held up by them."
        )

