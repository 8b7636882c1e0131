"""Process flows and their connection shapes (an instance and one endpoint of its connector)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from connectors.models import Endpoint
from instances.models import Instance
from patchworks_site.models import Company


class ProcessFlowQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> ProcessFlowQuerySet:
        return self.filter(company=company)


class ProcessFlow(models.Model):
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="process_flows")
    name = models.CharField(max_length=120)
    enabled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProcessFlowQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class ConnectionShape(models.Model):
    flow = models.ForeignKey(ProcessFlow, on_delete=models.CASCADE, related_name="shapes")
    position = models.PositiveIntegerField(default=0)
    # PROTECT: an instance or endpoint in use cannot be deleted, even by a
    # concurrent request; the database refuses and the UI explains.
    instance = models.ForeignKey(Instance, on_delete=models.PROTECT, related_name="connection_shapes")
    # Null only when a connector update removed the endpoint: the shape is then
    # flagged (missing_endpoint says what it was) instead of silently breaking.
    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.PROTECT, related_name="connection_shapes", null=True, blank=True
    )
    missing_endpoint = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.flow}: {self.instance} → {self.endpoint.name if self.endpoint else self.missing_endpoint}"

    @property
    def needs_attention(self) -> bool:
        return self.endpoint_id is None

    def clean(self) -> None:
        if self.instance_id and self.endpoint_id and self.endpoint.connector_id != self.instance.connector_id:
            raise ValidationError({"endpoint": "Choose an endpoint of the instance's connector."})
        if self.instance_id and self.flow_id and self.instance.company_id != self.flow.company_id:
            raise ValidationError({"instance": "Choose an instance of your company."})
