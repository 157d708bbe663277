from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipelines.core import schedule
from tests.core.airflow_fire_times import AIRFLOW_FIRES

UTC = ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("expr", "normalised"),
    [
        ("0 2 * * *", "0 2 * * *"),
        ("daily", "0 2 * * *"),
        ("@daily", "0 0 * * *"),
        ("  0   2 * * 1-5 ", "0 2 * * 1-5"),
    ],
)
def test_validate_cron_accepts_and_normalises(expr, normalised):
    assert schedule.validate_cron(expr) == normalised


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
        ("61 * * * *", "Not a valid cron"),
        ("* * *", "five cron fields"),
        ("0 0 * * * *", "five cron fields"),
        ("", "Enter a cron"),
        ("rm -rf / # x", "Not a valid cron"),
    ],
)
def test_validate_cron_rejects_with_reason(expr, message):
    with pytest.raises(schedule.ScheduleError, match=message):
        schedule.validate_cron(expr)


def test_validate_timezone():
    assert schedule.validate_timezone("Europe/London").key == "Europe/London"
    for bad in ["Mars/Olympus", "../../etc/passwd", "", "utc "]:
        with pytest.raises(schedule.ScheduleError, match="IANA"):
            schedule.validate_timezone(bad)


def test_describe_in_plain_english():
    assert schedule.describe("0 2 * * *") == "At 02:00, every day"
    assert "Sunday" in schedule.describe("30 23 * * 0")


def test_next_fire_times_follow_wall_clock_across_dst():
    # London leaves BST on 2026-10-25: 02:00 local stays 02:00 local, UTC moves by an hour.
    after = datetime(2026, 10, 23, 12, tzinfo=UTC)
    times = schedule.next_fire_times("0 2 * * *", "Europe/London", 3, after=after)
    assert [t.strftime("%m-%d %H:%M") for t in times] == [
        "10-24 02:00",
        "10-25 02:00",
        "10-26 02:00",
    ]
    assert [t.astimezone(UTC).hour for t in times] == [1, 2, 2]  # 02:00 on the 25th is GMT


def test_next_fire_times_on_new_york_spring_forward_day():
    # 02:30 does not exist on 2026-03-08 in New York: the run still happens that day, once.
    after = datetime(2026, 3, 7, 12, tzinfo=UTC)
    times = schedule.next_fire_times("30 2 * * *", "America/New_York", 3, after=after)
    assert [t.date().isoformat() for t in times] == ["2026-03-08", "2026-03-09", "2026-03-10"]


# Fire times Airflow 3.3.2's CronDataIntervalTimetable gives, around DST changes: the table
# lives with the script that reads it from Airflow (tests/integration/test_same_as_airflow.py
# checks it against the real Airflow in `make test`).
@pytest.mark.parametrize(("expr", "tz", "after", "expected"), AIRFLOW_FIRES)
def test_next_fire_times_are_airflows_on_dst_days(expr, tz, after, expected):
    times = schedule.next_fire_times(expr, tz, len(expected), after=after)
    assert [t.isoformat() for t in times] == expected


def test_previous_fire_time_is_strictly_before_on_dst_days():
    ny = ZoneInfo("America/New_York")
    first_0140 = datetime(2026, 11, 1, 1, 40, tzinfo=ny)  # fold=0: EDT, before the second 01:30
    previous = schedule.previous_fire_time("30 1 * * *", "America/New_York", before=first_0140)
    assert previous.isoformat() == "2026-10-31T01:30:00-04:00"
    after_shift = datetime(2026, 3, 8, 8, tzinfo=UTC)  # 04:00 EDT
    previous = schedule.previous_fire_time("30 2 * * *", "America/New_York", before=after_shift)
    assert previous.isoformat() == "2026-03-08T03:30:00-04:00"


@pytest.mark.parametrize(
    ("expr", "grain", "count", "gap_minutes"),
    [
        ("0 * * * *", "day", 24, 60),
        ("0 2,14 * * *", "day", 2, 720),
        ("0 2 * * *", "day", 1, None),
        ("0 3 * * 1", "day", 1, None),
        ("0 * * * *", "hour", 1, None),
        ("*/15 * * * *", "hour", 4, 15),
    ],
)
def test_fires_per_partition_counts_wall_clock_fires(expr, grain, count, gap_minutes):
    found, gap = schedule.fires_per_partition(expr, grain)
    assert found == count
    assert gap == (None if gap_minutes is None else timedelta(minutes=gap_minutes))


def test_partitions_for_daily_fire_is_yesterday():
    fire = datetime(2026, 11, 10, 2, tzinfo=UTC)
    assert schedule.partitions_for_fire("0 2 * * *", "UTC", "day", fire) == [datetime(2026, 11, 9)]


def test_partitions_for_weekly_fire_with_day_grain_is_last_seven_days():
    fire = datetime(2026, 11, 9, 3, tzinfo=UTC)  # a Monday
    parts = schedule.partitions_for_fire("0 3 * * 1", "UTC", "day", fire)
    assert parts[0] == datetime(2026, 11, 2)
    assert parts[-1] == datetime(2026, 11, 8)
    assert len(parts) == 7


def test_partitions_for_hourly_fire_in_local_time():
    fire = datetime(2026, 7, 1, 10, 5, tzinfo=UTC)  # 11:05 in London (BST)
    parts = schedule.partitions_for_fire("5 * * * *", "Europe/London", "hour", fire)
    assert parts == [datetime(2026, 7, 1, 10)]


@pytest.mark.parametrize(
    ("value", "grain", "expected"),
    [
        ("2026-11-10", "day", datetime(2026, 11, 10)),
        ("2026-11-10T13:00", "hour", datetime(2026, 11, 10, 13)),
    ],
)
def test_parse_partition(value, grain, expected):
    assert schedule.parse_partition(value, grain) == expected
    assert schedule.format_partition(expected, grain) == value


@pytest.mark.parametrize(
    ("value", "grain"),
    [
        ("2026-13-01", "day"),
        ("yesterday", "day"),
        ("2026-11-10T13:30", "hour"),
        ("2026-11-10T13:00+01:00", "hour"),
        ("'; DROP TABLE x; --", "day"),
    ],
)
def test_parse_partition_rejects(value, grain):
    with pytest.raises(schedule.ScheduleError, match="Enter the partition as"):
        schedule.parse_partition(value, grain)
