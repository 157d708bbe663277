"""Celery tasks of the alerts area (registered names keep `pipelines.tasks.`: the beat schedule,
`Outbox.OUTBOX_TASK` and messages already queued name them so).

The health sync and the SLA check live here, not in monitoring: each ends by evaluating the
alerts of its environment, and only this area may import both monitoring and alerts.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from pipelines.alerts import services as alerts
from pipelines.alerts.models import AlertDelivery
from pipelines.core.airflow import AirflowUnavailable
from pipelines.deployments.models import Environment
from pipelines.monitoring import monitor, sync

logger = logging.getLogger(__name__)


@shared_task(name="pipelines.tasks.alert_deliver", acks_late=True)
def alert_deliver(delivery_id: int) -> None:
    """Send one alert message; a retry after backoff is enqueued, not awaited."""
    try:
        alerts.delivery_send(delivery_id=delivery_id)
    except alerts.DeliveryRetry as exc:
        AlertDelivery.enqueue(delivery_id, countdown=exc.seconds)


@shared_task(name="pipelines.tasks.health_sync_all")
def health_sync_all() -> None:
    """Beat: start one sync per environment (each is incremental and locked by a lease)."""
    for environment_id in Environment.objects.values_list("id", flat=True):
        environment_sync.delay(environment_id)


@shared_task(name="pipelines.tasks.environment_sync", acks_late=True)
def environment_sync(environment_id: int) -> None:
    """Sync one environment's runs from Airflow, then evaluate its alerts."""
    try:
        sync.environment_sync(environment_id=environment_id)
    except AirflowUnavailable:
        logger.warning("Airflow of environment %s unreachable; health rows say so", environment_id)
    finally:
        # Also when unreachable or the sync failed: SLA misses still page, and reminders
        # follow the clock.
        alerts.alerts_evaluate(environment=Environment.objects.get(id=environment_id))


@shared_task(name="pipelines.tasks.sla_evaluate_all", acks_late=True)
def sla_evaluate_all() -> None:
    """Beat: check every SLA deadline that passed, whether or not a run finished, and refresh
    the health rows the clock alone has changed (a fire passed, a grace ran out: stale)."""
    for environment in Environment.objects.all():
        now = timezone.now()
        errors: dict[int, str] = {}  # pipelines whose check failed: their health rows say so
        try:
            changed = monitor.sla_evaluate(environment, now=now, errors=errors)
            changed |= set(monitor.due_for_refresh(environment, now))
            if changed:
                monitor.health_recompute(environment, changed, now=now, errors=errors)
        except Exception:  # one environment's failure must not stop the next one's checks
            logger.exception("SLA check of environment %s failed", environment.slug)
        try:
            alerts.alerts_evaluate(environment=environment)
        except Exception:
            logger.exception("alert evaluation of environment %s failed", environment.slug)
