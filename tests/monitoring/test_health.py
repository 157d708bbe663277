"""Freshness, SLA deadlines and verdicts, with the DST cases the on-call engineer cares about."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.models import Verdict
from pipelines.monitoring import health
from tests.conftest import ORDERS


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def naive(*args):
    return datetime(*args)  # noqa: DTZ001 - partitions are wall-clock times


LONDON_WEEKLY = replace(ORDERS, schedule="30 23 * * 0", timezone="Europe/London", sla_minutes=60)
NY_DAILY = replace(ORDERS, schedule="30 2 * * *", timezone="America/New_York", sla_minutes=60)


class TestLondonWeeklySundayAtHalfPastEleven:
    """BST ends on Sunday 2026-10-25 at 02:00; BST starts on Sunday 2026-03-29 at 01:00 UTC."""

    def test_deadline_on_the_autumn_change_is_in_gmt(self):
        found = health.deadlines_between(
            LONDON_WEEKLY, utc(2026, 10, 25, 12), utc(2026, 10, 26, 0, 31)
        )
        (due,) = found
        assert due.fire_time.astimezone(UTC) == utc(2026, 10, 25, 23, 30)  # 23:30 GMT
        assert due.deadline.astimezone(UTC) == utc(2026, 10, 26, 0, 30)
        assert due.partitions == tuple(naive(2026, 10, d) for d in range(18, 25))
        assert (
            health.deadlines_between(LONDON_WEEKLY, utc(2026, 10, 25, 12), utc(2026, 10, 26, 0, 29))
            == []
        )

    def test_deadline_on_the_spring_change_is_in_bst(self):
        (due,) = health.deadlines_between(
            LONDON_WEEKLY, utc(2026, 3, 29, 12), utc(2026, 3, 30, 0, 0)
        )
        assert due.fire_time.astimezone(UTC) == utc(2026, 3, 29, 22, 30)  # 23:30 BST
        assert due.deadline.astimezone(UTC) == utc(2026, 3, 29, 23, 30)

    def test_freshness_lag_counts_the_extra_hour(self):
        fresh = health.freshness(LONDON_WEEKLY, naive(2026, 10, 24), utc(2026, 11, 2, 1, 0))
        assert fresh.expected_partition == naive(2026, 10, 31)
        assert fresh.lag_partitions == 7
        assert fresh.lag_hours == 169  # the week with the clocks going back is an hour longer

    def test_fresh_until_the_grace_has_passed(self):
        # The fire at 23:30 GMT on 11-01 loads 10-25..10-31; with a 60 min grace it is expected
        # from 00:30 UTC.
        before = health.freshness(LONDON_WEEKLY, naive(2026, 10, 24), utc(2026, 11, 2, 0, 29))
        after = health.freshness(LONDON_WEEKLY, naive(2026, 10, 24), utc(2026, 11, 2, 0, 31))
        assert before.expected_partition == naive(2026, 10, 24)
        assert before.lag_partitions == 0
        assert after.expected_partition == naive(2026, 10, 31)


class TestNewYorkDailyAtHalfPastTwoOnSpringForwardDay:
    """02:30 does not exist on 2026-03-08 in New York: Airflow fires at 03:30 EDT, once."""

    def test_deadline_follows_the_shifted_fire(self):
        (due,) = health.deadlines_between(NY_DAILY, utc(2026, 3, 8, 5), utc(2026, 3, 8, 9))
        assert due.fire_time.astimezone(UTC) == utc(2026, 3, 8, 7, 30)  # 03:30 EDT, as Airflow
        assert due.deadline.astimezone(UTC) == utc(2026, 3, 8, 8, 30)
        assert due.partitions == (naive(2026, 3, 7),)

    def test_no_fire_is_lost_or_doubled_around_the_change(self):
        found = health.deadlines_between(NY_DAILY, utc(2026, 3, 6, 12), utc(2026, 3, 11, 12))
        assert [d.partitions for d in found] == [(naive(2026, 3, day),) for day in (6, 7, 8, 9, 10)]

    def test_freshness_across_the_short_day(self):
        now = utc(2026, 3, 9, 12)  # 03-09 02:30 EDT fired and its grace passed: 03-08 expected
        fresh = health.freshness(NY_DAILY, naive(2026, 3, 7), now)
        assert fresh.expected_partition == naive(2026, 3, 8)
        assert fresh.lag_partitions == 1
        assert fresh.lag_hours == 24  # 03-07 00:00 EST → 03-08 00:00 EST
        shorter = health.freshness(NY_DAILY, naive(2026, 3, 8), utc(2026, 3, 10, 12))
        assert shorter.lag_hours == 23  # 03-08 00:00 EST → 03-09 00:00 EDT


def test_loaded_by_needs_every_partition_before_the_deadline():
    parts = (naive(2026, 11, 9), naive(2026, 11, 10))
    whole = [(naive(2026, 11, 9), naive(2026, 11, 11), utc(2026, 11, 11, 3))]
    assert health.loaded_by(parts, whole, "day") == utc(2026, 11, 11, 3)
    assert health.loaded_by(parts, whole, "day", deadline=utc(2026, 11, 11, 2)) is None
    half = [(naive(2026, 11, 9), naive(2026, 11, 10), utc(2026, 11, 10, 3))]
    assert health.loaded_by(parts, half, "day") is None


NOW = utc(2026, 11, 20, 12)


def run(state, hours_ago, duration=60.0):
    return (state, NOW - timedelta(hours=hours_ago), duration)


def test_run_stats():
    runs = [run("failed", 1), run("failed", 25), run("success", 49, 30), run("success", 73, 90)]
    stats = health.run_stats(runs, NOW)
    assert stats.failing_streak == 2
    assert stats.success_rate_7d == 0.5
    assert stats.last_run_state == "failed"
    assert stats.last_success_at == NOW - timedelta(hours=49)
    assert stats.p50_duration_s == 60
    assert stats.p95_duration_s == 90


def test_running_runs_do_not_break_or_extend_a_failing_streak():
    stats = health.run_stats([run("running", 0), run("failed", 24), run("success", 48)], NOW)
    assert stats.failing_streak == 1


@pytest.mark.parametrize(
    ("kwargs", "verdict"),
    [
        ({"import_error": True}, Verdict.FAILING),
        ({"runs": [run("failed", 1)]}, Verdict.FAILING),
        ({"open_sla_miss": True}, Verdict.SLA_MISSED),
        ({"paused": True}, Verdict.PAUSED),
        ({"runs": []}, Verdict.NEVER_RUN),
        ({"lag": 2}, Verdict.STALE),
        ({"retrying": True}, Verdict.WARNING),
        (
            {
                "runs": [run("success", 1)]
                + [run("failed", h) for h in (30, 50)]
                + [run("success", 70)]
            },
            Verdict.WARNING,
        ),
        ({}, Verdict.HEALTHY),
    ],
)
def test_verdict(kwargs, verdict):
    runs = kwargs.pop("runs", [run("success", 1)])
    lag = kwargs.pop("lag", 0)
    fresh = health.Freshness(naive(2026, 11, 19), naive(2026, 11, 19 - lag), lag, lag * 24.0)
    flags = {"paused": False, "import_error": False, "open_sla_miss": False, "retrying": False}
    got, reason = health.verdict_for(
        stats=health.run_stats(runs, NOW), fresh=fresh, **(flags | kwargs)
    )
    assert got == verdict
    assert reason
