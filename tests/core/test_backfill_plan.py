"""Backfill plans: the from/to dates that make Airflow's backfill create exactly the runs that
load a range of partitions, those runs (DST changes included), and Airflow's reprocess rules.

The runs were checked against Airflow 3.3.2 itself: offline against its timetable code with
tests/core/airflow_backfill_runs.py, and against a running Airflow's dry run in
tests/integration/test_backfill_dry_run.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipelines.core import schedule
from pipelines.core.backfill import (
    AIRFLOW_REPROCESS,
    FAILED,
    LOADED,
    MISSING,
    RUNNING,
    PlannedRun,
    Runs,
    backfill_runs,
    from_date_for,
    plan,
    reprocess_runs,
)

NOW = datetime(2026, 11, 24, 1, 40, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def wall(*args: int) -> datetime:
    return datetime(*args)  # noqa: DTZ001 - partitions are wall-clock times


def local(moment: datetime, tz: str) -> str:
    return moment.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M %Z")


def loads(p) -> list[list[str]]:
    return [[x.isoformat(timespec="minutes") for x in run.partitions] for run in p.runs]


def exact(expr: str, tz: str, grain: str, p, now: datetime) -> list[tuple]:
    """The plan's runs by the slow path: Airflow's every step, and the DAG's partition rule."""
    runs = backfill_runs(expr, tz, p.from_date, p.to_date)
    return [
        (r.start, r.end, tuple(_partitions(r.start, r.end, grain, tz))) for r in runs if r.end < now
    ]


def _partitions(start: datetime, end: datetime, grain: str, tz: str) -> list[datetime]:
    lo = schedule.floor_to_grain(start, grain, tz)
    hi = schedule.floor_to_grain(end, grain, tz)
    result = []
    while lo < hi:
        result.append(lo)
        lo += schedule.GRAINS[grain]
    return result


def as_tuples(p) -> list[tuple]:
    return [(r.logical_date, r.end, r.partitions) for r in p.runs]


# --- The range Airflow is sent ------------------------------------------------------------


def test_daily_utc_runs_start_at_the_partition_they_load():
    p = plan("0 2 * * *", "UTC", "day", wall(2026, 11, 1), wall(2026, 11, 6), now=NOW)
    # The run loading 11-01 is [11-01 02:00, 11-02 02:00): its logical date is the start.
    assert p.logical_dates == tuple(utc(2026, 11, d, 2) for d in range(1, 7))
    assert (p.from_date, p.to_date) == (utc(2026, 11, 1, 2), utc(2026, 11, 6, 2))
    assert p.runs[0].end == utc(2026, 11, 2, 2)
    assert loads(p) == [[f"2026-11-0{d}T00:00"] for d in range(1, 7)]
    assert p.unfinished_from is None


def test_hourly_utc():
    p = plan("0 * * * *", "UTC", "hour", wall(2026, 11, 1), wall(2026, 11, 1, 5), now=NOW)
    assert p.logical_dates == tuple(utc(2026, 11, 1, h) for h in range(6))
    assert p.partitions == [wall(2026, 11, 1, h) for h in range(6)]


def test_to_date_is_the_last_logical_date_because_airflow_includes_both_ends():
    p = plan("0 2 * * *", "UTC", "day", wall(2026, 11, 1), wall(2026, 11, 6), now=NOW)
    runs = backfill_runs("0 2 * * *", "UTC", p.from_date, p.to_date)
    assert [r.start for r in runs] == list(p.logical_dates)
    # One second less and the last run is gone; a from_date between fires starts at the next.
    shorter = backfill_runs("0 2 * * *", "UTC", p.from_date, p.to_date - timedelta(seconds=1))
    assert len(shorter) == 5
    later = backfill_runs("0 2 * * *", "UTC", p.from_date + timedelta(seconds=1), p.to_date)
    assert later[0].start == utc(2026, 11, 2, 2)


def test_a_weekly_run_loads_its_whole_week():
    p = plan("0 3 * * 1", "UTC", "day", wall(2026, 11, 4), wall(2026, 11, 4), now=NOW)
    assert p.logical_dates == (utc(2026, 11, 2, 3),)  # Monday
    assert loads(p) == [[f"2026-11-{d:02d}" + "T00:00" for d in range(2, 9)]]


def test_runs_not_ended_at_now_are_left_out_as_airflow_does():
    now = utc(2026, 11, 4, 12)
    p = plan("0 2 * * *", "UTC", "day", wall(2026, 11, 1), wall(2026, 11, 6), now=now)
    # 11-03's run ends 11-04 02:00 < now; 11-04's ends 11-05 02:00, after now.
    assert p.logical_dates == tuple(utc(2026, 11, d, 2) for d in (1, 2, 3))
    assert p.to_date == utc(2026, 11, 3, 2)
    assert p.unfinished_from == wall(2026, 11, 4)


def test_a_range_entirely_in_the_future_has_no_runs():
    p = plan("0 2 * * *", "UTC", "day", wall(2026, 12, 1), wall(2026, 12, 3), now=NOW)
    assert (p.from_date, p.to_date, len(p.runs)) == (None, None, 0)
    assert p.unfinished_from == wall(2026, 12, 1)


def test_first_after_last_is_refused():
    with pytest.raises(ValueError, match="first partition must not be after the last"):
        plan("0 2 * * *", "UTC", "day", wall(2026, 11, 2), wall(2026, 11, 1), now=NOW)


# --- DST: the runs are core.schedule's (Airflow's) -----------------------------------------


def test_new_york_fall_back_hourly_has_an_empty_run_for_the_repeated_hour():
    p = plan(
        "0 * * * *", "America/New_York", "hour",
        wall(2026, 11, 1), wall(2026, 11, 1, 5), now=NOW,
    )  # fmt: skip
    assert [local(d, "America/New_York") for d in p.logical_dates] == [
        "11-01 00:00 EDT",
        "11-01 01:00 EDT",
        "11-01 01:00 EST",
        "11-01 02:00 EST",
        "11-01 03:00 EST",
        "11-01 04:00 EST",
        "11-01 05:00 EST",
    ]
    assert loads(p) == [
        ["2026-11-01T00:00"],
        [],  # [01:00 EDT, 01:00 EST): one wall-clock hour, nothing complete: the DAG skips
        ["2026-11-01T01:00"],
        ["2026-11-01T02:00"],
        ["2026-11-01T03:00"],
        ["2026-11-01T04:00"],
        ["2026-11-01T05:00"],
    ]
    assert p.runs.empty == 1
    assert (p.from_date, p.to_date) == (utc(2026, 11, 1, 4), utc(2026, 11, 1, 10))


def test_new_york_spring_forward_hourly_the_skipped_hour_has_no_run():
    p = plan(
        "0 * * * *", "America/New_York", "hour",
        wall(2026, 3, 8), wall(2026, 3, 8, 5), now=NOW,
    )  # fmt: skip
    assert [local(d, "America/New_York") for d in p.logical_dates] == [
        "03-08 00:00 EST",
        "03-08 01:00 EST",
        "03-08 03:00 EDT",
        "03-08 04:00 EDT",
        "03-08 05:00 EDT",
    ]
    # 02:00 does not exist: the 01:00 run's interval (one real hour) covers it, empty.
    assert loads(p)[1] == ["2026-03-08T01:00", "2026-03-08T02:00"]


def test_new_york_daily_runs_once_a_day_across_both_changes():
    spring = plan(
        "0 2 * * *", "America/New_York", "day",
        wall(2026, 3, 7), wall(2026, 3, 9), now=NOW,
    )  # fmt: skip
    # 02:00 on 03-08 is skipped: Airflow fires at 03:00 EDT (the offset from before the change).
    assert [local(d, "America/New_York") for d in spring.logical_dates] == [
        "03-07 02:00 EST",
        "03-08 03:00 EDT",
        "03-09 02:00 EDT",
    ]
    # Airflow quirk: from exactly 03-07 02:00 EST it would start at 03-08 (_align_to_next of a
    # fire before a moved one is the moved one), so from_date is a second earlier.
    assert spring.from_date == utc(2026, 3, 7, 6, 59, 59)
    on_the_dot = backfill_runs("0 2 * * *", "America/New_York", utc(2026, 3, 7, 7), spring.to_date)
    assert [r.start for r in on_the_dot] == list(spring.logical_dates[1:])
    # The same for a chunk of a backfill starting there, or anywhere else.
    assert from_date_for("0 2 * * *", "America/New_York", utc(2026, 3, 7, 7)) == spring.from_date
    assert from_date_for("0 2 * * *", "America/New_York", utc(2026, 3, 9, 6)) == utc(2026, 3, 9, 6)
    fall = plan(
        "30 1 * * *", "America/New_York", "day",
        wall(2026, 10, 31), wall(2026, 11, 2), now=NOW,
    )  # fmt: skip
    # 01:30 happens twice on 11-01: Airflow takes the second (EST).
    assert [local(d, "America/New_York") for d in fall.logical_dates] == [
        "10-31 01:30 EDT",
        "11-01 01:30 EST",
        "11-02 01:30 EST",
    ]
    assert loads(fall) == [["2026-10-31T00:00"], ["2026-11-01T00:00"], ["2026-11-02T00:00"]]


def test_a_range_starting_on_the_repeated_hour():
    p = plan(
        "0 * * * *", "America/New_York", "hour",
        wall(2026, 11, 1, 1), wall(2026, 11, 1, 1), now=NOW,
    )  # fmt: skip
    # Only the second 01:00 run loads partition 01:00; the empty one before it is not sent.
    assert [local(d, "America/New_York") for d in p.logical_dates] == ["11-01 01:00 EST"]
    assert loads(p) == [["2026-11-01T01:00"]]


# --- Fast equals exact ----------------------------------------------------------------------

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney"]


@st.composite
def crons(draw) -> tuple[str, str]:
    """A cron shaped like the portal's presets (hourly, daily, weekly) and a grain for it."""
    kind = draw(st.sampled_from(["hourly", "daily", "weekly"]))
    minute = draw(st.sampled_from([0, 0, 15, 30, 45, draw(st.integers(0, 59))]))
    hour = draw(st.sampled_from([0, 1, 2, 3, draw(st.integers(0, 23))]))
    if kind == "hourly":
        return f"{minute} * * * *", "hour"
    grain = draw(st.sampled_from(["day", "hour"]))
    if kind == "daily":
        return f"{minute} {hour} * * *", grain
    return f"{minute} {hour} * * {draw(st.integers(0, 6))}", grain


def changes(tz: str) -> list[datetime]:
    found = schedule.transitions(tz, utc(2025, 1, 1), utc(2026, 11, 1))
    return [c.at for c in found] or [utc(2025, 3, 30, 1), utc(2026, 10, 25, 1)]


@settings(max_examples=300, deadline=None)
@given(
    cron=crons(),
    tz=st.sampled_from(ZONES),
    data=st.data(),
)
def test_the_fast_path_equals_airflows_every_step(cron, tz, data):
    expr, grain = cron
    change = data.draw(st.sampled_from(changes(tz)))
    size = schedule.GRAINS[grain]
    around = schedule.floor_to_grain(change, grain, tz)
    span = 96 if grain == "hour" else 12
    first = around + size * data.draw(st.integers(-span, span // 2))
    last = first + size * data.draw(st.integers(0, span))
    now = data.draw(
        st.sampled_from([NOW, change + timedelta(hours=data.draw(st.integers(-30, 60)))])
    )
    p = plan(expr, tz, grain, first, last, now=now)
    assume(p.runs)
    assert as_tuples(p) == exact(expr, tz, grain, p, now)
    assert p.from_date in (p.runs[0].logical_date, p.runs[0].logical_date - timedelta(seconds=1))
    assert p.to_date == p.runs[-1].logical_date
    # Every partition of the range that has a finished run is loaded, once.
    loaded = p.partitions
    assert len(loaded) == len(set(loaded))
    end = p.unfinished_from or last + size
    wanted = [x for x in _partitions_of(first, last, size) if x < end]
    assert [x for x in loaded if first <= x <= last] == wanted
    # And the scheduler (core.schedule.airflow_runs) would have made the very same runs.
    start = p.runs[0].logical_date
    try:
        scheduled = schedule.airflow_runs(expr, tz, after=start, until=p.runs[-1].end)
    except schedule.ScheduleError:
        return
    scheduled = [r for r in scheduled if r.start >= start]
    if not any(r.waited for r in scheduled):
        assert [(r.start, r.end) for r in scheduled] == [(r.logical_date, r.end) for r in p.runs]


def _partitions_of(first: datetime, last: datetime, size: timedelta) -> list[datetime]:
    result = []
    while first <= last:
        result.append(first)
        first += size
    return result


@pytest.mark.parametrize("tz", ["Australia/Lord_Howe", "Antarctica/Troll", "America/Santiago"])
@pytest.mark.parametrize(
    ("expr", "grain"),
    [("0 * * * *", "hour"), ("30 * * * *", "hour"), ("15 2 * * *", "day"), ("0 0 1 * *", "day")],
)
def test_odd_zones_and_monthly_crons_take_the_exact_path_where_needed(tz, expr, grain):
    # Lord Howe shifts by 30 minutes (Airflow's hour-"*" fires land on :30), Troll by 2 hours.
    for change in changes(tz):
        around = schedule.floor_to_grain(change, "day", tz)
        first, last = around - timedelta(days=3), around + timedelta(days=3)
        p = plan(expr, tz, grain, first, last, now=NOW)
        assert p.runs
        assert as_tuples(p) == exact(expr, tz, grain, p, NOW)


def test_ten_years_of_hourly_partitions_each_loaded_once():
    """How long this takes is bench/backfill.py's (make bench-backfill), not a unit test's."""
    first, last = wall(2016, 1, 1), wall(2025, 12, 31, 23)
    p = plan("0 * * * *", "America/New_York", "hour", first, last, now=NOW)
    # 3,653 days of 24 wall-clock hours, each loaded once. Each spring a run loads two (one
    # empty: the skipped 02:00), each fall a run loads none (the repeated 01:00).
    assert len(p.partitions) == len(set(p.partitions)) == 3_653 * 24
    assert p.runs.empty == 10
    assert len(p.runs) == 3_653 * 24 - 10 + 10


# --- Reprocess rules (airflow/models/backfill.py, _get_dag_run_no_create_reason) ----------


def five_runs() -> Runs:
    return plan("0 2 * * *", "UTC", "day", wall(2026, 11, 1), wall(2026, 11, 5), now=NOW).runs


EXISTING = {
    utc(2026, 11, 1, 2): "success",
    utc(2026, 11, 2, 2): "failed",
    utc(2026, 11, 3, 2): "running",
    # The same instant in another zone is the same logical date.
    datetime(2026, 11, 3, 21, tzinfo=NEW_YORK): "queued",
}


@pytest.mark.parametrize(
    ("policy", "created_days"),
    [("missing", [5]), ("failed", [2, 5]), ("all", [1, 2, 5])],
)
def test_reprocess_creates_what_airflow_creates(policy, created_days):
    decided = reprocess_runs(five_runs(), EXISTING, policy)
    assert [d.day for d in decided.create.logical_dates] == created_days
    assert decided.status == (LOADED, FAILED, RUNNING, RUNNING, MISSING)
    assert decided.counts == {LOADED: 1, FAILED: 1, RUNNING: 2, MISSING: 1}


def test_queued_and_running_runs_are_never_created_again():
    busy = dict.fromkeys(five_runs().logical_dates, "queued")
    assert len(reprocess_runs(five_runs(), busy, "all").create) == 0


def test_reprocess_takes_plain_lists_of_runs_too():
    runs = list(five_runs())
    decided = reprocess_runs(runs, EXISTING, "failed")
    assert list(decided.create) == [runs[1], runs[4]]
    assert isinstance(decided.create[0], PlannedRun)
    assert decided.create[0].partitions == (wall(2026, 11, 2),)
    hourly = plan("0 * * * *", "UTC", "hour", wall(2026, 11, 1), wall(2026, 11, 1, 1), now=NOW)
    assert reprocess_runs(list(hourly.runs), {}, "missing").create[1].partitions == (
        wall(2026, 11, 1, 1),
    )
    assert len(reprocess_runs([], {}, "all").create) == 0


def test_policies_map_to_airflows_reprocess_behavior():
    assert AIRFLOW_REPROCESS == {"missing": "none", "failed": "failed", "all": "completed"}


def test_runs_behave_as_an_immutable_sequence():
    runs = five_runs()
    assert len(runs) == 5
    assert runs[1:3] == [runs[1], runs[2]]
    assert runs[-1].logical_date == utc(2026, 11, 5, 2)
    assert runs == five_runs()
    assert hash(runs) == hash(five_runs())
