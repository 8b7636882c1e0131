from django.apps import AppConfig


class FlowsConfig(AppConfig):
    name = "flows"
    verbose_name = "Process flows"

    def ready(self) -> None:
        from flows.metrics import RunsAndQueue
        from flows.models import ProcessFlow
        from patchworks_site import audit, metrics

        audit.track(ProcessFlow, object_type="process flow")
        metrics.register_collector(RunsAndQueue())
