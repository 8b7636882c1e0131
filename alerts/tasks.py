"""Huey tasks of the alerts: they take primary keys; the rows say what to do.

Receivers of the lower apps' signals (alerts.apps) only enqueue
`run_concluded` / `credentials_rechecked`; these work out the alerts on a
worker and hand each delivery to `deliver` (alerts.delivery), so nothing is
sent during a page request or inside a flow run.
"""

from __future__ import annotations

from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task, lock_task

from alerts import delivery, evaluation
from alerts.delivery import deliver
from alerts.models import Alert, Delivery, DeliveryStatus


def hand_over(alerts: list[Alert]) -> None:
    for pk in Delivery.objects.filter(alert__in=alerts, status=DeliveryStatus.PENDING, attempts=0).values_list("pk", flat=True):
        deliver(pk, 1)


@db_task()
def run_concluded(run_pk: int) -> None:
    hand_over(evaluation.run_concluded(run_pk))


@db_task()
def credentials_rechecked(instance_pk: int) -> None:
    hand_over(evaluation.credentials_rechecked(instance_pk))


@db_periodic_task(crontab(minute="*"))
def requeue_stale_deliveries() -> None:
    delivery.requeue_stale()


@db_periodic_task(crontab(minute="23"))
@lock_task("clean-up-alerts")
def clean_up_alerts() -> None:
    """Hourly: alerts older than ALERT_RETENTION_DAYS go, with their deliveries."""
    Alert.objects.delete_old()


__all__ = ["clean_up_alerts", "credentials_rechecked", "deliver", "requeue_stale_deliveries", "run_concluded"]
