"""Celery tasks of the runs area (registered names keep `pipelines.tasks.`: the beat schedule,
`Outbox.OUTBOX_TASK`, `core.outbox.send` callers and messages already queued name them so)."""

from __future__ import annotations

from celery import shared_task

from pipelines.core.airflow import AirflowUnavailable
from pipelines.runs import services as runs
from pipelines.runs.models import RunRequest


@shared_task(name="pipelines.tasks.run_submit", acks_late=True)
def run_submit(run_request_id: int) -> None:
    """Trigger one run-now request; a retry after backoff is enqueued, not awaited."""
    again = runs.run_submit(run_request_id=run_request_id)
    if again is not None:
        RunRequest.enqueue(run_request_id, countdown=again)


@shared_task(
    name="pipelines.tasks.run_refresh",
    acks_late=True,
    autoretry_for=(AirflowUnavailable,),
    max_retries=3,
)
def run_refresh(run_request_id: int) -> None:
    """Follow one run-now request's DagRun in Airflow."""
    runs.run_refresh(run_request_id=run_request_id)


@shared_task(name="pipelines.tasks.runs_refresh_active")
def runs_refresh_active() -> None:
    """Beat: follow every run still running in Airflow (pages refresh the runs on screen)."""
    runs.runs_refresh_active()
