"""Run now under four eyes: a run that can replace loaded data in an environment that requires
approval waits for an approver, like promotions and backfills.

- `run_case` says, before anything is submitted, which case a run-now request is: it runs at
  once (the environment needs no approval, or nothing loaded is at risk: the partition was
  never loaded or every run of it failed, and the guards stay on), it waits for an approver (a
  re-load of loaded data, a partition a run is loading now, or `accept_smaller`, which lets an
  emptied source shrink the partition), or it is refused (a backfill of the same environment
  covers the partition: the two would race on one partition).
- `run_now` files the request in that case; the pipeline's row is locked first, as
  backfills.services.backfill_request does, so a run and a backfill of the same partition
  cannot both pass the check.
- `run_approve` / `run_reject`: the four-eyes rule of promotions and backfills
  (releases.services._decidable); a request whose partition changed since (a run finished, a
  new version was deployed, a backfill now covers it) is stale, 409, and nothing runs.
- `run_withdraw`: the requester takes a waiting request back.

Every request into an environment that requires approval is audited (runs.services) and
announced through the team's quiet channels; so is every decision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q

from pipelines.alerts.services import notice_send
from pipelines.authoring import services as authoring
from pipelines.authoring.models import Pipeline
from pipelines.backfills.models import Backfill
from pipelines.core import schedule
from pipelines.core.airflow import DagRunState
from pipelines.core.audit import audit_record
from pipelines.deployments.models import Environment
from pipelines.monitoring import health
from pipelines.monitoring.models import RunRecord, SyncState
from pipelines.releases.services import ReleaseError, _conflict, _decidable, _portal, _who
from pipelines.runs import services as runs
from pipelines.runs.models import RunRequest


@dataclass(frozen=True)
class RunCase:
    """What a run-now request for one partition would do, said before it is submitted."""

    partition: str
    needs_approval: bool
    message: str
    fingerprint: str

    def as_json(self) -> dict[str, object]:
        return {
            "partition": self.partition,
            "needs_approval": self.needs_approval,
            "message": self.message,
        }


def backfill_covering(
    pipeline: Pipeline, environment: Environment, key: str, *, exclude: int | None = None
) -> Backfill | None:
    """The active backfill of `pipeline` in `environment` whose range holds partition `key`."""
    rows = Backfill.objects.filter(
        pipeline=pipeline,
        environment=environment,
        state__in=Backfill.ACTIVE_STATES,
        first_partition__lte=key,
        last_partition__gte=key,
    ).select_related("requested_by")
    if exclude is not None:
        rows = rows.exclude(id=exclude)
    return rows.first()


def backfill_conflict(backfill: Backfill, key: str, environment: Environment) -> str:
    return (
        f"Backfill #{backfill.id} ({backfill.first_partition} → {backfill.last_partition}, "
        f"{backfill.get_state_display().lower()}, requested by {_who(backfill.requested_by)}) "
        f"covers {key} in {environment.name}: the two would race on one partition. Wait for "
        "it to end, or cancel it first."
    )


def _partition_runs(
    pipeline: Pipeline, environment: Environment, partition: datetime
) -> list[tuple[str, str, bool]]:
    """(dag_run_id, state, started) of the synced runs that load `partition`, oldest first."""
    stored = health.as_stored(partition)
    rows = RunRecord.objects.filter(
        pipeline=pipeline,
        environment=environment,
        partition_start__lte=stored,
        partition_end__gt=stored,
    ).order_by("queued_at", "id")
    return [
        (run_id, state, started is not None)
        for run_id, state, started in rows.values_list("dag_run_id", "state", "start_date")
    ]


def _unsynced_runs(
    pipeline: Pipeline, environment: Environment, key: str, synced: set[str]
) -> list[str]:
    """What ran over partition `key` that the sync has not recorded yet (it reads Airflow
    every 30 s): a run-now triggered and not failed, a backfill submitted over it that ended
    after the sync's watermark (or has not ended). A partition loaded a moment ago must not
    look never loaded."""
    triggered = (
        RunRequest.objects.filter(
            pipeline=pipeline,
            environment=environment,
            partition=key,
            state=RunRequest.State.SUBMITTED,
        )
        .exclude(run_state=DagRunState.FAILED)
        .exclude(dag_run_id__in=synced)
        .order_by("id")
        .values_list("id", flat=True)
    )
    found = [f"run now #{run_id}" for run_id in triggered]
    # A backfill's runs are synced once the sync's watermark has passed its end.
    watermark = (
        SyncState.objects.filter(environment=environment)
        .values_list("watermark", flat=True)
        .first()
    )
    backfills = Backfill.objects.filter(
        pipeline=pipeline,
        environment=environment,
        first_partition__lte=key,
        last_partition__gte=key,
        submitted_at__isnull=False,
    )
    if watermark is not None:
        backfills = backfills.filter(Q(finished_at__isnull=True) | Q(finished_at__gte=watermark))
    found += [f"backfill #{b}" for b in backfills.order_by("id").values_list("id", flat=True)]
    return found


def run_case(
    *, pipeline: Pipeline, environment: Environment, partition: datetime, accept_smaller: bool
) -> RunCase:
    """Say whether a run-now of `partition` in `environment` runs at once or waits for an
    approver, and why; raise runs.RunError when it cannot be requested at all."""
    deployment = runs.deployment_for(pipeline=pipeline, environment=environment)
    if deployment is None:
        raise runs.RunError(
            "environment", f"{pipeline.slug} is not deployed to {environment.name} yet."
        )
    spec = deployment.version.spec
    key = schedule.format_partition(partition, spec.partition_grain)
    covering = backfill_covering(pipeline, environment, key)
    if covering is not None:
        raise runs.RunError("partition", backfill_conflict(covering, key, environment))
    history = _partition_runs(pipeline, environment, partition)
    unsynced = _unsynced_runs(pipeline, environment, key, {run_id for run_id, _, _ in history})
    digest = hashlib.sha256(f"{deployment.id}|{key}|{int(accept_smaller)}".encode())
    for run_id, state, started in history:
        digest.update(f"\n{run_id}|{state}|{int(started)}".encode())
    for what in unsynced:
        digest.update(f"\n{what}".encode())
    fingerprint = digest.hexdigest()
    loaded = [run_id for run_id, state, _ in history if state == DagRunState.SUCCESS]
    loading = [
        run_id
        for run_id, state, _ in history
        if state not in (DagRunState.SUCCESS, DagRunState.FAILED)
    ]
    # An adopted table held rows before the portal ran anything: a partition with no run may
    # still hold data, so only a partition whose runs all failed is known to hold nothing.
    unknown = not history and spec.adopt_existing_table
    at_risk = []
    if loaded:
        at_risk.append(f"{key} is loaded in {environment.name}: a run replaces its rows")
    elif loading:
        at_risk.append(f"a run is loading {key} in {environment.name} now")
    elif unsynced:
        at_risk.append(
            f"{key} may be loaded in {environment.name}: {unsynced[0]} ran over it, and the "
            "portal has not read its runs from Airflow yet"
        )
    elif unknown:
        at_risk.append(
            f"{key} may hold rows of the adopted table in {environment.name} (no run of it yet)"
        )
    if accept_smaller:
        at_risk.append("accepting a smaller partition lets an emptied source shrink it")
    if not environment.requires_approval:
        message = f"Runs at once in {environment.name}."
        return RunCase(key, False, message, fingerprint)
    if not at_risk:
        message = (
            f"No loaded data at risk ({key} was never loaded in {environment.name}, or every "
            "run of it failed): it runs at once with the guards on. It is audited and announced."
        )
        return RunCase(key, False, message, fingerprint)
    risks = "; ".join(at_risk)
    message = (
        f"{risks[:1].upper()}{risks[1:]}. In {environment.name} that needs approval: the "
        f"request waits until an approver of team {pipeline.team.name} other than you "
        "approves it."
    )
    return RunCase(key, True, message, fingerprint)


@transaction.atomic
def run_now(
    *,
    pipeline: Pipeline,
    environment: Environment,
    partition: datetime,
    by: object,
    accept_smaller: bool = False,
) -> tuple[RunRequest, bool]:
    """File a run-now request in the case `run_case` says; return (request, created).

    Raise runs.RunError when it cannot be requested (not deployed, a backfill covers it).
    """
    # The same lock as backfill_request: one of a run and a backfill of a partition wins.
    authoring.pipeline_lock(pipeline_id=pipeline.id)
    case = run_case(
        pipeline=pipeline,
        environment=environment,
        partition=partition,
        accept_smaller=accept_smaller,
    )
    run, created = runs.run_request(
        pipeline=pipeline,
        environment=environment,
        partition=partition,
        by=by,
        accept_smaller=accept_smaller,
        approval_reason=case.message if case.needs_approval else "",
        partition_fingerprint=case.fingerprint,
    )
    if created and environment.requires_approval:
        _announce(run, by, "approval needed" if case.needs_approval else "requested", "")
    return run, created


def _announce(run: RunRequest, by: object, what: str, comment: str) -> None:
    pipeline, env = run.pipeline, run.environment
    smaller = " accepting a smaller partition" if run.accept_smaller else ""
    if what in ("approval needed", "requested"):
        text = (
            f"{_who(by)} asked to run {pipeline.slug} for partition {run.partition} in "
            f"{env.name}{smaller}."
            + (f"\n{run.approval_reason}" if what == "approval needed" else "")
        )
    else:
        text = (
            f"{_who(by)} {what} {_who(run.requested_by)}'s run of {pipeline.slug} for "
            f"partition {run.partition} in {env.name}{smaller}."
            + (f"\nComment: {comment}" if comment else "")
        )
    notice_send(
        team=pipeline.team,
        environment=env,
        subject=f"[{what.upper()}] run of {pipeline.slug} {run.partition} in {env.name}",
        text=text + f"\nPortal: {_portal(pipeline)}",
        emails=[run.requested_by.email] if what not in ("approval needed", "requested") else [],
    )


def _decidable_run(run_id: int, by: object) -> RunRequest:
    return _decidable(
        RunRequest.objects.select_related("environment"),
        run_id,
        by,
        pending=RunRequest.State.AWAITING_APPROVAL,
        noun="run",
        yours="withdraw",
    )


def _decided(run: RunRequest, by: object, action: str, comment: str) -> None:
    audit_record(
        actor=by,
        action=f"run_{action}",
        pipeline=run.pipeline,
        environment=run.environment,
        before={"state": RunRequest.State.AWAITING_APPROVAL},
        after={"run": run.id, "partition": run.partition, "comment": comment},
        summary=f"{action.capitalize()} run #{run.id} of {run.partition}"
        + (f": {comment}" if comment else ""),
    )
    _announce(run, by, action, comment)


def run_staleness(run: RunRequest) -> str | None:
    """Why an approval of `run` would be stale now (its partition's state changed), or None."""
    # The key's own spelling says its grain: a new version with another grain changes the key,
    # and so the fingerprint.
    try:
        partition = schedule.parse_partition(
            run.partition, "hour" if "T" in run.partition else "day"
        )
        case = run_case(
            pipeline=run.pipeline,
            environment=run.environment,
            partition=partition,
            accept_smaller=run.accept_smaller,
        )
    except (runs.RunError, schedule.ScheduleError) as exc:
        return f"{getattr(exc, 'message', None) or exc} Ask again if it still needs loading."
    if case.fingerprint != run.partition_fingerprint:
        return (
            f"Partition {run.partition} in {run.environment.name} changed since the request "
            "(a run of it started or ended, or another version was deployed): approve only "
            "what you have seen. Ask again if it still needs loading."
        )
    return None


@transaction.atomic
def run_approve(*, run_id: int, by: object, comment: str = "") -> RunRequest:
    """Approve: the run goes to Airflow on commit, unless the request went stale (409)."""
    run = _decidable_run(run_id, by)
    authoring.pipeline_lock(pipeline_id=run.pipeline_id)
    stale = run_staleness(run)
    if stale:
        raise _conflict(f"This run request is stale: {stale}")
    comment = comment.strip()
    if not runs.run_release(run=run, by=by, comment=comment):
        raise _conflict("This request was decided meanwhile; a decided request is final.")
    _decided(run, by, "approved", comment)
    run.refresh_from_db()
    return run


@transaction.atomic
def run_reject(*, run_id: int, by: object, comment: str) -> RunRequest:
    comment = comment.strip()
    if not comment:
        raise ReleaseError("Say why it is rejected: the requester reads it.", field="comment")
    run = _decidable_run(run_id, by)
    if not runs.run_close(run=run, by=by, state=RunRequest.State.REJECTED, comment=comment):
        raise _conflict("This request was decided meanwhile; a decided request is final.")
    _decided(run, by, "rejected", comment)
    run.refresh_from_db()
    return run


@transaction.atomic
def run_withdraw(*, run_id: int, by: object) -> RunRequest:
    """The requester takes back a request still awaiting approval."""
    run = (
        RunRequest.objects.select_for_update(of=("self",))
        .select_related("pipeline__team", "environment", "requested_by")
        .filter(id=run_id)
        .first()
    )
    if run is None:
        raise ReleaseError("No such run.", status=404)
    if run.requested_by_id != getattr(by, "pk", None):
        raise ReleaseError("Only the requester may withdraw a run request.", status=403)
    if not runs.run_close(run=run, by=by, state=RunRequest.State.WITHDRAWN):
        raise _conflict(
            f"This run request is already {run.get_state_display().lower()}: only one awaiting "
            "approval may be withdrawn."
        )
    _decided(run, by, "withdrawn", "")
    run.refresh_from_db()
    return run
