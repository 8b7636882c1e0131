from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ConnectorsConfig(AppConfig):
    name = "connectors"

    def ready(self) -> None:
        from connectors.models import AuthMethod, Connector, Endpoint, Variable
        from patchworks_site import audit

        # Who made the change is the entry's user; created_by/updated_by would only repeat it.
        audit.track(Connector, object_type="connector", exclude=("created_by", "updated_by"))
        for model in (Variable, AuthMethod, Endpoint):
            post_save.connect(_touch_connector, sender=model, dispatch_uid=f"touch-connector-{model.__name__}")
            post_delete.connect(_touch_connector, sender=model, dispatch_uid=f"touch-connector-{model.__name__}")


def _touch_connector(sender, instance, origin=None, **kwargs) -> None:
    """A part of a definition saved or deleted on its own (the admin, a shell) moves its connector's `updated_at`.

    `updated_at` is when the definition last changed; what is derived from the
    definition and cached (whether a prebuilt connector is modified) is keyed by it.
    Deleting the connector itself deletes its parts: nothing to touch then.
    """
    from django.utils import timezone

    from connectors.models import Connector

    if isinstance(origin, Connector) or getattr(origin, "model", None) is Connector:
        return
    Connector.objects.filter(pk=instance.connector_id).update(updated_at=timezone.now())
