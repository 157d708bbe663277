"""Cron helpers on croniter: validate, describe, fire times and the partitions a run loads.

Every function takes an IANA time-zone name: cron fields are read as wall-clock time in that
zone, the way Airflow's CronDataIntervalTimetable (the generated DAGs' timetable) reads them, so
"0 2 * * *" in Europe/London fires at 02:00 London time in summer and winter alike.

Airflow's view of a scheduled run, which the portal must mirror: its data interval is
[previous fire, this fire), its logical_date is the interval *start*, and it loads the partitions
`partitions_for_fire(fire_time=data_interval_end)` returns.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from cron_descriptor import Options, get_description
from croniter import CroniterBadDateError, CroniterError, croniter

PRESETS = {
    "hourly": "0 * * * *",
    "daily": "0 2 * * *",
    "weekly": "0 3 * * 1",
}
# Cron macros Airflow users type out of habit, written as the five fields they stand for.
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
GRAINS = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
# A cron that cannot fire within this many years is treated as never firing ("0 0 30 2 *").
MAX_YEARS_BETWEEN_FIRES = 5


class ScheduleError(ValueError):
    """A schedule or time zone the portal cannot use; str() is the user-facing message."""


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone_names() -> list[str]:
    """Return every IANA zone name, sorted (for the form's suggestions)."""
    return sorted(_zone_names())


def validate_timezone(name: str) -> ZoneInfo:
    """Return the zone for an IANA name, or raise ScheduleError."""
    if name not in _zone_names():
        raise ScheduleError(f"“{name}” is not an IANA time zone (for example Europe/London, UTC).")
    return ZoneInfo(name)


def validate_cron(expr: str) -> str:
    """Return the normalised five-field cron for `expr`, or raise ScheduleError.

    Accepts the preset names (hourly, daily, weekly). Rejects seconds fields, unknown syntax and
    expressions that never fire, like the 30th of February.
    """
    expr = " ".join(expr.split())
    expr = PRESETS.get(expr.lower(), MACROS.get(expr.lower(), expr))
    if not expr:
        raise ScheduleError("Enter a cron expression, for example “0 2 * * *” (daily at 02:00).")
    if len(expr.split(" ")) != 5:
        raise ScheduleError(
            "Use five cron fields: minute hour day-of-month month day-of-week (e.g. “0 2 * * *”)."
        )
    try:
        it = croniter(
            expr,
            datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")),
            max_years_between_matches=MAX_YEARS_BETWEEN_FIRES,
        )
        it.get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleError("This schedule never fires (no date matches all its fields).") from None
    except CroniterError as exc:  # croniter's own words about the expression
        raise ScheduleError(f"Not a valid cron expression: {exc}.") from None
    except schedule_errors():  # a KeyError or an IndexError from inside croniter says nothing
        raise ScheduleError("Not a valid cron expression.") from None
    return expr


def describe(expr: str) -> str:
    """Return a plain-English description of a valid cron ("At 02:00").

    cron_descriptor cannot word every cron croniter accepts ("0 0 * */2,* *"): then the cron
    itself is the description.
    """
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = True
    try:
        return get_description(expr, options)
    except Exception:  # cron_descriptor's FormatError and the ValueErrors under it
        return f"Cron “{expr}”"


# Airflow's CronDataIntervalTimetable (airflow/timetables/_cron.py and interval.py, Airflow
# 3.3.2), mirrored step for step so that the portal's fire times are Airflow's, DST included:
# - cron fields are matched on naive wall-clock time (croniter), then made aware the way
#   Airflow's make_aware does: a repeated wall time is the *second* occurrence (fold=1), a
#   skipped one keeps the offset from before the change, so 02:30 on a spring-forward night in
#   New York runs at 03:30 EDT;
# - a cron whose hour field is "*" instead moves by real time from the previous fire (the
#   naive distance added to the aware instant), so "0 * * * *" runs at both 01:00 EDT and
#   01:00 EST, and in half-hour-shift zones (Australia/Lord_Howe) at :30 on change days.
# Reference: https://airflow.apache.org/docs/apache-airflow/stable/authoring-and-scheduling/timezone.html
# Scheduler steps mirrored for the guardrail: a run is created just after its end; while
# Airflow's timetable cannot compute the next run it retries every scheduler loop.
_STALL_RETRY = timedelta(minutes=1)
_STALL_LIMIT = 6 * 60  # retries (minutes) before the portal calls the DAG stuck
# Chain steps walked for one answer: far more than any caller needs, a bound on bad input.
_MAX_STEPS = 5000
# The guardrail and the preview look this far ahead for DST changes (rules repeat yearly).
DST_HORIZON = timedelta(days=366)


class _Stall(Exception):
    """Airflow's timetable refuses to compute the next run at this moment."""


def _croniter(expr: str, start: datetime) -> croniter:
    return croniter(expr, start, max_years_between_matches=MAX_YEARS_BETWEEN_FIRES)


def _moves_by_real_time(it: croniter) -> bool:
    # Airflow's _covers_every_hour: croniter normalises "0-23" and "*/1" to "*" too.
    return it.expanded[1] == ["*"]


def _in(moment: datetime, zone: ZoneInfo) -> datetime:
    # Through UTC: astimezone() to a datetime's own tzinfo returns it unchanged, even a
    # wall-clock time that the zone skips.
    return moment.astimezone(UTC).astimezone(zone)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return _in(moment, zone).replace(tzinfo=None, fold=0)


def _localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """Return Airflow's instant for a wall-clock time (second of two, shifted when skipped)."""
    later = naive.replace(tzinfo=zone, fold=1)
    if _wall(later, zone) == naive:
        return later.astimezone(UTC)
    # Skipped by the change: PEP 495's fold=0 reads it with the offset from before the change,
    # as pendulum's convert(fold=1) does, so it lands after the gap.
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _step(expr: str, zone: ZoneInfo, current: datetime, *, forward: bool) -> datetime:
    """Airflow's CronMixin._get_next / _get_prev, one step from `current`."""
    naive = _wall(current, zone)
    it = _croniter(expr, naive)
    scheduled = it.get_next(datetime) if forward else it.get_prev(datetime)
    if not _moves_by_real_time(it):
        return _localize(scheduled, zone)
    return current.astimezone(UTC) + (scheduled - naive)


def _chain(expr: str, zone: ZoneInfo, start: datetime) -> Iterator[datetime]:
    """Yield the fires after `start` (in UTC), each Airflow's _get_next of the one before."""
    current = start.astimezone(UTC)
    naive = _wall(current, zone)
    it = _croniter(expr, naive)
    real_time = _moves_by_real_time(it)
    for _ in range(_MAX_STEPS):
        scheduled = it.get_next(datetime)
        fire = current + (scheduled - naive) if real_time else _localize(scheduled, zone)
        wall = _wall(fire, zone)
        if wall != scheduled:  # DST moved the fire: Airflow restarts croniter from its wall time
            it = _croniter(expr, wall)
        current, naive = fire, wall
        yield fire


def next_fire_times(expr: str, tz: str, n: int = 5, *, after: datetime) -> list[datetime]:
    """Return the next `n` fire times strictly after `after`, as aware datetimes in `tz`.

    The fires Airflow's scheduler creates runs at (see the note above), DST days included.
    """
    zone = ZoneInfo(tz)
    try:
        anchor = previous_fire_time(expr, tz, before=after)
    except CroniterBadDateError:  # no fire in the years before `after`: start from it
        anchor = after
    result: list[datetime] = []
    for fire in _chain(expr, zone, anchor):
        if fire > after:
            result.append(fire.astimezone(zone))
            if len(result) == n:
                break
    return result


def previous_fire_time(expr: str, tz: str, *, before: datetime) -> datetime:
    """Return the latest fire time strictly before `before`, aware in `tz`."""
    zone = ZoneInfo(tz)
    naive = _wall(before, zone)
    it = _croniter(expr, naive)
    for _ in range(_MAX_STEPS):
        scheduled = it.get_prev(datetime)
        if _moves_by_real_time(it):
            return (before.astimezone(UTC) - (naive - scheduled)).astimezone(zone)
        fire = _localize(scheduled, zone)  # UTC: aware datetimes of one zone compare as wall time
        # The second 01:30 of a fall-back night is after a `before` of 01:40 (first pass); a
        # skipped 02:30 runs at 03:30, after a `before` of 03:15.
        if fire < before:
            return fire.astimezone(zone)
    raise CroniterBadDateError("no earlier fire")


def floor_to_grain(moment: datetime, grain: str, tz: str) -> datetime:
    """Return the start of the partition holding `moment`, as a naive wall-clock time in `tz`."""
    local = _wall(moment, ZoneInfo(tz))
    if grain == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def partitions_for_fire(expr: str, tz: str, grain: str, fire_time: datetime) -> list[datetime]:
    """Return the partitions (naive wall-clock starts in `tz`) a run firing at `fire_time` loads.

    The rule the generated DAG follows: a run loads every partition that completed between the
    previous fire time and this one, i.e. starts in [floor(previous fire), floor(this fire)).
    A daily 02:00 run loads yesterday; a weekly run with day grain loads the last seven days.
    A run whose two ends fall in one partition (the second 01:00 of a fall-back night, for an
    hourly cron) loads nothing: the DAG skips it.
    """
    previous = previous_fire_time(expr, tz, before=fire_time)
    return _partitions(previous, fire_time, grain, tz)


def _partitions(start: datetime, end: datetime, grain: str, tz: str) -> list[datetime]:
    lo, hi = floor_to_grain(start, grain, tz), floor_to_grain(end, grain, tz)
    step = GRAINS[grain]
    result = []
    while lo < hi:
        result.append(lo)
        lo += step
    return result


# --- The schedule-versus-grain guardrail --------------------------------------------------


def describe_gap(gap: timedelta) -> str:
    """Return "12 hours" / "1 hour" / "15 minutes" for a gap between two fires."""
    minutes = int(gap.total_seconds() // 60)
    if minutes < 60 or minutes % 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = minutes // 60
    return f"{hours} hour{'s' if hours != 1 else ''}"


def fires_per_partition(expr: str, grain: str) -> tuple[int, timedelta | None]:
    """Return how many times `expr` fires in one wall-clock partition, and the smallest gap.

    On wall-clock time the day fields only choose which days fire; a firing day fires at every
    minute × hour the cron lists (DST aside, handled by partition_written_twice).
    """
    minute_field, hour_field = croniter(expr).expanded[:2]
    minutes = range(60) if minute_field == ["*"] else sorted(int(m) for m in minute_field)
    hours = range(24) if hour_field == ["*"] else sorted(int(h) for h in hour_field)
    if grain == "hour":
        offsets = list(minutes)
    else:
        offsets = sorted(h * 60 + m for h in hours for m in minutes)
    if len(offsets) < 2:
        return len(offsets), None
    gap = min(b - a for a, b in zip(offsets, offsets[1:], strict=False))
    return len(offsets), timedelta(minutes=gap)


@dataclass(frozen=True)
class Transition:
    """A change of UTC offset: `at` is the instant, before/after the offsets around it."""

    at: datetime  # aware UTC
    before: timedelta
    after: timedelta

    @property
    def shift(self) -> timedelta:
        return self.after - self.before


def transitions(tz: str, start: datetime, end: datetime) -> list[Transition]:
    """Return the offset changes of `tz` in [start, end), to the minute."""
    zone = ZoneInfo(tz)
    result = []
    cursor = start.astimezone(UTC).replace(second=0, microsecond=0)
    offset = cursor.astimezone(zone).utcoffset()
    while cursor < end:
        step = min(cursor + timedelta(days=1), end)
        if step.astimezone(zone).utcoffset() != offset:
            lo, hi = cursor, step  # offset(lo) == offset, offset(hi) != offset: bisect
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid <= lo:
                    mid = lo + timedelta(minutes=1)
                if mid.astimezone(zone).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            new = hi.astimezone(zone).utcoffset()
            assert offset is not None
            assert new is not None
            result.append(Transition(hi, offset, new))
            offset = new
        cursor = step
    return result


@dataclass(frozen=True)
class Run:
    """A scheduled run as Airflow creates it: data interval [start, end), aware."""

    start: datetime
    end: datetime
    waited: bool = False  # Airflow's timetable stalled before it could schedule this run


def _align_to_prev(expr: str, zone: ZoneInfo, current: datetime) -> datetime:
    prev = _step(expr, zone, current, forward=False)
    return prev if _step(expr, zone, prev, forward=True) != current else current


def _skip_to_latest(expr: str, zone: ZoneInfo, now: datetime) -> datetime:
    last_start = _step(expr, zone, now, forward=False)
    next_start = _step(expr, zone, last_start, forward=True)
    if next_start == now:
        return last_start
    if next_start > now:
        return _step(expr, zone, last_start, forward=False)
    raise _Stall  # Airflow: AssertionError("next schedule shouldn't be earlier")


def _next_run(expr: str, zone: ZoneInfo, last: Run, now: datetime) -> Run:
    """Airflow's _DataIntervalTimetable.next_dagrun_info with catchup=False, at `now`."""
    start = max(_align_to_prev(expr, zone, last.end), _skip_to_latest(expr, zone, now))
    if start <= last.start:
        start = _step(expr, zone, start, forward=True)
        if start <= last.start:
            raise _Stall  # Airflow: ValueError("... did not advance past ... after one retry")
    return Run(start, _step(expr, zone, start, forward=True))


def airflow_runs(expr: str, tz: str, *, after: datetime, until: datetime) -> list[Run]:
    """Return the runs Airflow's scheduler creates whose interval ends in (after, until].

    Simulates the scheduler (catchup=False, the generated DAGs' setting) from the fire before
    `after`. Raises ScheduleError when Airflow would stop scheduling the DAG for good.
    """
    zone = ZoneInfo(tz)
    end = previous_fire_time(expr, tz, before=after).astimezone(UTC)
    last = Run(_step(expr, zone, end, forward=False), end)
    runs: list[Run] = []
    for _ in range(_MAX_STEPS):
        now = last.end + timedelta(seconds=1)  # the run is created just after its end
        for attempt in range(_STALL_LIMIT):
            try:
                run = _next_run(expr, zone, last, now + attempt * _STALL_RETRY)
            except _Stall:
                continue
            run = Run(run.start, run.end, waited=attempt > 0)
            break
        else:
            raise ScheduleError(
                f"Airflow stops scheduling this cron in {tz} after the run ending "
                f"{_clock(last.end, zone)} {last.end.astimezone(zone).date()}: its cron "
                "timetable cannot find the next run across that DST change."
            )
        if run.end > until:
            break
        runs.append(run)
        last = run
    return runs


def _clock(moment: datetime, zone: ZoneInfo) -> str:
    local = _in(moment, zone)
    return f"{local:%H:%M} {local.tzname()}"


def partition_written_twice(
    expr: str, tz: str, grain: str, *, now: datetime
) -> tuple[datetime, Transition] | None:
    """Return a partition two scheduled runs would both load in the next year, with its cause.

    Runs are Airflow's (airflow_runs) around every offset change of `tz` within DST_HORIZON;
    each loads [floor(start), floor(end)) (partitions_for_fire's rule on its data interval).
    Raises ScheduleError when Airflow would stop scheduling the DAG.
    """
    window = timedelta(hours=6)
    for change in transitions(tz, now, now + DST_HORIZON):
        runs = airflow_runs(expr, tz, after=change.at - window, until=change.at + window)
        loaded_until: datetime | None = None
        for run in runs:
            parts = _partitions(run.start, run.end, grain, tz)
            if not parts:
                continue
            if loaded_until is not None and parts[0] < loaded_until:
                return parts[0], change
            loaded_until = parts[-1] + GRAINS[grain]
    return None


def check_grain(expr: str, tz: str, grain: str, *, now: datetime) -> None:
    """Raise ScheduleError if runs of `expr` in `tz` would not load each `grain` partition once.

    Refused: two fires in one wall-clock partition (the second loads nothing), and schedules
    whose DST behaviour in Airflow makes two runs load one partition or stops the DAG. A daily
    cron stays one partition per run whatever DST does to the hours between runs.
    """
    count, gap = fires_per_partition(expr, grain)
    if count > 1 and gap is not None:
        raise ScheduleError(
            f"This schedule fires {count} times a {grain}, as little as {describe_gap(gap)} "
            f"apart, but writes one partition per {grain}: the runs after the first in a "
            f"{grain} would load nothing. Use a schedule at most once per {grain}, or a finer "
            "partition grain."
        )
    twice = partition_written_twice(expr, tz, grain, now=now)
    if twice is not None:
        partition, change = twice
        raise ScheduleError(
            f"On {change.at.astimezone(ZoneInfo(tz)).date()} the clocks in {tz} move by "
            f"{describe_gap(abs(change.shift))} and Airflow runs this schedule so that two runs "
            f"load partition {format_partition(partition, grain)}. Choose another minute, a "
            "daily schedule, or a zone without that change (UTC has none)."
        )


def schedule_errors() -> tuple[type[Exception], ...]:
    """Return the exceptions croniter raises on a bad or rare cron (catch them, never 500)."""
    return (CroniterError, ValueError, KeyError, IndexError, TypeError, OverflowError)


# --- The preview's DST notes ----------------------------------------------------------------


@dataclass(frozen=True)
class DstNote:
    """What a DST change does to this schedule's runs, in words."""

    day: date
    text: str


def _cron_times_between(expr: str, start: datetime, end: datetime) -> list[datetime]:
    """Return the naive wall-clock cron matches in [start, end)."""
    it = _croniter(expr, start - timedelta(minutes=1))
    result = []
    for _ in range(240):
        t = it.get_next(datetime)
        if t >= end:
            break
        result.append(t)
    return result


def _loads(parts: list[datetime], grain: str) -> str:
    if not parts:
        return "nothing (no new complete partition), so the DAG skips it"
    first = format_partition(parts[0], grain)
    if len(parts) == 1:
        return first
    return f"{first} to {format_partition(parts[-1], grain)}"


def dst_notes(expr: str, tz: str, grain: str, *, now: datetime) -> list[DstNote]:
    """Return, for each DST change in the next year that skips or repeats a fire, what happens."""
    zone = ZoneInfo(tz)
    notes = []
    for change in transitions(tz, now, now + DST_HORIZON):
        wall_before = (change.at + change.before).replace(tzinfo=None)
        wall_after = (change.at + change.after).replace(tzinfo=None)
        lo, hi = sorted([wall_before, wall_after])
        affected = _cron_times_between(expr, lo, hi)
        if not affected:
            continue
        span = abs(change.shift)
        runs = airflow_runs(
            expr,
            tz,
            after=change.at - span - timedelta(seconds=1),
            until=change.at + span + timedelta(hours=1),
        )
        times = " and ".join(f"{t:%H:%M}" for t in affected[:3]) + (
            " …" if len(affected) > 3 else ""
        )
        verb = "does" if len(affected) == 1 else "do"
        if change.shift > timedelta(0):
            head = f"{times} {verb} not exist in {tz} (clocks jump from {lo:%H:%M} to {hi:%H:%M})"
            around = [r for r in runs if r.end >= change.at][:1]
        else:
            verb = "happens" if len(affected) == 1 else "happen"
            head = f"{times} {verb} twice in {tz} (clocks go back from {hi:%H:%M} to {lo:%H:%M})"
            around = [r for r in runs if change.at - span <= r.end < change.at + span]
        # What a run loads on an ordinary day: the first fire a day after the change.
        (ordinary,) = next_fire_times(expr, tz, 1, after=change.at + timedelta(days=1))
        usual = len(partitions_for_fire(expr, tz, grain, ordinary))
        said = []
        for run in around:
            parts = _partitions(run.start, run.end, grain, tz)
            as_usual = " as usual" if parts and len(parts) == usual else ""
            said.append(
                f"at {_clock(run.end, zone)}, and it loads {_loads(parts, grain)}{as_usual}"
            )
        if not around:
            body = "Airflow does not run then"
        elif change.shift > timedelta(0) or len(around) != 1 or len(affected) != 1:
            body = "Airflow runs " + "; then ".join(said)
        else:
            local = _in(around[0].end, zone)
            body = (
                f"Airflow runs once, at the second {local:%H:%M} ({local.tzname()}), and it "
                f"loads {_loads(_partitions(around[0].start, around[0].end, grain, tz), grain)}"
            )
            if said[0].endswith("as usual"):
                body += " as usual"
        notes.append(DstNote(change.at.astimezone(zone).date(), f"{head}; {body}."))
    return notes


def parse_partition(value: str, grain: str) -> datetime:
    """Parse "2026-11-10" (day grain) or "2026-11-10T13:00" (hour grain); raise ScheduleError."""
    value = value.strip()
    try:
        if grain == "hour":
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None or parsed.minute or parsed.second or parsed.microsecond:
                raise ValueError
            return parsed
        return datetime.combine(date.fromisoformat(value), datetime.min.time())
    except ValueError:
        example = "2026-11-10T13:00" if grain == "hour" else "2026-11-10"
        raise ScheduleError(f"Enter the partition as {example}.") from None


def format_partition(start: datetime, grain: str) -> str:
    """Return the one spelling of a partition: zero-padded ISO, "0999-01-02" or "…T13:00".

    Not strftime: its %Y does not pad years below 1000 on every platform, and parse_partition
    (like the DAG's date.fromisoformat) reads back only four-digit years.
    """
    day = start.date().isoformat()
    return f"{day}T{start.hour:02d}:00" if grain == "hour" else day
