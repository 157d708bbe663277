"""Health: freshness, SLA and the one-word verdict per pipeline × environment.

Pipeline health (did runs succeed?) and data health (is the newest partition there?) are separate
axes; the verdict combines them, worst first. Everything here is computed from RunRecord rows
(synced from Airflow by sync.py) and the schedule, and written to PipelineHealth so that pages
read one precomputed row per pipeline.

Partitions are naive wall-clock datetimes in the pipeline's zone (see schedule.py); the database
stores them as if they were UTC (`as_stored` / `from_stored`).

Total: every function here answers for any stored row (nulls, odd states, partitions at
datetime.min or max, schedules that no longer fire) without raising; what cannot be known is None.
A spec that cannot be evaluated at all (unknown zone or grain, a cron croniter refuses) is named by
`spec_problem`, and monitor.py shows that instead of a verdict.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipelines.authoring.spec import PipelineSpec
from pipelines.core import schedule
from pipelines.core.airflow import TERMINAL_RUN_STATES, DagRunState
from pipelines.core.errors import user_error
from pipelines.monitoring.models import PipelineHealth, Verdict

# Without an SLA, a partition is expected this long after the fire that loads it.
DEFAULT_GRACE = timedelta(minutes=60)
# A pipeline whose success rate over 7 days is below this is a warning even when its last run
# succeeded: it flaps.
FLAPPING_SUCCESS_RATE = 0.9
TERMINAL = TERMINAL_RUN_STATES
# Plain names for the loops over every run of a recompute (an enum attribute costs ~50 ns more).
SUCCESS, FAILED = DagRunState.SUCCESS, DagRunState.FAILED


def as_stored(partition: datetime) -> datetime:
    """Encode a naive wall-clock partition start for a DateTimeField (labelled UTC)."""
    return partition.replace(tzinfo=UTC)


def from_stored(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def shift(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta`, clamped to datetime.min/max instead of raising OverflowError."""
    try:
        return moment + delta
    except OverflowError:
        if delta > timedelta(0):
            return datetime.max.replace(tzinfo=moment.tzinfo)
        return datetime.min.replace(tzinfo=moment.tzinfo)


@functools.lru_cache(maxsize=8192)
def spec_problem(spec: PipelineSpec) -> str | None:
    """Return why health cannot be computed for `spec` (a stored spec the portal no longer
    accepts), or None when it can."""
    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return f"Its time zone “{spec.timezone}” is unknown."
    if spec.partition_grain not in schedule.GRAINS:
        return f"Its partition grain “{spec.partition_grain}” is unknown."
    try:
        schedule.validate_cron(spec.schedule)
    except schedule.ScheduleError as exc:
        return f"Its schedule “{spec.schedule}” cannot be used: {exc}"
    except (TypeError, AttributeError) as exc:
        return f"Its schedule “{spec.schedule}” cannot be used: {user_error(exc)}."
    if spec.sla_minutes is not None and not 0 <= spec.sla_minutes <= 525_600:
        return f"Its SLA of {spec.sla_minutes} minutes is out of range."
    return None


def grace_for(spec: PipelineSpec) -> timedelta:
    return timedelta(minutes=spec.sla_minutes) if spec.sla_minutes else DEFAULT_GRACE


def wall_to_aware(partition: datetime, tz: str) -> datetime:
    """The real moment a wall-clock time names (the first one, in a repeated DST hour), in UTC.

    In UTC because Python subtracts two datetimes that share a tzinfo as wall-clock times,
    ignoring a DST change between them. At the ends of the calendar (where the offset would
    leave datetime's range) the wall-clock time is read as UTC.
    """
    try:
        return partition.replace(tzinfo=ZoneInfo(tz), fold=0).astimezone(UTC)
    except OverflowError:
        return partition.replace(tzinfo=UTC)


# Cached croniter reads. A recompute asks the same question (same schedule, same `now`) for every
# pipeline that shares a schedule, and croniter costs ~75 µs a call; the answers are pure.


# croniter raises when no fire is found within its search window (a schedule that stopped
# firing, a moment at the calendar's ends); for health that is "no fire", not an error.
NO_FIRE = (ValueError, KeyError, OverflowError, LookupError)


@functools.lru_cache(maxsize=8192)
def previous_fire(cron: str, tz: str, before: datetime) -> datetime | None:
    """schedule.previous_fire_time, cached; None when there is none."""
    try:
        return schedule.previous_fire_time(cron, tz, before=before)
    except NO_FIRE:
        return None


@functools.lru_cache(maxsize=8192)
def next_fire(cron: str, tz: str, after: datetime) -> datetime | None:
    """The first of schedule.next_fire_times, cached; None when there is none."""
    try:
        return schedule.next_fire_times(cron, tz, 1, after=after)[0]
    except NO_FIRE:
        return None


@functools.lru_cache(maxsize=8192)
def fire_partitions(cron: str, tz: str, grain: str, fire: datetime) -> tuple[datetime, ...]:
    """schedule.partitions_for_fire, cached (as a tuple: callers share it); () when unknown."""
    try:
        return tuple(schedule.partitions_for_fire(cron, tz, grain, fire))
    except NO_FIRE:
        return ()


@dataclass(frozen=True)
class Freshness:
    expected_partition: datetime | None  # newest partition that should be complete by now
    latest_loaded: datetime | None  # newest partition successfully loaded (its start)
    lag_partitions: int | None  # partitions missing between the two; None: nothing loaded
    lag_hours: float | None


def expected_partition(spec: PipelineSpec, now: datetime) -> datetime | None:
    """Return the newest partition whose loading fire is at least `grace` in the past."""
    cutoff = shift(now, timedelta(microseconds=1) - grace_for(spec))
    fire = previous_fire(spec.schedule, spec.timezone, cutoff)
    if fire is None:
        return None
    parts = fire_partitions(spec.schedule, spec.timezone, spec.partition_grain, fire)
    return parts[-1] if parts else None


def freshness(spec: PipelineSpec, latest_loaded: datetime | None, now: datetime) -> Freshness:
    """Compare the newest loaded partition with the one that should exist now."""
    expected = expected_partition(spec, now)
    if expected is None or latest_loaded is None:
        return Freshness(expected, latest_loaded, None, None)
    step = schedule.GRAINS[spec.partition_grain]
    # Wall-clock steps from the newest loaded partition up to the expected one (a whole
    # partition counts once partly missing); arithmetic, not a loop: a stored partition may
    # sit at datetime.min.
    lag = max(0, -((latest_loaded - expected) // step))
    hours = (
        wall_to_aware(expected, spec.timezone) - wall_to_aware(latest_loaded, spec.timezone)
    ).total_seconds() / 3600
    return Freshness(expected, latest_loaded, lag, max(hours, 0.0))


@dataclass(frozen=True)
class Deadline:
    fire_time: datetime  # aware
    deadline: datetime  # aware
    partitions: tuple[datetime, ...]  # naive wall-clock starts


def deadlines_between(spec: PipelineSpec, after: datetime, until: datetime) -> list[Deadline]:
    """Return the fires whose SLA deadline falls in (after, until], oldest first."""
    if not spec.sla_minutes:
        return []
    sla = timedelta(minutes=spec.sla_minutes)
    result: list[Deadline] = []
    fire = shift(after, -sla)
    while True:
        try:
            fire = schedule.next_fire_times(spec.schedule, spec.timezone, 1, after=fire)[0]
            parts = schedule.partitions_for_fire(
                spec.schedule, spec.timezone, spec.partition_grain, fire
            )
        except NO_FIRE:  # no further fire croniter can find: no further deadline
            return result
        deadline = shift(fire, sla)
        if deadline > until:
            return result
        result.append(Deadline(fire, deadline, tuple(parts)))


def loaded_by(
    partitions: tuple[datetime, ...],
    successes: list[tuple[datetime, datetime, datetime]],
    grain: str,
    deadline: datetime | None = None,
) -> datetime | None:
    """Return when the last of `partitions` was loaded (by `deadline`, if given), else None.

    `successes` are (partition_start, partition_end, end_date) of successful runs.
    """
    step = schedule.GRAINS[grain]
    latest = None
    for part in partitions:
        part_end = shift(part, step)
        finishes = [
            end_date
            for start, end, end_date in successes
            if start is not None
            and end is not None
            and end_date is not None
            and start <= part
            and part_end <= end
            and (deadline is None or end_date <= deadline)
        ]
        if not finishes:
            return None
        first = min(finishes)
        latest = first if latest is None else max(latest, first)
    return latest


@dataclass(frozen=True)
class RunStats:
    last_run_state: str
    last_run_at: datetime | None
    last_success_at: datetime | None
    runs_7d: int
    success_rate_7d: float | None
    success_rate_30d: float | None
    p50_duration_s: float | None
    p95_duration_s: float | None
    failing_streak: int


def run_stats(runs: list[tuple[str, datetime, float | None]], now: datetime) -> RunStats:
    """Summarise runs given as (state, queued_or_start_time, duration_s), newest first.

    A run without a time counts for the streak and the last state, not for the rates; a
    duration that is not a finite number of seconds is left out of the percentiles.
    """
    week, month = shift(now, -timedelta(days=7)), shift(now, -timedelta(days=30))

    def rate(since: datetime) -> tuple[int, float | None]:
        done = [state for state, at, _ in runs if at and at >= since and state in TERMINAL]
        return len(done), (done.count(SUCCESS) / len(done) if done else None)

    runs_7d, rate_7d = rate(week)
    _, rate_30d = rate(month)
    durations = sorted(
        float(d) for state, at, d in runs if state == SUCCESS and at and at >= month and _seconds(d)
    )
    streak = 0
    for state, _, _ in runs:
        if state == FAILED:
            streak += 1
        elif state in TERMINAL:
            break
    return RunStats(
        last_run_state=runs[0][0] if runs else "",
        last_run_at=runs[0][1] if runs else None,
        last_success_at=next((at for state, at, _ in runs if state == SUCCESS), None),
        runs_7d=runs_7d,
        success_rate_7d=rate_7d,
        success_rate_30d=rate_30d,
        p50_duration_s=statistics.median(durations) if durations else None,
        p95_duration_s=percentile(durations, 0.95),
        failing_streak=streak,
    )


def _seconds(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted `values`."""
    if not values:
        return None
    index = max(0, min(len(values) - 1, round(q * len(values) + 0.5) - 1))
    return values[index]


def verdict_for(
    *,
    stats: RunStats,
    fresh: Freshness,
    paused: bool,
    import_error: bool,
    open_sla_miss: bool,
    retrying: bool,
) -> tuple[str, str]:
    """Return (verdict, reason). Worst first: a failing pipeline is failing even if paused."""
    if import_error:
        return Verdict.FAILING, "Airflow cannot import the DAG file."
    if stats.failing_streak:
        runs = "run" if stats.failing_streak == 1 else "runs"
        return Verdict.FAILING, f"Last {stats.failing_streak} {runs} failed."
    if open_sla_miss:
        return Verdict.SLA_MISSED, "A partition was not loaded by its SLA deadline."
    if paused:
        return Verdict.PAUSED, "Paused in Airflow."
    if not stats.last_run_state:
        return Verdict.NEVER_RUN, "No run yet."
    if fresh.lag_partitions is None and stats.last_success_at is None:
        return Verdict.WARNING, "Runs so far loaded nothing."
    if fresh.lag_partitions and fresh.lag_partitions > 0:
        many = "partition" if fresh.lag_partitions == 1 else "partitions"
        hours = fresh.lag_hours or 0.0
        return Verdict.STALE, f"{fresh.lag_partitions} {many} behind ({hours:.1f} h)."
    if retrying:
        return Verdict.WARNING, "A task is retrying."
    if stats.success_rate_7d is not None and stats.success_rate_7d < FLAPPING_SUCCESS_RATE:
        return Verdict.WARNING, f"Only {stats.success_rate_7d:.0%} of runs succeeded in 7 days."
    return Verdict.HEALTHY, "Up to date."


def sla_state_for(spec: PipelineSpec, *, open_miss: bool, at_risk: bool) -> str:
    if not spec.sla_minutes:
        return PipelineHealth.SlaState.NONE
    if open_miss:
        return PipelineHealth.SlaState.MISSED
    if at_risk:
        return PipelineHealth.SlaState.AT_RISK
    return PipelineHealth.SlaState.MET
