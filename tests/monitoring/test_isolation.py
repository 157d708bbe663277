"""One pipeline's failure stays its own: sync, SLA checks and alerts go on for the others."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine

from pipelines.alerts import services as alerts
from pipelines.alerts import tasks
from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.deployments import services as deploy
from pipelines.models import (
    Alert,
    Environment,
    PipelineHealth,
    PipelineVersion,
    RunRecord,
    SlaMiss,
    SyncState,
    Verdict,
)
from pipelines.monitoring import health, monitor, sync
from tests.conftest import pipeline_payload
from tests.fakes import FakeSyncAirflow


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def two(alice, orders, environments, fake_airflow):
    """orders-daily (the one to poison) and refunds-daily, daily 02:00 UTC, SLA 60, in dev."""
    made = {}
    with time_machine.travel(utc(2026, 11, 9, 12), tick=False):
        for name in ("orders-daily", "refunds-daily"):
            payload = pipeline_payload(
                name=name, target_table=name.replace("-", "_"), sla_minutes=60
            )
            form = PipelineForm(payload, user=alice)
            assert form.is_valid(), form.errors
            pipeline = services.pipeline_create(spec=form.spec, by=alice)
            d = deploy.deployment_request(
                version=pipeline.versions.get(), environment=environments["dev"], by=alice
            )
            deploy.deployment_run(deployment_id=d.id)
            made[name] = pipeline
    return made["orders-daily"], made["refunds-daily"]


@pytest.fixture
def airflow():
    return FakeSyncAirflow()


def failed_run(airflow, dag_id: str, **fields) -> None:
    airflow.add_run(
        dag_id,
        "scheduled__2026-11-10T02:00:00+00:00",
        "failed",
        data_interval_start=utc(2026, 11, 9, 2).isoformat(),
        data_interval_end=utc(2026, 11, 10, 2).isoformat(),
        queued_at=utc(2026, 11, 10, 2).isoformat(),
        start_date=utc(2026, 11, 10, 2).isoformat(),  # it ran: a run that never started is
        end_date=utc(2026, 11, 10, 2, 5).isoformat(),  # a cancelled one, not a failure
        **fields,
    )


def beat(airflow, when) -> alerts.EvaluateResult:
    """What the beat does for dev: sync, SLA check and recompute, alerts."""
    dev = Environment.objects.get(slug="dev")
    with time_machine.travel(when, tick=False):
        sync.environment_sync(environment_id=dev.id, client=airflow)
        errors: dict[int, str] = {}
        changed = monitor.sla_evaluate(dev, errors=errors)
        monitor.health_recompute(dev, changed | set(errors), errors=errors)
        return alerts.alerts_evaluate(environment=dev)


def row(pipeline) -> PipelineHealth:
    return PipelineHealth.objects.get(pipeline=pipeline)


def test_a_run_the_sync_cannot_read_skips_only_that_pipeline(two, airflow):
    poisoned, fine = two
    failed_run(airflow, "orders_daily", duration="forty")  # not a number
    failed_run(airflow, "refunds_daily")
    result = beat(airflow, utc(2026, 11, 10, 2, 30))
    assert RunRecord.objects.get().pipeline == fine
    assert row(fine).verdict == Verdict.FAILING
    assert "could not read run" in row(poisoned).reason
    assert row(poisoned).verdict == Verdict.WARNING
    state = SyncState.objects.get()
    assert state.lease_until is None
    assert f"pipeline {poisoned.id}:" in state.last_error
    assert [a.pipeline for a in Alert.objects.filter(state="open")] == [fine]
    assert result.errors == {}


def test_a_spec_with_an_unknown_zone_is_shown_and_the_others_go_on(two, airflow):
    poisoned, fine = two
    version = PipelineVersion.objects.get(pipeline=poisoned)
    version.spec_json = {**version.spec_json, "timezone": "Mars/Olympus"}
    version.spec_sha256 = "written-by-hand"
    version.save()
    failed_run(airflow, "refunds_daily")
    beat(airflow, utc(2026, 11, 10, 3, 5))
    assert "time zone “Mars/Olympus” is unknown" in row(poisoned).reason
    assert row(poisoned).verdict == Verdict.WARNING
    assert SlaMiss.objects.get().pipeline == fine  # the deadline passed with no success
    assert row(fine).verdict == Verdict.FAILING
    assert Alert.objects.filter(pipeline=fine, state="open").exists()
    assert not Alert.objects.filter(pipeline=poisoned).exists()


def test_a_spec_that_cannot_be_read_is_shown_and_the_others_go_on(two, airflow):
    poisoned, fine = two
    version = PipelineVersion.objects.get(pipeline=poisoned)
    version.spec_json = {"name": "orders-daily"}  # written by hand, or by an older portal
    version.spec_sha256 = "unreadable"
    version.save()
    failed_run(airflow, "refunds_daily")
    beat(airflow, utc(2026, 11, 10, 3, 5))
    assert "The deployed spec cannot be read" in row(poisoned).reason
    assert row(fine).verdict == Verdict.FAILING


def test_a_bug_in_one_pipelines_health_sla_or_alerts_leaves_the_others(two, airflow, monkeypatch):
    poisoned, fine = two
    real_fill, real_deadlines = monitor._fill, health.deadlines_between
    real_conditions = alerts.conditions_for

    def fill(row, d, *args):
        if d.pipeline_id == poisoned.id:
            raise RuntimeError("health bug")
        return real_fill(row, d, *args)

    def deadlines(spec, *args):
        if spec.name == "orders-daily":
            raise RuntimeError("sla bug")
        return real_deadlines(spec, *args)

    def conditions(row, **kwargs):
        if row.pipeline_id == poisoned.id:
            raise RuntimeError("alert bug")
        return real_conditions(row, **kwargs)

    monkeypatch.setattr(monitor, "_fill", fill)
    monkeypatch.setattr(health, "deadlines_between", deadlines)
    monkeypatch.setattr(alerts, "conditions_for", conditions)
    failed_run(airflow, "orders_daily")
    failed_run(airflow, "refunds_daily")
    result = beat(airflow, utc(2026, 11, 10, 3, 5))

    assert SlaMiss.objects.get().pipeline == fine
    assert row(poisoned).sla_checked_until is None  # checked again next time
    assert row(fine).sla_checked_until == utc(2026, 11, 10, 3, 5)
    # Users read a sentence with a reference to the log; the log has the exception.
    assert "Health could not be computed: an internal error (reference" in row(poisoned).reason
    assert "health bug" not in row(poisoned).reason
    assert row(fine).verdict == Verdict.FAILING
    assert [a.pipeline for a in Alert.objects.filter(state="open")] == [fine]
    assert list(result.errors) == [poisoned.id]
    assert result.errors[poisoned.id].startswith(
        "Its alerts could not be evaluated: an internal error (reference "
    )
    assert "alert bug" not in result.errors[poisoned.id]

    monkeypatch.setattr(monitor, "_fill", real_fill)
    beat(airflow, utc(2026, 11, 10, 3, 6))
    assert "The SLA check failed: an internal error (reference" in row(poisoned).reason
    assert "sla bug" not in row(poisoned).reason


def test_a_failed_sync_releases_its_lease_and_says_why(two, airflow, monkeypatch, caplog):
    dev = Environment.objects.get(slug="dev")

    def broken(*args, **kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(monitor, "health_recompute", broken)
    failed_run(airflow, "refunds_daily")
    with time_machine.travel(utc(2026, 11, 10, 3), tick=False), pytest.raises(RuntimeError):
        sync.environment_sync(environment_id=dev.id, client=airflow)
    state = SyncState.objects.get()
    assert state.lease_until is None
    assert state.last_error.startswith("Sync failed: an internal error (reference ")
    assert "database hiccup" not in state.last_error  # the log has it, with the reference
    reference = state.last_error.split("reference ")[1][:8]
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert "RuntimeError: database hiccup" in logged[0].getMessage()
    monkeypatch.undo()
    with time_machine.travel(utc(2026, 11, 10, 3, 1), tick=False):
        assert not sync.environment_sync(environment_id=dev.id, client=airflow).skipped


def test_a_sync_that_outlived_its_lease_does_not_free_the_next_claim(two, airflow, monkeypatch):
    dev = Environment.objects.get(slug="dev")
    later = utc(2026, 11, 10, 4)

    def slow(*args, **kwargs):  # meanwhile the lease ran out and another sync claimed it
        SyncState.objects.update(lease_until=later)
        raise RuntimeError("too slow")

    monkeypatch.setattr(monitor, "health_recompute", slow)
    failed_run(airflow, "refunds_daily")
    with time_machine.travel(utc(2026, 11, 10, 3), tick=False), pytest.raises(RuntimeError):
        sync.environment_sync(environment_id=dev.id, client=airflow)
    assert SyncState.objects.get().lease_until == later


def test_beat_tasks_go_on_after_one_environment_or_sync_fails(two, environments, monkeypatch):
    evaluated: list[str] = []
    real_sla = monitor.sla_evaluate

    def sla(environment, **kwargs):
        if environment.slug == "dev":
            raise RuntimeError("dev is broken")
        return real_sla(environment, **kwargs)

    monkeypatch.setattr(monitor, "sla_evaluate", sla)
    monkeypatch.setattr(
        alerts, "alerts_evaluate", lambda *, environment: evaluated.append(environment.slug)
    )
    with time_machine.travel(utc(2026, 11, 10, 3, 5), tick=False):
        tasks.sla_evaluate_all()
    assert evaluated == ["dev", "stage", "prod"]

    def broken_sync(**kwargs):
        raise RuntimeError("sync bug")

    monkeypatch.setattr(sync, "environment_sync", broken_sync)
    with pytest.raises(RuntimeError):
        tasks.environment_sync(environments["prod"].id)
    assert evaluated[-1] == "prod"  # alerts still evaluated: SLA misses still page
