"""Write PipelineHealth and SlaMiss rows from RunRecord, in a fixed number of queries per batch.

`health_recompute` rebuilds the rows of the pipelines whose runs or flags changed;
`sla_evaluate` checks every deadline that passed since the last check, whether or not any run
finished (a run that never started still misses its SLA).

One pipeline cannot stop the others: a spec that cannot be read or evaluated, or an exception
while computing one pipeline, is logged with the pipeline id and shown on that pipeline's health
row (verdict warning, the reason says what failed); the rest of the batch carries on.
"""

from __future__ import annotations

import bisect
import functools
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection
from django.db.models import Count, F, FloatField, Func, OuterRef, Q, Subquery
from django.utils import timezone

from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.authoring.spec import PipelineSpec
from pipelines.core import schedule
from pipelines.core.airflow import DagRunState
from pipelines.core.errors import user_error
from pipelines.deployments.models import Deployment, Environment
from pipelines.monitoring import health
from pipelines.monitoring.models import (
    NEVER_STARTED,
    VERDICT_RANK,
    PipelineHealth,
    RunRecord,
    SlaMiss,
    Verdict,
)

logger = logging.getLogger(__name__)
CHUNK = 1000  # pipeline ids per IN (...) list
HISTORY = timedelta(days=30)
SLA_LOOKBACK = timedelta(days=7)
# A row whose health could not be computed is tried again this soon by the clock-driven tick.
RETRY_BROKEN = timedelta(minutes=5)


@dataclass(frozen=True)
class Deployed:
    pipeline_id: int
    team_id: int
    owner_id: int
    spec: PipelineSpec
    registered_at: datetime


# Parsed specs by (version id, spec hash). Versions are immutable; the hash guards against a
# reused id (SQLite can reuse a deleted row's id). The cap only bounds a long-lived worker.
# A spec that cannot be parsed is kept as the message saying why.
_SPECS: dict[tuple[int, str], PipelineSpec | str] = {}
_SPECS_MAX = 50_000


def _specs(keys: set[tuple[int, str]]) -> dict[tuple[int, str], PipelineSpec | str]:
    missing = keys - _SPECS.keys()
    if missing:
        if len(_SPECS) + len(missing) > _SPECS_MAX:
            _SPECS.clear()
        ids = sorted({vid for vid, _ in missing})
        for chunk in _chunks(ids):
            for vid, sha, spec_json in PipelineVersion.objects.filter(id__in=chunk).values_list(
                "id", "spec_sha256", "spec_json"
            ):
                try:
                    _SPECS[(vid, sha)] = PipelineSpec.from_json(spec_json)
                except Exception as exc:  # a row written by an older portal, or by hand
                    error = user_error(exc, doing=f"reading the spec of version {vid}")
                    _SPECS[(vid, sha)] = f"The deployed spec cannot be read: {error}."
    # A key missing here was deleted meanwhile (or reused): read as unreadable, not a KeyError.
    return {key: _SPECS.get(key, "The deployed version is gone.") for key in keys}


@dataclass(frozen=True)
class Unreadable:
    """A deployed pipeline whose spec cannot be read: its health row says so."""

    pipeline_id: int
    team_id: int
    owner_id: int
    error: str


def deployed_pipelines(
    environment: Environment,
    pipeline_ids: Iterable[int] | None = None,
    *,
    unreadable: dict[int, Unreadable] | None = None,
) -> dict[int, Deployed]:
    """Return {pipeline_id: Deployed} for the version currently deployed in `environment`.

    Reads six columns per deployment (not the DAG source) and parses each version's spec once
    per process: the sync, the SLA tick, the recompute and the alerts all call this. A
    pipeline whose spec cannot be parsed is left out (and put in `unreadable`, if given).
    """
    rows = Deployment.objects.deployed().filter(environment=environment)
    if pipeline_ids is not None:
        rows = rows.filter(version__pipeline_id__in=list(pipeline_ids))
    found = list(
        rows.in_request_order().values_list(
            "version__pipeline_id",
            "version__pipeline__team_id",
            "version__pipeline__owner_id",
            "version_id",
            "version__spec_sha256",
            "registered_at",
        )
    )
    specs = _specs({(vid, sha) for _, _, _, vid, sha, _ in found})
    result: dict[int, Deployed] = {}
    for pid, team_id, owner_id, vid, sha, registered_at in found:
        spec = specs[(vid, sha)]
        if isinstance(spec, str):
            result.pop(pid, None)  # rows come oldest version first: the newest decides
            if unreadable is not None:
                unreadable[pid] = Unreadable(pid, team_id, owner_id, spec)
            continue
        if unreadable is not None:
            unreadable.pop(pid, None)
        result[pid] = Deployed(pid, team_id, owner_id, spec, registered_at)
    return result


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


UPDATE_FIELDS = [
    "team", "owner", "verdict", "verdict_rank", "reason", "last_run_state", "last_run_at",
    "last_success_at", "runs_7d", "success_rate_7d", "success_rate_30d", "p50_duration_s",
    "p95_duration_s", "failing_streak", "latest_loaded_partition", "expected_partition",
    "freshness_lag_partitions", "freshness_lag_hours", "next_expected_run", "sla_state",
    "sla_misses_7d", "sla_misses_30d", "sla_deadlines_30d", "refresh_at", "computed_at",
]  # fmt: skip


FLAGS = ("is_paused", "retrying", "has_import_error")


def health_recompute(
    environment: Environment,
    pipeline_ids: Iterable[int] | None = None,
    *,
    now: datetime | None = None,
    flags: dict[str, set[int]] | None = None,
    errors: dict[int, str] | None = None,
) -> int:
    """Recompute the health rows of `pipeline_ids` (all deployed ones if None); return the count.

    `flags` (from a sync) gives, per flag in FLAGS, the pipelines it is set for now; without it
    the rows keep the flags they have. `errors` (from a sync or an SLA check) names pipelines
    whose runs or deadlines could not all be read: their rows say so.
    """
    now = now or timezone.now()
    errors = errors or {}
    unreadable: dict[int, Unreadable] = {}
    deployed = deployed_pipelines(environment, pipeline_ids, unreadable=unreadable)
    ids = sorted(deployed)
    existing = {
        h.pipeline_id: h
        for chunk in _chunks(ids)
        for h in PipelineHealth.objects.filter(environment=environment, pipeline_id__in=chunk)
    }
    runs: dict[int, list[tuple[str, datetime, float | None]]] = defaultdict(list)
    loaded_end: dict[int, datetime] = {}
    open_miss: set[int] = set()
    misses_7d: dict[int, int] = {}
    misses_30d: dict[int, int] = {}
    for chunk in _chunks(ids):
        recent = (
            RunRecord.objects.filter(
                environment=environment, pipeline_id__in=chunk, queued_at__gte=now - HISTORY
            )
            .exclude(NEVER_STARTED)
            .order_by("pipeline_id", "-queued_at")
            .values_list("pipeline_id", "state", _queued_at(), "duration_s")
        )
        for pipeline_id, state, queued_at, duration in recent:
            if isinstance(queued_at, float):
                queued_at = datetime.fromtimestamp(queued_at, UTC)
            runs[pipeline_id].append((state, queued_at, duration))
        # The newest loaded partition end per pipeline: one probe of the run_loaded index each,
        # not a scan of every successful run the pipelines ever had (MAX ... GROUP BY).
        newest_loaded = (
            RunRecord.objects.filter(
                pipeline_id=OuterRef("pk"),
                environment=environment,
                state=DagRunState.SUCCESS,
                partition_end__isnull=False,
            )
            .order_by("-partition_end")
            .values("partition_end")[:1]
        )
        loaded_end.update(
            Pipeline.objects.filter(id__in=chunk)
            .annotate(end=Subquery(newest_loaded))
            .values_list("id", "end")
        )
        misses = (
            SlaMiss.objects.filter(environment=environment, pipeline_id__in=chunk)
            .values("pipeline_id")
            .annotate(
                recent=Count("id", filter=Q(fire_time__gte=now - timedelta(days=7))),
                month=Count("id", filter=Q(fire_time__gte=now - HISTORY)),
                open=Count("id", filter=Q(loaded_at__isnull=True)),
            )
        )
        for row in misses:
            misses_7d[row["pipeline_id"]] = row["recent"]
            misses_30d[row["pipeline_id"]] = row["month"]
            if row["open"]:
                open_miss.add(row["pipeline_id"])
    rows = []
    for pipeline_id in ids:
        d = deployed[pipeline_id]
        row = existing.get(pipeline_id) or PipelineHealth(
            pipeline_id=pipeline_id, environment=environment
        )
        for flag in FLAGS if flags is not None else ():
            setattr(row, flag, pipeline_id in flags[flag])
        row.team_id, row.owner_id = d.team_id, d.owner_id
        problem = health.spec_problem(d.spec)
        if problem:
            _broken(row, f"Health cannot be computed. {problem}", now)
            rows.append(row)
            continue
        try:
            _compute(
                row,
                d,
                runs[pipeline_id],
                loaded_end.get(pipeline_id),
                misses_7d.get(pipeline_id, 0),
                misses_30d.get(pipeline_id, 0),
                pipeline_id in open_miss,
                now,
            )
        except Exception as exc:  # one pipeline's bug must not stop the batch
            doing = f"computing the health of pipeline {pipeline_id} in {environment.slug}"
            _broken(row, f"Health could not be computed: {user_error(exc, doing=doing)}.", now)
        if pipeline_id in errors:
            _note(row, errors[pipeline_id], now)
        rows.append(row)
    existing_unreadable = (
        {
            h.pipeline_id: h
            for h in PipelineHealth.objects.filter(
                environment=environment, pipeline_id__in=sorted(unreadable)
            )
        }
        if unreadable
        else {}
    )
    for pid, u in sorted(unreadable.items()):
        row = existing_unreadable.get(pid) or PipelineHealth(
            pipeline_id=pid, environment=environment
        )
        row.team_id, row.owner_id = u.team_id, u.owner_id
        _broken(row, f"Health cannot be computed. {u.error}", now)
        rows.append(row)
    PipelineHealth.objects.bulk_create(
        rows,
        batch_size=500,
        update_conflicts=True,
        unique_fields=["pipeline", "environment"],
        update_fields=UPDATE_FIELDS + (list(FLAGS) if flags is not None else []),
    )
    return len(rows)


def _queued_at() -> str | Func:
    """RunRecord.queued_at, as epoch seconds on PostgreSQL.

    A recompute of 2,000 pipelines reads ~230k runs; Django's time-zone-aware loader parses
    each timestamp in Python (~3 µs), a float is read in C and made a datetime in ~0.3 µs.
    A float holds today's epoch to the microsecond, so the datetime is the same.
    """
    if connection.vendor != "postgresql":
        return "queued_at"
    return Func(
        F("queued_at"),
        template="EXTRACT(EPOCH FROM %(expressions)s)::float8",
        output_field=FloatField(),
    )


def _compute(
    row: PipelineHealth,
    d: Deployed,
    runs: list,
    loaded_end: datetime | None,
    misses_7d: int,
    misses_30d: int,
    open_miss: bool,
    now: datetime,
) -> None:
    """Set every computed field of `row` from its runs, misses and the clock (no queries)."""
    stats = _fill(row, d, runs, loaded_end, now)
    row.sla_misses_7d, row.sla_misses_30d = misses_7d, misses_30d
    row.sla_deadlines_30d = deadline_count(
        d.spec.schedule,
        d.spec.timezone,
        d.spec.sla_minutes,
        max(d.registered_at or now, now - HISTORY),
        now,
    )
    verdict, reason = health.verdict_for(
        stats=stats,
        fresh=health.Freshness(
            row.expected_partition and health.from_stored(row.expected_partition),
            row.latest_loaded_partition and health.from_stored(row.latest_loaded_partition),
            row.freshness_lag_partitions,
            row.freshness_lag_hours,
        ),
        paused=row.is_paused,
        import_error=row.has_import_error,
        open_sla_miss=open_miss,
        retrying=row.retrying,
    )
    at_risk = _sla_at_risk(d.spec, row, now)
    row.sla_state = health.sla_state_for(d.spec, open_miss=open_miss, at_risk=at_risk)
    row.verdict, row.reason, row.verdict_rank = verdict, reason, VERDICT_RANK[verdict]
    row.computed_at = now


def _broken(row: PipelineHealth, reason: str, now: datetime) -> None:
    """Show on the row that its health is unknown, and have the clock tick try again soon."""
    row.verdict, row.verdict_rank = Verdict.WARNING, VERDICT_RANK[Verdict.WARNING]
    row.reason = _clip(reason)
    row.computed_at, row.refresh_at = now, now + RETRY_BROKEN


def _note(row: PipelineHealth, error: str, now: datetime) -> None:
    """Add a sync or SLA-check failure to a computed row: at least a warning, worst first."""
    if row.verdict_rank > VERDICT_RANK[Verdict.WARNING]:
        row.verdict, row.verdict_rank = Verdict.WARNING, VERDICT_RANK[Verdict.WARNING]
        row.reason = _clip(error)
    else:
        row.reason = _clip(f"{row.reason} Also: {error}")
    if row.refresh_at is None or row.refresh_at > now + RETRY_BROKEN:
        row.refresh_at = now + RETRY_BROKEN


def _clip(text: str) -> str:
    limit = PipelineHealth._meta.get_field("reason").max_length
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fill(
    row: PipelineHealth, d: Deployed, runs: list, loaded_end: datetime | None, now: datetime
) -> health.RunStats:
    """Set the run and freshness fields of `row`; return the run stats for the verdict."""
    stats = health.run_stats(runs, now)
    row.team_id, row.owner_id = d.team_id, d.owner_id
    row.last_run_state, row.last_run_at = stats.last_run_state, stats.last_run_at
    row.last_success_at, row.runs_7d = stats.last_success_at, stats.runs_7d
    row.success_rate_7d, row.success_rate_30d = stats.success_rate_7d, stats.success_rate_30d
    row.p50_duration_s, row.p95_duration_s = stats.p50_duration_s, stats.p95_duration_s
    row.failing_streak = stats.failing_streak
    step = schedule.GRAINS[d.spec.partition_grain]
    latest = health.shift(health.from_stored(loaded_end), -step) if loaded_end else None
    fresh = health.freshness(d.spec, latest, now)
    row.latest_loaded_partition = latest and health.as_stored(latest)
    row.expected_partition = fresh.expected_partition and health.as_stored(fresh.expected_partition)
    row.freshness_lag_partitions = fresh.lag_partitions
    row.freshness_lag_hours = fresh.lag_hours
    row.next_expected_run = health.next_fire(d.spec.schedule, d.spec.timezone, now)
    row.refresh_at = refresh_at(d.spec, row.next_expected_run, now)
    return stats


def refresh_at(spec: PipelineSpec, next_fire: datetime | None, now: datetime) -> datetime | None:
    """When the clock alone next changes a row: the next fire (SLA at risk, next run) or the
    end of a grace (the expected partition moves, a deadline passes); None if never."""
    grace = health.grace_for(spec)
    last_fire = health.previous_fire(spec.schedule, spec.timezone, now)
    moments = []
    if next_fire is not None:
        moments += [next_fire, health.shift(next_fire, grace)]
    if last_fire is not None and health.shift(last_fire, grace) > now:
        moments.append(health.shift(last_fire, grace))
    return min(moments, default=None)


@functools.lru_cache(maxsize=4096)
def deadline_count(
    cron: str, tz: str, sla_minutes: int | None, after: datetime, until: datetime
) -> int:
    """How many SLA deadlines fell in (after, until]: the fires in (after - sla, until - sla]."""
    if not sla_minutes:
        return 0
    sla = timedelta(minutes=sla_minutes)
    first, last = after - sla, until - sla
    fires = _fires_in_days(cron, tz, first.astimezone(UTC).date(), last.astimezone(UTC).date())
    return bisect.bisect_right(fires, last) - bisect.bisect_right(fires, first)


@functools.lru_cache(maxsize=4096)
def _fires_in_days(cron: str, tz: str, first: date, last: date) -> tuple[datetime, ...]:
    """Every fire in the UTC days first..last, oldest first.

    Keyed by day, not by the moment, so that the recomputes of one day share it: walking a
    month of an hourly schedule with croniter takes ~25 ms.
    """
    start = datetime.combine(first, time.min, tzinfo=UTC)
    end = health.shift(datetime.combine(last, time.min, tzinfo=UTC), timedelta(days=1))
    fires: list[datetime] = []
    cursor = health.shift(start, -timedelta(microseconds=1))
    while True:
        try:
            batch = schedule.next_fire_times(cron, tz, 64, after=cursor)
        except health.NO_FIRE:  # no further fire croniter can find
            return tuple(fires)
        for fire in batch:
            if fire >= end:
                return tuple(fires)
            fires.append(fire)
            cursor = fire


def due_for_refresh(environment: Environment, now: datetime) -> list[int]:
    """Pipelines whose health the clock has changed since it was computed."""
    return list(
        PipelineHealth.objects.filter(environment=environment, refresh_at__lte=now).values_list(
            "pipeline_id", flat=True
        )
    )


def _sla_at_risk(spec: PipelineSpec, row: PipelineHealth, now: datetime) -> bool:
    """The latest fire's deadline is still ahead but its partitions are not loaded yet."""
    if not spec.sla_minutes:
        return False
    fire = health.previous_fire(spec.schedule, spec.timezone, now)
    if fire is None or now >= health.shift(fire, timedelta(minutes=spec.sla_minutes)):
        return False
    parts = health.fire_partitions(spec.schedule, spec.timezone, spec.partition_grain, fire)
    latest = row.latest_loaded_partition and health.from_stored(row.latest_loaded_partition)
    return bool(parts) and (latest is None or latest < parts[-1])


def sla_evaluate(
    environment: Environment,
    *,
    now: datetime | None = None,
    errors: dict[int, str] | None = None,
) -> set[int]:
    """Record misses for deadlines passed since the last check; mark late loads. Return changed ids.

    Independent of runs finishing: a deadline passes on the clock, and a partition with no
    successful run by then is a miss whether its run failed, is queued, never started or was
    never created. A pipeline whose check fails is logged, put in `errors` (for its health
    row) and checked again next time; the others carry on.
    """
    now = now or timezone.now()
    errors = {} if errors is None else errors
    deployed = {
        pid: d
        for pid, d in deployed_pipelines(environment).items()
        if d.spec.sla_minutes and not health.spec_problem(d.spec)
    }
    ids = sorted(deployed)
    checked = dict(
        PipelineHealth.objects.filter(environment=environment, pipeline_id__in=ids).values_list(
            "pipeline_id", "sla_checked_until"
        )
    )
    paused = set(
        PipelineHealth.objects.filter(
            environment=environment, pipeline_id__in=ids, is_paused=True
        ).values_list("pipeline_id", flat=True)
    )
    open_misses = list(
        SlaMiss.objects.filter(environment=environment, loaded_at__isnull=True, pipeline_id__in=ids)
    )

    def failed(pid: int, exc: Exception) -> None:
        doing = f"checking the SLA of pipeline {pid} in {environment.slug}"
        errors[pid] = f"The SLA check failed: {user_error(exc, doing=doing)}."

    due: dict[int, list[health.Deadline]] = {}
    for pid in ids:
        d = deployed[pid]
        try:
            after = max(checked.get(pid) or d.registered_at or now, now - SLA_LOOKBACK)
            if pid not in paused and after < now:
                due[pid] = health.deadlines_between(d.spec, after, now)
        except Exception as exc:
            failed(pid, exc)
    need = set(due) | {m.pipeline_id for m in open_misses}
    successes: dict[int, list[tuple[datetime, datetime, datetime]]] = defaultdict(list)
    for chunk in _chunks(sorted(need)):
        for pid, start, end, end_date in RunRecord.objects.filter(
            environment=environment,
            pipeline_id__in=chunk,
            state=DagRunState.SUCCESS,
            end_date__gte=now - SLA_LOOKBACK - HISTORY,
        ).values_list("pipeline_id", "partition_start", "partition_end", "end_date"):
            if start and end and end_date:
                successes[pid].append(
                    (health.from_stored(start), health.from_stored(end), end_date)
                )
    changed: set[int] = set()
    new_misses = []
    for pid, deadlines in due.items():
        d = deployed[pid]
        try:
            found = [
                _miss(pid, d, environment, dl, successes[pid], now)
                for dl in deadlines
                if not health.loaded_by(
                    dl.partitions, successes[pid], d.spec.partition_grain, dl.deadline
                )
            ]
        except Exception as exc:
            failed(pid, exc)
            continue
        new_misses += found
        if found:
            changed.add(pid)
    SlaMiss.objects.bulk_create(new_misses, batch_size=500, ignore_conflicts=True)
    late = []
    for miss in open_misses:
        d = deployed[miss.pipeline_id]
        try:
            parts = health.fire_partitions(
                d.spec.schedule, d.spec.timezone, d.spec.partition_grain, miss.fire_time
            )
            loaded_at = health.loaded_by(parts, successes[miss.pipeline_id], d.spec.partition_grain)
        except Exception as exc:
            failed(miss.pipeline_id, exc)
            continue
        if loaded_at:
            miss.loaded_at = loaded_at
            late.append(miss)
            changed.add(miss.pipeline_id)
    SlaMiss.objects.bulk_update(late, ["loaded_at"], batch_size=500)
    # A failed pipeline keeps its mark: its deadlines are checked again next time.
    for chunk in _chunks([pid for pid in ids if pid not in errors]):
        PipelineHealth.objects.filter(environment=environment, pipeline_id__in=chunk).update(
            sla_checked_until=now
        )
    return changed | (set(errors) & set(ids))


def _miss(
    pid: int,
    d: Deployed,
    environment: Environment,
    dl: health.Deadline,
    successes: list[tuple[datetime, datetime, datetime]],
    now: datetime,
) -> SlaMiss:
    return SlaMiss(
        pipeline_id=pid,
        environment=environment,
        team_id=d.team_id,
        fire_time=dl.fire_time,
        deadline=dl.deadline,
        partition=_describe(dl.partitions, d.spec.partition_grain),
        partition_start=health.as_stored(dl.partitions[0]) if dl.partitions else None,
        loaded_at=health.loaded_by(dl.partitions, successes, d.spec.partition_grain),
        detected_at=now,
    )


def _describe(partitions: tuple[datetime, ...], grain: str) -> str:
    if not partitions:
        return ""
    first = schedule.format_partition(partitions[0], grain)
    if len(partitions) == 1:
        return first
    return f"{first}…{schedule.format_partition(partitions[-1], grain)}"
