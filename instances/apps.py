from django.apps import AppConfig


class InstancesConfig(AppConfig):
    name = "instances"

    def ready(self) -> None:
        from connectors.signals import definition_saved
        from instances import system_checks  # noqa: F401 (registers the credential key checks)
        from instances.models import ConnectionPool, Instance
        from patchworks_site import audit

        definition_saved.connect(_recheck_destinations, dispatch_uid="instances-destinations")

        audit.track(
            Instance,
            object_type="instance",
            # Credential check results are activity, not changes; uid never changes.
            exclude=("uid", "created_by", "last_checked_at", "last_check_ok", "last_check_message"),
            secret_fields=("secrets_ciphertext",),
            labels={
                "secrets_ciphertext": "credentials",
                "credentials_approved_for": "credentials approved for",
                "reauth_reason": "re-authentication needed",
                "auth_method": "authentication method",
                "values": "variable values",
            },
        )
        audit.track(
            ConnectionPool,
            object_type="connection pool",
            m2m_fields=("connectors",),
            labels={"timeout_seconds": "timeout (seconds)", "limit": "limit (concurrent requests)"},
        )


def _recheck_destinations(sender, connector, **kwargs) -> None:
    """A connector edit that moves its API (base URL, token URL, ...) stops sending stored secrets there."""
    from connectors.models import Connector
    from instances.models import Instance

    connector = Connector.objects.prefetch_related("variables").get(pk=connector.pk)
    for instance in Instance.objects.filter(connector=connector).exclude(secrets_ciphertext="").select_related("auth_method"):
        instance.connector = connector
        instance.refresh_reauth_status()
