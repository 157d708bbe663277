"""Run a deployed pipeline now for one partition, and follow the run's state in Airflow."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import schedule
from .airflow import (
    AirflowClient,
    AirflowConflict,
    AirflowError,
    AirflowNotFound,
    AirflowUnavailable,
)
from .models import Deployment, Environment, Pipeline, RunRequest

logger = logging.getLogger(__name__)
LEASE = timedelta(minutes=2)
REFRESH_AFTER = timedelta(seconds=2)


class RunError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@transaction.atomic
def run_request(
    *,
    pipeline: Pipeline,
    environment: Environment,
    partition: datetime,
    by: object,
    accept_smaller: bool = False,
) -> RunRequest:
    """Ask Airflow to load one partition now; the trigger is sent on commit, and retried."""
    from . import tasks

    deployment = (
        Deployment.objects.filter(
            version__pipeline=pipeline, environment=environment, state=Deployment.State.DEPLOYED
        )
        .order_by("-version__number")
        .first()
    )
    if deployment is None:
        raise RunError("environment", f"{pipeline.slug} is not deployed to {environment.name} yet.")
    grain = deployment.version.spec.partition_grain
    key = schedule.format_partition(partition, grain)
    run = RunRequest.objects.create(
        pipeline=pipeline,
        environment=environment,
        partition=key,
        dag_id=deployment.dag_id,
        # Deterministic per request: a repeated trigger (retry, sweep, second worker) is a 409.
        dag_run_id=f"portal__{key.replace(':', '')}__{uuid.uuid4().hex[:12]}",
        logical_date=timezone.now(),
        accept_smaller=accept_smaller,
        requested_by=by,
    )
    tasks.enqueue_on_commit(tasks.run_submit, run.id)
    return run


def run_submit(*, run_request_id: int) -> None:
    """Trigger the DagRun for one request. Safe to call twice; AirflowUnavailable means retry."""
    now = timezone.now()
    claimed = RunRequest.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lte=now),
        id=run_request_id,
        state=RunRequest.State.PENDING,
    ).update(lease_until=now + LEASE, attempts=F("attempts") + 1)
    if not claimed:
        return
    run = RunRequest.objects.select_related("environment").get(id=run_request_id)
    client = AirflowClient.for_environment(run.environment)
    try:
        try:
            body = client.trigger_run(
                run.dag_id,
                dag_run_id=run.dag_run_id,
                logical_date=run.logical_date,
                conf=run.conf(),
                note=f"Run now for partition {run.partition}, requested in Pipeline Portal"
                + (" (smaller partition accepted)." if run.accept_smaller else "."),
            )
        except AirflowConflict:
            body = client.get_run(run.dag_id, run.dag_run_id)  # our own earlier attempt
    except AirflowUnavailable as exc:
        RunRequest.objects.filter(id=run.id).update(lease_until=None, error=str(exc))
        raise
    except AirflowError as exc:
        RunRequest.objects.filter(id=run.id).update(
            state=RunRequest.State.FAILED, lease_until=None, error=exc.message
        )
        return
    RunRequest.objects.filter(id=run.id).update(
        state=RunRequest.State.SUBMITTED,
        run_state=body.get("state") or "queued",
        lease_until=None,
        error="",
    )


def run_refresh(*, run_request_id: int) -> None:
    """Read the DagRun's state from Airflow into the row."""
    run = RunRequest.objects.select_related("environment").get(id=run_request_id)
    if run.state != RunRequest.State.SUBMITTED or not run.is_active:
        return
    client = AirflowClient.for_environment(run.environment)
    try:
        body = client.get_run(run.dag_id, run.dag_run_id)
    except AirflowNotFound:
        RunRequest.objects.filter(id=run.id).update(error="Airflow no longer knows this run.")
        return
    except AirflowUnavailable as exc:
        RunRequest.objects.filter(id=run.id).update(error=str(exc))
        raise
    RunRequest.objects.filter(id=run.id).update(run_state=body.get("state") or "", error="")


def runs_due() -> tuple[list[int], list[int]]:
    """Return (ids to submit again, ids to refresh) for the outbox sweep."""
    now = timezone.now()
    pending = RunRequest.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lte=now),
        state=RunRequest.State.PENDING,
        requested_at__lte=now - timedelta(seconds=20),
    )
    active = RunRequest.objects.filter(state=RunRequest.State.SUBMITTED).exclude(
        run_state__in=RunRequest.TERMINAL_RUN_STATES
    )
    return list(pending.values_list("id", flat=True)[:500]), list(
        active.values_list("id", flat=True)[:500]
    )


def refresh_if_stale(run: RunRequest) -> None:
    """Enqueue a refresh of an active run whose row is older than REFRESH_AFTER (for polling)."""
    from . import tasks

    stale = timezone.now() - run.updated_at >= REFRESH_AFTER
    if run.state == RunRequest.State.SUBMITTED and run.is_active and stale:
        try:
            tasks.run_refresh.delay(run.id)
        except Exception:  # broker down: the page still renders; the sweep refreshes later
            logger.warning("could not enqueue a refresh of run request %s", run.id)
