"""The story: alice edits pipelines for team payments, bob approves for it, mallory is in no team.

The catalog has one source, `shop`, with an `orders` table; dev, stage and prod environments
exist. Builders set only what a test needs.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from pipelines.authoring.reference import ORDERS
from pipelines.authoring.spec import Column
from pipelines.core.tokens import token_create
from pipelines.models import (
    Environment,
    Membership,
    SourceColumn,
    SourceDatabase,
    SourceTable,
    Team,
)

ORDERS_COLUMNS = [
    ("order_id", "bigint"),
    ("customer_id", "bigint"),
    ("amount", "numeric"),
    ("order_date", "date"),
    ("updated_at", "timestamp"),
]


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(slug="payments", name="Payments", domain="finance")


def make_user(username: str, team: Team | None = None, role: str = "editor") -> Any:
    user = get_user_model().objects.create_user(
        username, f"{username}@example.com", "pw-" + username
    )
    if team is not None:
        Membership.objects.create(team=team, user=user, role=role)
    return user


@pytest.fixture
def alice(team):
    return make_user("alice", team)


@pytest.fixture
def bob(team):
    return make_user("bob", team, role="approver")


@pytest.fixture
def mallory(db):
    return make_user("mallory")


def make_source(
    name: str = "shop",
    table: str = "orders",
    columns: list[tuple[str, str]] = ORDERS_COLUMNS,
    *,
    dialect: str = "sqlite",
    conn_id: str = "demo_source",
    schema: str = "",
) -> SourceTable:
    database, _ = SourceDatabase.objects.get_or_create(
        name=name, defaults={"dialect": dialect, "conn_id": conn_id}
    )
    source = SourceTable.objects.create(database=database, name=table, schema=schema)
    for position, (column, kind) in enumerate(columns):
        SourceColumn.objects.create(table=source, name=column, kind=kind, position=position)
    return source


@pytest.fixture
def orders(db) -> SourceTable:
    return make_source()


def make_environment(slug: str, order: int, **overrides: Any) -> Environment:
    values = {
        "name": slug.title(),
        "order": order,
        "airflow_url": "http://airflow.invalid:8080",
        "dags_folder": f"/tmp/portal-test-dags/{slug}",
        "dag_id_prefix": "",
        "warehouse_conn_id": f"warehouse_{slug}",
        "warehouse_dialect": "postgres",
        "target_schema": "analytics",
    }
    values.update(overrides)
    return Environment.objects.create(slug=slug, **values)


@pytest.fixture
def environments(db, tmp_path) -> dict[str, Environment]:
    return {
        slug: make_environment(slug, order, dags_folder=str(tmp_path / "dags" / slug))
        for order, slug in enumerate(["dev", "stage", "prod"])
    }


def pipeline_payload(**overrides: Any) -> dict[str, Any]:
    """A valid new-pipeline payload in API form (lists as lists)."""
    payload = {
        "name": "orders-daily",
        "team": "payments",
        "owner": "alice",
        "source": "orders",
        "target_table": "orders_daily",
        "schedule": "0 2 * * *",
        "timezone": "UTC",
        "primary_key": ["order_id"],
        "partition_column": "order_date",
        "partition_grain": "day",
        "sla_minutes": 120,
        "retries": 3,
        "retry_delay_minutes": 5,
        "execution_timeout_minutes": 60,
        "tags": ["revenue"],
        "runbook_url": "https://wiki.example.com/runbooks/orders",
        "description": "Daily orders into the warehouse.",
    }
    payload.update(overrides)
    return payload


def form_data(**overrides: Any) -> dict[str, Any]:
    """The same payload as an HTML form posts it (lists comma-separated)."""
    data = pipeline_payload(**overrides)
    data["source"] = data["source"] if "." in data["source"] else f"shop.{data['source']}"
    for key in ("primary_key", "tags"):
        if isinstance(data[key], list):
            data[key] = ", ".join(data[key])
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def api_client(client, alice):
    """A Django test client sending alice's API token, with every scope (tests of the scopes
    make their own tokens)."""
    key = token_create(user=alice, scopes=["read", "write", "approve"])
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


@pytest.fixture
def tasks_unsent(monkeypatch) -> list[tuple[str, tuple]]:
    """Keep committed outbox rows' tasks off the broker; return what would have been sent.

    For tests whose transactions really commit (transaction=True): in a full run the integration
    tests' Celery worker thread is still consuming the test broker, and would run the task
    against this test's rows while pytest truncates them.
    """
    from pipelines.core import outbox

    sent: list[tuple[str, tuple]] = []
    monkeypatch.setattr(outbox, "send", lambda name, *args, **kw: sent.append((name, args)))
    return sent


@pytest.fixture
def fake_airflow(monkeypatch):
    """Replace the Airflow HTTP client with an in-memory fake (unit tests only)."""
    from pipelines.core.airflow import AirflowClient
    from tests.fakes import FakeAirflow

    fake = FakeAirflow()
    monkeypatch.setattr(AirflowClient, "for_environment", classmethod(lambda cls, env: fake))
    return fake


def make_pipeline(slug: str, team: Team, owner: Any, source: SourceTable) -> Any:
    """A pipeline row without going through the form (for dashboards that only read rows)."""
    from pipelines.models import Pipeline

    return Pipeline.objects.create(
        slug=slug,
        team=team,
        owner=owner,
        source_table=source,
        target_table=slug.replace("-", "_"),
        created_by=owner,
    )


def make_health(pipeline: Any, environment: Environment, **fields: Any) -> Any:
    from pipelines.models import VERDICT_RANK, PipelineHealth

    verdict = fields.pop("verdict", "healthy")
    return PipelineHealth.objects.create(
        pipeline=pipeline,
        environment=environment,
        team=pipeline.team,
        owner=pipeline.owner,
        verdict=verdict,
        verdict_rank=VERDICT_RANK[verdict],
        **fields,
    )


# --- Reference specs (the golden files' and the DAG-parse test's) ---------------------------
# ORDERS is pipelines.authoring.reference.ORDERS (the benchmarks use it too).

PORTAL_URL = "http://portal.example.com/pipelines/orders-daily/"

EVENTS_HOURLY = replace(
    ORDERS,
    name="events-hourly",
    source_dialect="sqlite",
    source_conn_id="demo_source",
    source_schema="",
    source_table="events",
    columns=(
        Column("event_id", "text"),
        Column("user_id", "bigint"),
        Column("seen_at", "timestamp"),
    ),
    target_table="events_hourly",
    schedule="15 * * * *",
    timezone="Europe/London",
    primary_key=("event_id", "user_id"),
    partition_column="seen_at",
    partition_grain="hour",
    sla_minutes=None,
    retries=0,
    tags=(),
    runbook_url="",
    description="",
    allow_empty=True,
)


def target(slug="prod", dialect="postgres", schema="analytics", prefix=""):
    return SimpleNamespace(
        slug=slug,
        warehouse_conn_id=f"warehouse_{slug}",
        warehouse_dialect=dialect,
        target_schema=schema,
        dag_id_for=lambda name: f"{prefix}{name.replace('-', '_')}",
    )
