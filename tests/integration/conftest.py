"""Real services for integration tests: Airflow 3.3.2 started here, PostgreSQL, Redis, Chromium.

Nothing is faked and nothing is skipped: a service that cannot be reached fails the test loudly.
The Airflow instance runs on its own port with its own home (so `make run` can keep running) and
is started once per test session, its metadata in a fresh PostgreSQL database: on SQLite, Airflow
3.3 refuses a backfill created while its scheduler writes (503) and the scheduler can die of it.
The PostgreSQL databases are named from PORTAL_TEST_PG_PREFIX, so a second session with its own
prefix and PORTAL_TEST_AIRFLOW_PORT does not drop the first one's.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from django.conf import settings
from playwright.sync_api import expect, sync_playwright

from orchestrator.local import REPO, LocalAirflow, sqlite_conn_uri
from pipelines.catalog.services import source_register
from pipelines.core.airflow import AirflowClient, AirflowUnavailable
from pipelines.demo import ORDERS_DDL, order_rows
from tests.conftest import make_environment, pipeline_payload

pytestmark = pytest.mark.integration

AIRFLOW_PORT = int(os.environ.get("PORTAL_TEST_AIRFLOW_PORT", "8091"))
AIRFLOW_HOME = REPO / ".airflow" / "test-home"
IT_DIR = REPO / ".data" / "integration"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_PREFIX = os.environ.get("PORTAL_TEST_PG_PREFIX", "portal_it")
PG_SOURCE = f"{PG_PREFIX}_source"
PG_WAREHOUSE = f"{PG_PREFIX}_warehouse"
PG_AIRFLOW = f"{PG_PREFIX}_airflow"  # the test Airflow's metadata
# The source holds orders up to today in UTC, the zone of the test pipelines' partitions (the
# machine's own zone would shift a partition by a day around midnight).
TODAY = datetime.now(UTC).date()
DEPLOY_TIMEOUT = 90
RUN_TIMEOUT = 180


def pg_url(database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{database}"


def recreate_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def build_sources() -> dict[str, str]:
    """Create the SQLite and PostgreSQL sources and empty warehouses; return Airflow connections."""
    shutil.rmtree(IT_DIR, ignore_errors=True)
    IT_DIR.mkdir(parents=True)
    rows = order_rows(TODAY)
    with sqlite3.connect(IT_DIR / "source.sqlite3") as conn:
        conn.execute(ORDERS_DDL)
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", rows)
    sqlite3.connect(IT_DIR / "warehouse.sqlite3").close()
    recreate_pg_database(PG_SOURCE)
    recreate_pg_database(PG_WAREHOUSE)
    with psycopg.connect(pg_url(PG_SOURCE)) as conn:
        conn.execute(
            "CREATE TABLE orders (order_id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, "
            "amount NUMERIC(12, 2) NOT NULL, order_date DATE NOT NULL, "
            "updated_at TIMESTAMP NOT NULL)"
        )
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s)", rows)
    return {
        "it_source_sqlite": sqlite_conn_uri(IT_DIR / "source.sqlite3"),
        "it_warehouse_sqlite": sqlite_conn_uri(IT_DIR / "warehouse.sqlite3"),
        "it_source_postgres": f"postgres://postgres@127.0.0.1:5432/{PG_SOURCE}",
        "it_warehouse_postgres": f"postgres://postgres@127.0.0.1:5432/{PG_WAREHOUSE}",
    }


@pytest.fixture(scope="session")
def airflow() -> Iterator[LocalAirflow]:
    """A real Airflow 3.3.2 (standalone) with the test connections, fresh for this session."""
    connections = build_sources()
    instance = LocalAirflow(
        home=AIRFLOW_HOME,
        port=AIRFLOW_PORT,
        connections=connections,
        metadata_db=pg_url(PG_AIRFLOW),
    )
    instance.stop()
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
    recreate_pg_database(PG_AIRFLOW)  # `airflow standalone` creates the tables
    instance.start(timeout=180)
    os.environ["PORTAL_AIRFLOW_USERNAME"] = "portal"
    os.environ["PORTAL_AIRFLOW_PASSWORD"] = instance.users["portal"]
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def celery_worker_thread() -> Iterator[Any]:
    """A real Celery worker (in a thread of this process) consuming from Redis."""
    from celery.contrib.testing.worker import start_worker

    from portal.celery import app

    broker = settings.CELERY_BROKER_URL
    assert broker.startswith("redis://"), broker
    redis.Redis.from_url(broker).flushdb()  # stale messages from an earlier run
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30) as worker:
        yield worker


@pytest.fixture
def worker(celery_worker_thread, transactional_db) -> Any:
    """Tasks run for real; the test's data is committed so the worker's connection sees it."""
    return celery_worker_thread


def wait_for(
    check: Callable[[], Any], *, timeout: float, interval: float = 0.5, what: str = "condition"
) -> Any:
    """Poll `check` until it returns something truthy; fail with the last value on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def past_partitions() -> tuple[date, date]:
    return TODAY - timedelta(days=5), TODAY - timedelta(days=4)


def warehouse_rows(kind: str, table: str, day: date) -> list[tuple]:
    """Rows of one partition in the warehouse, as (order_id, customer_id, amount-as-str, date)."""
    if kind == "sqlite":
        with sqlite3.connect(IT_DIR / "warehouse.sqlite3") as conn:
            rows = conn.execute(
                f'SELECT order_id, customer_id, amount, order_date FROM "{table}" '
                "WHERE order_date = ? ORDER BY order_id",
                (day.isoformat(),),
            ).fetchall()
    else:
        with psycopg.connect(pg_url(PG_WAREHOUSE)) as conn:
            rows = conn.execute(
                f'SELECT order_id, customer_id, amount, order_date FROM analytics."{table}" '
                "WHERE order_date = %s ORDER BY order_id",
                (day,),
            ).fetchall()
    return [(r[0], r[1], f"{float(r[2]):.2f}", str(r[3])) for r in rows]


def source_rows(day: date) -> list[tuple]:
    return sorted(
        (r[0], r[1], f"{r[2]:.2f}", r[3]) for r in order_rows(TODAY) if r[3] == day.isoformat()
    )


def warehouse_total(kind: str, table: str) -> int:
    if kind == "sqlite":
        with sqlite3.connect(IT_DIR / "warehouse.sqlite3") as conn:
            return conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
    with psycopg.connect(pg_url(PG_WAREHOUSE)) as conn:
        return conn.execute(f'SELECT COUNT(*) FROM analytics."{table}"').fetchone()[0]


def dags_folder(kind: str) -> Path:
    return AIRFLOW_HOME / "dags" / kind


# --- the portal's API, as a client of the real stack ------------------------------------------


def post(client, url, body, key):
    return client.post(
        url, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )


def get(client, url, key):
    response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200, response.content
    return response.json()


def wait_deployment(client, deployment_id, key, *, what="the deployment to finish"):
    """Poll the API until the deployment is deployed or failed; return it."""
    return wait_for(
        lambda: (
            (d := get(client, f"/api/v1/deployments/{deployment_id}", key))["state"]
            in ("deployed", "failed")
            and d
        ),
        timeout=DEPLOY_TIMEOUT,
        what=what,
    )


def run_partition(client, name: str, day: date, key: str, **extra: Any) -> dict[str, Any]:
    """Run one partition through the API and follow it to success or failure; return the run."""
    response = post(
        client,
        f"/api/v1/pipelines/{name}/runs",
        {"environment": "dev", "partition": day.isoformat(), **extra},
        key,
    )
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    return wait_for(
        lambda: (
            (r := get(client, f"/api/v1/runs/{run_id}", key))["run_state"] in ("success", "failed")
            and r
        ),
        timeout=RUN_TIMEOUT,
        interval=1,
        what=f"the run for {day}",
    )


# --- a deployed pipeline and its backfills, through the API ------------------------------------


def dag_runs(airflow: AirflowClient, dag_id: str, **params: Any) -> list[dict[str, Any]]:
    """The DAG's runs in Airflow (asked again on a 5xx: with a SQLite metadata database busy
    with the scheduler's writes, Airflow answered 500)."""
    path = f"/api/v2/dags/{dag_id}/dagRuns"
    for _ in range(30):
        try:
            return airflow.request("GET", path, params={"limit": 100, **params})["dag_runs"]
        except AirflowUnavailable:
            time.sleep(1)
    pytest.fail(f"Airflow did not list the runs of {dag_id}")


def scheduled_partition(airflow: AirflowClient, dag_id: str) -> date:
    """Wait for the scheduled run that unpausing the new DAG created; return its partition."""
    (run,) = wait_for(
        lambda: [
            r
            for r in dag_runs(airflow, dag_id, run_type="scheduled")
            if r["state"] in ("success", "failed")
        ],
        timeout=RUN_TIMEOUT,
        what=f"the first scheduled run of {dag_id}",
    )
    assert run["state"] == "success", run
    return datetime.fromisoformat(run["data_interval_start"]).date()


def deploy(client, key: str, name: str) -> str:
    """Create the pipeline, deploy it to dev, and return its DAG id once Airflow has it."""
    payload = pipeline_payload(name=name, target_table=name.replace("-", "_"))
    created = post(client, "/api/v1/pipelines", payload, key)
    assert created.status_code == 201, created.content
    url = f"/api/v1/pipelines/{name}/deployments"
    response = post(client, url, {"environment": "dev", "version": 1}, key)
    assert response.status_code == 202, response.content
    done = wait_deployment(client, response.json()["id"], key)
    assert done["state"] == "deployed", done["error"]
    return done["dag_id"]


def request_body(days: list[date], reprocess: str) -> dict[str, Any]:
    return {
        "environment": "dev",
        "start": days[0].isoformat(),
        "end": days[-1].isoformat(),
        "reprocess": reprocess,
        "max_active_runs": 1,
    }


def submit(client, name: str, key: str, days: list[date], reprocess: str):
    """Preview, then submit with its fingerprint; return (preview, backfill)."""
    body = request_body(days, reprocess)
    previewed = post(client, f"/api/v1/pipelines/{name}/backfills/preview", body, key)
    assert previewed.status_code == 200, previewed.content
    preview = previewed.json()
    body |= {"reason": "Reload the last week.", "fingerprint": preview["fingerprint"]}
    submitted = post(client, f"/api/v1/pipelines/{name}/backfills", body, key)
    assert submitted.status_code == 202, submitted.content
    return preview, submitted.json()


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse(request, airflow, worker, alice):
    """The dev environment on the test Airflow, and the catalog, for one warehouse kind."""
    dev_environment(request.param, airflow.url)
    return request.param


def dev_environment(kind: str, airflow_url: str) -> None:
    """The dev environment on `airflow_url` (the test Airflow, or a proxy in front of it), and
    the catalog, for one warehouse kind."""
    make_environment(
        "dev",
        0,
        airflow_url=airflow_url,
        dags_folder=str(dags_folder(kind)),
        dag_id_prefix=f"it_{kind}__",
        warehouse_conn_id=f"it_warehouse_{kind}",
        warehouse_dialect=kind,
        target_schema="analytics" if kind == "postgres" else "",
    )
    url = f"sqlite:///{IT_DIR / 'source.sqlite3'}" if kind == "sqlite" else pg_url(PG_SOURCE)
    source_register(
        name="shop", url=url, conn_id=f"it_source_{kind}", tables=["orders"], teams=["payments"]
    )
    return kind


# --- the browser (Debian's chromium driven by Playwright) -------------------------------------

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".data" / "screenshots"
# Without the background-networking flags Chromium keeps dialling Google, which this machine's
# closed network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
def browser_page():
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs Debian's chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page
        finally:
            browser.close()


def log_in(page: Any, url: str, username: str) -> None:
    """Log `username` in through the login page (the password the browser tests set:
    "<username>-password-1") and wait for the pipelines list."""
    page.goto(f"{url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-password-1")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Pipelines")
