"""Promotion against the real Airflow 3.3.2 and the PostgreSQL warehouse: dev → stage → rollback.

dev and stage share the Airflow instance but nothing else that matters: each has its own DAG
sub-folder, DAG-id prefix, warehouse connection id (added through Airflow's connections API, so
the session's Airflow needs no restart) and target schema. The story, in the order the rollback
rule needs (a version may return to stage only if it ran or was approved there):

1. version 1 runs in dev, alice asks to promote it to stage, bob (approver) approves;
2. alice edits the pipeline (version 2), deploys it to dev, runs the latest complete partition
   there and the health sync makes the readiness checklist pass; promoted and approved the same
   way;
3. stage's DAG file holds version 2 with stage's connection and schema, and a run in stage
   writes to stage's schema only (dev's rows are not rewritten, their xmin is unchanged, and
   dev's table is not even read, by PostgreSQL's scan statistics);
4. stage rolls back to version 1 without a new approval; Airflow registers version 1's file
   and the version 2 deployment is superseded. The audit log names who did each step.

Everything a person does goes through the JSON API with their own token (pipelines/api/v1.py
and releases.py); the checklist is also read from pipelines.releases.checklist for its report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.local import LocalAirflow
from pipelines.authoring import codegen
from pipelines.catalog.services import source_register
from pipelines.core.airflow import AirflowClient, AirflowNotFound
from pipelines.core.models import AuditEvent
from pipelines.core.tokens import token_create
from pipelines.models import (
    Deployment,
    Environment,
    Pipeline,
    PipelineVersion,
    RunRecord,
    RunRequest,
    Team,
)
from pipelines.monitoring import sync
from pipelines.releases import services as releases
from pipelines.releases.checklist import blocking_failures, checklist
from tests.conftest import make_environment, pipeline_payload
from tests.integration.conftest import (
    PG_SOURCE,
    PG_WAREHOUSE,
    RUN_TIMEOUT,
    TODAY,
    dags_folder,
    get,
    pg_url,
    post,
    source_rows,
    unique,
    wait_deployment,
    wait_for,
)

pytestmark = pytest.mark.integration

DEV_CONN, STAGE_CONN = "it_warehouse_pg_dev", "it_warehouse_pg_stage"
DAY = TODAY - timedelta(days=1)  # the latest complete partition: dev's health stays fresh
V1_DESCRIPTION = "Daily orders into the warehouse."
V2_DESCRIPTION = "Daily orders into the warehouse, reviewed for stage."


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warehouse_connections(airflow: LocalAirflow) -> Iterator[None]:
    """dev's and stage's warehouse connections in Airflow's own store (its REST API), both to
    the PostgreSQL warehouse database; the schema is each environment's target_schema."""
    admin = AirflowClient(airflow.url, "admin", airflow.users["admin"])
    for conn_id in (DEV_CONN, STAGE_CONN):
        with contextlib.suppress(AirflowNotFound):
            admin.request("DELETE", f"/api/v2/connections/{conn_id}")
        admin.request(
            "POST",
            "/api/v2/connections",
            json={
                "connection_id": conn_id,
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 5432,
                "login": "postgres",
                "schema": PG_WAREHOUSE,
            },
        )
    yield
    for conn_id in (DEV_CONN, STAGE_CONN):
        with contextlib.suppress(AirflowNotFound):
            admin.request("DELETE", f"/api/v2/connections/{conn_id}")


@pytest.fixture
def stages(airflow, worker, warehouse_connections, alice, bob) -> tuple[Environment, Environment]:
    """dev (direct deploys) and stage (approval needed) on the test Airflow, PostgreSQL
    warehouse, each with its own schema; team payments has a quiet alert route."""
    suffix = uuid.uuid4().hex[:6]
    common = {"airflow_url": airflow.url, "warehouse_dialect": "postgres"}
    dev = make_environment(
        "dev",
        0,
        dags_folder=str(dags_folder("pg_dev")),
        dag_id_prefix="it_pgdev__",
        warehouse_conn_id=DEV_CONN,
        target_schema=f"it_dev_{suffix}",
        **common,
    )
    stage = make_environment(
        "stage",
        1,
        dags_folder=str(dags_folder("pg_stage")),
        dag_id_prefix="it_pgstage__",
        warehouse_conn_id=STAGE_CONN,
        target_schema=f"it_stage_{suffix}",
        requires_approval=True,
        **common,
    )
    Team.objects.filter(slug="payments").update(quiet_email="payments-alerts@example.com")
    source_register(
        name="shop",
        url=pg_url(PG_SOURCE),
        conn_id="it_source_postgres",
        tables=["orders"],
        teams=["payments"],
    )
    return dev, stage


# --- helpers ---------------------------------------------------------------------------------


def table_rows(schema: str, table: str, day: Any = None) -> list[tuple]:
    """Every row of schema.table (or of one partition), every column, in key order."""
    where, params = ("WHERE order_date = %s", (day,)) if day else ("", ())
    with psycopg.connect(pg_url(PG_WAREHOUSE)) as conn:
        return conn.execute(
            f'SELECT * FROM "{schema}"."{table}" {where} ORDER BY order_id', params
        ).fetchall()


def untouched_proof(schema: str, table: str) -> tuple[int, str]:
    """(row count, SHA-256 of every row with its transaction id xmin): the same rows deleted
    and inserted again, as a partition reload does, change the hash even with equal values.
    Its own read is in the table's statistics when it returns (the flush is asked for)."""
    with psycopg.connect(pg_url(PG_WAREHOUSE), autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT xmin::text, * FROM "{schema}"."{table}" ORDER BY order_id'
        ).fetchall()
        flush_statistics(conn)
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


def flush_statistics(conn: psycopg.Connection) -> None:
    """Have this session's statistics written now (PostgreSQL 15+ otherwise flushes them at
    most once a second, or when the session ends): the flush happens when the session goes
    idle outside a transaction (autocommit), before the server says it is ready again.

    Reference: https://www.postgresql.org/docs/15/monitoring-stats.html#MONITORING-STATS-FUNCTIONS
    """
    assert conn.autocommit
    conn.execute("SELECT pg_stat_force_next_flush()")


def reads(schema: str, table: str) -> int:
    """How often PostgreSQL has scanned the table (sequential and index scans), from its
    statistics. Every other session of the warehouse (a task's) writes its statistics when it
    ends, before it leaves pg_stat_activity: so wait until none is left, then read."""
    with psycopg.connect(pg_url(PG_WAREHOUSE), autocommit=True) as conn:
        wait_for(
            lambda: conn.execute(
                "SELECT count(*) = 0 FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            ).fetchone()[0],
            timeout=60,
            interval=0.2,
            what="the warehouse's other sessions to end",
        )
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute(
            "SELECT seq_scan + COALESCE(idx_scan, 0) FROM pg_stat_user_tables "
            "WHERE schemaname = %s AND relname = %s",
            (schema, table),
        ).fetchone()[0]


def as_source(rows: list[tuple]) -> list[tuple]:
    """Warehouse rows in source_rows' shape: (order_id, customer_id, amount, date)."""
    return [(r[0], r[1], f"{float(r[2]):.2f}", str(r[3])) for r in rows]


def dag_spec(environment: Environment, dag_id: str) -> dict[str, Any]:
    """The SPEC literal of the DAG file in the environment's folder (checked against the
    template's shape on the way)."""
    return codegen.check_source((Path(environment.dags_folder) / f"{dag_id}.py").read_text())


def run_in(
    client, name: str, environment: Environment, key: str, approver_key: str = ""
) -> dict[str, Any]:
    """Run DAY through the API in `environment`; follow it to the end; then sync until the
    portal's run history and health have it (what beat does every 30 s).

    With `approver_key`, DAY is loaded there already and the environment requires approval:
    the run must wait for the approver, and reach Airflow only once approved.
    """
    body = {"environment": environment.slug, "partition": DAY.isoformat()}
    response = post(client, f"/api/v1/pipelines/{name}/runs", body, key)
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    if approver_key:
        assert response.json()["state"] == "awaiting_approval", response.json()
        # Nothing can reach Airflow: a request awaiting approval is not claimable by the
        # outbox (RunRequest.OUTBOX_CLAIMABLE), whatever a worker is sent.
        assert RunRequest.State.AWAITING_APPROVAL not in RunRequest.OUTBOX_CLAIMABLE
        assert RunRequest.objects.get(id=run_id).attempts == 0
        with pytest.raises(AirflowNotFound):
            AirflowClient.for_environment(environment).get_run(
                response.json()["dag_id"], response.json()["dag_run_id"]
            )
        approved = post(client, f"/api/v1/runs/{run_id}/approve", {"comment": "ok"}, approver_key)
        assert approved.status_code == 200, approved.content
    final = wait_for(
        lambda: (
            (r := get(client, f"/api/v1/runs/{run_id}", key))["run_state"] in ("success", "failed")
            and r
        ),
        timeout=RUN_TIMEOUT,
        interval=1,
        what=f"the run of {DAY} in {environment.slug}",
    )
    assert final["run_state"] == "success", final

    def synced() -> bool:
        sync.environment_sync(environment_id=environment.id)
        return RunRecord.objects.filter(
            environment=environment, dag_run_id=final["dag_run_id"], state="success"
        ).exists()

    wait_for(synced, timeout=60, interval=2, what="the sync to record the run")
    return final


def settle(environment: Environment, pipeline: Pipeline) -> None:
    """Sync until no run of the pipeline in `environment` is queued or running (such as the
    run Airflow starts itself when a DAG is unpaused)."""

    def idle() -> bool:
        sync.environment_sync(environment_id=environment.id)
        records = RunRecord.objects.filter(pipeline=pipeline, environment=environment)
        return records.exists() and not records.exclude(state__in=("success", "failed")).exists()

    wait_for(idle, timeout=RUN_TIMEOUT, interval=2, what=f"every run in {environment.slug}")


def deploy_to_dev(client, name: str, number: int, key: str) -> dict[str, Any]:
    response = post(
        client,
        f"/api/v1/pipelines/{name}/deployments",
        {"environment": "dev", "version": number},
        key,
    )
    assert response.status_code == 202, response.content
    done = wait_deployment(client, response.json()["id"], key, what=f"v{number} in dev")
    assert done["state"] == "deployed", done["error"]
    return done


def assert_ready(version: PipelineVersion, stage: Environment, client, key: str) -> None:
    """No blocking item fails, as the checklist module and the API both say."""
    items = checklist(version, stage)
    report = "\n".join(
        f"{'ok  ' if i.ok else 'FAIL'} {i.check} ({'blocking' if i.blocking else 'advisory'}): "
        f"{i.reason}"
        for i in items
    )
    assert not blocking_failures(items), f"v{version.number} not ready for stage:\n{report}"
    answer = get(
        client,
        f"/api/v1/pipelines/{version.pipeline.slug}/checklist"
        f"?environment=stage&version={version.number}",
        key,
    )
    assert (answer["ready"], answer["source_environment"]) == (True, "dev"), answer


def promote(version: PipelineVersion, client, alice_key: str, bob_key: str) -> Deployment:
    """alice requests through the API, bob approves through it; wait until Airflow registered
    the stage file."""
    name, number = version.pipeline.slug, version.number
    filed = post(
        client,
        f"/api/v1/pipelines/{name}/promotions",
        {"environment": "stage", "version": number, "reason": f"v{number} passed in dev."},
        alice_key,
    )
    assert filed.status_code == 201, filed.content
    promotion = filed.json()
    assert (promotion["state"], promotion["requested_by"]) == ("pending", "alice")
    own = post(client, f"/api/v1/promotions/{promotion['id']}/approve", {}, alice_key)
    assert own.status_code == 403, own.content  # four eyes: not the requester
    approved = post(
        client, f"/api/v1/promotions/{promotion['id']}/approve", {"comment": "Fine."}, bob_key
    )
    assert approved.status_code == 200, approved.content
    decision = approved.json()
    assert (decision["state"], decision["decided_by"]) == ("approved", "bob")
    deployment_id = decision["deployment"]["id"]
    done = wait_deployment(client, deployment_id, alice_key, what=f"v{number} in stage")
    assert done["state"] == "deployed", done["error"]
    assert (done["environment"], done["version"]) == ("stage", number)
    return Deployment.objects.get(id=deployment_id)


# --- the story -------------------------------------------------------------------------------


def test_promote_to_stage_with_approval_then_roll_back(client, stages, alice, bob):
    dev, stage = stages
    every = ["read", "write", "approve"]
    key, bob_key = token_create(user=alice, scopes=every), token_create(user=bob, scopes=every)
    name = unique("promo")
    table = name.replace("-", "_")
    created = post(
        client,
        "/api/v1/pipelines",
        pipeline_payload(name=name, target_table=table, description=V1_DESCRIPTION),
        key,
    )
    assert created.status_code == 201, created.content
    pipeline = Pipeline.objects.get(slug=name)
    v1 = pipeline.versions.get(number=1)
    dag_dev, dag_stage = dev.dag_id_for(name), stage.dag_id_for(name)

    # Straight into stage is refused: only a promotion deploys there.
    refused = post(
        client, f"/api/v1/pipelines/{name}/deployments", {"environment": "stage", "version": 1}, key
    )
    assert refused.status_code == 403, refused.content

    # 1. Version 1: dev, a run, then stage through a promotion.
    deploy_to_dev(client, name, 1, key)
    run_in(client, name, dev, key)
    assert_ready(v1, stage, client, key)
    stage_v1 = promote(v1, client, key, bob_key)

    # 2. Version 2: an edit, dev, a fresh run, the checklist passes, then stage.
    edited = client.put(
        f"/api/v1/pipelines/{name}",
        json.dumps(
            pipeline_payload(name=name, target_table=table, description=V2_DESCRIPTION)
            | {"change_note": "Clearer description for stage."}
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert edited.status_code == 200, edited.content
    assert edited.json() == {"version": 2, "created": True}
    v2 = pipeline.versions.get(number=2)
    deploy_to_dev(client, name, 2, key)
    assert dag_spec(dev, dag_dev)["portal"]["version"] == 2
    run_in(client, name, dev, key)
    assert_ready(v2, stage, client, key)
    stage_v2 = promote(v2, client, key, bob_key)
    stage_v1.refresh_from_db()
    assert stage_v1.state == Deployment.State.SUPERSEDED

    # 3. Stage's file is version 2 rendered for stage: its connection, its schema.
    spec = dag_spec(stage, dag_stage)
    assert spec["dag_id"] == dag_stage
    assert spec["portal"]["version"] == 2
    assert spec["portal"]["environment"] == "stage"
    assert spec["description"] == V2_DESCRIPTION
    assert spec["target_conn_id"] == STAGE_CONN
    assert spec["target_name"] == f"{stage.target_schema}.{table}"
    sql = json.dumps(spec["sql"])
    assert f'\\"{stage.target_schema}\\".\\"{table}\\"' in sql
    assert dev.target_schema not in sql
    dev_spec = dag_spec(dev, dag_dev)
    assert (dev_spec["target_conn_id"], dev_spec["portal"]["environment"]) == (DEV_CONN, "dev")
    assert stage.target_schema not in json.dumps(dev_spec["sql"])

    # A run in stage writes to stage's schema only.
    settle(dev, pipeline)
    settle(stage, pipeline)  # the run Airflow starts when it unpauses the new DAG
    expected = source_rows(DAY)
    assert len(expected) > 0
    assert as_source(table_rows(dev.target_schema, table, DAY)) == expected
    dev_before = untouched_proof(dev.target_schema, table)
    dev_reads = reads(dev.target_schema, table)
    run_in(client, name, stage, key, approver_key=bob_key)  # DAY is loaded: four eyes
    # A re-load of unchanged rows writes nothing (it merges), so also: not even read (counted
    # before the proof's own read).
    assert reads(dev.target_schema, table) == dev_reads
    assert untouched_proof(dev.target_schema, table) == dev_before
    assert as_source(table_rows(stage.target_schema, table, DAY)) == expected

    # 4. Roll stage back to version 1 (approved there before): no new approval.
    assert [v.number for v in releases.rollback_targets(pipeline, stage)] == [1]
    rolled = post(
        client, f"/api/v1/pipelines/{name}/rollback", {"environment": "stage", "version": 1}, key
    )
    assert rolled.status_code == 202, rolled.content
    assert rolled.json()["id"] == stage_v1.id  # the same deployment, asked for again
    done = wait_deployment(client, stage_v1.id, key, what="the rollback in stage")
    assert done["state"] == "deployed", done["error"]
    spec = dag_spec(stage, dag_stage)
    assert (spec["portal"]["version"], spec["description"]) == (1, V1_DESCRIPTION)
    assert spec["target_conn_id"] == STAGE_CONN
    registered = AirflowClient.for_environment(stage).get_dag(dag_stage)
    assert registered is not None
    assert registered["description"] == V1_DESCRIPTION  # Airflow parsed version 1's file
    assert not registered["has_import_errors"]
    stage_v2.refresh_from_db()
    assert stage_v2.state == Deployment.State.SUPERSEDED
    assert releases.current_deployment(pipeline, stage).version.number == 1
    assert releases.current_deployment(pipeline, dev).version.number == 2  # dev untouched

    # The audit log says who did what.
    events = [
        (e.action, e.actor.get_username(), e.environment.slug, (e.after or {}).get("version"))
        for e in AuditEvent.objects.filter(
            pipeline=pipeline,
            action__in=("promotion_requested", "promotion_approved", "rollback"),
        )
        .select_related("actor", "environment")
        .order_by("id")
    ]
    assert events == [
        ("promotion_requested", "alice", "stage", 1),
        ("promotion_approved", "bob", "stage", 1),
        ("promotion_requested", "alice", "stage", 2),
        ("promotion_approved", "bob", "stage", 2),
        ("rollback", "alice", "stage", 1),
    ]
    rollback_event = AuditEvent.objects.get(pipeline=pipeline, action="rollback")
    assert rollback_event.before == {"version": 2}
