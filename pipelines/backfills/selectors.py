"""Reads of backfills: the list across pipelines (page and API), a pipeline's recent ones, one
backfill's page, the ones awaiting approval, and progress for many backfills at once.

A list reads its rows in one query and the progress of every listed backfill in one more,
whatever the number of rows: `progress_for` aggregates the synced runs of all of them in a
single query, with the same rules as `services.progress` (one backfill, one query);
`backfill_progress` adds the ETA from the pipelines' health rows (one query more).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.shortcuts import get_object_or_404

from pipelines.authoring.models import Pipeline
from pipelines.backfills.models import Backfill
from pipelines.core import access
from pipelines.core.airflow import DagRunState
from pipelines.monitoring.models import NEVER_STARTED, PipelineHealth, RunRecord

State = Backfill.State
LIST_ORDER = ["-requested_at", "-id"]
# The list's state filter: one state, or "active" (awaiting approval, queued, running, paused).
BACKFILL_STATES = (*State.values, "active")
RECENT = 5  # backfills shown on a pipeline's page
AWAITING_SHOWN = 50  # backfills awaiting approval shown in the approvals queue
# Runs Airflow queued just before the portal recorded the submit still belong to it
# (services.progress allows the same).
SUBMIT_SLACK = timedelta(seconds=5)


def backfill_queryset(
    *, team: str = "", environment: str = "", state: str = "", pipeline: str = ""
) -> QuerySet[Backfill]:
    """Backfills of `pipeline` or `team`'s pipelines in `environment` in `state` (slugs and a
    BACKFILL_STATES value; empty: any), newest first, with what a list row or page shows."""
    rows = Backfill.objects.select_related(
        "pipeline__team", "environment", "requested_by", "decided_by"
    )
    if team:
        rows = rows.filter(pipeline__team__slug=team)
    if environment:
        rows = rows.filter(environment__slug=environment)
    if pipeline:
        rows = rows.filter(pipeline__slug=pipeline)
    if state == "active":
        rows = rows.filter(state__in=Backfill.ACTIVE_STATES)
    elif state:
        rows = rows.filter(state=state)
    return rows.order_by(*LIST_ORDER)


def backfill_get(*, backfill_id: int) -> Backfill:
    """The backfill with everything its page shows about it; 404 if there is none."""
    return get_object_or_404(
        Backfill.objects.select_related(
            "pipeline__team", "environment", "requested_by", "decided_by"
        ),
        id=backfill_id,
    )


def pipeline_backfills(*, pipeline: Pipeline) -> list[tuple[Backfill, dict[str, Any]]]:
    """The pipeline's newest backfills with their progress (two queries)."""
    rows = list(backfill_queryset(pipeline=pipeline.slug)[:RECENT])
    progress = progress_for(rows)
    return [(backfill, progress[backfill.id]) for backfill in rows]


def awaiting_approval(*, environment: str = "", pipeline: str = "") -> list[Backfill]:
    """Backfills waiting for an approver, newest first (one query, at most AWAITING_SHOWN)."""
    rows = backfill_queryset(
        state=State.AWAITING_APPROVAL, environment=environment, pipeline=pipeline
    )
    return list(rows[:AWAITING_SHOWN])


def decidable_queryset(*, user: object) -> QuerySet[Backfill]:
    """Backfills awaiting approval that `user` may decide (not evaluated: the badge counts it
    together with the promotions)."""
    return access.decidable_by(user, Backfill.objects.filter(state=State.AWAITING_APPROVAL))


def may_decide(user: object, backfill: Backfill, approver_teams: set[int]) -> bool:
    """Whether `user` may approve or reject `backfill` now (core.access.may_decide, no query)."""
    return backfill.state == State.AWAITING_APPROVAL and access.may_decide(
        user, backfill, approver_teams
    )


def changing(backfill: Backfill) -> bool:
    """Whether the backfill's state or progress may change without anyone asking (a page
    polls it then): queued or running, or paused with a resume or cancel not carried out
    yet."""
    if backfill.state in (State.QUEUED, State.RUNNING):
        return True
    return backfill.state == State.PAUSED and backfill.wanted != Backfill.Wanted.PAUSE


# --- progress --------------------------------------------------------------------------------


def _runs_of(backfill: Backfill) -> Q:
    """The synced runs that belong to `backfill` (submitted: it has a submitted_at): backfill
    runs (Airflow makes a re-run existing run one too) of its DAG and range, queued while it
    was active — not a later backfill's, nor a run-now's or a scheduled run's."""
    runs = Q(
        environment_id=backfill.environment_id,
        dag_id=backfill.dag_id,
        run_type="backfill",
        logical_date__gte=backfill.from_date,
        logical_date__lte=backfill.to_date,
        queued_at__gte=backfill.submitted_at - SUBMIT_SLACK,
    )
    if backfill.finished_at is not None:
        runs &= Q(queued_at__lte=backfill.finished_at)
    return runs


def progress_counts(
    backfill: Backfill, *, done: int, failed: int, cancelled: int, running: int
) -> dict[str, Any]:
    """Done / running / failed / cancelled / queued runs and the percent finished. Queued: the
    runs not made or not started yet (cancelled: failed by a cancel before they started)."""
    total = backfill.runs
    finished = done + failed + cancelled
    return {
        "done": done,
        "running": running,
        "failed": failed,
        "cancelled": cancelled,
        "queued": max(total - finished - running, 0),
        "runs": total,
        "partitions": backfill.partitions,
        "percent": min(round(100 * finished / total), 100) if total else 100,
    }


RUN_COUNTS = ("done", "failed", "cancelled", "running")  # what Backfill.counted holds


def _counted(backfill: Backfill) -> bool:
    """Whether the backfill's progress is the counts it kept when it ended (rows that ended
    before it kept them have none: theirs are read from the synced runs)."""
    return not backfill.is_active and bool(backfill.counted)


def progress_for(backfills: Iterable[Backfill]) -> dict[int, dict[str, Any]]:
    """{backfill id: progress} for every backfill given, in at most one query: an ended one
    shows the runs it counted in Airflow, an active one its synced runs (none if nothing was
    submitted to Airflow yet)."""
    backfills = list(backfills)
    live = [b for b in backfills if b.submitted_at is not None and not _counted(b)]
    found: dict[str, int] = {}
    if live:
        aggregates = {}
        for backfill in live:
            runs, key = _runs_of(backfill), backfill.id
            started_failed = Q(state=DagRunState.FAILED) & ~NEVER_STARTED
            aggregates[f"done_{key}"] = Count("id", filter=runs & Q(state=DagRunState.SUCCESS))
            aggregates[f"failed_{key}"] = Count("id", filter=runs & started_failed)
            aggregates[f"cancelled_{key}"] = Count("id", filter=runs & NEVER_STARTED)
            aggregates[f"running_{key}"] = Count("id", filter=runs & Q(state=DagRunState.RUNNING))
        where = reduce(or_, (_runs_of(b) for b in live))
        found = RunRecord.objects.filter(where).aggregate(**aggregates)
    result = {}
    for b in backfills:
        if _counted(b):
            counts = {k: b.counted.get(k, 0) for k in RUN_COUNTS}
        else:
            counts = {k: found.get(f"{k}_{b.id}", 0) for k in RUN_COUNTS}
        result[b.id] = progress_counts(b, **counts)
    return result


def count_runs(backfill: Backfill, runs: Iterable[dict[str, Any]]) -> dict[str, int]:
    """{done, failed, cancelled, running} of Airflow's runs (API items) of the backfill's range
    that are its own: queued since it was submitted, by the rule of `_runs_of`."""
    since = backfill.submitted_at - SUBMIT_SLACK
    counts = dict.fromkeys(RUN_COUNTS, 0)
    for run in runs:
        queued = run.get("queued_at")
        if not queued or datetime.fromisoformat(queued) < since:
            continue
        state = run.get("state")
        if state == DagRunState.SUCCESS:
            counts["done"] += 1
        elif state == DagRunState.FAILED:
            counts["failed" if run.get("start_date") else "cancelled"] += 1
        elif state == DagRunState.RUNNING:
            counts["running"] += 1
    return counts


def add_counts(*many: dict[str, int]) -> dict[str, int]:
    return {k: sum(c.get(k, 0) for c in many) for k in RUN_COUNTS}


def estimate_seconds(runs: int, max_active_runs: int, p50_s: float | None) -> float | None:
    """Seconds `runs` runs take at `max_active_runs` at a time, from the typical run's duration
    (None: no run has finished there yet). The preview's estimate and the ETA are this one."""
    if not runs:
        return 0.0
    if not p50_s:
        return None
    return math.ceil(runs / max(max_active_runs, 1)) * p50_s


def eta_from(backfill: Backfill, counts: dict[str, Any], p50_s: float | None) -> float | None:
    """Seconds until the runs not finished yet are done at the backfill's concurrency."""
    return estimate_seconds(counts["queued"] + counts["running"], backfill.max_active_runs, p50_s)


def backfill_progress(
    backfills: Iterable[Backfill],
) -> dict[int, tuple[dict[str, Any], float | None]]:
    """{backfill id: (progress, ETA seconds)} for every backfill given, in two queries."""
    backfills = list(backfills)
    progress = progress_for(backfills)
    pairs = {(b.pipeline_id, b.environment_id) for b in backfills}
    typical: dict[tuple[int, int], float | None] = {}
    if pairs:
        where = reduce(or_, (Q(pipeline_id=p, environment_id=e) for p, e in pairs))
        typical = {
            (row["pipeline_id"], row["environment_id"]): row["p50_duration_s"]
            for row in PipelineHealth.objects.filter(where).values(
                "pipeline_id", "environment_id", "p50_duration_s"
            )
        }
    return {
        b.id: (
            progress[b.id],
            eta_from(b, progress[b.id], typical.get((b.pipeline_id, b.environment_id))),
        )
        for b in backfills
    }
