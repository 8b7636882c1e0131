from django.apps import AppConfig
from django.http import HttpRequest


class SandboxConfig(AppConfig):
    """The practice third-party API the dashboard serves itself, its OAuth server, its received orders and the demo data."""

    name = "sandbox"
    verbose_name = "Sandbox"

    def deployment_values(self, request: HttpRequest | None = None) -> dict[str, str]:
        """``{{deployment.sandbox_url}}``: where this deployment serves the Sandbox API (see instances.deployment)."""
        from sandbox.api import default_address

        return {"sandbox_url": default_address(request)}
