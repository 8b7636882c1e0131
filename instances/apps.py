from django.apps import AppConfig


class InstancesConfig(AppConfig):
    name = "instances"

    def ready(self) -> None:
        from instances.models import ConnectionPool, Instance
        from patchworks_site import audit

        audit.track(
            Instance,
            object_type="instance",
            # Credential check results are activity, not changes; uid never changes.
            exclude=("uid", "created_by", "last_checked_at", "last_check_ok", "last_check_message"),
            secret_fields=("secrets_ciphertext",),
            labels={
                "secrets_ciphertext": "credentials",
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
