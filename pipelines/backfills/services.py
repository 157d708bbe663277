"""Backfills: preview, guardrails, one atomic submit, the outbox step machine, pause/resume/cancel.

- `backfill_preview` says exactly which runs Airflow's backfill will create for a partition range
  (core.backfill.plan mirrors Airflow's range and reprocess rules), how many partitions are
  loaded, failed, running or missing now, the estimated duration at the chosen concurrency, the
  next scheduled run and its SLA deadline, and a fingerprint of that set of runs.
- `backfill_request` re-validates everything in one transaction (the pipeline row locked), refuses
  a submit whose fingerprint no longer matches (the set changed since the preview), and inserts
  the Backfill row; one active backfill per pipeline × environment is a database constraint.
  Into an environment with `requires_approval` it waits for an approver (releases.services).
- `backfill_step` (the outbox task) submits the chunks to Airflow one after another, follows each,
  and carries out pause, resume and cancel, which users ask for by setting `wanted`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import operator
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import compress
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, DateTimeField, Value, When
from django.utils import timezone

from pipelines.alerts.services import notice_send
from pipelines.authoring import services as authoring
from pipelines.authoring.models import Pipeline
from pipelines.authoring.spec import PipelineSpec
from pipelines.backfills import selectors
from pipelines.backfills.models import Backfill
from pipelines.core import access, schedule
from pipelines.core import backfill as plans
from pipelines.core.airflow import (
    AirflowClient,
    AirflowConflict,
    AirflowCredentialsError,
    AirflowError,
    AirflowUnavailable,
)
from pipelines.core.audit import audit_record
from pipelines.core.errors import user_error
from pipelines.core.secrets import SecretNameError
from pipelines.deployments.models import Deployment, Environment
from pipelines.monitoring.models import PipelineHealth, RunRecord
from pipelines.runs.models import RunRequest
from pipelines.runs.services import ACTIVE as ACTIVE_RUN
from pipelines.runs.services import partition_range

logger = logging.getLogger(__name__)
State, Wanted = Backfill.State, Backfill.Wanted
EDGE = 5  # partitions shown at each end of the preview


class BackfillError(Exception):
    """Refused; `errors` maps form fields to messages, `status` is the API's answer (422, 409,
    403), `preview` the new preview when the set changed since the user saw it."""

    def __init__(
        self, errors: dict[str, str], *, status: int = 422, preview: Preview | None = None
    ) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors, self.status, self.preview = errors, status, preview


@dataclass(frozen=True)
class Preview:
    """What a backfill of [first, last] will do, computed from facts."""

    pipeline: Pipeline
    environment: Environment
    deployment: Deployment
    spec: PipelineSpec
    first: datetime
    last: datetime
    reprocess: str
    max_active_runs: int
    plan: Any  # core.backfill.Plan
    to_run: Any  # core.backfill.Runs: the plan's runs Airflow will create
    counts: dict[str, int]  # loaded / failed / running / missing over every partition in range
    estimate_seconds: float | None
    next_run: datetime | None
    sla_deadline: datetime | None
    fingerprint: str
    notes: list[str] = field(default_factory=list)

    @property
    def partitions(self) -> int:
        return _partition_count(self.to_run, self.spec.partition_grain)

    def keys(self, runs: list[Any]) -> list[str]:
        grain = self.spec.partition_grain
        return [schedule.format_partition(p, grain) for run in runs for p in run.partitions]

    @property
    def first_keys(self) -> list[str]:
        return self.keys(self.to_run[:EDGE])[:EDGE]

    @property
    def last_keys(self) -> list[str]:
        # The runs after the first EDGE, at most EDGE of them: never the first ones again.
        tail = self.to_run[max(EDGE, len(self.to_run) - EDGE) :]
        return self.keys(tail)[-EDGE:]

    def as_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment.slug,
            "start": schedule.format_partition(self.first, self.spec.partition_grain),
            "end": schedule.format_partition(self.last, self.spec.partition_grain),
            "reprocess": self.reprocess,
            "max_active_runs": self.max_active_runs,
            "partitions": self.partitions,
            "runs": len(self.to_run),
            "first": self.first_keys,
            "last": self.last_keys,
            **self.counts,
            "estimate_seconds": self.estimate_seconds,
            "next_run": self.next_run,
            "sla_deadline": self.sla_deadline,
            "fingerprint": self.fingerprint,
            "notes": self.notes,
        }


# --- preview ---------------------------------------------------------------------------------


def _existing_runs(
    dag_id: str, environment: Environment, start: datetime, end: datetime
) -> dict[int, str]:
    """{logical date as epoch seconds: state} of the DAG's synced runs in [start, end] (Airflow's
    backfill range is inclusive at both ends), in one query.

    Two arrays in one row, as epoch seconds: ten years of hourly runs is 87,600 rows, and
    Django's time-zone-aware datetime loader would spend more than the whole preview may.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT array_agg(EXTRACT(EPOCH FROM logical_date)::bigint), array_agg(state) "
                f"FROM {RunRecord._meta.db_table} WHERE environment_id = %s AND dag_id = %s "
                "AND logical_date >= %s AND logical_date <= %s",
                [environment.id, dag_id, start, end],
            )
            epochs, states = cursor.fetchone()
            return dict(zip(epochs or (), states or (), strict=True))
        cursor.execute(
            "SELECT CAST(strftime('%%s', logical_date) AS INTEGER), state "
            f"FROM {RunRecord._meta.db_table} WHERE environment_id = %s AND dag_id = %s "
            "AND logical_date >= %s AND logical_date <= %s",
            [environment.id, dag_id, start, end],
        )
        return dict(cursor.fetchall())


def _partitions_by_run(runs: Any, grain: str) -> tuple[list[int], list[int]]:
    """(indices, counts) of the runs that do not load exactly one partition (DST changes, or a
    schedule slower than its grain); every other run loads one. C-level loops: 87,600 runs."""
    size = schedule.GRAINS[grain]
    spans = list(map(operator.sub, runs.highs, runs.lows))
    odd = list(compress(range(len(spans)), map(size.__ne__, spans)))
    return odd, [spans[i] // size for i in odd]


def _partition_count(runs: Any, grain: str) -> int:
    odd, loads = _partitions_by_run(runs, grain)
    return len(runs) - len(odd) + sum(loads)


def _status_counts(runs: Any, statuses: tuple[str, ...], grain: str) -> dict[str, int]:
    """Partitions (not runs) per status: loaded / failed / running / missing."""
    counts = dict.fromkeys(("loaded", "failed", "running", "missing"), 0) | Counter(statuses)
    for i, loads in zip(*_partitions_by_run(runs, grain), strict=True):
        counts[statuses[i]] += loads - 1
    return counts


def fingerprint_of(
    deployment: Deployment,
    reprocess: str,
    max_active_runs: int,
    plan: Any,
    statuses: tuple[str, ...],
) -> str:
    """The identity of a submit: which runs, of which deployed code, how. The runs to create
    follow from the plan's runs and their statuses under the policy, so those are hashed."""
    runs = plan.runs
    head = (
        f"{deployment.id}|{deployment.dag_id}|{reprocess}|{max_active_runs}|{len(runs)}|"
        f"{runs.logical_dates[0].isoformat() if runs else ''}|"
        f"{runs.logical_dates[-1].isoformat() if runs else ''}|"
    )
    digest = hashlib.sha256(head.encode())
    digest.update("\n".join(statuses).encode())
    return digest.hexdigest()


def _schedule_facts(
    spec: PipelineSpec, health: PipelineHealth | None, now: datetime
) -> tuple[datetime | None, datetime | None]:
    try:
        (fire,) = schedule.next_fire_times(spec.schedule, spec.timezone, 1, after=now)
    except Exception:  # a spec the schedule module cannot read: say nothing rather than 500
        return None, None
    deadline = fire + timedelta(minutes=spec.sla_minutes) if spec.sla_minutes else None
    return fire, deadline


def backfill_preview(
    *,
    pipeline: Pipeline,
    environment: Environment,
    first: datetime,
    last: datetime,
    reprocess: str,
    max_active_runs: int,
    by: object = None,
    allow_over_cap: bool = False,
    now: datetime | None = None,
) -> Preview:
    """Return the preview, or raise BackfillError with every guardrail that refuses it."""
    now = now or timezone.now()
    deployment = Deployment.objects.running(pipeline, environment)
    if deployment is None:
        raise BackfillError(
            {
                "environment": f"{pipeline.slug} is not deployed to {environment.name}: "
                "deploy it there first."
            }
        )
    spec = deployment.version.spec
    errors = range_errors(spec=spec, first=first, last=last, now=now)
    if errors:
        raise BackfillError(errors)
    plan = plans.plan(spec.schedule, spec.timezone, spec.partition_grain, first, last, now=now)
    existing = (
        _existing_runs(deployment.dag_id, environment, plan.from_date, plan.to_date)
        if plan.runs
        else {}
    )
    decided = plans.reprocess_runs(plan.runs, existing, reprocess)
    to_run = decided.create
    counts = _status_counts(plan.runs, decided.status, spec.partition_grain)
    partitions = _partition_count(to_run, spec.partition_grain)
    limits, overlap = limit_errors(
        pipeline=pipeline,
        environment=environment,
        spec=spec,
        plan=plan,
        partitions=partitions,
        by=by,
        allow_over_cap=allow_over_cap,
        now=now,
    )
    if running := run_now_conflict(pipeline, environment, spec, first, last):
        limits["start"], overlap = running, True
    if limits:
        # Another active backfill or run-now is a conflict (409 on submit), not a bad value.
        raise BackfillError(limits, status=409 if overlap else 422)
    health = PipelineHealth.objects.filter(pipeline=pipeline, environment=environment).first()
    next_run, deadline = _schedule_facts(spec, health, now)
    notes = []
    if not to_run:
        notes.append("Nothing to run: every partition in the range is already done this way.")
    return Preview(
        pipeline=pipeline,
        environment=environment,
        deployment=deployment,
        spec=spec,
        first=first,
        last=last,
        reprocess=reprocess,
        max_active_runs=max_active_runs,
        plan=plan,
        to_run=to_run,
        counts=counts,
        estimate_seconds=selectors.estimate_seconds(
            len(to_run), max_active_runs, health.p50_duration_s if health else None
        ),
        next_run=next_run,
        sla_deadline=deadline,
        fingerprint=fingerprint_of(deployment, reprocess, max_active_runs, plan, decided.status),
        notes=notes,
    )


# --- guardrails ------------------------------------------------------------------------------


def range_errors(
    *, spec: PipelineSpec, first: datetime, last: datetime, now: datetime
) -> dict[str, str]:
    """End before start, before the DAG's start date, not complete yet."""
    grain = spec.partition_grain
    label = lambda p: schedule.format_partition(p, grain)  # noqa: E731
    start_date, latest = partition_range(spec=spec, now=now)
    errors = {}
    if last < first:
        errors["end"] = f"The end, {label(last)}, is before the start, {label(first)}."
    if first < start_date:
        errors["start"] = (
            f"{label(first)} is before the pipeline's start date, {label(start_date)} (the "
            "DAG has no runs before it)."
        )
    if last > latest:
        errors["end"] = (
            f"{label(last)} is not complete yet in {spec.timezone}: the latest complete "
            f"partition is {label(latest)}."
        )
    return errors


def limit_errors(
    *,
    pipeline: Pipeline,
    environment: Environment,
    spec: PipelineSpec,
    plan: Any,
    partitions: int,
    by: object,
    allow_over_cap: bool,
    now: datetime,
) -> tuple[dict[str, str], bool]:
    """The environment's cap, the scheduled run's partitions, an active backfill; and whether
    an active backfill is among the reasons."""
    errors = {}
    cap = environment.backfill_max_partitions
    if partitions > cap and not (allow_over_cap and access.is_platform_admin(by)):
        errors["end"] = (
            f"{partitions} partitions is more than {environment.name}'s cap of {cap} for one "
            "backfill: narrow the range, or ask a platform admin to allow it for this request."
        )
    if race := scheduled_race(environment=environment, spec=spec, plan=plan, now=now):
        errors["end"] = race
    active = (
        Backfill.objects.filter(
            pipeline=pipeline, environment=environment, state__in=Backfill.ACTIVE_STATES
        )
        .order_by("-requested_at")
        .first()
    )
    if active is not None:
        errors["start"] = overlap_message(active)
    return errors, active is not None


def run_now_conflict(
    pipeline: Pipeline,
    environment: Environment,
    spec: PipelineSpec,
    first: datetime,
    last: datetime,
) -> str | None:
    """Why a run-now request of a partition in [first, last] refuses the backfill (the two
    would race on one partition: the second fails on duplicate keys), or None."""
    grain = spec.partition_grain
    run = (
        RunRequest.objects.filter(
            ACTIVE_RUN,
            pipeline=pipeline,
            environment=environment,
            partition__gte=schedule.format_partition(first, grain),
            partition__lte=schedule.format_partition(last, grain),
        )
        .select_related("requested_by")
        .order_by("partition")
        .first()
    )
    if run is None:
        return None
    state = run.run_state if run.state == RunRequest.State.SUBMITTED else run.state
    return (
        f"Run now #{run.id} of {run.partition} in {environment.name} ("
        f"{state.replace('_', ' ')}, requested by {run.requested_by.get_username()}) is in "
        "this range: the two would race on one partition. Wait for it to end, or leave that "
        "partition out."
    )


def overlap_message(active: Backfill) -> str:
    return (
        f"A backfill of {active.pipeline.slug} in {active.environment.name} is "
        f"{active.get_state_display().lower()} (#{active.id}, {active.first_partition} → "
        f"{active.last_partition}): one runs at a time; wait for it to finish or cancel it."
    )


def scheduled_race(
    *, environment: Environment, spec: PipelineSpec, plan: Any, now: datetime
) -> str | None:
    """Why the range includes a partition a scheduled run is loading now or will load within
    BACKFILL_SCHEDULE_GRACE_MINUTES (the two would race on one partition), or None."""
    grain = spec.partition_grain
    if plan.unfinished_from is not None:
        # Complete on the wall clock, but the run that loads it has not ended (Airflow's
        # backfill leaves such runs out): the schedule is about to load it.
        (fire,) = schedule.next_fire_times(spec.schedule, spec.timezone, 1, after=now)
        return (
            f"{schedule.format_partition(plan.unfinished_from, grain)} is loaded by the "
            f"scheduled run at {fire:%Y-%m-%d %H:%M} UTC, which has not started yet: a backfill "
            "cannot include it. End the range before it, or wait until the scheduled run has "
            "finished."
        )
    runs = plan.runs
    if not runs:
        return None
    lowest, beyond = runs.lows[0], runs.highs[-1]  # the runs tile [lowest, beyond)
    grace = timedelta(minutes=settings.BACKFILL_SCHEDULE_GRACE_MINUTES)
    fires = schedule.next_fire_times(spec.schedule, spec.timezone, 3, after=now - grace)
    for fire in fires:
        if fire > now + grace:
            break
        for partition in schedule.partitions_for_fire(spec.schedule, spec.timezone, grain, fire):
            if lowest <= partition < beyond:
                when = "is being loaded" if fire <= now else "will be loaded"
                return (
                    f"{schedule.format_partition(partition, grain)} {when} by the scheduled "
                    f"run at {fire:%Y-%m-%d %H:%M} UTC: a backfill of it would race that run. "
                    "End the range before it, or wait until the scheduled run has finished."
                )
    return None


# --- submit ----------------------------------------------------------------------------------


def _chunks(spec: PipelineSpec, runs: Any, size: int) -> list[list[str]]:
    """The runs to create in groups of `size`, each as one Airflow backfill [from, to].

    Airflow's range bounds the logical dates, both ends included; the runs in between that
    are not to be created are skipped by the same reprocess rule that left them out here.
    from_date_for steps back a second where a DST gap would make Airflow skip the first run.
    """
    out = []
    dates = runs.logical_dates
    for i in range(0, len(dates), size):
        first, last = dates[i], dates[min(i + size, len(dates)) - 1]
        start = plans.from_date_for(spec.schedule, spec.timezone, first)
        out.append([start.isoformat(), last.isoformat()])
    return out


def backfill_request(
    *,
    pipeline: Pipeline,
    environment: Environment,
    first: datetime,
    last: datetime,
    reprocess: str,
    max_active_runs: int,
    reason: str,
    fingerprint: str,
    by: object,
    allow_over_cap: bool = False,
) -> Backfill:
    """Submit exactly the previewed set: re-validated atomically; 409 when it changed."""
    if not access.can_backfill(by, pipeline):
        raise BackfillError(
            {
                "__all__": f"Only members of team {pipeline.team.name} or a platform admin "
                "may backfill it."
            },
            status=403,
        )
    reason = reason.strip()
    if not reason:
        raise BackfillError({"reason": "Say why: whoever sees the backfill running reads it."})
    try:
        with transaction.atomic():
            # One request per pipeline at a time: the preview below and the insert see the
            # same facts (runs synced meanwhile change the set only through the fingerprint).
            authoring.pipeline_lock(pipeline_id=pipeline.pk)
            preview = backfill_preview(
                pipeline=pipeline,
                environment=environment,
                first=first,
                last=last,
                reprocess=reprocess,
                max_active_runs=max_active_runs,
                by=by,
                allow_over_cap=allow_over_cap,
            )
            if preview.fingerprint != fingerprint:
                raise BackfillError(
                    {
                        "__all__": "What this backfill would run changed since the preview "
                        "(runs finished or the pipeline was deployed meanwhile): check the new "
                        "preview and submit again."
                    },
                    status=409,
                    preview=preview,
                )
            if not preview.to_run:
                raise BackfillError({"start": "Nothing to run: every partition is done already."})
            backfill = _create(preview, reason=reason, by=by)
    except IntegrityError:
        active = Backfill.objects.filter(
            pipeline=pipeline, environment=environment, state__in=Backfill.ACTIVE_STATES
        ).first()
        message = overlap_message(active) if active else "Another backfill started meanwhile."
        raise BackfillError({"start": message}, status=409) from None
    return backfill


def _create(preview: Preview, *, reason: str, by: object) -> Backfill:
    environment, pipeline = preview.environment, preview.pipeline
    grain = preview.spec.partition_grain
    needs_approval = environment.requires_approval
    with transaction.atomic():
        backfill = Backfill.objects.create(
            pipeline=pipeline,
            environment=environment,
            dag_id=preview.deployment.dag_id,
            first_partition=schedule.format_partition(preview.first, grain),
            last_partition=schedule.format_partition(preview.last, grain),
            from_date=preview.plan.from_date,
            to_date=preview.plan.to_date,
            reprocess=preview.reprocess,
            max_active_runs=preview.max_active_runs,
            reason=reason,
            fingerprint=preview.fingerprint,
            partitions=preview.partitions,
            runs=len(preview.to_run),
            chunks=_chunks(preview.spec, preview.to_run, settings.BACKFILL_CHUNK_RUNS),
            state=State.AWAITING_APPROVAL if needs_approval else State.QUEUED,
            requested_by=by,
        )
        audit_record(
            actor=by,
            action="backfill_requested",
            pipeline=pipeline,
            environment=environment,
            after=preview.as_json() | {"backfill": backfill.id, "reason": reason},
            summary=f"Backfill {backfill.first_partition} → {backfill.last_partition} "
            f"({backfill.partitions} partitions, {backfill.get_reprocess_display().lower()}): "
            f"{reason}",
        )
        if needs_approval:
            notice_send(
                team=pipeline.team,
                environment=environment,
                subject=f"[APPROVAL NEEDED] backfill of {pipeline.slug} in {environment.name}",
                text=f"{by.get_username()} asks to backfill {pipeline.slug} in "
                f"{environment.name}: {backfill.first_partition} → {backfill.last_partition}, "
                f"{backfill.partitions} partitions ({backfill.get_reprocess_display()}).\n"
                f"Reason: {reason}\nAn approver of the team other than the requester decides.",
            )
        else:
            Backfill.enqueue(backfill.id)
    return backfill


def backfill_release(backfill: Backfill, *, now: datetime | None = None) -> None:
    """Queue an approved backfill (the caller holds its row lock and checked the approver).

    Re-checked first, as at submit: the set of runs must still be the one filed (fingerprint)
    and no scheduled run may be about to load one of its partitions; otherwise 409.
    """
    now = now or timezone.now()
    pipeline, environment = backfill.pipeline, backfill.environment
    # The lock of backfill_request and run-now: a run of one of its partitions cannot slip in.
    authoring.pipeline_lock(pipeline_id=pipeline.pk)
    deployment = Deployment.objects.running(pipeline, environment)
    if deployment is None or deployment.dag_id != backfill.dag_id:
        raise BackfillError(
            {
                "__all__": f"Stale: {pipeline.slug} is no longer deployed as filed in "
                f"{environment.name}. The requester files the backfill again."
            },
            status=409,
        )
    spec = deployment.version.spec
    grain = spec.partition_grain
    try:
        # Filed in the grain deployed then: a range that no longer reads back the same in the
        # deployed grain (a day range after a change to hours, or back) is stale, not a 500.
        first = schedule.parse_partition(backfill.first_partition, grain)
        last = schedule.parse_partition(backfill.last_partition, grain)
        if (schedule.format_partition(first, grain), schedule.format_partition(last, grain)) != (
            backfill.first_partition,
            backfill.last_partition,
        ):
            raise schedule.ScheduleError("another grain")
        plan = plans.plan(spec.schedule, spec.timezone, grain, first, last, now=now)
    except schedule.ScheduleError:
        raise BackfillError(
            {
                "__all__": f"Stale: {pipeline.slug} now loads {grain} partitions in "
                f"{environment.name}, and the range filed ({backfill.first_partition} to "
                f"{backfill.last_partition}) was not. The requester files the backfill again."
            },
            status=409,
        ) from None
    existing = (
        _existing_runs(deployment.dag_id, environment, plan.from_date, plan.to_date)
        if plan.runs
        else {}
    )
    decided = plans.reprocess_runs(plan.runs, existing, backfill.reprocess)
    to_run = decided.create
    fingerprint = fingerprint_of(
        deployment, backfill.reprocess, backfill.max_active_runs, plan, decided.status
    )
    if fingerprint != backfill.fingerprint:
        raise BackfillError(
            {
                "__all__": f"Stale: it would now run {len(to_run)} runs, not the {backfill.runs} "
                "filed (runs finished or the pipeline was deployed meanwhile). The requester "
                "files it again."
            },
            status=409,
        )
    if race := scheduled_race(environment=environment, spec=spec, plan=plan, now=now):
        raise BackfillError({"__all__": f"Not now: {race}"}, status=409)
    if running := run_now_conflict(pipeline, environment, spec, first, last):
        raise BackfillError({"__all__": f"Not now: {running}"}, status=409)
    Backfill.objects.filter(id=backfill.id, state=State.AWAITING_APPROVAL).update(
        state=State.QUEUED, next_attempt_at=now, updated_at=now
    )
    Backfill.enqueue(backfill.id)


# --- pause, resume, cancel -------------------------------------------------------------------


def _control(backfill_id: int, by: object, wanted: str, action: str) -> Backfill:
    with transaction.atomic():
        backfill = (
            Backfill.objects.select_for_update(of=("self",))
            .select_related("pipeline__team", "environment")
            .filter(id=backfill_id)
            .first()
        )
        if backfill is None:
            raise BackfillError({"__all__": "No such backfill."}, status=404)
        if not access.can_backfill(by, backfill.pipeline):
            team = backfill.pipeline.team.name
            raise BackfillError(
                {"__all__": f"Only members of team {team} or a platform admin may do this."},
                status=403,
            )
        allowed = {
            Wanted.PAUSE: (State.QUEUED, State.RUNNING),
            Wanted.RUN: (State.PAUSED,),
            Wanted.CANCEL: (State.AWAITING_APPROVAL, State.QUEUED, State.RUNNING, State.PAUSED),
        }[wanted]
        if backfill.state not in allowed:
            raise BackfillError(
                {
                    "__all__": f"The backfill is {backfill.get_state_display().lower()}: it "
                    f"cannot be {action}."
                },
                status=409,
            )
        now = timezone.now()
        if backfill.state == State.AWAITING_APPROVAL:  # nothing in Airflow yet
            Backfill.objects.filter(id=backfill.id).update(
                state=State.CANCELLED, wanted=wanted, finished_at=now, updated_at=now
            )
        else:
            Backfill.objects.filter(id=backfill.id).update(
                wanted=wanted, next_attempt_at=now, updated_at=now
            )
            Backfill.enqueue(backfill.id)
        audit_record(
            actor=by,
            action=f"backfill_{action}",
            pipeline=backfill.pipeline,
            environment=backfill.environment,
            before={"state": backfill.state},
            after={"backfill": backfill.id, "wanted": wanted},
            summary=f"Backfill #{backfill.id} {action}",
        )
    backfill.refresh_from_db()
    return backfill


def backfill_pause(*, backfill_id: int, by: object) -> Backfill:
    return _control(backfill_id, by, Wanted.PAUSE, "paused")


def backfill_resume(*, backfill_id: int, by: object) -> Backfill:
    return _control(backfill_id, by, Wanted.RUN, "resumed")


def backfill_cancel(*, backfill_id: int, by: object) -> Backfill:
    return _control(backfill_id, by, Wanted.CANCEL, "cancelled")


# --- the outbox step -------------------------------------------------------------------------

FOLLOW_SECONDS = 5.0
# Another backfill of the DAG runs in Airflow (one per DAG at a time): look again this often.
WAIT_SECONDS = 15.0
# A paused backfill is looked at again this rarely: resume and cancel make it due at once.
PARKED_SECONDS = 3600.0


def backfill_step(*, backfill_id: int) -> float | None:
    """Take one step; return seconds until the next is due (None: nothing more to do).

    Airflow unreachable: released with backoff, counted against the attempt cap. A create whose
    answer never came back (a lost reply, a 5xx, a worker stopped mid-step) is never sent
    again blindly: `chunk_submitting_at` was written before it was sent, and every later step
    first looks in Airflow's list of the DAG's backfills and adopts the one it made.
    """
    token = Backfill.claim(backfill_id)
    if token is None:
        return None
    backfill = Backfill.objects.select_related("environment").get(id=backfill_id)
    try:
        client = AirflowClient.for_environment(backfill.environment)
    except AirflowCredentialsError as exc:
        _end(backfill, token, State.FAILED, _unreachable_for_good(backfill, exc.message))
        return None
    except SecretNameError as exc:  # a row saved before the rule on variable names
        reason = f"The credentials of {backfill.environment.name}'s Airflow cannot be read: {exc}"
        _end(backfill, token, State.FAILED, _unreachable_for_good(backfill, reason))
        return None
    try:
        return _advance(backfill, token, client)
    except AirflowUnavailable as exc:
        return Backfill.release(backfill.id, token, error=str(exc), updated_at=timezone.now())
    except AirflowError as exc:
        _end(backfill, token, State.FAILED, f"Airflow refused: {exc.message}")
    except Exception as exc:  # a bug: retried with backoff, then capped
        logger.exception("backfill step %s failed", backfill_id)
        return Backfill.release(
            backfill.id, token, error=user_error(exc), updated_at=timezone.now()
        )
    return None


def _unreachable_for_good(backfill: Backfill, reason: str) -> str:
    if backfill.airflow_backfill_id is None and backfill.chunk_submitting_at is None:
        return f"{reason} Nothing of this chunk was sent to Airflow."
    return (
        f"{reason} Airflow may still run this backfill's current chunk: pause or cancel it in "
        "Airflow, and fix the environment's credentials."
    )


def _end(backfill: Backfill, token: uuid.UUID, state: str, error: str = "", **fields: Any) -> None:
    now = timezone.now()
    Backfill.finish(
        backfill.id,
        token,
        state=state,
        last_error=error,
        finished_at=now,
        updated_at=now,
        **fields,
    )


def _move(backfill: Backfill, token: uuid.UUID, delay: float, **fields: Any) -> float | None:
    """Stay claimable in a new state, due again in `delay` seconds; the step went well, so the
    attempts start again from none."""
    now = timezone.now()
    changed = Backfill.objects.filter(id=backfill.id, lease_token=token).update(
        lease_token=None,
        lease_until=None,
        next_attempt_at=now + timedelta(seconds=delay),
        attempts=0,
        last_error="",
        updated_at=now,
        **fields,
    )
    return delay if changed else None


def _park(backfill: Backfill, token: uuid.UUID) -> float | None:
    """PAUSED until a resume or cancel, which makes it due at once. One that came while this
    step ran (`wanted` is no longer pause) stays due now."""
    now = timezone.now()
    later = now + timedelta(seconds=PARKED_SECONDS)
    changed = Backfill.objects.filter(id=backfill.id, lease_token=token).update(
        state=State.PAUSED,
        lease_token=None,
        lease_until=None,
        next_attempt_at=Case(
            When(wanted=Wanted.PAUSE, then=Value(later)),
            default=Value(now),
            output_field=DateTimeField(),
        ),
        attempts=0,
        last_error="",
        updated_at=now,
    )
    if not changed or Backfill.objects.filter(id=backfill.id, wanted=Wanted.PAUSE).exists():
        return None
    return 0.0  # resumed or cancelled meanwhile: that request's own enqueue found it claimed


def _wait(backfill: Backfill, token: uuid.UUID, why: str) -> float | None:
    """Not submitted yet, for a reason that is nobody's failure: due again in WAIT_SECONDS, and
    not an attempt (it may wait for hours); `why` is what the page and the API show."""
    return Backfill.release(
        backfill.id, token, delay=WAIT_SECONDS, last_error=why, updated_at=timezone.now()
    )


def _advance(backfill: Backfill, token: uuid.UUID, client: AirflowClient) -> float | None:
    if backfill.airflow_backfill_id is None and backfill.chunk_submitting_at is not None:
        # A create of this chunk was sent and its answer is unknown: Airflow may have made it.
        found = _created_earlier(backfill, client)
        if found is not None:
            adopted = _adopt(backfill, token, found)
            if adopted is None:
                return None
            backfill = adopted
    wanted, state, airflow_id = backfill.wanted, backfill.state, backfill.airflow_backfill_id
    if wanted == Wanted.CANCEL:
        if airflow_id is None:
            _cancelled(backfill, token, backfill.counted)
        else:
            with contextlib.suppress(AirflowConflict):  # it completed meanwhile
                client.backfill_cancel(airflow_id)
            _cancelled(backfill, token, _chunk_counted(backfill, client))
        return None
    if wanted == Wanted.PAUSE:
        if airflow_id is not None and state != State.PAUSED:
            # 409: the chunk completed meanwhile; nothing to pause. Resume follows it to its
            # end and submits the next chunk then.
            with contextlib.suppress(AirflowConflict):
                client.backfill_pause(airflow_id)
        # No chunk in Airflow (before the first, or between two): the portal's state alone;
        # the next chunk is not submitted while paused.
        return _park(backfill, token)
    if airflow_id is None:  # queued, or resumed before the chunk was submitted
        return _submit(backfill, token, client)
    if state == State.PAUSED:
        with contextlib.suppress(AirflowConflict):  # it completed while paused: followed below
            client.backfill_unpause(airflow_id)
        return _move(backfill, token, 0, state=State.RUNNING)
    return _follow(backfill, token, client)


def _follow(backfill: Backfill, token: uuid.UUID, client: AirflowClient) -> float | None:
    found = client.backfill_get(backfill.airflow_backfill_id)
    if not found.get("completed_at"):
        return _move(backfill, token, FOLLOW_SECONDS, state=State.RUNNING)
    # Decided from Airflow's own runs, not the synced ones: the sync may not have seen the
    # last run end yet.
    counted = _chunk_counted(backfill, client)
    if backfill.chunk_index + 1 < len(backfill.chunks):
        return _move(
            backfill,
            token,
            0,
            state=State.QUEUED,
            chunk_index=backfill.chunk_index + 1,
            counted=counted,
            airflow_backfill_id=None,
            chunk_submitting_at=None,
        )
    if counted["failed"]:
        _end(
            backfill,
            token,
            State.FAILED,
            f"{counted['failed']} run(s) failed: their runs say why; backfill them again with "
            "“Missing and failed”.",
            counted=counted,
        )
    else:
        _end(backfill, token, State.SUCCEEDED, counted=counted)
    return None


def _chunk_counted(backfill: Backfill, client: AirflowClient) -> dict[str, int]:
    """The backfill's counts with those of the current chunk, read from Airflow."""
    start, end = _chunk_range(backfill)
    runs = client.backfill_runs(backfill.dag_id, start, end)
    return selectors.add_counts(backfill.counted, selectors.count_runs(backfill, runs))


def _cancelled(backfill: Backfill, token: uuid.UUID, counted: dict[str, int]) -> None:
    """End it cancelled: every run that was not made, or made and never started, is cancelled
    (runs already running when it was cancelled finish on their own, and count as running)."""
    counted = selectors.add_counts(counted)
    counted["cancelled"] += max(backfill.runs - sum(counted.values()), 0)
    _end(backfill, token, State.CANCELLED, counted=counted)


def _chunk_range(backfill: Backfill) -> tuple[datetime, datetime]:
    start, end = backfill.chunks[backfill.chunk_index]
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


def _created_earlier(backfill: Backfill, client: AirflowClient) -> dict[str, Any] | None:
    """Airflow's backfill that an earlier create of the current chunk made, or None.

    Airflow has no idempotency key for a backfill: it is the DAG's backfill of exactly the
    chunk's range, created no earlier than the first create was sent (less the clocks' skew),
    not completed before it was sent (an earlier backfill of the same days), and not one
    another backfill of the portal owns.
    """
    start, end = _chunk_range(backfill)
    skew = timedelta(seconds=settings.BACKFILL_CLOCK_SKEW_SECONDS)
    since = backfill.chunk_submitting_at - skew
    owned = set(
        Backfill.objects.filter(environment=backfill.environment_id, dag_id=backfill.dag_id)
        .exclude(id=backfill.id)
        .exclude(airflow_backfill_id=None)
        .values_list("airflow_backfill_id", flat=True)
    )
    for theirs in client.backfill_list(backfill.dag_id):  # oldest first
        try:
            same = (
                theirs.get("dag_id") == backfill.dag_id
                and datetime.fromisoformat(theirs["from_date"]) == start
                and datetime.fromisoformat(theirs["to_date"]) == end
                and datetime.fromisoformat(theirs["created_at"]) >= since
                and not _completed_before(theirs, backfill.chunk_submitting_at)
            )
        except (KeyError, TypeError, ValueError):  # not a backfill we could have made
            continue
        if same and theirs.get("id") not in owned:
            return theirs
    return None


def _completed_before(theirs: dict[str, Any], moment: datetime) -> bool:
    completed = theirs.get("completed_at")
    return bool(completed) and datetime.fromisoformat(completed) < moment


def _adopt(backfill: Backfill, token: uuid.UUID, theirs: dict[str, Any]) -> Backfill | None:
    """Record Airflow's backfill as the current chunk's (RUNNING: Airflow runs it; a pause or
    cancel asked for meanwhile is then carried out on it). None: the lease is no longer ours."""
    now = timezone.now()
    fields = {
        "airflow_backfill_id": int(theirs["id"]),
        "chunk_submitting_at": None,
        "state": State.RUNNING,
        # When the create was sent: Airflow queued the chunk's runs after it, and a run is
        # counted as this backfill's when it was queued since (selectors.count_runs).
        "submitted_at": backfill.submitted_at or backfill.chunk_submitting_at,
        "updated_at": now,
    }
    if not Backfill.objects.filter(id=backfill.id, lease_token=token).update(**fields):
        return None
    logger.info("backfill %s adopted Airflow's backfill %s", backfill.id, theirs["id"])
    for name, value in fields.items():
        setattr(backfill, name, value)
    return backfill


def _blocking(backfill: Backfill, client: AirflowClient) -> str:
    """Which of the DAG's backfills in Airflow has not completed, as a sentence."""
    try:
        running = [b for b in client.backfill_list(backfill.dag_id) if not b.get("completed_at")]
    except AirflowError:
        running = []
    if not running:
        return f"another backfill of {backfill.dag_id}"
    other = running[0]
    return (
        f"Airflow's backfill {other.get('id')} of {backfill.dag_id} "
        f"({str(other.get('from_date', ''))[:10]} → {str(other.get('to_date', ''))[:10]})"
    )


def _submit(backfill: Backfill, token: uuid.UUID, client: AirflowClient) -> float | None:
    start, end = _chunk_range(backfill)
    if backfill.chunk_submitting_at is None:
        # Written, and committed, before the create is sent: whatever happens to its answer,
        # every later step knows that Airflow may have made it and looks there first.
        now = timezone.now()
        marked = Backfill.objects.filter(id=backfill.id, lease_token=token).update(
            chunk_submitting_at=now
        )
        if not marked:
            return None
        backfill.chunk_submitting_at = now
    try:
        created = client.backfill_create(
            backfill.dag_id,
            start,
            end,
            reprocess=plans.AIRFLOW_REPROCESS[backfill.reprocess],
            max_active_runs=backfill.max_active_runs,
        )
    except AirflowConflict:
        # Airflow runs one backfill per DAG: another still runs (one started in Airflow's UI,
        # say). Nothing was created; wait for it, as long as it takes.
        chunk = f"chunk {backfill.chunk_index + 1} of {len(backfill.chunks)}"
        return _wait(
            backfill,
            token,
            f"Waiting: {_blocking(backfill, client)} has not completed (Airflow runs one "
            f"backfill per DAG at a time); {chunk} is submitted once it has.",
        )
    return _move(
        backfill,
        token,
        FOLLOW_SECONDS,
        state=State.RUNNING,
        airflow_backfill_id=created["id"],
        chunk_submitting_at=None,
        submitted_at=backfill.submitted_at or backfill.chunk_submitting_at,
    )


# --- progress --------------------------------------------------------------------------------


def progress(backfill: Backfill) -> dict[str, Any]:
    """Done / running / failed / queued runs from the synced runs (no call to Airflow)."""
    return selectors.progress_for([backfill])[backfill.id]


def eta_seconds(backfill: Backfill, counts: dict[str, Any]) -> float | None:
    health = PipelineHealth.objects.filter(
        pipeline=backfill.pipeline_id, environment=backfill.environment_id
    ).first()
    return selectors.eta_from(backfill, counts, health.p50_duration_s if health else None)
