from django.apps import AppConfig
from django.db import transaction


class AlertsConfig(AppConfig):
    name = "alerts"

    def ready(self) -> None:
        from alerts.models import AlertChannel, AlertRule
        from flows.signals import run_concluded
        from instances.signals import credentials_rechecked
        from patchworks_site import audit

        run_concluded.connect(_run_concluded, dispatch_uid="alerts-run-concluded")
        credentials_rechecked.connect(_credentials_rechecked, dispatch_uid="alerts-credentials-rechecked")
        audit.track(AlertRule, object_type="alert rule", m2m_fields=("channels",))
        audit.track(
            AlertChannel, object_type="alert channel", exclude=("uid",), secret_fields=("secret_ciphertext",),
            labels={"secret_ciphertext": "signing secret", "url": "URL"},
        )


# The receivers only queue a task: alerts are worked out and sent by the task workers.


def _run_concluded(sender, run_pk: int, status: str, **kwargs) -> None:
    from alerts import tasks
    from alerts.models import AlertRule

    # Most companies have no rule about runs: one indexed query here rather than a task per run's end for nothing
    # (at a million runs a day, a million tasks).
    if AlertRule.objects.filter(company__flow_runs=run_pk).about_runs().exists():
        transaction.on_commit(lambda: tasks.run_concluded(run_pk), robust=True)


def _credentials_rechecked(sender, instance_pk: int, **kwargs) -> None:
    from alerts import tasks

    transaction.on_commit(lambda: tasks.credentials_rechecked(instance_pk), robust=True)
