"""The generated DAG's task code against real SQLite and PostgreSQL, run in Airflow's venv.

Faster and more exact than a scheduled run for cases a scheduler adds nothing to: time-zone
aware partition columns, tables the portal did not create, duplicate source keys, DST hours.
The file under test is the real render; only its connection lookup is replaced
(tests/integration/template_harness.py).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from orchestrator.local import DEFAULT_VENV
from pipelines.authoring import codegen
from pipelines.authoring.spec import Column, PipelineSpec
from tests.integration.conftest import PG_PREFIX, pg_url, recreate_pg_database

pytestmark = pytest.mark.integration
HARNESS = Path(__file__).with_name("template_harness.py")
SRC_DB, WH_DB = f"{PG_PREFIX}_tt_source", f"{PG_PREFIX}_tt_warehouse"
NEW_YORK = ZoneInfo("America/New_York")

SPEC = PipelineSpec(
    name="events-daily",
    team="payments",
    team_domain="finance",
    owner="alice",
    source_database="shop",
    source_dialect="postgres",
    source_conn_id="source",
    source_schema="",
    source_table="events",
    columns=(Column("event_id", "bigint"), Column("happened_at", "timestamptz")),
    target_table="events_daily",
    schedule="0 2 * * *",
    timezone="America/New_York",
    primary_key=("event_id",),
    partition_column="happened_at",
    partition_grain="day",
    sla_minutes=None,
    retries=0,
    retry_delay_minutes=1,
    execution_timeout_minutes=5,
)


@dataclass
class Target:
    warehouse_dialect: str
    target_schema: str = ""
    slug: str = "dev"
    warehouse_conn_id: str = "warehouse"

    def dag_id_for(self, pipeline_slug: str) -> str:
        return pipeline_slug.replace("-", "_")


def run_tasks(
    tmp_path: Path, spec: PipelineSpec, target: Target, connections: dict, steps: list, **env: str
) -> list[dict[str, Any]]:
    rendered = codegen.render_dag(spec, target, version=1, portal_url="http://portal.test/")
    dag = tmp_path / f"{rendered.dag_id}.py"
    dag.write_text(rendered.source)
    job = {"dag": str(dag), "connections": connections, "steps": steps}
    done = subprocess.run(
        [str(DEFAULT_VENV / "bin" / "python"), str(HARNESS)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=120,
        env={"AIRFLOW_HOME": str(tmp_path / "airflow-home"), "PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(steps), done.stderr[-3000:]
    return lines


@pytest.fixture
def pg() -> dict[str, str]:
    recreate_pg_database(SRC_DB)
    recreate_pg_database(WH_DB)
    return {"source": pg_url(SRC_DB), "warehouse": pg_url(WH_DB)}


# Events around midnight in New York, written with other offsets: which New York day each
# belongs to is the whole question.
EVENTS = {
    1: "2026-11-10 00:30:00-05",  # New York 11-10 00:30
    2: "2026-11-10 05:30:00+01",  # 04:30 UTC = New York 11-09 23:30
    3: "2026-11-11 04:59:59+00",  # New York 11-10 23:59:59
    4: "2026-11-11 14:00:00+09",  # 05:00 UTC = New York 11-11 00:00
}
IN_NY_11_10 = [1, 3]


def load_events(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE events (event_id BIGINT PRIMARY KEY, happened_at TIMESTAMPTZ)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO events VALUES (%s, %s)", list(EVENTS.items()))


def test_timestamptz_partitions_are_days_in_the_pipeline_zone_whatever_the_session_zone(
    tmp_path, pg
):
    load_events(pg["source"])
    steps = [["create_target", {}], ["load_partition", {"partition": "2026-11-10"}]]
    # The database session runs in Tokyo time: bounds read as text would be Tokyo days.
    results = run_tasks(
        tmp_path, SPEC, Target("postgres", "analytics"), pg, steps, PGTZ="Asia/Tokyo"
    )
    assert [r["ok"] for r in results] == [True, True], results
    assert results[1]["result"]["method"] == "copy"  # binary timestamptz: instants, any zone
    with psycopg.connect(pg["warehouse"]) as conn:
        rows = conn.execute(
            "SELECT event_id FROM analytics.events_daily ORDER BY event_id"
        ).fetchall()
        kind = conn.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'events_daily' AND column_name = 'happened_at'"
        ).fetchone()[0]
    assert [r[0] for r in rows] == IN_NY_11_10
    assert kind == "timestamp with time zone"


def test_timestamptz_into_a_sqlite_warehouse_is_stored_as_utc_text(tmp_path, pg):
    load_events(pg["source"])
    warehouse = tmp_path / "warehouse.sqlite3"
    connections = {"source": pg["source"], "warehouse": f"sqlite:///{warehouse}"}
    steps = [
        ["create_target", {}],
        ["load_partition", {"partition": "2026-11-10"}],
        ["check_partition", {"partition": "2026-11-10"}],
    ]
    results = run_tasks(tmp_path, SPEC, Target("sqlite"), connections, steps, PGTZ="Asia/Tokyo")
    assert [r["ok"] for r in results] == [True, True, True], results
    with sqlite3.connect(warehouse) as conn:
        rows = conn.execute("SELECT event_id, happened_at FROM events_daily ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == IN_NY_11_10
    expected = datetime(2026, 11, 10, 5, 30, tzinfo=UTC).isoformat(sep=" ")
    assert rows[0][1] == expected  # 00:30 New York as UTC text


# --- tables the portal did not create --------------------------------------------------------

ORDERS = replace(
    SPEC,
    name="orders-daily",
    source_dialect="sqlite",
    source_table="orders",
    columns=(Column("order_id", "bigint"), Column("order_date", "date")),
    target_table="orders_daily",
    timezone="UTC",
    primary_key=("order_id",),
    partition_column="order_date",
)


def sqlite_pair(tmp_path: Path, source_rows: list[tuple], *, key: bool = True) -> dict[str, str]:
    source, warehouse = tmp_path / "source.sqlite3", tmp_path / "warehouse.sqlite3"
    with sqlite3.connect(source) as conn:
        pk = " PRIMARY KEY" if key else ""
        conn.execute(f"CREATE TABLE orders (order_id INTEGER{pk}, order_date TEXT)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", source_rows)
    return {"source": f"sqlite:///{source}", "warehouse": f"sqlite:///{warehouse}"}


def warehouse_rows(connections: dict[str, str], sql: str) -> list[tuple]:
    with sqlite3.connect(connections["warehouse"].removeprefix("sqlite:///")) as conn:
        return conn.execute(sql).fetchall()


def test_an_existing_table_is_refused_untouched_unless_adopted(tmp_path):
    connections = sqlite_pair(tmp_path, [(1, "2026-11-10"), (2, "2026-11-10")])
    with sqlite3.connect(connections["warehouse"].removeprefix("sqlite:///")) as conn:
        conn.execute("CREATE TABLE orders_daily (order_id INTEGER PRIMARY KEY, order_date TEXT)")
        conn.execute("INSERT INTO orders_daily VALUES (99, '2026-11-10')")
    steps = [["create_target", {}]]
    refused = run_tasks(tmp_path, ORDERS, Target("sqlite"), connections, steps)[0]
    assert not refused["ok"]
    assert "already exists and was not created by Pipeline Portal" in refused["error"]
    assert warehouse_rows(connections, "SELECT * FROM orders_daily") == [(99, "2026-11-10")]

    adopting = replace(ORDERS, adopt_existing_table=True)
    steps = [["create_target", {}], ["load_partition", {"partition": "2026-11-10"}]]
    results = run_tasks(tmp_path, adopting, Target("sqlite"), connections, steps)
    assert [r["ok"] for r in results] == [True, True], results
    assert warehouse_rows(connections, "SELECT order_id FROM orders_daily ORDER BY 1") == [
        (1,),
        (2,),
    ]
    register = warehouse_rows(
        connections, "SELECT table_name, pipeline, how FROM portal_managed_tables"
    )
    assert register == [("orders_daily", "orders-daily", "adopted")]


def test_a_table_another_pipeline_writes_is_refused(tmp_path):
    connections = sqlite_pair(tmp_path, [(1, "2026-11-10")])
    first = run_tasks(tmp_path, ORDERS, Target("sqlite"), connections, [["create_target", {}]])
    assert first[0]["ok"], first
    other = replace(ORDERS, name="orders-copy", adopt_existing_table=True)
    second = run_tasks(tmp_path, other, Target("sqlite"), connections, [["create_target", {}]])
    assert not second[0]["ok"]
    assert "belongs to pipeline 'orders-daily'" in second[0]["error"]


def test_duplicate_source_keys_keep_the_previous_partition(tmp_path):
    connections = sqlite_pair(tmp_path, [(1, "2026-11-10"), (2, "2026-11-10")], key=False)
    steps = [["create_target", {}], ["load_partition", {"partition": "2026-11-10"}]]
    assert all(r["ok"] for r in run_tasks(tmp_path, ORDERS, Target("sqlite"), connections, steps))
    with sqlite3.connect(connections["source"].removeprefix("sqlite:///")) as conn:
        conn.execute("INSERT INTO orders VALUES (2, '2026-11-10')")  # order 2 twice now
    again = run_tasks(
        tmp_path,
        ORDERS,
        Target("sqlite"),
        connections,
        [["load_partition", {"partition": "2026-11-10"}]],
    )[0]
    assert not again["ok"]
    assert "duplicate keys" in again["error"]
    assert "Nothing was replaced" in again["error"]
    assert warehouse_rows(connections, "SELECT order_id FROM orders_daily ORDER BY 1") == [
        (1,),
        (2,),
    ]


def test_the_hour_dst_skips_is_not_an_empty_partition_failure(tmp_path):
    hourly = replace(
        ORDERS,
        columns=(Column("order_id", "bigint"), Column("ordered_at", "timestamp")),
        partition_column="ordered_at",
        partition_grain="hour",
        schedule="5 * * * *",
        timezone="America/New_York",
    )
    source, warehouse = tmp_path / "source.sqlite3", tmp_path / "warehouse.sqlite3"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE orders (order_id INTEGER PRIMARY KEY, ordered_at TEXT)")
    connections = {"source": f"sqlite:///{source}", "warehouse": f"sqlite:///{warehouse}"}
    steps = [
        ["create_target", {}],
        ["load_partition", {"partition": "2026-03-08T02:00"}],  # 02:00-03:00 does not exist
        ["load_partition", {"partition": "2026-03-08T04:00"}],  # exists, and is empty
    ]
    results = run_tasks(tmp_path, hourly, Target("sqlite"), connections, steps)
    assert [r["ok"] for r in results] == [True, True, False], results
    assert "would be empty" in results[2]["error"]


# --- PostgreSQL → PostgreSQL with binary COPY ----------------------------------------------------

ORDERS_PG = replace(
    SPEC,
    name="orders-copy",
    source_table="orders",
    columns=(
        Column("order_id", "bigint"),
        Column("customer_id", "bigint"),
        Column("amount", "numeric"),
        Column("order_date", "date"),
        Column("updated_at", "timestamp"),
        Column("note", "text"),
    ),
    target_table="orders_copy",
    timezone="UTC",
    primary_key=("order_id",),
    partition_column="order_date",
)
ORDERS_DDL = (
    "CREATE TABLE orders (order_id BIGINT{key}, customer_id BIGINT NOT NULL, "
    "amount NUMERIC(12, 2) NOT NULL, order_date DATE NOT NULL, updated_at TIMESTAMP NOT NULL, "
    "note VARCHAR(40))"
)
DAY_ROWS = [
    (1, 10, "1.50", "2026-11-10", "2026-11-10 00:00:00", "first"),
    (2, 11, "0.00", "2026-11-10", "2026-11-10 08:15:30.123456", None),
    (3, 10, "-3.25", "2026-11-10", "2026-11-10 23:59:59.999999", 'it\'s "quoted"'),
    (4, 12, "99999.99", "2026-11-10", "2026-11-10 12:00:00", ""),
]
OTHER_DAYS = [
    (5, 10, "7.00", "2026-11-09", "2026-11-09 23:59:59.999999", "the day before"),
    (6, 13, "8.00", "2026-11-11", "2026-11-11 00:00:00", "the day after"),
]
LOAD_DAY = ["load_partition", {"partition": "2026-11-10"}]
WAREHOUSE_ORDERS = "analytics.orders_copy"


def seed_orders(url: str, rows: list[tuple], *, key: bool = True) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(ORDERS_DDL.format(key=" PRIMARY KEY" if key else ""))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s)", rows)


def orders(url: str, table: str = "orders", day: str = "2026-11-10") -> list[tuple]:
    """Every column of `day`'s rows as text (numeric scale, microseconds and NULLs compared)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT order_id, customer_id, amount::text, order_date::text, updated_at::text, note "
            f"FROM {table} WHERE order_date = %s ORDER BY order_id",
            (day,),
        ).fetchall()


def physical(url: str) -> list[tuple]:
    """Every warehouse row with its xmin and ctid: a row deleted and inserted again differs."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT xmin::text, ctid::text, * FROM {WAREHOUSE_ORDERS} ORDER BY order_id"
        ).fetchall()


def test_postgres_to_postgres_loads_by_copy_and_a_reload_leaves_no_duplicates(tmp_path, pg):
    seed_orders(pg["source"], DAY_ROWS + OTHER_DAYS)
    target = Target("postgres", "analytics")
    steps = [["create_target", {}], LOAD_DAY, LOAD_DAY, ["check_partition", LOAD_DAY[1]]]
    results = run_tasks(tmp_path, ORDERS_PG, target, pg, steps, PGTZ="Asia/Tokyo")
    assert [r["ok"] for r in results] == [True, True, True, True], results
    first, again = results[1]["result"], results[2]["result"]
    assert (first["method"], first["rows_before"], first["rows"]) == ("copy", 0, 4)
    assert (again["method"], again["rows_before"], again["rows"]) == ("merge", 4, 4)
    assert again["changed"] == {"deleted": 0, "updated": 0, "inserted": 0}
    assert orders(pg["warehouse"], WAREHOUSE_ORDERS) == orders(pg["source"])
    with psycopg.connect(pg["warehouse"]) as conn:
        total, keys = conn.execute(
            f"SELECT COUNT(*), COUNT(DISTINCT order_id) FROM {WAREHOUSE_ORDERS}"
        ).fetchone()
    assert (total, keys) == (4, 4)  # the neighbouring days stayed in the source


MORE_OF_THE_DAY = [
    (n, 15, "2.00", "2026-11-10", "2026-11-10 06:00:00", "same") for n in range(100, 110)
]


def test_a_reload_writes_only_the_rows_that_changed(tmp_path, pg):
    seed_orders(pg["source"], DAY_ROWS + OTHER_DAYS + MORE_OF_THE_DAY)
    target = Target("postgres", "analytics")
    loaded = run_tasks(tmp_path, ORDERS_PG, target, pg, [["create_target", {}], LOAD_DAY])
    assert all(r["ok"] for r in loaded), loaded
    before = {row[2]: row for row in physical(pg["warehouse"])}  # by order_id
    with psycopg.connect(pg["source"]) as conn:
        conn.execute("UPDATE orders SET note = NULL WHERE order_id = 1")
        conn.execute("UPDATE orders SET amount = 0.01 WHERE order_id = 3")
        conn.execute("DELETE FROM orders WHERE order_id = 2")
        conn.execute("UPDATE orders SET order_date = '2026-11-10' WHERE order_id = 5")  # moved in
        conn.execute(
            "INSERT INTO orders VALUES (7, 14, 1.00, '2026-11-10', '2026-11-10 10:00', 'new')"
        )

    again = run_tasks(tmp_path, ORDERS_PG, target, pg, [LOAD_DAY])[0]

    assert again["ok"], again
    result = again["result"]
    assert (result["method"], result["rows_before"], result["rows"]) == ("merge", 14, 15)
    assert result["changed"] == {"deleted": 1, "updated": 2, "inserted": 2}
    assert orders(pg["warehouse"], WAREHOUSE_ORDERS) == orders(pg["source"])
    after = {row[2]: row for row in physical(pg["warehouse"])}
    assert after[4] == before[4]  # unchanged: not written at all (same xmin and ctid)
    assert after[109] == before[109]
    assert after[1][:2] != before[1][:2]
    assert sorted(after) == [1, 3, 4, 5, 7, *range(100, 110)]


def test_a_reload_writes_a_number_whose_scale_changed(tmp_path, pg):
    """1.50 = 1.5 in SQL, but a fresh load would store 1.5000: the merged partition must too."""
    seed_orders(pg["source"], DAY_ROWS + OTHER_DAYS + MORE_OF_THE_DAY)
    target = Target("postgres", "analytics")
    loaded = run_tasks(tmp_path, ORDERS_PG, target, pg, [["create_target", {}], LOAD_DAY])
    assert all(r["ok"] for r in loaded), loaded
    with psycopg.connect(pg["source"]) as conn:
        conn.execute("ALTER TABLE orders ALTER COLUMN amount TYPE NUMERIC")
        conn.execute("UPDATE orders SET amount = 1.5000 WHERE order_id = 1")

    again = run_tasks(tmp_path, ORDERS_PG, target, pg, [LOAD_DAY])[0]

    assert again["ok"], again
    assert again["result"]["changed"] == {"deleted": 0, "updated": 1, "inserted": 0}
    assert orders(pg["warehouse"], WAREHOUSE_ORDERS) == orders(pg["source"])
    assert orders(pg["warehouse"], WAREHOUSE_ORDERS)[0][2] == "1.5000"


def test_a_reload_where_most_rows_changed_rewrites_the_partition(tmp_path, pg):
    seed_orders(pg["source"], DAY_ROWS + OTHER_DAYS)
    target = Target("postgres", "analytics")
    loaded = run_tasks(tmp_path, ORDERS_PG, target, pg, [["create_target", {}], LOAD_DAY])
    assert all(r["ok"] for r in loaded), loaded
    with psycopg.connect(pg["source"]) as conn:
        conn.execute("UPDATE orders SET amount = amount + 1 WHERE order_id IN (1, 2)")

    again = run_tasks(tmp_path, ORDERS_PG, target, pg, [LOAD_DAY])[0]

    assert again["ok"], again
    assert again["result"]["method"] == "merge"
    assert again["result"]["changed"] == {"deleted": 4, "updated": 0, "inserted": 4}
    assert orders(pg["warehouse"], WAREHOUSE_ORDERS) == orders(pg["source"])


def test_a_shrinking_copy_load_is_refused_and_the_partition_is_not_rewritten(tmp_path, pg):
    seed_orders(pg["source"], DAY_ROWS + OTHER_DAYS)
    target = Target("postgres", "analytics")
    loaded = run_tasks(tmp_path, ORDERS_PG, target, pg, [["create_target", {}], LOAD_DAY])
    assert all(r["ok"] for r in loaded), loaded
    before = physical(pg["warehouse"])
    with psycopg.connect(pg["source"]) as conn:
        conn.execute("DELETE FROM orders WHERE order_id IN (1, 2, 3)")  # 4 rows → 1

    refused = run_tasks(tmp_path, ORDERS_PG, target, pg, [LOAD_DAY])[0]

    assert not refused["ok"]
    assert "would shrink from 4 to 1 rows" in refused["error"]
    assert "the previous rows are kept" in refused["error"]
    assert physical(pg["warehouse"]) == before


def test_duplicate_source_keys_refuse_a_copy_load_and_keep_the_partition(tmp_path, pg):
    seed_orders(pg["source"], DAY_ROWS + OTHER_DAYS, key=False)
    target = Target("postgres", "analytics")
    loaded = run_tasks(tmp_path, ORDERS_PG, target, pg, [["create_target", {}], LOAD_DAY])
    assert all(r["ok"] for r in loaded), loaded
    before = physical(pg["warehouse"])
    with psycopg.connect(pg["source"]) as conn:
        conn.execute(
            "INSERT INTO orders VALUES (2, 11, 5.00, '2026-11-10', '2026-11-10 09:00', 'again')"
        )

    refused = run_tasks(tmp_path, ORDERS_PG, target, pg, [LOAD_DAY])[0]

    assert not refused["ok"]
    assert "The source holds duplicate keys for [2026-11-10, 2026-11-11)" in refused["error"]
    assert "Nothing was replaced" in refused["error"]
    assert physical(pg["warehouse"]) == before


def test_a_target_with_other_column_types_is_loaded_row_by_row_not_by_copy(tmp_path, pg):
    """Binary COPY of a bigint into an adopted table's integer column would be misread."""
    seed_orders(pg["source"], DAY_ROWS + OTHER_DAYS)
    with psycopg.connect(pg["warehouse"]) as conn:
        conn.execute("CREATE SCHEMA analytics")
        conn.execute(
            "CREATE TABLE analytics.orders_copy (order_id BIGINT PRIMARY KEY, "
            "customer_id INTEGER, amount NUMERIC, order_date DATE, updated_at TIMESTAMP, "
            "note TEXT)"
        )
    adopting = replace(ORDERS_PG, adopt_existing_table=True)
    steps = [["create_target", {}], LOAD_DAY]

    results = run_tasks(tmp_path, adopting, Target("postgres", "analytics"), pg, steps)

    assert [r["ok"] for r in results] == [True, True], results
    assert results[1]["result"]["method"] == "insert"
    assert orders(pg["warehouse"], WAREHOUSE_ORDERS) == orders(pg["source"])


def test_without_a_primary_key_duplicates_are_counted_and_refused(tmp_path, pg):
    """An adopted table without a key: the guard's own count of duplicates is what refuses."""
    seed_orders(pg["source"], DAY_ROWS + OTHER_DAYS, key=False)
    with psycopg.connect(pg["warehouse"]) as conn:
        conn.execute("CREATE SCHEMA analytics")
        conn.execute(ORDERS_DDL.format(key="").replace("orders", WAREHOUSE_ORDERS, 1))
    adopting = replace(ORDERS_PG, adopt_existing_table=True)
    target = Target("postgres", "analytics")
    loaded = run_tasks(tmp_path, adopting, target, pg, [["create_target", {}], LOAD_DAY])
    assert all(r["ok"] for r in loaded), loaded
    assert loaded[1]["result"]["method"] == "copy"  # varchar(40) is sent as text
    before = physical(pg["warehouse"])
    with psycopg.connect(pg["source"]) as conn:
        conn.execute("INSERT INTO orders SELECT * FROM orders WHERE order_id = 2")

    refused = run_tasks(tmp_path, adopting, target, pg, [LOAD_DAY])[0]

    assert not refused["ok"]
    assert "Guarded swap refused: 1 duplicate keys in [2026-11-10, 2026-11-11)" in refused["error"]
    assert physical(pg["warehouse"]) == before


def test_two_first_runs_at_once_both_create_the_table(tmp_path, pg):
    """A backfill's first run can start beside the scheduled one: both create the schema and
    the table. Both are held at the schema (this test creates it in a transaction it has not
    committed) and let go together; without create_target's advisory lock one would fail on
    pg_namespace's unique index."""
    seed_orders(pg["source"], DAY_ROWS)
    target = Target("postgres", "analytics")
    results: dict[str, list] = {}

    def first_run(name: str) -> None:
        (tmp_path / name).mkdir()
        results[name] = run_tasks(tmp_path / name, ORDERS_PG, target, pg, [["create_target", {}]])

    with psycopg.connect(pg["warehouse"]) as holder:
        holder.execute("CREATE SCHEMA analytics")  # not committed: both runs wait on it
        runs = [threading.Thread(target=first_run, args=(name,)) for name in ("a", "b")]
        for run in runs:
            run.start()
        deadline = time.monotonic() + 60
        with psycopg.connect(pg["warehouse"], autocommit=True) as watch:
            while time.monotonic() < deadline:
                waiting = watch.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()[0]
                if waiting == 2:
                    break
                time.sleep(0.1)
        assert waiting == 2, "both first runs should be waiting by now"
        holder.rollback()
    for run in runs:
        run.join(timeout=120)
    assert [results[name][0]["ok"] for name in ("a", "b")] == [True, True], results
    with psycopg.connect(pg["warehouse"]) as conn:
        registered = conn.execute(
            "SELECT table_name, how FROM analytics.portal_managed_tables"
        ).fetchall()
    assert registered == [("analytics.orders_copy", "created")]


def test_a_warehouse_without_temporary_tables_reloads_by_delete_and_copy(tmp_path, pg):
    """A warehouse may refuse TEMP to its loader; the re-load then deletes and copies."""
    seed_orders(pg["source"], DAY_ROWS + OTHER_DAYS)
    with psycopg.connect(pg["warehouse"], autocommit=True) as conn:
        conn.execute(
            "DO $$ BEGIN CREATE ROLE portal_tt_loader LOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        database = conn.info.dbname
        conn.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
        conn.execute(f'GRANT CONNECT, CREATE ON DATABASE "{database}" TO portal_tt_loader')
    loader = {**pg, "warehouse": pg["warehouse"].replace("postgres@", "portal_tt_loader@")}
    steps = [["create_target", {}], LOAD_DAY, LOAD_DAY]

    results = run_tasks(tmp_path, ORDERS_PG, Target("postgres", "analytics"), loader, steps)

    assert [r["ok"] for r in results] == [True, True, True], results
    assert [r["result"]["method"] for r in results[1:]] == ["copy", "copy"]
    assert orders(pg["warehouse"], WAREHOUSE_ORDERS) == orders(pg["source"])


# --- Any column name -------------------------------------------------------------------------

ODD_NAMES = replace(
    ORDERS_PG,
    name="odd-names",
    columns=(
        Column("order_id", "bigint"),
        Column("share_%", "bigint"),
        Column('note%s {x} "q"', "text"),
        Column("order%date", "date"),
    ),
    partition_column="order%date",
    target_table="odd_names",
)


def seed_odd_names(url: str, rows: list[tuple]) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            'CREATE TABLE orders (order_id BIGINT PRIMARY KEY, "share_%" BIGINT, '
            '"note%s {x} ""q""" TEXT, "order%date" DATE NOT NULL)'
        )
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s)", rows)


def odd_rows(url: str, table: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f'SELECT order_id, "share_%%"::text, "note%%s {{x}} ""q""", "order%%date"::text '
            f'FROM {table} WHERE "order%%date" = %s ORDER BY order_id',
            ("2026-11-10",),
        ).fetchall()


@pytest.mark.parametrize("warehouse", ["postgres", "sqlite"])
def test_columns_named_with_percent_braces_and_quotes_load(tmp_path, pg, warehouse):
    """A % in a column name was read by psycopg as a placeholder: the load failed."""
    rows = [
        (1, 50, "50% off", "2026-11-10"),
        (2, 1, "{x}", "2026-11-10"),
        (3, 7, "the day after", "2026-11-11"),
    ]
    seed_odd_names(pg["source"], rows)
    if warehouse == "postgres":
        connections, target, table = pg, Target("postgres", "analytics"), "analytics.odd_names"
    else:
        db = tmp_path / "warehouse.sqlite3"
        connections = {"source": pg["source"], "warehouse": f"sqlite:///{db}"}
        target, table = Target("sqlite"), "odd_names"
    steps = [["create_target", {}], LOAD_DAY, LOAD_DAY, ["check_partition", LOAD_DAY[1]]]
    results = run_tasks(tmp_path, ODD_NAMES, target, connections, steps)
    assert [r["ok"] for r in results] == [True, True, True, True], results
    assert results[1]["result"]["rows"] == 2
    if warehouse == "postgres":
        assert (results[1]["result"]["method"], results[2]["result"]["method"]) == ("copy", "merge")
        assert odd_rows(pg["warehouse"], table) == odd_rows(pg["source"], "orders")
    else:
        with sqlite3.connect(db) as conn:
            loaded = conn.execute(
                f'SELECT order_id, "note%s {{x}} ""q""" FROM {table} ORDER BY order_id'
            ).fetchall()
        assert loaded == [(1, "50% off"), (2, "{x}")]
