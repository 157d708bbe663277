"""Run a deployed pipeline now for one partition, and follow the run's state in Airflow.

One active request per pipeline × environment × partition (a partial unique constraint): asking
again while one is pending or running returns that one. The RunRequest row is the outbox
(core/outbox.py): `run_submit` claims it, triggers the DagRun and finishes it SUBMITTED (fenced),
or releases it for a retry with backoff until the attempt cap ends it FAILED.

Following a submitted run (`run_refresh`) is not outbox work: polling pages and a beat task
enqueue it at most once per REFRESH_AFTER, throttled by `refreshed_at`. A run Airflow no longer
knows (404 on refresh) stops being followed at once, with an error saying so.
"""

from __future__ import annotations

import logging
import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from pipelines.authoring import codegen
from pipelines.authoring.models import Pipeline
from pipelines.authoring.spec import PipelineSpec
from pipelines.core import outbox, schedule
from pipelines.core.airflow import (
    AirflowClient,
    AirflowConflict,
    AirflowError,
    AirflowNotFound,
    AirflowUnavailable,
    DagRunState,
    run_failure_text,
)
from pipelines.core.audit import audit_record
from pipelines.core.errors import user_error
from pipelines.deployments.models import Deployment, Environment
from pipelines.runs.models import RunRequest

logger = logging.getLogger(__name__)
# An open page polls every 2 s; at most one refresh per run is enqueued per window.
REFRESH_AFTER = timedelta(seconds=2)
ACTIVE = Q(state__in=RunRequest.ACTIVE_STATES) & ~Q(
    run_state__in=sorted(RunRequest.TERMINAL_RUN_STATES)
)


class RunError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def deployment_for(*, pipeline: Pipeline, environment: Environment) -> Deployment | None:
    """Return the deployment that runs `pipeline` in `environment` now, if any."""
    return Deployment.objects.running(pipeline, environment)


def partition_range(*, spec: PipelineSpec, now: datetime) -> tuple[datetime, datetime]:
    """Return the first partition a run may load and the latest complete one (wall clock).

    The first is the DAG's start date (codegen.START_DATE, the same for every pipeline); a
    partition is complete once its end has passed in the pipeline's zone.
    """
    first = datetime.combine(date.fromisoformat(codegen.START_DATE), time.min)
    current = schedule.floor_to_grain(now, spec.partition_grain, spec.timezone)
    return first, current - schedule.GRAINS[spec.partition_grain]


def partition_check(*, spec: PipelineSpec, partition: datetime, now: datetime) -> None:
    """Raise RunError on the partition field unless `partition` lies in partition_range."""
    first, latest = partition_range(spec=spec, now=now)
    grain = spec.partition_grain
    allowed = (
        f"choose one from {schedule.format_partition(first, grain)} to "
        f"{schedule.format_partition(latest, grain)}."
    )
    label = schedule.format_partition(partition, grain)
    if partition < first:
        raise RunError("partition", f"{label} is before the pipeline's start date: {allowed}")
    if partition > latest:
        raise RunError(
            "partition",
            f"{label} is not complete yet in {spec.timezone} (it has no data yet): {allowed}",
        )


@transaction.atomic
def run_request(
    *,
    pipeline: Pipeline,
    environment: Environment,
    partition: datetime,
    by: object,
    accept_smaller: bool = False,
    approval_reason: str = "",
    partition_fingerprint: str = "",
) -> tuple[RunRequest, bool]:
    """Ask Airflow to load one partition now; return (request, created).

    The trigger is sent on commit, and retried. While a request for the same partition is
    awaiting approval, pending or running, that one is returned (created False) and nothing new
    is triggered. With an `approval_reason` the request waits for an approver instead
    (releases.runs decides which, and `partition_fingerprint` is what it decided on).
    """
    deployment = deployment_for(pipeline=pipeline, environment=environment)
    if deployment is None:
        raise RunError("environment", f"{pipeline.slug} is not deployed to {environment.name} yet.")
    spec = deployment.version.spec
    partition_check(spec=spec, partition=partition, now=timezone.now())
    key = schedule.format_partition(partition, spec.partition_grain)
    try:
        # Insert first and let the partial unique constraint decide: two requests racing
        # (a double-click, two tabs) cannot both pass a check made before either inserted.
        with transaction.atomic():
            run = RunRequest.objects.create(
                pipeline=pipeline,
                environment=environment,
                partition=key,
                dag_id=deployment.dag_id,
                # Fixed per request: a repeated trigger (retry, sweep, second worker) is a 409.
                dag_run_id=f"portal__{key.replace(':', '')}__{uuid.uuid4().hex[:12]}",
                logical_date=timezone.now(),
                accept_smaller=accept_smaller,
                requested_by=by,
                state=RunRequest.State.AWAITING_APPROVAL
                if approval_reason
                else RunRequest.State.PENDING,
                approval_reason=approval_reason,
                partition_fingerprint=partition_fingerprint,
            )
    except IntegrityError:
        active = RunRequest.objects.filter(
            ACTIVE, pipeline=pipeline, environment=environment, partition=key
        ).first()
        if active is None:  # it finished between our insert and this read: say so, no 500
            raise RunError(
                "partition",
                f"Another request for {key} was being made at the same moment; look at the "
                "runs below, and ask again if it still needs loading.",
            ) from None
        return active, False
    audit_record(
        actor=by,
        action="run_requested",
        pipeline=pipeline,
        environment=environment,
        after={
            "partition": key,
            "dag_run_id": run.dag_run_id,
            "accept_smaller": accept_smaller,
            "state": run.state,
            **({"approval_reason": approval_reason} if approval_reason else {}),
        },
        summary=f"Run {key} now in {environment.name}"
        + (" (smaller partition accepted)" if accept_smaller else "")
        + (": awaiting approval" if approval_reason else ""),
    )
    if not approval_reason:
        RunRequest.enqueue(run.id)
    return run, True


def run_release(*, run: RunRequest, by: object, comment: str) -> bool:
    """Let an approved request go to Airflow: PENDING, triggered on commit; False if it was no
    longer awaiting approval (the caller holds its row lock, so that is a second line).

    The logical date is the approval's time: Airflow orders a DAG's runs by it.
    """
    now = timezone.now()
    released = _update(
        run.id,
        only_if=Q(state=RunRequest.State.AWAITING_APPROVAL),
        state=RunRequest.State.PENDING,
        logical_date=now,
        next_attempt_at=now,
        decided_by=by,
        decided_at=now,
        decision_comment=comment,
    )
    if released:
        RunRequest.enqueue(run.id)
    return released == 1


def run_close(*, run: RunRequest, by: object, state: str, comment: str = "") -> bool:
    """End a request awaiting approval REJECTED or WITHDRAWN; False if it no longer waited."""
    now = timezone.now()
    return (
        _update(
            run.id,
            only_if=Q(state=RunRequest.State.AWAITING_APPROVAL),
            state=state,
            decided_by=by,
            decided_at=now,
            decision_comment=comment,
        )
        == 1
    )


def _update(run_id: int, *, only_if: Q | None = None, **fields: Any) -> int:
    """Update one request; `updated_at` explicitly, since QuerySet.update() skips auto_now."""
    rows = RunRequest.objects.filter(id=run_id)
    if only_if is not None:
        rows = rows.filter(only_if)
    return rows.update(updated_at=timezone.now(), **fields)


def run_submit(*, run_request_id: int) -> float | None:
    """Trigger the DagRun for one request; return seconds until a retry is due, None when none.

    Safe to call twice: the claim lets one worker in, and a worker whose lease ran out changes
    nothing. Airflow unreachable is retried with backoff up to the attempt cap; a rejection
    ends the request failed with Airflow's message. An unexpected error releases the claim (a
    retry with backoff) and is raised.
    """
    token = RunRequest.claim(run_request_id)
    if token is None:
        return None
    try:
        run = RunRequest.objects.select_related("environment").get(id=run_request_id)
        client = AirflowClient.for_environment(run.environment)
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
        return RunRequest.release(run_request_id, token, error=str(exc), updated_at=timezone.now())
    except AirflowError as exc:
        RunRequest.finish(
            run_request_id,
            token,
            state=RunRequest.State.FAILED,
            last_error=exc.message,
            updated_at=timezone.now(),
        )
        return None
    except BaseException as exc:
        # A bug or a killed worker must not hold the claim: the sweep tries again.
        error = user_error(exc, doing=f"submitting run request {run_request_id}")
        RunRequest.release(run_request_id, token, error=error, updated_at=timezone.now())
        raise
    RunRequest.finish(
        run_request_id,
        token,
        state=RunRequest.State.SUBMITTED,
        run_state=body.get("state") or DagRunState.QUEUED,
        last_error="",
        updated_at=timezone.now(),
    )
    return None


def run_refresh(*, run_request_id: int) -> None:
    """Read the DagRun's state from Airflow into the row; stop following a run Airflow lost."""
    run = RunRequest.objects.select_related("environment").filter(id=run_request_id).first()
    if run is None or run.state != RunRequest.State.SUBMITTED or not run.is_active:
        return
    submitted = Q(state=RunRequest.State.SUBMITTED)
    client = AirflowClient.for_environment(run.environment)
    try:
        body = client.get_run(run.dag_id, run.dag_run_id)
    except AirflowNotFound:
        # The trigger succeeded, so the run existed: Airflow's database was reset, the DAG was
        # deleted or the run cleared away. Nothing will ever answer for it again.
        _update(
            run.id,
            only_if=submitted,
            state=RunRequest.State.UNTRACKED,
            last_error="Airflow no longer knows this run (404); it is no longer followed. "
            "Request the partition again if it still needs loading.",
        )
        return
    except AirflowUnavailable as exc:
        _update(run.id, only_if=submitted, last_error=str(exc))
        raise
    except AirflowError as exc:  # a 4xx other than 404: say so, the beat asks again
        _update(run.id, only_if=submitted, last_error=exc.message)
        return
    state = body.get("state") or ""
    _update(
        run.id,
        only_if=submitted,
        run_state=state,
        last_error=_failure_reason(client, run, state),
    )


def _failure_reason(client: AirflowClient, run: RunRequest, state: str) -> str:
    """Why the run failed, from Airflow; "" unless it failed (the sync fills a gap later)."""
    if state != DagRunState.FAILED:
        return ""
    return run_failure_text(client, run.dag_id, run.dag_run_id) or ""


def refresh_if_stale(run: RunRequest) -> bool:
    """Enqueue a refresh of an active run, at most once per REFRESH_AFTER; True if enqueued.

    The window is claimed with a conditional UPDATE of `refreshed_at` (never the outbox lease,
    which belongs to submitting), so polls from any number of pages and processes, and the
    beat, enqueue one task per window.
    """
    if run.state != RunRequest.State.SUBMITTED or not run.is_active:
        return False
    now = timezone.now()
    claimed = RunRequest.objects.filter(
        Q(refreshed_at__isnull=True) | Q(refreshed_at__lte=now - REFRESH_AFTER),
        id=run.id,
        state=RunRequest.State.SUBMITTED,
    ).update(refreshed_at=now)
    if not claimed:
        return False
    # Broker down: the page still renders; the beat refreshes later.
    outbox.send("pipelines.tasks.run_refresh", run.id)
    return True


def runs_refresh_active(*, limit: int = 500) -> int:
    """Enqueue a refresh of every run still running in Airflow; return how many (the beat).

    The pages refresh the runs on screen; this follows the others, so a finished run frees its
    partition for a new request even when nobody watches it.
    """
    active = RunRequest.objects.filter(ACTIVE, state=RunRequest.State.SUBMITTED).order_by(
        F("refreshed_at").asc(nulls_first=True), "id"
    )[:limit]
    return sum(refresh_if_stale(run) for run in active)
