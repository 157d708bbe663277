"""core.backfill.plan against the real Airflow 3.3.2: generated DAGs deployed through the API,
then Airflow's own dry run (POST /api/v2/backfills/dry_run) for the from/to dates the plan sends
must list exactly the plan's logical dates — daily and hourly, UTC and New York, over both DST
changes. Then the reprocess rules with runs that exist, and one backfill per DAG (the 409).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from pipelines.core.airflow import (
    AirflowBackfillRunning,
    AirflowClient,
    AirflowConflict,
    AirflowError,
    AirflowUnavailable,
)
from pipelines.core.backfill import AIRFLOW_REPROCESS, plan, reprocess_runs
from pipelines.core.tokens import token_create
from pipelines.models import Environment
from tests.conftest import pipeline_payload
from tests.integration.conftest import post, unique, wait_deployment, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True),
]

DAILY = {"schedule": "0 2 * * *", "partition_grain": "day"}
HOURLY = {"schedule": "0 * * * *", "partition_grain": "hour", "partition_column": "updated_at"}
NEW_YORK = {"timezone": "America/New_York"}


def wall(*args: int) -> datetime:
    return datetime(*args)  # noqa: DTZ001 - partitions are wall-clock times


def deploy(client, key: str, pipelines: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Create and deploy each pipeline to dev (all at once); return their DAG ids, paused."""
    deployments = {}
    for label, overrides in pipelines.items():
        name = unique(f"bf-{label}")
        payload = pipeline_payload(name=name, target_table=name.replace("-", "_"), **overrides)
        created = post(client, "/api/v1/pipelines", payload, key)
        assert created.status_code == 201, created.content
        url = f"/api/v1/pipelines/{name}/deployments"
        deployment = post(client, url, {"environment": "dev", "version": 1}, key)
        assert deployment.status_code == 202, deployment.content
        deployments[label] = deployment.json()["id"]
    dag_ids = {}
    for label, deployment_id in deployments.items():
        done = wait_deployment(client, deployment_id, key)
        assert done["state"] == "deployed", done["error"]
        dag_ids[label] = done["dag_id"]
    airflow = airflow_client()
    for dag_id in dag_ids.values():
        # No scheduled runs racing the checks; triggered runs stay queued.
        busy_retry(lambda d=dag_id: airflow.set_paused(d, paused=True), f"{dag_id} paused")
    return dag_ids


def airflow_client() -> AirflowClient:
    return AirflowClient.for_environment(Environment.objects.get(slug="dev"))


def busy_retry(call: Callable[[], Any], what: str) -> Any:
    """Return call(), tried again while Airflow answers 500 "Database error": its SQLite
    metadata DB, busy with the scheduler's writes, refuses a write now and then."""

    def attempt() -> Any:
        try:
            return call()
        except AirflowUnavailable:
            return None

    return wait_for(attempt, timeout=30, interval=1, what=what)


def set_state(airflow: AirflowClient, dag_id: str, run_id: str, state: str) -> None:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
    run = busy_retry(
        lambda: airflow.request("PATCH", path, json={"state": state}), f"{run_id} {state}"
    )
    assert run["state"] == state


# (pipeline, schedule, zone, first, last, expected runs)
CASES = [
    ("daily-utc", "0 2 * * *", "UTC", "day", wall(2026, 11, 1), wall(2026, 11, 6), 6),
    ("hourly-utc", "0 * * * *", "UTC", "hour", wall(2026, 11, 1), wall(2026, 11, 1, 5), 6),
    # Fall back: one run a day; spring forward: 02:00 runs at 03:00 EDT.
    ("daily-ny", "0 2 * * *", "America/New_York", "day", wall(2026, 10, 30), wall(2026, 11, 3), 5),
    ("daily-ny", "0 2 * * *", "America/New_York", "day", wall(2026, 3, 7), wall(2026, 3, 9), 3),
    # Fall back: the repeated 01:00 is a second, empty run; spring forward: no 02:00 run.
    (
        "hourly-ny",
        "0 * * * *",
        "America/New_York",
        "hour",
        wall(2026, 11, 1),
        wall(2026, 11, 1, 5),
        7,
    ),
    (
        "hourly-ny",
        "0 * * * *",
        "America/New_York",
        "hour",
        wall(2026, 3, 8),
        wall(2026, 3, 8, 5),
        5,
    ),
]


def test_airflows_dry_run_creates_exactly_the_planned_runs(client, warehouse, alice):
    key = token_create(user=alice)
    dag_ids = deploy(
        client,
        key,
        {
            "daily-utc": DAILY,
            "hourly-utc": HOURLY,
            "daily-ny": DAILY | NEW_YORK,
            "hourly-ny": HOURLY | NEW_YORK,
        },
    )
    airflow = airflow_client()
    now = datetime.now(UTC)
    for label, expr, tz, grain, first, last, count in CASES:
        p = plan(expr, tz, grain, first, last, now=now)
        assert len(p.runs) == count, (label, first)
        dry = airflow.backfill_dry_run(
            dag_ids[label], p.from_date, p.to_date, reprocess="completed", max_active_runs=1
        )
        assert dry == list(p.logical_dates), (label, first)

    # Both bounds are inclusive: one second less (more) drops the last (first) run.
    p = plan("0 2 * * *", "UTC", "day", wall(2026, 11, 1), wall(2026, 11, 6), now=now)
    dag = dag_ids["daily-utc"]
    shorter = airflow.backfill_dry_run(
        dag, p.from_date, p.to_date - timedelta(seconds=1), reprocess="none", max_active_runs=1
    )
    assert shorter == list(p.logical_dates[:-1])
    later = airflow.backfill_dry_run(
        dag, p.from_date + timedelta(seconds=1), p.to_date, reprocess="none", max_active_runs=1
    )
    assert later == list(p.logical_dates[1:])

    # Airflow's DST quirk: from exactly 03-07 02:00 EST it starts at 03-08 03:00 EDT, which
    # is why the plan sends a second earlier.
    p = plan("0 2 * * *", "America/New_York", "day", wall(2026, 3, 7), wall(2026, 3, 9), now=now)
    assert p.from_date == datetime(2026, 3, 7, 6, 59, 59, tzinfo=UTC)
    skipped = airflow.backfill_dry_run(
        dag_ids["daily-ny"],
        p.logical_dates[0],
        p.to_date,
        reprocess="none",
        max_active_runs=1,
    )
    assert skipped == list(p.logical_dates[1:])

    # A range whose runs have not ended (the day after tomorrow, from the clock): the plan
    # sends nothing; Airflow refuses future dates.
    future = datetime.combine(now.date() + timedelta(days=2), time.min)
    assert plan("0 2 * * *", "UTC", "day", future, future, now=now).from_date is None
    start = future.replace(hour=2, tzinfo=UTC)
    with pytest.raises(AirflowError, match="future dates") as raised:
        airflow.backfill_dry_run(dag, start, start, reprocess="none", max_active_runs=1)
    assert raised.value.status == 422


def test_reprocess_rules_and_one_backfill_per_dag(client, warehouse, alice):
    key = token_create(user=alice)
    dag = deploy(client, key, {"daily-utc": DAILY})["daily-utc"]
    airflow = airflow_client()
    now = datetime.now(UTC)
    p = plan("0 2 * * *", "UTC", "day", wall(2026, 10, 1), wall(2026, 10, 5), now=now)
    dates = p.logical_dates
    # Runs at three of the five logical dates: one succeeded, one failed, one still queued
    # (the DAG is paused, so it stays queued).
    for i, state in enumerate(["success", "failed", None]):
        run_id = f"manual__bf_{i}"
        airflow.trigger_run(dag, dag_run_id=run_id, logical_date=dates[i], conf={})
        if state:
            set_state(airflow, dag, run_id, state)
    existing = {
        datetime.fromisoformat(run["logical_date"]): run["state"]
        for run in airflow.request("GET", f"/api/v2/dags/{dag}/dagRuns")["dag_runs"]
        if run["logical_date"]
    }
    assert [existing.get(d) for d in dates] == ["success", "failed", "queued", None, None]
    for policy, created in [("missing", [3, 4]), ("failed", [1, 3, 4]), ("all", [0, 1, 3, 4])]:
        ours = reprocess_runs(p.runs, existing, policy).create.logical_dates
        assert list(ours) == [dates[i] for i in created], policy
        theirs = airflow.backfill_dry_run(
            dag,
            p.from_date,
            p.to_date,
            reprocess=AIRFLOW_REPROCESS[policy],
            max_active_runs=1,
        )
        assert theirs == list(ours), policy

    # One backfill per DAG: the second, while the first has not completed, is a 409.
    backfill = airflow.backfill_create(
        dag, p.from_date, p.to_date, reprocess="none", max_active_runs=1
    )
    assert backfill["max_active_runs"] == 1
    assert backfill["reprocess_behavior"] == "none"
    assert datetime.fromisoformat(backfill["from_date"]) == p.from_date
    # The runs it created: logical date = data interval start, run_after = interval end.
    created = [
        run
        for run in airflow.request("GET", f"/api/v2/dags/{dag}/dagRuns")["dag_runs"]
        if run["run_type"] == "backfill"
    ]
    assert sorted(datetime.fromisoformat(r["logical_date"]) for r in created) == list(dates[3:])
    for run in created:
        start = datetime.fromisoformat(run["data_interval_start"])
        assert datetime.fromisoformat(run["logical_date"]) == start
        assert datetime.fromisoformat(run["data_interval_end"]) == start + timedelta(days=1)
        assert datetime.fromisoformat(run["run_after"]) == start + timedelta(days=1)
    with pytest.raises(AirflowBackfillRunning, match="still running another backfill") as raised:
        airflow.backfill_create(dag, p.from_date, p.to_date, reprocess="none", max_active_runs=1)
    assert raised.value.status == 409
    assert [b["id"] for b in airflow.backfill_list(dag)] == [backfill["id"]]
    cancelled = airflow.backfill_cancel(backfill["id"])
    assert cancelled["completed_at"] is not None
    assert airflow.backfill_get(backfill["id"])["completed_at"] is not None
    with pytest.raises(AirflowConflict, match="already completed"):
        airflow.backfill_pause(backfill["id"])
    # Cancelled (completed): a new one may start. A range with no run at all is Airflow's 422.
    noon = datetime(2026, 10, 2, 12, tzinfo=UTC)
    with pytest.raises(AirflowError, match="No runs to create") as raised:
        airflow.backfill_create(dag, noon, noon, reprocess="none", max_active_runs=1)
    assert raised.value.status == 422
