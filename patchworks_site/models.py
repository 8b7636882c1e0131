"""Tenancy: companies own everything a customer creates; users belong to one company."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class Company(models.Model):
    name = models.CharField(max_length=120, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "companies"

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    ADMINISTRATOR = "administrator", "Administrator"
    MANAGER = "manager", "Manager"
    USER = "user", "User"
    READ_ONLY = "read_only", "Read-only"


class User(AbstractUser):
    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, related_name="users", null=True, blank=True
    )
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.READ_ONLY)

    @property
    def can_manage_connectors(self) -> bool:
        """Install, update, modify and remove connectors; manage connection pools."""
        return self.company_id is not None and self.role in {Role.ADMINISTRATOR, Role.MANAGER}

    @property
    def can_manage_instances(self) -> bool:
        """Add, update and remove instances and process flows."""
        return self.company_id is not None and self.role in {
            Role.ADMINISTRATOR,
            Role.MANAGER,
            Role.USER,
        }

    @property
    def is_company_administrator(self) -> bool:
        return self.company_id is not None and self.role == Role.ADMINISTRATOR
