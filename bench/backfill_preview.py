"""Backfill preview timings for bench/backfill.py: 10 years hourly and 1 year daily.

A scratch PostgreSQL database (`portal_bench_preview`, recreated each run) gets the portal's
tables, one team, a dev environment and three deployed pipelines (hourly in UTC, hourly in
America/New_York — DST changes take the plan's exact path — and daily in UTC). Each hourly
pipeline has a synced run for every other hour of the ten years (43,800 RunRecords: half the
partitions loaded, so the preview classifies every one), the daily one for every other day.

The clock is 2030-01-02 12:00 UTC, so ten whole years of hours are complete and after the
DAGs' start date (2020-01-01). Each figure is the time of POST /api/v1/pipelines/{slug}/
backfills/preview through Django's test client (form, guardrails, plan, one query for the
existing runs, fingerprint, JSON), median of ROUNDS rounds of REQUESTS requests each.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import BenchError, Row, log, median, verdict

REPO = Path(__file__).resolve().parent.parent
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
DB_NAME = "portal_bench_preview"
NOW = datetime(2030, 1, 2, 12, tzinfo=UTC)
TARGET_MS = 200.0
REQUESTS = 5
CASES = [
    # (label, slug, grain, schedule, zone, start, end)
    ("10 years hourly, UTC", "hourly-utc", "hour", "0 * * * *", "UTC",
     "2020-01-01T00:00", "2029-12-31T23:00"),
    ("10 years hourly, America/New_York", "hourly-ny", "hour", "0 * * * *", "America/New_York",
     "2020-01-01T00:00", "2029-12-31T23:00"),
    ("1 year daily, UTC", "daily-utc", "day", "0 2 * * *", "UTC", "2029-01-01", "2029-12-31"),
]  # fmt: skip


def recreate_database() -> str:
    import psycopg

    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {DB_NAME}")
    except psycopg.OperationalError as exc:
        raise BenchError(f"PostgreSQL at {PG_SERVER} is not reachable: {exc}") from exc
    return f"{PG_SERVER}/{DB_NAME}"


def setup_django(database_url: str) -> None:
    sys.path.insert(0, str(REPO))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": database_url,
            "DEBUG": "0",
            "SECRET_KEY": "bench-backfill-not-a-secret",
            "DATABASE_CONN_MAX_AGE": "600",
            "ALLOWED_HOSTS": "testserver",
            "CELERY_BROKER_URL": "memory://",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()


def seed() -> str:
    """The world of the module docstring; return an API token."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from pipelines.authoring import services as authoring
    from pipelines.authoring.forms import PipelineForm
    from pipelines.core.models import Membership, Team
    from pipelines.core.tokens import token_create
    from pipelines.deployments.models import Deployment, Environment
    from pipelines.deployments.services import render_for
    from pipelines.models import SourceColumn, SourceDatabase, SourceTable

    call_command("migrate", verbosity=0)
    team = Team.objects.create(slug="bench", name="Bench", domain="bench")
    user = get_user_model().objects.create_user("bench", "bench@example.com", "bench-pw-1")
    Membership.objects.create(team=team, user=user)
    database = SourceDatabase.objects.create(name="shop", dialect="postgres", conn_id="shop")
    table = SourceTable.objects.create(database=database, name="events", schema="public")
    for position, (name, kind) in enumerate(
        [("event_id", "bigint"), ("seen_at", "timestamp"), ("day", "date")]
    ):
        SourceColumn.objects.create(table=table, name=name, kind=kind, position=position)
    env = Environment.objects.create(
        slug="dev",
        name="Dev",
        order=10,
        airflow_url="http://airflow.invalid:8080",
        dags_folder="/tmp/portal-bench-dags/dev",
        warehouse_conn_id="warehouse_dev",
        warehouse_dialect="postgres",
        target_schema="analytics",
        backfill_max_partitions=200_000,
    )
    for _, slug, grain, cron, zone, *_ in CASES:
        form = PipelineForm(
            {
                "name": slug,
                "team": "bench",
                "owner": "bench",
                "source": "shop.public.events",
                "target_table": slug.replace("-", "_"),
                "schedule": cron,
                "timezone": zone,
                "primary_key": "event_id",
                "partition_column": "seen_at" if grain == "hour" else "day",
                "partition_grain": grain,
                "sla_minutes": 60,
                "retries": 2,
                "retry_delay_minutes": 5,
                "execution_timeout_minutes": 30,
                "runbook_url": "https://wiki.example.com/runbook",
            },
            user=user,
        )
        if not form.is_valid():
            raise BenchError(f"bench pipeline {slug} is invalid: {form.errors.as_json()}")
        pipeline = authoring.pipeline_create(spec=form.spec, by=user)
        version = pipeline.versions.get()
        rendered = render_for(version, env)
        deployment = Deployment.objects.create(
            version=version,
            environment=env,
            dag_id=rendered.dag_id,
            code=rendered.source,
            code_sha256=rendered.sha256,
            requested_by=user,
            state=Deployment.State.DEPLOYED,
            registered_at=NOW - timedelta(days=3650),
        )
        seed_runs(deployment, grain)
    return token_create(user=user)


def seed_runs(deployment: Any, grain: str) -> None:
    """A successful synced run for every other partition since the start date, by COPY."""
    from django.db import connection

    from pipelines.models import RunRecord

    step = timedelta(hours=1) if grain == "hour" else timedelta(days=1)
    at = datetime(2020, 1, 1, 2 if grain == "day" else 0, tzinfo=UTC)
    columns = [
        "environment_id", "pipeline_id", "dag_id", "dag_run_id", "run_type", "state",
        "logical_date", "synced_at", "error",
    ]  # fmt: skip
    table = RunRecord._meta.db_table
    n = 0
    with connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            while at < NOW - step:
                copy.write_row(
                    [
                        deployment.environment_id,
                        deployment.version.pipeline_id,
                        deployment.dag_id,
                        f"scheduled__{at.isoformat()}",
                        "scheduled",
                        "success",
                        at,
                        NOW,
                        "",
                    ]
                )
                at += 2 * step
                n += 1
        cursor.execute(f"ANALYZE {table}")
    log(f"  {deployment.dag_id}: {n:,} synced runs")


def time_previews(token: str, rounds: int) -> dict[str, Any]:
    import time_machine
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    results: dict[str, Any] = {}
    with time_machine.travel(NOW, tick=True):
        for label, slug, _, _, _, start, end in CASES:
            body = {
                "environment": "dev",
                "start": start,
                "end": end,
                "reprocess": "missing",
                "max_active_runs": 1,
            }
            url = f"/api/v1/pipelines/{slug}/backfills/preview"

            def once(url: str = url, body: dict = body) -> tuple[float, dict[str, Any]]:
                began = time.perf_counter()
                response = client.post(url, json.dumps(body), content_type="application/json")
                spent = time.perf_counter() - began
                if response.status_code != 200:
                    raise BenchError(f"{url} answered {response.status_code}: {response.content}")
                return spent, response.json()

            _, answer = once()  # warm-up: caches, connection
            medians = []
            for _ in range(rounds):
                medians.append(median([once()[0] for _ in range(REQUESTS)]) * 1000)
            results[label] = {
                "ms": {"median": median(medians), "min": min(medians), "max": max(medians)},
                "partitions": answer["partitions"],
                "loaded": answer["loaded"],
                "missing": answer["missing"],
            }
    return results


def preview_rows(rounds: int) -> tuple[list[Row], dict[str, Any]]:
    log(f"recreate database {DB_NAME}, seed three pipelines and their runs")
    setup_django(recreate_database())
    token = seed()
    log("time the backfill preview API")
    results = time_previews(token, rounds)
    rows = []
    for label, r in results.items():
        ms = r["ms"]
        rows.append(
            Row(
                f"preview {label}",
                f"{ms['median']:.0f} ms ({ms['min']:.0f}-{ms['max']:.0f}); "
                f"{r['partitions']:,} to run of {r['partitions'] + r['loaded']:,} "
                f"({r['loaded']:,} loaded)",
                f"<= {TARGET_MS:.0f} ms",
                verdict(ms["median"] <= TARGET_MS),
            )
        )
    return rows, results
