from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "connectors"

    def ready(self) -> None:
        from connectors.models import Connector
        from patchworks_site import audit

        # Who made the change is the entry's user; created_by/updated_by would only repeat it.
        audit.track(Connector, object_type="connector", exclude=("created_by", "updated_by"))
