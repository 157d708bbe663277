"""Backfill fixtures: the releases world (dev without approval, stage and prod with it), the
pipeline deployed to dev and prod, the clock at 2026-11-10 12:00 UTC (daily 02:00 UTC schedule:
the latest complete partition is 2026-11-09), and a fake Airflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from pipelines.models import RunRecord
from tests.releases.conftest import carol, envs, mark_deployed, pipeline, team  # noqa: F401

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield NOW


@pytest.fixture
def deployed(pipeline, envs, alice, frozen):  # noqa: F811
    version = pipeline.versions.get()
    return {slug: mark_deployed(version, envs[slug], alice) for slug in ("dev", "prod")}


def day(n: int) -> datetime:
    """Partition 2026-11-<n> (wall clock, naive)."""
    return datetime(2026, 11, n)  # noqa: DTZ001 (partitions are wall-clock, naive)


def scheduled_run(deployment, n: int, state: str = "success", **fields) -> RunRecord:
    """The scheduled run that loads 2026-11-<n>: logical date = its data interval start."""
    start = datetime(2026, 11, n, 2, tzinfo=UTC)  # data interval [day n 02:00, day n+1 02:00)
    end = start + timedelta(days=1)
    values = {
        "environment": deployment.environment,
        "pipeline": deployment.version.pipeline,
        "dag_id": deployment.dag_id,
        "dag_run_id": f"scheduled__{start.isoformat()}",
        "run_type": "scheduled",
        "state": state,
        "logical_date": start,
        "data_interval_start": start,
        "data_interval_end": end,
        "queued_at": end,
        "start_date": end,
        "end_date": end + timedelta(minutes=2),
        "duration_s": 120.0,
        "synced_at": timezone.now(),
    }
    values.update(fields)
    if str(values["dag_run_id"]).startswith("backfill__") and "run_type" not in fields:
        values["run_type"] = "backfill"  # Airflow names a backfill's runs backfill__<date>
    return RunRecord.objects.create(**values)
