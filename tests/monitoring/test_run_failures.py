"""Why a run failed: read from Airflow (task instances and the end of the task log), stored by
the sync for every failed run (scheduled ones too) and shown on the run request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import responses
import time_machine

from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.core.airflow import AirflowClient, explain_failure, log_message
from pipelines.deployments import services as deploy
from pipelines.models import PipelineHealth, RunRecord, RunRequest, Verdict
from pipelines.monitoring import sync
from tests.conftest import pipeline_payload
from tests.fakes import FakeSyncAirflow

BASE = "http://airflow.test:8080"
DAG = "orders_daily"
GUARD = (
    "Guarded swap refused: partition 2026-11-10 would shrink from 40 to 0 rows, below the shrink "
    "guard of 50%. Nothing was replaced: the previous rows are kept."
)


def fail_entry(exc_type: str, exc_value: str, **extra) -> dict:
    """A log line as Airflow 3.3 writes it when a task raises (measured on 3.3.2)."""
    return {
        "event": "Task failed with exception",
        "level": "error",
        "error_detail": [
            {"exc_type": exc_type, "exc_value": exc_value, "is_cause": False, "frames": []}
        ],
        **extra,
    }


def instance(task_id: str, state: str, try_number: int, second: int) -> dict:
    return {
        "task_id": task_id,
        "state": state,
        "try_number": try_number,
        "end_date": f"2026-11-10T02:00:0{second}Z",
    }


INSTANCES = [
    instance("create_target", "success", 1, 1),
    instance("load_partition", "failed", 1, 2),
    instance("check_partition", "upstream_failed", 0, 3),
]


def test_the_guard_message_is_the_reason_without_the_exception_type():
    log = [
        {"event": "Filling up the DagBag", "level": "info"},
        fail_entry("AirflowFailException", GUARD),
    ]
    assert explain_failure(INSTANCES, INSTANCES[1], log) == f"load_partition failed: {GUARD}"


def test_any_other_exception_keeps_its_type_and_the_try_number():
    failed = {**INSTANCES[1], "try_number": 4}
    log = [fail_entry("OperationalError", 'relation "orders" does not exist')]
    assert explain_failure(INSTANCES, failed, log) == (
        'load_partition failed (try 4): OperationalError: relation "orders" does not exist'
    )


def test_a_chained_exception_names_the_raised_one_not_its_cause():
    entry = fail_entry("AirflowFailException", "The source holds duplicate keys")
    entry["error_detail"].insert(
        0, {"exc_type": "IntegrityError", "exc_value": "UNIQUE", "is_cause": True}
    )
    assert log_message([entry]) == "The source holds duplicate keys"


def test_a_log_without_structured_error_falls_back_to_the_last_error_line():
    assert log_message([{"event": "Killed: timeout", "level": "error"}]) == "Killed: timeout"
    assert (
        log_message(["INFO start", "ValueError: bad date", "INFO done"]) == "ValueError: bad date"
    )
    assert log_message([]) == ""


def test_a_run_failed_without_a_failed_task_says_so():
    running = [{"task_id": "load_partition", "state": "running"}]
    assert "load_partition had not finished" in explain_failure(running, None, [])
    assert "without a failed task" in explain_failure([], None, [])


@responses.activate
def test_client_reads_the_first_failed_task_and_the_log_of_its_last_try(settings):
    responses.add(responses.POST, f"{BASE}/auth/token", json={"access_token": "t"}, status=201)
    run = "scheduled__2026-11-10T02:00:00+00:00"
    quoted = "scheduled__2026-11-10T02%3A00%3A00%2B00%3A00"
    responses.add(
        responses.GET,
        f"{BASE}/api/v2/dags/{DAG}/dagRuns/{quoted}/taskInstances",
        json={"task_instances": INSTANCES, "total_entries": 3},
    )
    responses.add(
        responses.GET,
        f"{BASE}/api/v2/dags/{DAG}/dagRuns/{quoted}/taskInstances/load_partition/logs/1",
        json={"content": [fail_entry("AirflowFailException", GUARD)], "continuation_token": None},
    )
    client = AirflowClient(BASE, "portal", "secret", timeout=2, retries=0)
    assert client.failure_reason(DAG, run) == f"load_partition failed: {GUARD}"


# --- the sync stores the reason ----------------------------------------------------------------


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def deployed(alice, orders, environments, fake_airflow):
    with time_machine.travel(utc(2026, 11, 9, 12), tick=False):
        form = PipelineForm(pipeline_payload(), user=alice)
        assert form.is_valid(), form.errors
        pipeline = services.pipeline_create(spec=form.spec, by=alice)
        d = deploy.deployment_request(
            version=pipeline.versions.get(), environment=environments["dev"], by=alice
        )
        deploy.deployment_run(deployment_id=d.id)
    return pipeline


def failed_run(airflow: FakeSyncAirflow, day: int, reason: str | None) -> str:
    run_id = f"scheduled__2026-11-{day:02d}T02:00:00+00:00"
    airflow.add_run(
        DAG,
        run_id,
        "failed",
        data_interval_start=utc(2026, 11, day - 1, 2).isoformat(),
        data_interval_end=utc(2026, 11, day, 2).isoformat(),
        queued_at=utc(2026, 11, day, 2).isoformat(),
        start_date=utc(2026, 11, day, 2).isoformat(),
        end_date=utc(2026, 11, day, 2, 5).isoformat(),
    )
    if reason is not None:
        airflow.failures[(DAG, run_id)] = reason
    return run_id


def test_sync_records_why_a_scheduled_run_failed(deployed, environments):
    airflow = FakeSyncAirflow()
    run_id = failed_run(airflow, 10, f"load_partition failed: {GUARD}")
    with time_machine.travel(utc(2026, 11, 10, 3), tick=False):
        sync.environment_sync(environment_id=environments["dev"].id, client=airflow)
    assert RunRecord.objects.get(dag_run_id=run_id).error == f"load_partition failed: {GUARD}"


def test_a_reason_airflow_cannot_give_is_said_once_not_asked_forever(deployed, environments):
    airflow = FakeSyncAirflow()
    run_id = failed_run(airflow, 10, None)  # the fake answers 404
    with time_machine.travel(utc(2026, 11, 10, 3), tick=False):
        sync.environment_sync(environment_id=environments["dev"].id, client=airflow)
    assert RunRecord.objects.get(dag_run_id=run_id).error.startswith(
        "Airflow could not say why this run failed"
    )


def test_the_run_request_started_from_the_portal_gets_the_same_reason(
    deployed, environments, alice
):
    airflow = FakeSyncAirflow()
    run_id = failed_run(airflow, 10, f"load_partition failed: {GUARD}")
    RunRequest.objects.create(
        pipeline=deployed,
        environment=environments["dev"],
        partition="2026-11-09",
        dag_id=DAG,
        dag_run_id=run_id,
        logical_date=utc(2026, 11, 10, 2),
        state=RunRequest.State.SUBMITTED,
        run_state="failed",
        requested_by=alice,
    )
    with time_machine.travel(utc(2026, 11, 10, 3), tick=False):
        sync.environment_sync(environment_id=environments["dev"].id, client=airflow)
    assert RunRequest.objects.get(dag_run_id=run_id).error == f"load_partition failed: {GUARD}"


def test_a_burst_of_failures_is_explained_over_several_syncs(deployed, environments):
    airflow = FakeSyncAirflow()
    for day in range(2, 2 + sync.FAILURES_PER_SYNC + 5):
        failed_run(airflow, day, f"reason {day}")
    with time_machine.travel(utc(2026, 11, 28, 3), tick=False):
        sync.environment_sync(environment_id=environments["dev"].id, client=airflow)
    assert RunRecord.objects.filter(error="").count() == 5
    with time_machine.travel(utc(2026, 11, 28, 3, 1), tick=False):
        sync.environment_sync(environment_id=environments["dev"].id, client=airflow)
    assert RunRecord.objects.filter(error="").count() == 0


def test_the_pipeline_page_shows_why_recent_runs_failed(deployed, environments, client, alice):
    airflow = FakeSyncAirflow()
    failed_run(airflow, 10, f"load_partition failed: {GUARD}")
    with time_machine.travel(utc(2026, 11, 10, 3), tick=False):
        sync.environment_sync(environment_id=environments["dev"].id, client=airflow)
    client.force_login(alice)
    page = client.get(f"/pipelines/{deployed.slug}/").content.decode()
    assert "Why recent runs failed" in page
    assert "would shrink from 40 to 0 rows" in page
    assert "no shrinking below 50% of the rows a partition held" in page


def test_following_a_run_to_failed_reads_its_reason_at_once(
    deployed, environments, alice, fake_airflow
):
    from pipelines.runs import services as runs

    run = RunRequest.objects.create(
        pipeline=deployed,
        environment=environments["dev"],
        partition="2026-11-09",
        dag_id=DAG,
        dag_run_id="portal__2026-11-09__abc",
        logical_date=utc(2026, 11, 10, 2),
        state=RunRequest.State.SUBMITTED,
        run_state="running",
        requested_by=alice,
    )
    fake_airflow.runs[(DAG, run.dag_run_id)] = {
        "state": "failed",
        "reason": f"load_partition failed: {GUARD}",
    }
    runs.run_refresh(run_request_id=run.id)
    run.refresh_from_db()
    assert (run.run_state, run.error) == ("failed", f"load_partition failed: {GUARD}")


def test_a_run_failed_before_it_started_is_not_a_failure(deployed, environments):
    """Cancelling a backfill fails its queued runs: nothing ran, so there is no reason to read,
    no failing health and no failure on the pipeline page."""
    airflow = FakeSyncAirflow()
    airflow.add_run(
        DAG,
        "scheduled__2026-11-10T02:00:00+00:00",
        "success",
        data_interval_start=utc(2026, 11, 9, 2).isoformat(),
        data_interval_end=utc(2026, 11, 10, 2).isoformat(),
        queued_at=utc(2026, 11, 10, 2).isoformat(),
        start_date=utc(2026, 11, 10, 2).isoformat(),
        end_date=utc(2026, 11, 10, 2, 5).isoformat(),
        duration=300.0,
    )
    for day in (5, 6, 7):
        airflow.add_run(
            DAG,
            f"backfill__2026-11-{day:02d}T02:00:00+00:00",
            "failed",
            run_type="backfill",
            logical_date=utc(2026, 11, day, 2).isoformat(),
            data_interval_start=utc(2026, 11, day, 2).isoformat(),
            data_interval_end=utc(2026, 11, day + 1, 2).isoformat(),
            queued_at=utc(2026, 11, 10, 2, 30).isoformat(),
            end_date=utc(2026, 11, 10, 2, 31).isoformat(),
        )
    with time_machine.travel(utc(2026, 11, 10, 3), tick=False):
        sync.environment_sync(environment_id=environments["dev"].id, client=airflow)
    assert RunRecord.objects.filter(state="failed").count() == 3
    assert not airflow.failures_asked
    health = PipelineHealth.objects.get(pipeline=deployed)
    assert (health.failing_streak, health.verdict) == (0, Verdict.HEALTHY), health.reason
