from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """The practice third-party API the dashboard serves itself, its OAuth server, its received orders and the demo data."""

    name = "sandbox"
    verbose_name = "Sandbox"
