from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from django import forms
from django.core.validators import validate_email

from alerts.models import AlertChannel, AlertEvent, AlertRule, ChannelKind
from instances.outbound import ssrf
from patchworks_site.models import Company

MAX_RECIPIENTS = 20
THRESHOLDS = {
    # event: (label, smallest, largest, help)
    AlertEvent.FAILURE_STREAK: ("Failed runs in a row (N)", 2, 100, "2 to 100: one alert at the N-th failed run in a row."),
    AlertEvent.LIMIT_WAIT: (
        "Minutes waited (M)", 1, 1440,
        "1 to 1,440: a run whose shapes waited longer than this in all for rate limits and connection pools "
        "(parks included).",
    ),
}


class ChannelForm(forms.ModelForm):
    """A named channel; the name is unique within the company."""

    def __init__(self, *args, company: Company, **kwargs):
        super().__init__(*args, **kwargs)
        self.company = company
        self.instance.company = company

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if AlertChannel.objects.for_company(self.company).filter(name__iexact=name).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError(f'A channel named "{name}" exists already.')
        return name


class EmailChannelForm(ChannelForm):
    name = forms.CharField(label="Name", max_length=80, help_text="How rules refer to it, e.g. \u201cOperations team\u201d.")
    recipients = forms.CharField(
        label="Email addresses", widget=forms.Textarea(attrs={"rows": 3}),
        help_text=f"One per line (or separated by commas), at most {MAX_RECIPIENTS}.",
    )

    class Meta:
        model = AlertChannel
        fields = ["name", "recipients"]

    def clean_recipients(self) -> str:
        addresses = [a.strip() for a in self.cleaned_data["recipients"].replace(",", "\n").splitlines() if a.strip()]
        if not addresses:
            raise forms.ValidationError("Enter at least one email address.")
        if len(addresses) > MAX_RECIPIENTS:
            raise forms.ValidationError(f"Enter at most {MAX_RECIPIENTS} addresses ({len(addresses)} given).")
        for address in addresses:
            try:
                validate_email(address)
            except forms.ValidationError:
                raise forms.ValidationError(f'"{address[:100]}" is not an email address.') from None
        return "\n".join(dict.fromkeys(addresses))

    def save(self, commit: bool = True) -> AlertChannel:
        self.instance.kind = ChannelKind.EMAIL
        return super().save(commit)


class WebhookChannelForm(ChannelForm):
    name = forms.CharField(label="Name", max_length=80, help_text="How rules refer to it, e.g. \u201cOn-call pager\u201d.")
    url = forms.URLField(
        label="URL", max_length=500, assume_scheme="https",
        help_text="Alerts are POSTed here as signed JSON. Private and loopback addresses are refused.",
    )

    class Meta:
        model = AlertChannel
        fields = ["name", "url"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise forms.ValidationError("Use an http or https URL.")
        if parts.username or parts.password:
            raise forms.ValidationError("Leave user names and passwords out of the URL: requests are signed instead.")
        try:
            ip = ipaddress.ip_address((parts.hostname or "").strip("[]"))
        except ValueError:
            return url  # a host name: the SSRF guard checks what it resolves to at every delivery
        problem = ssrf.refusal(str(ip))
        if problem:
            raise forms.ValidationError(f"{ip} is {problem}; alerts cannot be sent there.")
        return url

    def save(self, commit: bool = True) -> AlertChannel:
        self.instance.kind = ChannelKind.WEBHOOK
        return super().save(commit)


class AlertRuleForm(forms.ModelForm):
    event = forms.ChoiceField(label="When", choices=AlertEvent.choices)
    threshold = forms.IntegerField(
        label="N or M", required=False, min_value=1,
        help_text="N: failed runs in a row (2 to 100) for \u201cseveral times in a row\u201d; M: minutes (1 to 1,440) "
                  "for \u201cwaited long\u201d. Not used by the other events.",
    )
    channels = forms.ModelMultipleChoiceField(
        label="Send to", queryset=AlertChannel.objects.none(), widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one channel."},
    )
    enabled = forms.BooleanField(label="On", required=False, initial=True)

    class Meta:
        model = AlertRule
        fields = ["event", "threshold", "channels", "enabled"]

    def __init__(self, *args, company: Company, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance.company = company
        self.fields["channels"].queryset = AlertChannel.objects.for_company(company)

    def clean(self) -> dict:
        data = super().clean()
        if not self.fields["channels"].queryset.exists():
            # (No checkbox to show the field's own error beside.)
            raise forms.ValidationError("Add an email channel or a webhook first: a rule sends to channels.")
        event, threshold = data.get("event"), data.get("threshold")
        if event in THRESHOLDS:
            label, low, high, _ = THRESHOLDS[event]
            if threshold is None:
                self.add_error("threshold", f"Enter {label[0].lower()}{label[1:]}: {low} to {high:,}.")
            elif not low <= threshold <= high:
                self.add_error("threshold", f"{label} must be {low} to {high:,}.")
        elif event:
            data["threshold"] = None
        return data
