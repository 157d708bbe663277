"""Health code is total: any stored row shape gives a verdict or a reason, never an exception."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.alerts import services as alerts
from pipelines.models import PipelineHealth, Verdict
from pipelines.monitoring import health, monitor
from tests.conftest import ORDERS

# The reference spec with an SLA, reading SQLite (the spec's own fields are what vary below).
BASE = dataclasses.replace(ORDERS, source_dialect="sqlite", sla_minutes=60)
MIN, MAX = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)

specs = st.builds(
    lambda **changes: dataclasses.replace(BASE, **changes),
    schedule=st.sampled_from(
        ["0 2 * * *", "0 * * * *", "30 1 * * 0", "0 0 29 2 *", "0 0 30 2 *", "bogus", ""]
    ),
    timezone=st.sampled_from(
        ["UTC", "Europe/London", "America/New_York", "Pacific/Kiritimati", "Mars/Olympus", ""]
    ),
    partition_grain=st.sampled_from(["day", "hour", "week"]),
    sla_minutes=st.one_of(st.none(), st.integers(-5, 10**7)),
)
moments = st.one_of(
    st.sampled_from([MIN, MAX]),
    st.datetimes(timezones=st.just(UTC)),
)
runs = st.lists(
    st.tuples(
        st.sampled_from(["success", "failed", "running", "queued", "", "up_for_retry", "weird"]),
        st.one_of(st.none(), moments),
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=specs,
    run_rows=runs,
    loaded_end=st.one_of(st.none(), moments),
    registered_at=st.one_of(st.none(), moments),
    now=st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - bounds of an aware strategy
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    open_miss=st.booleans(),
)
def test_health_of_any_stored_row_is_a_verdict_or_a_reason(
    spec, run_rows, loaded_end, registered_at, now, flags, open_miss
):
    row = PipelineHealth(pipeline_id=1, environment_id=1, team_id=1, owner_id=1)
    row.is_paused, row.retrying, row.has_import_error = flags
    d = monitor.Deployed(1, 1, 1, spec, registered_at)
    problem = health.spec_problem(spec)
    if problem:
        monitor._broken(row, problem, now)
    else:
        ordered = sorted(run_rows, key=lambda r: r[1] or MIN, reverse=True)
        monitor._compute(row, d, ordered, loaded_end, 0, 0, open_miss, now)
        alerts.conditions_for(row, grain=spec.partition_grain, open_misses=[])
        for deadline in health.deadlines_between(spec, now - timedelta(days=2), now):
            health.loaded_by(deadline.partitions, [(None, None, None)], spec.partition_grain)
    assert row.verdict in Verdict.values
    assert row.reason
    assert len(row.reason) <= 300


def test_a_stored_partition_at_the_ends_of_the_calendar_is_not_an_error():
    now = datetime(2026, 11, 10, 3, tzinfo=UTC)
    for latest in (MIN.replace(tzinfo=None), MAX.replace(tzinfo=None)):
        fresh = health.freshness(BASE, latest, now)
        assert fresh.lag_partitions is not None
        assert health.wall_to_aware(latest, "America/New_York").tzinfo is UTC
        assert health.wall_to_aware(latest, "Pacific/Kiritimati").tzinfo is UTC
