from __future__ import annotations

from django import forms

from patchworks_site.models import Company


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
