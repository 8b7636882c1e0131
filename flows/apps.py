from django.apps import AppConfig
from django.db.models.signals import post_save


class FlowsConfig(AppConfig):
    name = "flows"
    verbose_name = "Process flows"

    def ready(self) -> None:
        from flows.metrics import RunsAndQueue
        from flows.models import ProcessFlow
        from flows.queueing import company_saved
        from patchworks_site import audit, metrics
        from patchworks_site.models import Company

        audit.track(ProcessFlow, object_type="process flow")
        metrics.register_collector(RunsAndQueue())
        # A raised maximum of concurrent runs starts the company's waiting runs at once.
        post_save.connect(company_saved, sender=Company, dispatch_uid="flows-company-saved")
