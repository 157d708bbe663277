"""Backfill plans: the runs Airflow's backfill API creates for a range of partitions.

A user asks for partitions [first, last] (wall-clock, inclusive). Airflow 3.3's backfill API
(`POST /api/v2/backfills`, airflow/models/backfill.py) takes `from_date` and `to_date` instead
and walks the DAG's CronDataIntervalTimetable with catchup on (dag.iter_dagrun_infos_between):

- the first run starts at the first fire at or after `from_date` (_align_to_next), each next
  one where the previous ended; a run is included while its *start* is at or before `to_date`
  (TimeRestriction: both bounds inclusive), so [from_date, to_date] bounds the logical dates;
- a run's logical date is its data interval *start*, its run_after the interval end;
- runs whose data interval has not ended (`end < now` fails) are left out without an error;
- the DAG's start_date, catchup and max_active_runs play no part in which runs.

`plan` sends from_date = the first wanted run's logical date (a second earlier where a DST gap
would make Airflow skip it) and to_date = the last one's, so Airflow creates exactly the runs
that load those partitions, and lists what each loads (the
generated DAG's rule: [floor(start), floor(end)) in the pipeline's zone). Around DST changes
the runs are core.schedule's: a skipped wall-clock hour has no run of its own (the run before
it loads it, empty); a repeated hour gives an hour-"*" cron two runs, the second loading
nothing (the DAG skips it); a daily cron runs once, at the second occurrence.

`reprocess_runs` applies Airflow's rules for runs that already exist
(_get_dag_run_no_create_reason).
"""

from __future__ import annotations

import functools
import operator
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate, compress, cycle, islice, repeat
from typing import NamedTuple, overload
from zoneinfo import ZoneInfo

from croniter import croniter

from pipelines.core.schedule import (
    GRAINS,
    Run,
    ScheduleError,
    _croniter,
    _localize,
    _step,
    _wall,
    transitions,
)

# The portal's words for what to re-run, and Airflow's reprocess_behavior for each.
AIRFLOW_REPROCESS = {"missing": "none", "failed": "failed", "all": "completed"}
# What a planned run is now, for the preview (Airflow's DagRun state in the portal's words).
LOADED, FAILED, RUNNING, MISSING = "loaded", "failed", "running", "missing"
_CREATES = {
    "missing": frozenset({MISSING}),
    "failed": frozenset({MISSING, FAILED}),
    "all": frozenset({MISSING, FAILED, LOADED}),
}
# Walls go back by at most this much at a DST change (Lord Howe 30 min, the rest 1 h or 2 h).
_FOLD = timedelta(hours=3)
_MARGIN = timedelta(minutes=1)  # transitions() finds changes to the minute


class PlannedRun(NamedTuple):
    """One run a backfill creates: data interval [logical_date, end) in UTC, and what it loads.

    It loads the partitions starting in [loads_from, loads_until) (naive wall-clock floors of
    the interval's ends, the generated DAG's partition_bounds); none when they are equal.
    """

    logical_date: datetime
    end: datetime
    loads_from: datetime
    loads_until: datetime
    grain: str

    @property
    def partitions(self) -> tuple[datetime, ...]:
        size = GRAINS[self.grain]
        count = max(int((self.loads_until - self.loads_from) / size), 0)
        return tuple(islice(accumulate(repeat(size, count), initial=self.loads_from), count))


# PlannedRun._make without its length check.
_planned_run = functools.partial(tuple.__new__, PlannedRun)


class Runs(Sequence[PlannedRun]):
    """An immutable sequence of planned runs, kept as columns.

    Ten years of hourly partitions are 87,600 runs: as columns of datetimes (which the garbage
    collector does not track) a plan costs milliseconds; each PlannedRun is made on access.
    """

    __slots__ = ("ends", "grain", "highs", "logical_dates", "lows")

    def __init__(
        self,
        logical_dates: Iterable[datetime],
        ends: Iterable[datetime],
        lows: Iterable[datetime],
        highs: Iterable[datetime],
        grain: str,
    ) -> None:
        self.logical_dates = tuple(logical_dates)
        self.ends = tuple(ends)
        self.lows = tuple(lows)
        self.highs = tuple(highs)
        self.grain = grain

    @classmethod
    def of(cls, runs: Iterable[PlannedRun]) -> Runs:
        """Return `runs` as Runs (a list of PlannedRun, or Runs as they are)."""
        if isinstance(runs, Runs):
            return runs
        columns = list(zip(*runs, strict=True))
        if not columns:
            return cls((), (), (), (), grain="day")
        return cls(*columns[:4], grain=columns[4][0])

    def __len__(self) -> int:
        return len(self.logical_dates)

    @overload
    def __getitem__(self, index: int) -> PlannedRun: ...
    @overload
    def __getitem__(self, index: slice) -> Runs: ...
    def __getitem__(self, index: int | slice) -> PlannedRun | Runs:
        if isinstance(index, slice):
            return Runs(*(column[index] for column in self._columns()), grain=self.grain)
        return _planned_run((*(column[index] for column in self._columns()), self.grain))

    def __iter__(self) -> Iterator[PlannedRun]:
        return map(_planned_run, zip(*self._columns(), repeat(self.grain)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Runs):
            return self.grain == other.grain and self._columns() == other._columns()
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._columns(), self.grain))

    def __repr__(self) -> str:
        return f"<Runs: {len(self)} {self.grain}-grain runs>"

    def _columns(self) -> tuple[tuple[datetime, ...], ...]:
        return (self.logical_dates, self.ends, self.lows, self.highs)

    def select(self, keep: Iterable[bool]) -> Runs:
        """Return the runs whose flag in `keep` is true."""
        flags = tuple(keep)
        return Runs(*(compress(column, flags) for column in self._columns()), grain=self.grain)

    @property
    def empty(self) -> int:
        """How many runs load nothing (the repeated hour of an hour-"*" cron; the DAG skips)."""
        return sum(map(operator.ge, self.lows, self.highs))


@dataclass(frozen=True)
class Plan:
    """The runs Airflow creates for partitions [first, last], and the range that asks for them.

    `from_date`/`to_date` (aware UTC) are None when no run has ended yet. `unfinished_from` is
    the first partition of the range whose run has not ended at `now`: Airflow leaves those
    runs out (the schedule loads them later). Runs may load partitions outside [first, last]
    (a weekly cron loads seven days): `partitions` lists everything the runs load.
    """

    first: datetime
    last: datetime
    from_date: datetime | None
    to_date: datetime | None
    runs: Runs
    unfinished_from: datetime | None

    @property
    def logical_dates(self) -> tuple[datetime, ...]:
        return self.runs.logical_dates

    @property
    def partitions(self) -> list[datetime]:
        return [p for run in self.runs for p in run.partitions]


class _Status(dict[str | None, str]):
    def __missing__(self, state: str | None) -> str:
        return RUNNING  # Airflow: any state but success and failed is in flight


_STATUS = _Status({None: MISSING, "success": LOADED, "failed": FAILED})


@dataclass(frozen=True)
class Reprocess:
    """What a backfill does to each planned run, given the DagRuns that already exist."""

    create: Runs  # the runs Airflow creates (or clears and queues again)
    status: tuple[str, ...]  # LOADED, FAILED, RUNNING or MISSING, one per planned run

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.status)


def reprocess_runs(
    runs: Iterable[PlannedRun], existing: Mapping[datetime, str], policy: str
) -> Reprocess:
    """Return the runs a backfill with `policy` creates, and every run's current status.

    `existing` maps an aware logical date (or its epoch seconds) to its DagRun's state. Airflow's
    rules: a queued or
    running run is never touched; "missing" (reprocess none) creates only runs with no DagRun;
    "failed" also re-runs failed ones; "all" (completed) re-runs successful ones too. Airflow
    re-runs an existing DagRun by clearing it (same run id, its run type becomes backfill).
    """
    creates = _CREATES[policy]
    columns = Runs.of(runs)
    keys: Iterable[object] = columns.logical_dates
    if existing and isinstance(next(iter(existing)), int):
        # Keyed by epoch seconds (what the preview reads from the database): far cheaper than
        # hashing 87,600 aware datetimes for the first time.
        keys = map(int, map(datetime.timestamp, columns.logical_dates))
    status = tuple(map(_STATUS.__getitem__, map(existing.get, keys)))
    return Reprocess(create=columns.select(map(creates.__contains__, status)), status=status)


# --- Airflow's timetable, step by step (the exact path) -------------------------------------


class _Timetable:
    """Airflow's CronDataIntervalTimetable for one cron and zone, its steps memoised."""

    def __init__(self, expr: str, zone: ZoneInfo) -> None:
        self.expr, self.zone = expr, zone
        self._memo: dict[tuple[datetime, bool], datetime] = {}

    def step(self, current: datetime, *, forward: bool) -> datetime:
        """CronMixin._get_next / _get_prev (core.schedule's mirror), in UTC."""
        key = (current, forward)
        if key not in self._memo:
            self._memo[key] = _step(self.expr, self.zone, current, forward=forward)
        return self._memo[key]

    def align_to_next(self, current: datetime) -> datetime:
        following = self.step(current, forward=True)
        return following if self.step(following, forward=False) != current else current

    def align_to_prev(self, current: datetime) -> datetime:
        previous = self.step(current, forward=False)
        return previous if self.step(previous, forward=True) != current else current

    def run_at(self, start: datetime) -> Run:
        return Run(start, self.step(start, forward=True))

    def following(self, last: Run, earliest: datetime) -> Run | None:
        """_DataIntervalTimetable.next_dagrun_info with catchup on; None where Airflow stops.

        Airflow raises there ("did not advance"), and iter_dagrun_infos_between logs it and
        ends the backfill's list of runs.
        """
        start = max(self.align_to_prev(last.end), earliest)
        if start <= last.start:
            start = self.step(start, forward=True)
            if start <= last.start:
                return None
        return Run(start, self.step(start, forward=True))


def backfill_runs(expr: str, tz: str, from_date: datetime, to_date: datetime) -> list[Run]:
    """Return the runs (UTC data intervals) Airflow's backfill walks for [from_date, to_date].

    The exact, slow path: every step as Airflow takes it. Airflow then drops the runs whose
    interval has not ended (`run.end < now` fails) and, by the reprocess rules, existing ones.
    """
    timetable = _Timetable(expr, ZoneInfo(tz))
    earliest = timetable.align_to_next(from_date)
    runs: list[Run] = []
    run: Run | None = timetable.run_at(earliest)
    while run is not None and run.start <= to_date:
        runs.append(run)
        run = timetable.following(run, earliest)
    return runs


# --- The fast path: consecutive cron matches between DST changes -------------------------


@dataclass(frozen=True)
class _Pattern:
    """A cron's wall-clock matches, repeating every `period` from a grain-aligned anchor."""

    period: timedelta
    offsets: tuple[timedelta, ...]  # sorted, within one period
    floors: tuple[timedelta, ...]  # floor_to_grain(anchor + offset) - anchor
    gaps: tuple[timedelta, ...]  # from each match to the next
    floor_gaps: tuple[timedelta, ...]  # from each match's floor to the next one's

    def anchor(self, wall: datetime) -> datetime:
        """Return the start of the period holding `wall` (hour, day, or week from Sunday)."""
        if self.period == GRAINS["hour"]:
            return wall.replace(minute=0, second=0, microsecond=0)
        day = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == GRAINS["day"]:
            return day
        return day - timedelta(days=(day.weekday() + 1) % 7)  # cron's day 0 is Sunday

    def index(self, wall: datetime) -> int | None:
        """Return the position of `wall` in the period, or None when it is not a match."""
        offset = wall - self.anchor(wall)
        index = bisect_left(self.offsets, offset)
        return index if index < len(self.offsets) and self.offsets[index] == offset else None


@functools.cache
def _pattern(expr: str, grain: str) -> _Pattern | None:
    """Return the repeating pattern of `expr`, or None when its days are not periodic.

    Days of month and months ("0 0 1 * *") make no fixed period: those crons use croniter.
    The period is a whole number of partitions, so floors repeat with it too.
    """
    minutes, hours, days, months, weekdays = croniter(expr).expanded[:5]
    if days != ["*"] or months != ["*"]:
        return None
    if any(not isinstance(v, int) for v in [*minutes, *hours, *weekdays] if v != "*"):
        return None
    minutes = list(range(60)) if minutes == ["*"] else minutes
    hours = list(range(24)) if hours == ["*"] else hours
    whole_days = [0] if weekdays == ["*"] else sorted({int(d) % 7 for d in weekdays})
    if weekdays != ["*"]:
        period = timedelta(days=7)
    elif len(hours) == 24 and grain == "hour":
        period = GRAINS["hour"]
    else:
        period = GRAINS["day"]
    offsets = sorted(
        {
            timedelta(days=d, hours=h, minutes=m) % period
            for d in whole_days
            for h in hours
            for m in minutes
        }
    )
    size = GRAINS[grain]
    floors = [offset - offset % size for offset in offsets]
    wrapped, wrapped_floors = [*offsets, offsets[0] + period], [*floors, floors[0] + period]
    return _Pattern(
        period,
        tuple(offsets),
        tuple(floors),
        tuple(map(operator.sub, wrapped[1:], wrapped)),
        tuple(map(operator.sub, wrapped_floors[1:], wrapped_floors)),
    )


@dataclass(frozen=True)
class _Span:
    """A stretch of instants with one UTC offset, clear of any DST change's ambiguity."""

    lo: datetime
    hi: datetime
    offset: timedelta

    def wall(self, moment: datetime) -> datetime:
        return (moment + self.offset).replace(tzinfo=None)


def _spans(tz: str, zone: ZoneInfo, lo: datetime, hi: datetime) -> list[_Span]:
    """Return the fixed-offset stretches of [lo, hi] between DST changes.

    Within `abs(shift)` of a change a wall time is repeated or skipped: those instants are in
    no span, and Airflow's steps there are taken one by one.
    """
    offset = lo.astimezone(zone).utcoffset()
    assert offset is not None
    spans, start = [], lo
    for change in transitions(tz, lo, hi):
        guard = abs(change.shift) + _MARGIN
        if change.at - guard > start:
            spans.append(_Span(start, change.at - guard, offset))
        start, offset = change.at + guard, change.after
    if hi > start:
        spans.append(_Span(start, hi, offset))
    return spans


class _Columns:
    """Runs under construction (start, end, floors of both), filled fast or step by step."""

    def __init__(self, grain: str, zone: ZoneInfo) -> None:
        self.grain, self.zone = grain, zone
        self.starts: list[datetime] = []
        self.ends: list[datetime] = []
        self.lows: list[datetime] = []
        self.highs: list[datetime] = []

    def floor(self, wall: datetime) -> datetime:
        if self.grain == "hour":
            return wall.replace(minute=0, second=0, microsecond=0)
        return wall.replace(hour=0, minute=0, second=0, microsecond=0)

    def add(self, run: Run) -> None:
        self.starts.append(run.start)
        self.ends.append(run.end)
        self.lows.append(self.floor(_wall(run.start, self.zone)))
        self.highs.append(self.floor(_wall(run.end, self.zone)))

    def extend(self, fires: list[datetime], floors: list[datetime]) -> None:
        """Add the runs between consecutive `fires` (the first is the last run's end)."""
        self.starts.extend(fires[:-1])
        self.ends.extend(fires[1:])
        self.lows.extend(floors[:-1])
        self.highs.extend(floors[1:])


def _consecutive(
    expr: str, grain: str, run: Run, span: _Span, limit: datetime, out: _Columns
) -> tuple[list[datetime], list[datetime]] | None:
    """Return the fires from run.start up to `limit` (in UTC) and their floors, or None.

    Inside a span of one UTC offset, when run.start and run.end are consecutive cron matches,
    every next run starts where the last ended and ends at the next match: its fire is the
    match's wall time minus the offset. None when run is not such a pair (Airflow moved a fire
    off the cron, as hour-"*" crons do after Lord Howe's 30-minute shift).
    """
    wall, pattern = span.wall(run.start), _pattern(expr, grain)
    if pattern is None:
        fires, walls, it = [run.start], [wall], _croniter(expr, wall)
        if not croniter.match(expr, wall):
            return None
        while (fire := run.start + ((match := it.get_next(datetime)) - wall)) <= limit:
            fires.append(fire)
            walls.append(match)
        floors = [out.floor(w) for w in walls]
    else:
        index = pattern.index(wall)
        if index is None:
            return None
        count = (int((limit - run.start) / pattern.period) + 2) * len(pattern.offsets)
        gaps = islice(cycle(pattern.gaps), index, index + count)
        fires = list(accumulate(gaps, initial=run.start))
        fires = fires[: bisect_right(fires, limit)]
        floor_gaps = islice(cycle(pattern.floor_gaps), index, index + len(fires) - 1)
        start_floor = pattern.anchor(wall) + pattern.floors[index]
        floors = list(accumulate(floor_gaps, initial=start_floor))
    if len(fires) < 3 or fires[1] != run.end:
        return None
    return fires, floors


def _walk(
    expr: str,
    grain: str,
    timetable: _Timetable,
    first: Run,
    *,
    stop_wall: datetime,
    now: datetime,
    spans: list[_Span],
) -> _Columns:
    """Return Airflow's backfill runs from `first` on, until one starts at `stop_wall` or
    later (wall clock) or ends at `now` or later (that one included).

    Inside a fixed-offset span the runs are computed in bulk (_consecutive); near DST changes,
    and wherever Airflow's fire is off the cron, one exact step at a time.
    """
    out = _Columns(grain, timetable.zone)
    out.add(first)
    run: Run | None = first
    span_starts = [span.lo for span in spans]
    while run is not None and _wall(run.start, timetable.zone) < stop_wall and run.end < now:
        span = spans[max(bisect_right(span_starts, run.start) - 1, 0)] if spans else None
        if span is not None and span.lo < run.start and run.end < span.hi:
            stop = (stop_wall - span.offset).replace(tzinfo=UTC)
            found = _consecutive(expr, grain, run, span, min(span.hi, now, stop), out)
            if found is not None:
                fires, floors = found
                out.extend(fires[1:], floors[1:])
                run = Run(fires[-2], fires[-1])
        run = timetable.following(run, first.start)
        if run is not None:
            out.add(run)
    return out


def plan(expr: str, tz: str, grain: str, first: datetime, last: datetime, *, now: datetime) -> Plan:
    """Return the backfill that loads partitions [first, last] (naive wall-clock, inclusive).

    Runs whose interval has not ended at `now` are left out, as Airflow does. Raises
    ValueError when first is after last, and ScheduleError in the (DST) case where no
    from_date makes Airflow start at the run that loads `first`.
    """
    if first > last:
        raise ValueError("The first partition must not be after the last.")
    zone, size, now = ZoneInfo(tz), GRAINS[grain], now.astimezone(UTC)
    timetable = _Timetable(expr, zone)
    floor = _Columns(grain, zone).floor
    first, last = floor(first), floor(last)
    # A fire safely before `first` (walls go back at most _FOLD): its run loads none of it.
    # Not aligned again: a fire's _align_to_next can be the fire after it (see _assemble).
    head = timetable.run_at(timetable.step(_localize(first - size - _FOLD, zone), forward=False))
    stop_wall = last + size + _FOLD
    spans = _spans(
        tz, zone, head.start - timedelta(days=1), _localize(stop_wall, zone) + timedelta(days=8)
    )
    columns = _walk(expr, grain, timetable, head, stop_wall=stop_wall, now=now, spans=spans)
    return _assemble(columns, timetable, first, last, now)


def _assemble(
    columns: _Columns, timetable: _Timetable, first: datetime, last: datetime, now: datetime
) -> Plan:
    """Keep the runs that load a partition of [first, last], the empty ones between, and
    those that have ended; the first run must be where Airflow starts from its from_date."""
    lows, highs, count = columns.lows, columns.highs, len(columns.starts)
    lo = next((i for i in range(count) if highs[i] > max(lows[i], first)), count)
    hi = next(
        (i + 1 for i in range(count - 1, lo - 1, -1) if lows[i] < highs[i] and lows[i] <= last),
        lo,
    )
    done = max(bisect_left(columns.ends, now, lo, hi), lo)
    loaded_until = highs[done - 1] if done > lo else first
    unfinished = None if loaded_until > last else max(loaded_until, first)
    runs = Runs(
        columns.starts[lo:done],
        columns.ends[lo:done],
        lows[lo:done],
        highs[lo:done],
        grain=columns.grain,
    )
    if not runs:
        return Plan(first, last, None, None, runs, unfinished)
    from_date = _from_date(timetable, runs.logical_dates[0])
    return Plan(first, last, from_date, runs.logical_dates[-1], runs, unfinished)


def _from_date(timetable: _Timetable, logical_date: datetime) -> datetime:
    # Airflow starts at _align_to_next(from_date), which is not from_date itself when the
    # next fire was moved by a DST gap: from 03-07 02:00 EST, a daily 02:00 New York cron
    # starts at 03-08 03:00 EDT (its _get_prev is itself), skipping 03-07. A second earlier
    # starts at the run wanted.
    for from_date in (logical_date, logical_date - timedelta(seconds=1)):
        if timetable.align_to_next(from_date) == logical_date:
            return from_date
    local = logical_date.astimezone(timetable.zone)
    raise ScheduleError(
        f"Airflow cannot start a backfill at the run of {local:%Y-%m-%d %H:%M %Z} across this "
        "DST change: start the range a day earlier."
    )


def from_date_for(expr: str, tz: str, logical_date: datetime) -> datetime:
    """Return the from_date that makes Airflow's backfill start at the run of `logical_date`.

    The logical date itself, or a second before it where a DST gap would make Airflow skip
    it; for a backfill sent in chunks, each chunk's from_date. Its to_date is the chunk's
    last logical date (Airflow includes it).
    """
    return _from_date(_Timetable(expr, ZoneInfo(tz)), logical_date)
