"""Alerts against the real Airflow 3.3.2: a load that fails after its retries pages once and
resolves when a later run succeeds; a fire with no run misses its SLA; stale data shows as stale.

Deploys, runs and alert messages go through the real Celery worker; the test drives the sync and
the evaluation itself (what beat does every 30 s) so that it knows when they happened.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from django.utils import timezone

from pipelines.alerts import services as alerts
from pipelines.authoring.forms import PipelineForm
from pipelines.catalog.services import source_register
from pipelines.core import schedule
from pipelines.deployments import services as deploy
from pipelines.models import (
    Alert,
    AlertDelivery,
    Deployment,
    Pipeline,
    PipelineHealth,
    RunRecord,
    Team,
)
from pipelines.monitoring import health, monitor, sync
from pipelines.runs import services as runs
from tests.conftest import make_environment, make_source, pipeline_payload
from tests.integration.conftest import IT_DIR, dags_folder, past_partitions, unique, wait_for

pytestmark = pytest.mark.integration
DEPLOY_TIMEOUT = 90
RUN_TIMEOUT = 120
QUIET = "payments-alerts@example.com"


@pytest.fixture
def dev(airflow, worker, alice):
    """dev on the test Airflow with the SQLite warehouse; team payments alerts a quiet email."""
    Team.objects.filter(slug="payments").update(quiet_email=QUIET)
    source_register(
        name="shop",
        url=f"sqlite:///{IT_DIR / 'source.sqlite3'}",
        conn_id="it_source_sqlite",
        tables=["orders"],
        teams=["payments"],
    )
    return make_environment(
        "dev",
        0,
        airflow_url=airflow.url,
        dags_folder=str(dags_folder("sqlite")),
        dag_id_prefix="it_alerts__",
        warehouse_conn_id="it_warehouse_sqlite",
        warehouse_dialect="sqlite",
        target_schema="",
    )


def deployed(environment, alice, **payload) -> Pipeline:
    """Create the pipeline and deploy it through the worker; wait until Airflow has it."""
    form = PipelineForm(pipeline_payload(**payload), user=alice)
    assert form.is_valid(), form.errors
    pipeline = deploy.pipeline_create_and_deploy(spec=form.spec, by=alice, environment=environment)
    done = wait_for(
        lambda: (
            (d := Deployment.objects.get(version__pipeline=pipeline)).state
            in ("deployed", "failed")
            and d
        ),
        timeout=DEPLOY_TIMEOUT,
        what="the deployment",
    )
    assert done.state == "deployed", done.error
    return pipeline


def run_and_sync(environment, pipeline, alice, day) -> RunRecord:
    """Run one partition through the worker and sync until Airflow says it finished."""
    request, _ = runs.run_request(
        pipeline=pipeline,
        environment=environment,
        partition=schedule.parse_partition(day.isoformat(), "day"),
        by=alice,
    )

    def finished():
        sync.environment_sync(environment_id=environment.id)
        run = RunRecord.objects.filter(dag_run_id=request.dag_run_id).first()
        return run if run and run.state in ("success", "failed") else None

    return wait_for(finished, timeout=RUN_TIMEOUT, interval=2, what=f"the run for {day}")


def settle(environment, pipeline) -> None:
    """Sync until no run of the pipeline is still queued or running (max_active_runs is 1)."""

    def idle():
        sync.environment_sync(environment_id=environment.id)
        records = RunRecord.objects.filter(pipeline=pipeline)
        return not records.exclude(state__in=("success", "failed")).exists()

    wait_for(idle, timeout=RUN_TIMEOUT, interval=2, what="every run to finish")


def test_failed_load_pages_once_then_resolves_and_stale_data_shows(
    dev, alice, mailoutbox, settings
):
    # A catalog table the source database does not have: the load fails, with no retries.
    missing = unique("orders_gone").replace("-", "_")
    make_source("shop", missing, dialect="sqlite", conn_id="it_source_sqlite")
    name = unique("fails")
    pipeline = deployed(
        dev,
        alice,
        name=name,
        source=missing,
        target_table=name.replace("-", "_"),
        retries=0,
        sla_minutes=None,
    )
    first, second = past_partitions()
    failed = run_and_sync(dev, pipeline, alice, first)
    assert failed.state == "failed"
    settle(dev, pipeline)  # the catch-up run Airflow starts on unpause fails as well

    alerts.alerts_evaluate(environment=dev)
    alerts.alerts_evaluate(environment=dev)  # beat evaluates again: nothing new
    (alert,) = Alert.objects.filter(pipeline=pipeline)
    assert (alert.kind, alert.severity, alert.state) == ("run_failed", "page", "open")
    mail = wait_for(
        lambda: [m for m in mailoutbox if pipeline.slug in m.subject],
        timeout=30,
        what="the alert email from the worker",
    )
    assert [m.subject for m in mail] == [f"[PAGE] Run failed: {pipeline.slug} in Dev"]
    assert mail[0].to == [QUIET]
    assert f"Portal: {settings.PORTAL_BASE_URL}/pipelines/{pipeline.slug}/" in mail[0].body

    # Fix the source; a later run succeeds and the alert resolves.
    with sqlite3.connect(IT_DIR / "source.sqlite3") as conn:
        conn.execute(f'CREATE TABLE "{missing}" AS SELECT * FROM orders')
    succeeded = run_and_sync(dev, pipeline, alice, second)
    assert succeeded.state == "success"
    result = alerts.alerts_evaluate(environment=dev)
    assert result.resolved == 1
    alert.refresh_from_db()
    assert alert.state == "resolved"
    assert alert.deliveries.filter(event="resolved", target=QUIET).exists()
    assert Alert.objects.filter(pipeline=pipeline, kind="run_failed").count() == 1

    # The newest loaded partition is days old: the data is stale, not failing.
    row = PipelineHealth.objects.get(pipeline=pipeline, environment=dev)
    assert row.failing_streak == 0
    assert row.verdict == "stale", row.reason
    assert row.freshness_lag_partitions >= 2
    (stale,) = Alert.objects.filter(pipeline=pipeline, state="open")
    assert stale.kind == "stale"
    wait_for(
        lambda: not AlertDelivery.objects.filter(state="pending").exists(),
        timeout=30,
        what="the worker to send every message",
    )
    assert set(AlertDelivery.objects.values_list("state", flat=True)) == {"sent"}


def test_a_fire_with_no_run_misses_its_sla_before_anything_finishes(dev, alice):
    name = unique("late")
    pipeline = deployed(dev, alice, name=name, target_table=name.replace("-", "_"), sla_minutes=30)
    sync.environment_sync(environment_id=dev.id)
    spec = pipeline.versions.get().spec
    fire = schedule.next_fire_times(spec.schedule, spec.timezone, 1, after=timezone.now())[0]
    later = fire + timedelta(minutes=31)  # the deadline passed, and Airflow has no run for it

    changed = monitor.sla_evaluate(dev, now=later)
    assert pipeline.id in changed
    monitor.health_recompute(dev, changed, now=later)
    alerts.alerts_evaluate(environment=dev, now=later)

    (alert,) = Alert.objects.filter(pipeline=pipeline, state="open")
    assert (alert.kind, alert.severity) == ("sla_missed", "page")
    assert f"Scheduled {fire:%Y-%m-%d %H:%M} UTC, due by " in alert.detail
    partition = schedule.partitions_for_fire(
        spec.schedule, spec.timezone, spec.partition_grain, fire
    )[-1]
    label = schedule.format_partition(partition, spec.partition_grain)
    assert alert.summary == f"Partition {label} missed its SLA deadline."
    assert PipelineHealth.objects.get(pipeline=pipeline).sla_state == "missed"
    loaded = RunRecord.objects.filter(
        pipeline=pipeline, state="success", partition_end__gt=health.as_stored(partition)
    )
    assert not loaded.exists()  # nothing has loaded that partition, nor finished for it
