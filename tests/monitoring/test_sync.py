"""Sync from Airflow into RunRecord, health recompute and SLA evaluation, on PostgreSQL."""

from __future__ import annotations

import pytest
import time_machine

from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.core.airflow import AirflowCredentialsError, AirflowUnavailable
from pipelines.deployments import services as deploy
from pipelines.models import Deployment, PipelineHealth, RunRecord, SlaMiss, SyncState, Verdict
from pipelines.monitoring import monitor, sync
from tests.conftest import pipeline_payload
from tests.fakes import FakeSyncAirflow, scheduled, utc

DAG = "orders_daily"


@pytest.fixture
def deployed(alice, orders, environments, fake_airflow):
    """orders-daily (daily 02:00 UTC, SLA 60 min) deployed to dev on 2026-11-09 at 12:00 UTC."""
    with time_machine.travel(utc(2026, 11, 9, 12), tick=False):
        form = PipelineForm(pipeline_payload(sla_minutes=60), user=alice)
        assert form.is_valid(), form.errors
        pipeline = services.pipeline_create(spec=form.spec, by=alice)
        d = deploy.deployment_request(
            version=pipeline.versions.get(), environment=environments["dev"], by=alice
        )
        deploy.deployment_run(deployment_id=d.id)
    assert Deployment.objects.get().state == "deployed"
    return pipeline


@pytest.fixture
def airflow():
    return FakeSyncAirflow()


def do_sync(environments, airflow, when):
    with time_machine.travel(when, tick=False):
        return sync.environment_sync(environment_id=environments["dev"].id, client=airflow)


def health(pipeline):
    return PipelineHealth.objects.get(pipeline=pipeline)


def test_sync_records_runs_with_their_partitions_and_is_idempotent(deployed, environments, airflow):
    scheduled(airflow, 10)
    airflow.add_run(
        DAG,
        "portal__x",
        "success",
        conf={"partition": "2026-11-03"},
        queued_at=utc(2026, 11, 10, 9).isoformat(),
        end_date=utc(2026, 11, 10, 9, 1).isoformat(),
    )
    first = do_sync(environments, airflow, utc(2026, 11, 10, 12))
    assert (first.runs_seen, first.runs_written) == (2, 2)
    by_id = {r.dag_run_id: r for r in RunRecord.objects.all()}
    scheduled_run = by_id["scheduled__2026-11-10T02:00:00+00:00"]
    assert scheduled_run.partition_start == utc(2026, 11, 9)  # wall clock, stored as UTC
    assert scheduled_run.partition_end == utc(2026, 11, 10)
    assert by_id["portal__x"].partition_start == utc(2026, 11, 3)
    do_sync(environments, airflow, utc(2026, 11, 10, 12, 1))
    assert RunRecord.objects.count() == 2
    row = health(deployed)
    assert row.verdict == Verdict.HEALTHY, row.reason
    assert row.latest_loaded_partition == utc(2026, 11, 9)
    assert row.freshness_lag_partitions == 0
    assert row.next_expected_run == utc(2026, 11, 11, 2)


def test_watermark_moves_with_an_overlap(deployed, environments, airflow):
    do_sync(environments, airflow, utc(2026, 11, 10, 12))
    do_sync(environments, airflow, utc(2026, 11, 10, 12, 5))
    assert airflow.since_seen[1] == utc(2026, 11, 10, 12) - sync.OVERLAP


def test_failed_run_then_success(deployed, environments, airflow):
    scheduled(airflow, 10, "failed")
    do_sync(environments, airflow, utc(2026, 11, 10, 3))
    row = health(deployed)
    assert row.verdict == Verdict.FAILING
    assert row.failing_streak == 1
    scheduled(airflow, 11)
    do_sync(environments, airflow, utc(2026, 11, 11, 3))
    row = health(deployed)
    assert row.failing_streak == 0
    assert row.success_rate_7d == 0.5


def test_stale_when_the_expected_partition_is_missing(deployed, environments, airflow):
    scheduled(airflow, 10)
    do_sync(environments, airflow, utc(2026, 11, 12, 12))  # 11-10 and 11-11 should be loaded
    row = health(deployed)
    assert row.verdict == Verdict.STALE
    assert row.freshness_lag_partitions == 2
    assert row.expected_partition == utc(2026, 11, 11)


def test_paused_retrying_and_import_error_flags(deployed, environments, airflow):
    scheduled(airflow, 10)
    do_sync(environments, airflow, utc(2026, 11, 10, 12))
    airflow.paused.add(DAG)
    do_sync(environments, airflow, utc(2026, 11, 10, 12, 1))
    assert health(deployed).verdict == Verdict.PAUSED
    airflow.paused.clear()
    airflow.import_errors.add("dev/orders_daily.py")
    do_sync(environments, airflow, utc(2026, 11, 10, 12, 2))
    assert health(deployed).verdict == Verdict.FAILING
    assert "cannot import" in health(deployed).reason


def test_two_syncs_at_once_one_works(deployed, environments, airflow):
    SyncState.objects.create(environment=environments["dev"], lease_until=utc(2030, 1, 1))
    result = do_sync(environments, airflow, utc(2026, 11, 10, 12))
    assert result.skipped
    assert airflow.since_seen == []


def test_airflow_down_keeps_health_and_says_since_when(deployed, environments, airflow):
    scheduled(airflow, 10)
    do_sync(environments, airflow, utc(2026, 11, 10, 12))
    airflow.down = True
    with pytest.raises(AirflowUnavailable):
        do_sync(environments, airflow, utc(2026, 11, 10, 12, 5))
    with pytest.raises(AirflowUnavailable):
        do_sync(environments, airflow, utc(2026, 11, 10, 12, 10))
    row = health(deployed)
    assert row.verdict == Verdict.HEALTHY  # nothing reset to unknown
    assert row.orchestrator_unreachable_since == utc(2026, 11, 10, 12, 5)
    assert SyncState.objects.get().unreachable_since == utc(2026, 11, 10, 12, 5)
    airflow.down = False
    do_sync(environments, airflow, utc(2026, 11, 10, 12, 15))
    assert health(deployed).orchestrator_unreachable_since is None


def test_sla_miss_without_any_run_then_late_load(deployed, environments, airflow):
    env = environments["dev"]
    do_sync(environments, airflow, utc(2026, 11, 10, 2, 30))
    with time_machine.travel(utc(2026, 11, 10, 2, 59), tick=False):
        assert monitor.sla_evaluate(env) == set()
        monitor.health_recompute(env)
    assert health(deployed).sla_state == "at_risk"
    with time_machine.travel(utc(2026, 11, 10, 3, 1), tick=False):
        changed = monitor.sla_evaluate(env)
        monitor.health_recompute(env, changed)
    (miss,) = SlaMiss.objects.all()
    assert miss.fire_time == utc(2026, 11, 10, 2)
    assert miss.deadline == utc(2026, 11, 10, 3)
    assert miss.partition == "2026-11-09"
    assert miss.loaded_at is None  # never started
    assert health(deployed).verdict == Verdict.SLA_MISSED
    with time_machine.travel(utc(2026, 11, 10, 3, 2), tick=False):
        monitor.sla_evaluate(env)  # evaluating again records nothing twice
    assert SlaMiss.objects.count() == 1
    scheduled(airflow, 10, finished=utc(2026, 11, 10, 3, 20))
    do_sync(environments, airflow, utc(2026, 11, 10, 3, 30))
    with time_machine.travel(utc(2026, 11, 10, 3, 31), tick=False):
        changed = monitor.sla_evaluate(env)
        monitor.health_recompute(env, changed)
    miss.refresh_from_db()
    assert miss.loaded_at == utc(2026, 11, 10, 3, 20)
    row = health(deployed)
    assert row.sla_state == "met"
    assert row.verdict == Verdict.HEALTHY
    assert row.sla_misses_7d == 1


def test_sla_met_when_loaded_in_time(deployed, environments, airflow):
    scheduled(airflow, 10, finished=utc(2026, 11, 10, 2, 40))
    do_sync(environments, airflow, utc(2026, 11, 10, 2, 45))
    with time_machine.travel(utc(2026, 11, 10, 3, 1), tick=False):
        monitor.sla_evaluate(environments["dev"])
    assert not SlaMiss.objects.exists()


def test_the_clock_alone_makes_a_pipeline_stale(deployed, environments, airflow):
    """No run for a day: the periodic tick recomputes the row and the partition is missing."""
    from pipelines.alerts import tasks

    scheduled(airflow, 10)
    do_sync(environments, airflow, utc(2026, 11, 10, 3))
    row = health(deployed)
    assert row.verdict == Verdict.HEALTHY
    assert row.refresh_at == utc(2026, 11, 11, 2)  # the next fire (SLA at risk from then)
    with time_machine.travel(utc(2026, 11, 11, 3, 5), tick=False):
        tasks.sla_evaluate_all()
    row = health(deployed)
    assert row.expected_partition == utc(2026, 11, 10)
    assert row.freshness_lag_partitions == 1
    assert row.verdict == Verdict.SLA_MISSED  # the SLA (60 min) passed: worse than stale
    assert row.sla_deadlines_30d == 2  # deployed on 11-09 12:00: deadlines 11-10 and 11-11 03:00
    assert row.sla_misses_30d == 1


def test_deadline_count_is_exact():
    assert monitor.deadline_count("0 2 * * *", "UTC", 60, utc(2026, 11, 1), utc(2026, 11, 8)) == 7
    assert monitor.deadline_count("0 * * * *", "UTC", 30, utc(2026, 11, 1), utc(2026, 11, 2)) == 24
    assert monitor.deadline_count("0 2 * * *", "UTC", None, utc(2026, 11, 1), utc(2026, 11, 8)) == 0


def test_a_run_listed_twice_or_changed_later_is_one_row_with_its_last_state(
    deployed, environments, airflow
):
    scheduled(airflow, 10, "running")
    listed = airflow.runs_updated_since
    airflow.runs_updated_since = lambda since, **kw: listed(since, **kw) * 2  # paged while written
    result = do_sync(environments, airflow, utc(2026, 11, 10, 2, 30))
    assert result.runs_written == 1
    assert RunRecord.objects.get().state == "running"
    scheduled(airflow, 10, "success")
    do_sync(environments, airflow, utc(2026, 11, 10, 3))
    (record,) = RunRecord.objects.all()
    assert (record.state, record.duration_s) == ("success", 300.0)
    assert record.end_date == utc(2026, 11, 10, 2, 5)


def test_pipeline_page_shows_chart_and_partition_calendar(
    client, alice, deployed, environments, airflow
):
    scheduled(airflow, 10)  # loads 11-09
    scheduled(airflow, 11, "failed")  # 11-10 failed
    do_sync(environments, airflow, utc(2026, 11, 11, 3))
    client.force_login(alice)
    with time_machine.travel(utc(2026, 11, 12, 12), tick=False):  # 11-11 expected, never ran
        body = client.get(deployed.get_absolute_url()).content.decode()
    assert body.count('class="bar bar-') == 2
    assert 'class="bar bar-failed"' in body
    assert 'class="sla-line"' in body
    for partition, status in [
        ("2026-11-09", "loaded"), ("2026-11-10", "failed"), ("2026-11-08", "missing"),
    ]:  # fmt: skip
        assert f'data-partition="{partition}" data-status="{status}"' in body
    assert body.count("data-partition=") == 35


def test_the_next_sync_asks_from_airflows_clock_not_the_portals(deployed, environments, airflow):
    """Airflow's clock is 10 minutes behind: asking for runs updated since the portal's time
    would skip the runs Airflow updated in those 10 minutes."""
    airflow.server_time = utc(2026, 11, 10, 11, 50)  # the Date of Airflow's answer
    do_sync(environments, airflow, utc(2026, 11, 10, 12))
    state = SyncState.objects.get()
    assert (state.watermark, state.airflow_watermark) == (
        utc(2026, 11, 10, 12),
        utc(2026, 11, 10, 11, 50),
    )
    do_sync(environments, airflow, utc(2026, 11, 10, 12, 5))
    assert airflow.since_seen[1] == utc(2026, 11, 10, 11, 50) - sync.OVERLAP


def test_unreadable_credentials_are_the_syncs_last_error(environments, monkeypatch):
    dev = environments["dev"]
    monkeypatch.delenv(dev.airflow_username_env, raising=False)
    monkeypatch.delenv(dev.airflow_password_env, raising=False)
    with pytest.raises(AirflowCredentialsError):
        sync.environment_sync(environment_id=dev.id)
    state = SyncState.objects.get(environment=dev)
    assert state.last_error == (
        f"The credentials of Dev's Airflow cannot be read: {dev.airflow_username_env} and "
        f"{dev.airflow_password_env} are not set in the portal's environment."
    )
    assert state.lease_until is None
