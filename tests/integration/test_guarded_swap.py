"""The guarded swap against the real Airflow 3.3.2, for both warehouse dialects.

A loaded partition whose source rows have gone (an upstream purge) is re-run: the run fails with
the reason visible through the API and the warehouse partition is byte-for-byte what it was.
The same re-run with "accept a smaller partition" replaces it. The source rows are put back
afterwards: the other integration tests read the same source.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from datetime import date, timedelta

import psycopg
import pytest

from pipelines.core.tokens import token_create
from tests.conftest import pipeline_payload
from tests.integration.conftest import (
    IT_DIR,
    PG_SOURCE,
    PG_WAREHOUSE,
    TODAY,
    get,
    pg_url,
    post,
    run_partition,
    unique,
    wait_deployment,
)

pytestmark = pytest.mark.integration
DAY = TODAY - timedelta(days=8)  # no other integration test loads this partition


def partition_checksum(kind: str, table: str, day: date) -> tuple[int, str]:
    """(row count, SHA-256 of every column of every row, in key order) of one partition."""
    if kind == "sqlite":
        with sqlite3.connect(IT_DIR / "warehouse.sqlite3") as conn:
            rows = conn.execute(
                f'SELECT * FROM "{table}" WHERE order_date = ? ORDER BY order_id',
                (day.isoformat(),),
            ).fetchall()
    else:
        with psycopg.connect(pg_url(PG_WAREHOUSE)) as conn:
            rows = conn.execute(
                f'SELECT * FROM analytics."{table}" WHERE order_date = %s ORDER BY order_id',
                (day,),
            ).fetchall()
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.fixture
def purge_source() -> Iterator[callable]:
    """Delete the source's rows of DAY (both sources) on demand; put them back afterwards."""
    saved: dict[str, list[tuple]] = {}

    def purge() -> None:
        """Delete DAY's rows; the rows saved (and restored) are those of the first purge."""
        with sqlite3.connect(IT_DIR / "source.sqlite3") as conn:
            saved.setdefault(
                "sqlite",
                conn.execute(
                    "SELECT * FROM orders WHERE order_date = ?", (DAY.isoformat(),)
                ).fetchall(),
            )
            conn.execute("DELETE FROM orders WHERE order_date = ?", (DAY.isoformat(),))
        with psycopg.connect(pg_url(PG_SOURCE)) as conn:
            saved.setdefault(
                "postgres",
                conn.execute("SELECT * FROM orders WHERE order_date = %s", (DAY,)).fetchall(),
            )
            conn.execute("DELETE FROM orders WHERE order_date = %s", (DAY,))

    yield purge
    if "sqlite" in saved:
        with sqlite3.connect(IT_DIR / "source.sqlite3") as conn:
            conn.execute("DELETE FROM orders WHERE order_date = ?", (DAY.isoformat(),))
            conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", saved["sqlite"])
    if "postgres" in saved:
        with psycopg.connect(pg_url(PG_SOURCE)) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM orders WHERE order_date = %s", (DAY,))
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s)", saved["postgres"])


def test_a_rerun_after_an_upstream_purge_keeps_the_partition_until_accepted(
    client, warehouse, alice, purge_source
):
    key = token_create(user=alice)
    name = unique("guarded")
    table = name.replace("-", "_")
    created = post(
        client, "/api/v1/pipelines", pipeline_payload(name=name, target_table=table), key
    )
    assert created.status_code == 201, created.content
    assert created.json()["spec"]["shrink_guard_percent"] == 50
    deployment = post(
        client, f"/api/v1/pipelines/{name}/deployments", {"environment": "dev", "version": 1}, key
    )
    done = wait_deployment(client, deployment.json()["id"], key)
    assert done["state"] == "deployed", done["error"]
    loaded = run_partition(client, name, DAY, key)
    assert loaded["run_state"] == "success", loaded
    full = partition_checksum(warehouse, table, DAY)
    assert full[0] == 40

    # The source lost 30 of the 40 rows: the shrink guard refuses, nothing changes.
    purge_source()
    _put_back_some(DAY, 10)
    refused = run_partition(client, name, DAY, key)
    assert refused["run_state"] == "failed"
    assert refused["error"].startswith("load_partition failed: Guarded swap refused:"), refused
    assert "would shrink from 40 to 10 rows, below the shrink guard of 50%" in refused["error"]
    assert partition_checksum(warehouse, table, DAY) == full  # byte for byte
    assert get(client, f"/api/v1/runs/{refused['id']}", key)["error"] == refused["error"]

    # Accepted on purpose: replaced, and the run says so.
    accepted = run_partition(client, name, DAY, key, accept_smaller=True)
    assert accepted["run_state"] == "success", accepted
    assert accepted["accept_smaller"] is True
    smaller = partition_checksum(warehouse, table, DAY)
    assert smaller[0] == 10

    # Then every row is gone: an empty partition is refused, then accepted.
    purge_source()
    empty = run_partition(client, name, DAY, key)
    assert empty["run_state"] == "failed"
    assert f"partition {DAY.isoformat()} would be empty" in empty["error"]
    assert "it holds 10 rows now" in empty["error"]
    assert partition_checksum(warehouse, table, DAY) == smaller
    emptied = run_partition(client, name, DAY, key, accept_smaller=True)
    assert emptied["run_state"] == "success", emptied
    assert partition_checksum(warehouse, table, DAY)[0] == 0


def _put_back_some(day: date, n: int) -> None:
    from pipelines.demo import order_rows

    rows = [r for r in order_rows(TODAY) if r[3] == day.isoformat()][:n]
    with sqlite3.connect(IT_DIR / "source.sqlite3") as conn:
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", rows)
    with psycopg.connect(pg_url(PG_SOURCE)) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s)", rows)
