from __future__ import annotations

from django import forms

from connectors.models import Endpoint
from flows.models import ProcessFlow
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
