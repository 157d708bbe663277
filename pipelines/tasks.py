"""Celery tasks: thin and idempotent; each calls one service with an id."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from pipelines.alerts import services as alerts
from pipelines.core import outbox
from pipelines.core.airflow import AirflowUnavailable
from pipelines.deployments import services as deploy
from pipelines.models import AlertDelivery, Deployment, Environment, RunRequest
from pipelines.monitoring import monitor, sync
from pipelines.runs import services as runs

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def deployment_run(deployment_id: int) -> None:
    """Take one deploy step; the next (a registration check, a retry) is enqueued, not awaited."""
    again = deploy.deployment_run(deployment_id=deployment_id)
    if again is not None:
        Deployment.enqueue(deployment_id, countdown=again)


@shared_task(acks_late=True)
def run_submit(run_request_id: int) -> None:
    """Trigger one run-now request; a retry after backoff is enqueued, not awaited."""
    again = runs.run_submit(run_request_id=run_request_id)
    if again is not None:
        RunRequest.enqueue(run_request_id, countdown=again)


@shared_task(acks_late=True, autoretry_for=(AirflowUnavailable,), max_retries=3)
def run_refresh(run_request_id: int) -> None:
    runs.run_refresh(run_request_id=run_request_id)


@shared_task
def runs_refresh_active() -> None:
    """Beat: follow every run still running in Airflow (pages refresh the runs on screen)."""
    runs.runs_refresh_active()


@shared_task
def outbox_sweep() -> None:
    """Beat: enqueue again every outbox row left due while the broker or a worker was down."""
    outbox.sweep()


@shared_task
def health_sync_all() -> None:
    """Beat: start one sync per environment (each is incremental and locked by a lease)."""
    for environment_id in Environment.objects.values_list("id", flat=True):
        environment_sync.delay(environment_id)


@shared_task(acks_late=True)
def environment_sync(environment_id: int) -> None:
    try:
        sync.environment_sync(environment_id=environment_id)
    except AirflowUnavailable:
        logger.warning("Airflow of environment %s unreachable; health rows say so", environment_id)
    finally:
        # Also when unreachable or the sync failed: SLA misses still page, and reminders
        # follow the clock.
        alerts.alerts_evaluate(environment=Environment.objects.get(id=environment_id))


@shared_task(acks_late=True)
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


@shared_task(acks_late=True)
def alert_deliver(delivery_id: int) -> None:
    """Send one alert message; a retry after backoff is enqueued, not awaited."""
    try:
        alerts.delivery_send(delivery_id=delivery_id)
    except alerts.DeliveryRetry as exc:
        AlertDelivery.enqueue(delivery_id, countdown=exc.seconds)
