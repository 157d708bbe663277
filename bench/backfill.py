"""Benchmark backfills: the generated load step against a plain COPY pipe, PostgreSQL to PostgreSQL.

Run as `.venv/bin/python bench/backfill.py` (or `make bench-backfill`). Prints a table with each
figure next to its target (PASS/MISS) and, last, one JSON line holding every number. Exits 0
when every target is met, 2 on a MISS, 1 when something is broken (PostgreSQL unreachable,
Airflow's venv missing, a load that fails, copies the wrong number of rows or leaves the
warehouse different from the source, a load that does not take the COPY path).

Load throughput: scratch databases `portal_bench_src` and `portal_bench_wh` (recreated each run)
on 127.0.0.1:5432; the source holds a 1,000,000-row partition of an orders table (and smaller
neighbours either side). Every round measures, in an order that turns from round to round, each
after a VACUUM and a CHECKPOINT of the warehouse:

- reference: a plain `COPY (SELECT …) TO STDOUT (FORMAT BINARY)` from the source piped into
  `COPY … FROM STDIN (FORMAT BINARY)` of an empty table with the generated table's DDL (primary
  key and partition index), psycopg 3 in this process, streaming;
- re-load: the `load_partition` task of a real render of a PipelineSpec for a PostgreSQL
  environment, for a partition that already holds its 1,000,000 rows (what a backfill over
  loaded dates does): the guarded swap's counts, the COPY into a staging table, the merge by
  key (which writes only rows that differ: none here), checks and commit. It runs in Airflow's
  venv (bench/backfill_task.py), because the task code imports `airflow.sdk` when it runs,
  with the template harness's connection lookup; the clock covers the task call only;
- re-load, every row changed: the same, after every row of the partition in the warehouse was
  changed (untimed): more than a third differ, so the partition is deleted and the staged rows
  inserted (shown, no target: the worst case of a re-load);
- first load: the same task for the partition emptied beforehand (straight COPY; shown, no
  target).

Target: re-load ≥ 50 % of the reference's rows/s, on the median of the rounds' ratios.

Preview (bench/backfill_preview.py): POST …/backfills/preview for 10 years hourly (UTC and
America/New_York, 87,672 partitions, half of them with a synced run) and 1 year daily, through
Django's test client against a scratch database; target ≤ 200 ms each (median of the rounds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import backfill_preview
import psycopg
from common import BenchError, Row, exit_code, log, median, print_table, run, verdict

from orchestrator.local import DEFAULT_VENV
from pipelines.authoring import codegen
from pipelines.authoring.reference import ORDERS

RUNNER = Path(__file__).with_name("backfill_task.py")
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
SOURCE_DB, WAREHOUSE_DB = "portal_bench_src", "portal_bench_wh"
SCHEMA = "analytics"
REFERENCE_TABLE = "orders_reference"
ROWS = 1_000_000
NEIGHBOUR_ROWS = 100_000  # on the day before and the day after: the bounds must cut them off
DAY = date(2026, 11, 10)
# Each figure is the median of this many rounds, shown with its spread (min-max); 5, not 3: a
# round takes seconds, and on a shared 2-core box single rounds swing by a third.
ROUNDS = 5
TARGET_RATIO = 0.5
TASK_TIMEOUT_S = 600
COPY_BLOCK = 128 * 1024  # as in the template's TASK_CODE

# The reference pipeline, loading from the bench's source: no SLA, no retries.
SPEC = replace(
    ORDERS,
    name="orders-backfill",
    owner="bench",
    source_conn_id="bench_source",
    sla_minutes=None,
    retries=0,
    retry_delay_minutes=1,
    tags=(),
    runbook_url="",
    description="",
)


@dataclass(frozen=True)
class BenchEnvironment:
    """A PostgreSQL environment as codegen sees one (the Environment model's fields)."""

    slug: str = "bench"
    warehouse_conn_id: str = "bench_warehouse"
    warehouse_dialect: str = "postgres"
    target_schema: str = SCHEMA

    def dag_id_for(self, pipeline_slug: str) -> str:
        return f"bench__{pipeline_slug.replace('-', '_')}"


def url(database: str) -> str:
    return f"{PG_SERVER}/{database}"


# --- setup --------------------------------------------------------------------------------------


def recreate_databases() -> None:
    try:
        with psycopg.connect(url("postgres"), autocommit=True) as conn:
            for name in (SOURCE_DB, WAREHOUSE_DB):
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        raise BenchError(f"PostgreSQL at {PG_SERVER} is not reachable: {exc}") from exc


def seed_source() -> None:
    """The orders shape of tests/integration: bigint key, numeric(12,2), date, timestamp."""
    with psycopg.connect(url(SOURCE_DB)) as conn:
        conn.execute(
            "CREATE TABLE orders (order_id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, "
            "amount NUMERIC(12, 2) NOT NULL, order_date DATE NOT NULL, "
            "updated_at TIMESTAMP NOT NULL)"
        )
        days = [
            (DAY - timedelta(days=1), NEIGHBOUR_ROWS),
            (DAY, ROWS),
            (DAY + timedelta(days=1), NEIGHBOUR_ROWS),
        ]
        first = 1
        for day, count in days:
            conn.execute(
                "INSERT INTO orders SELECT g, 1 + g %% 50000, ((g * 7919) %% 1000000) / 100.0, "
                "%(day)s, %(day)s::timestamp + (g %% 86400) * interval '1 second' "
                "+ (g %% 1000) * interval '1 microsecond' "
                "FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g",
                {"day": day, "first": first, "last": first + count - 1},
            )
            first += count
        conn.execute("CREATE INDEX orders_order_date ON orders (order_date)")
    with psycopg.connect(url(SOURCE_DB), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE orders")


def render(workdir: Path) -> Path:
    rendered = codegen.render_dag(SPEC, BenchEnvironment(), version=1, portal_url="http://bench/")
    dag = workdir / f"{rendered.dag_id}.py"
    dag.write_text(rendered.source)
    return dag


def create_reference_table() -> None:
    """The reference's table: the generated table's own DDL, under another name."""
    sql = codegen.build_sql(replace(SPEC, target_table=REFERENCE_TABLE), BenchEnvironment())
    with psycopg.connect(url(WAREHOUSE_DB)) as conn:
        conn.execute(sql["create_target"])
        conn.execute(sql["create_index"])


# --- the generated load step, in Airflow's venv ---------------------------------------------------


def run_task(dag: Path, workdir: Path, steps: list[list[Any]]) -> list[dict[str, Any]]:
    """Run task steps of the rendered file through bench/backfill_task.py; one dict per step."""
    python = DEFAULT_VENV / "bin" / "python"
    if not python.exists():
        raise BenchError(f"Airflow's venv is missing ({python}): run `make airflow-venv`.")
    job = {
        "dag": str(dag),
        "connections": {
            SPEC.source_conn_id: url(SOURCE_DB),
            BenchEnvironment.warehouse_conn_id: url(WAREHOUSE_DB),
        },
        "steps": steps,
    }
    done = subprocess.run(
        [str(python), str(RUNNER)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=TASK_TIMEOUT_S,
        env={"AIRFLOW_HOME": str(workdir / "airflow-home"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if len(lines) != len(steps):
        raise BenchError(
            f"The task runner answered {len(lines)} of {len(steps)} steps: {done.stderr[-2000:]}"
        )
    for step, line in zip(steps, lines, strict=True):
        if not line["ok"]:
            raise BenchError(f"{step[0]} failed: {line['type']}: {line['error']}")
    return lines


LOADS = {  # step: (expected method, rows in the partition before, rows written)
    "re-load": ("merge", ROWS, 0),
    "re-load, every row changed": ("merge", ROWS, ROWS),
    "first load": ("copy", 0, ROWS),
}


def load_step(dag: Path, workdir: Path, step: str) -> dict[str, Any]:
    """One timed load of DAY by the generated load_partition, as `step` of LOADS says."""
    table = f"{SCHEMA}.{SPEC.target_table}"
    if step == "first load":
        with psycopg.connect(url(WAREHOUSE_DB), autocommit=True) as conn:
            conn.execute(f"TRUNCATE {table}")
    elif step == "re-load, every row changed":
        with psycopg.connect(url(WAREHOUSE_DB), autocommit=True) as conn:
            conn.execute(f"UPDATE {table} SET amount = amount + 1 WHERE order_date = %s", (DAY,))
    settle()
    line = run_task(dag, workdir, [["load_partition", {"partition": DAY.isoformat()}]])[0]
    result = line["result"]
    method, before, written = LOADS[step]
    if (result["rows"], result["rows_before"]) != (ROWS, before):
        raise BenchError(
            f"load_partition replaced {result['rows_before']} rows by {result['rows']}, "
            f"expected {before} by {ROWS}."
        )
    if result.get("method") != method:
        raise BenchError(f"load_partition took the {result.get('method')!r} path, not {method}.")
    changed = result.get("changed") or {}
    if method == "merge" and changed["updated"] + changed["inserted"] != written:
        raise BenchError(f"The merge wrote {changed}, expected {written:,} rows written.")
    return {"seconds": line["seconds"], "split": line["split"], "changed": changed}


# --- the reference ------------------------------------------------------------------------------


def reference_copy() -> float:
    """Pipe DAY from the source into the empty reference table with COPY; return seconds."""
    cols = ", ".join(c.name for c in SPEC.columns)
    out = (
        f"COPY (SELECT {cols} FROM orders WHERE order_date >= %s AND order_date < %s) "
        "TO STDOUT (FORMAT BINARY)"
    )
    into = f"COPY {SCHEMA}.{REFERENCE_TABLE} ({cols}) FROM STDIN (FORMAT BINARY)"
    with psycopg.connect(url(WAREHOUSE_DB), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {SCHEMA}.{REFERENCE_TABLE}")
    settle()
    started = time.perf_counter()
    with psycopg.connect(url(SOURCE_DB)) as source, psycopg.connect(url(WAREHOUSE_DB)) as target:
        write = target.cursor()
        with (
            source.cursor().copy(out, (DAY, DAY + timedelta(days=1))) as rows_out,
            write.copy(into) as rows_in,
        ):
            # The generated load's own way of passing the rows on (blocks of COPY_BLOCK bytes):
            # a message per row would cost this side twice the CPU.
            block = bytearray()
            for data in rows_out:
                block += data
                if len(block) >= COPY_BLOCK:
                    rows_in.write(block)
                    block = bytearray()
            rows_in.write(block)
        copied = write.rowcount
        target.commit()
    seconds = time.perf_counter() - started
    if copied != ROWS:
        raise BenchError(f"The reference copied {copied} rows, expected {ROWS}.")
    return seconds


# --- between rounds and checks -------------------------------------------------------------------


def settle() -> None:
    """Start every timed step from the same state: dead rows vacuumed, dirty pages written.

    After the CHECKPOINT the first change to each old page of the partition writes a full page
    image to the WAL, as re-loading a partition loaded long ago does.
    """
    with psycopg.connect(url(WAREHOUSE_DB), autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.{SPEC.target_table}")
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.{REFERENCE_TABLE}")
        conn.execute("CHECKPOINT")


def fingerprint(database: str, table: str) -> tuple[int, int]:
    """(rows, sum of a hash of every row's text) of DAY in `table`."""
    with psycopg.connect(url(database)) as conn:
        return conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(hashtext(t::text)::bigint), 0) FROM {table} AS t "
            "WHERE order_date = %s",
            (DAY,),
        ).fetchone()


def check_copies() -> None:
    source = fingerprint(SOURCE_DB, "orders")
    for table in (SPEC.target_table, REFERENCE_TABLE):
        if fingerprint(WAREHOUSE_DB, f"{SCHEMA}.{table}") != source:
            raise BenchError(f"{SCHEMA}.{table} does not hold the source's rows of {DAY}.")


# --- sections -----------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    return {"median": median(values), "min": min(values), "max": max(values)}


def load_throughput(rounds: int, workdir: Path) -> dict[str, Any]:
    """The reference, a re-load and a first load by the generated step, `rounds` times."""
    dag = render(workdir)
    log("create the generated target table and load the partition once (untimed)")
    run_task(
        dag, workdir, [["create_target", {}], ["load_partition", {"partition": DAY.isoformat()}]]
    )
    create_reference_table()
    steps = ["reference", *LOADS]
    timings: dict[str, list[dict[str, Any]]] = {step: [] for step in steps}
    for n in range(rounds):
        # The order turns each round, so that no step always follows the same other one.
        for step in steps[n % len(steps) :] + steps[: n % len(steps)]:
            log(f"{step} (round {n + 1} of {rounds})")
            if step == "reference":
                timings[step].append({"seconds": reference_copy()})
            else:
                timings[step].append(load_step(dag, workdir, step))
    check_copies()
    seconds = {step: [t["seconds"] for t in timings[step]] for step in steps}
    reloads = timings["re-load"]
    median_reload = sorted(reloads, key=lambda t: t["seconds"])[len(reloads) // 2]
    return {
        "rows": ROWS,
        "rounds": rounds,
        "seconds": seconds,
        "rows_per_s": {step: spread([ROWS / s for s in seconds[step]]) for step in steps},
        # Per round: the reference's seconds over the step's (= the step's rows/s over the
        # reference's), so a slow moment of the machine weighs on both sides of one ratio.
        "ratio": spread(
            [r / g for r, g in zip(seconds["reference"], seconds["re-load"], strict=True)]
        ),
        "first_load_ratio": spread(
            [r / g for r, g in zip(seconds["reference"], seconds["first load"], strict=True)]
        ),
        "changed_ratio": spread(
            [
                r / g
                for r, g in zip(
                    seconds["reference"], seconds["re-load, every row changed"], strict=True
                )
            ]
        ),
        "median_reload_split_s": median_reload["split"] | {"seconds": median_reload["seconds"]},
    }


def preview_section(rounds: int, results: dict[str, Any]) -> list[Row]:
    """The backfill preview's time for 10 years hourly and 1 year daily (backfill_preview.py)."""
    rows, results["preview"] = backfill_preview.preview_rows(rounds)
    return rows


# --- report -------------------------------------------------------------------------------------


def report(load: dict[str, Any]) -> list[Row]:
    rates, ratio = load["rows_per_s"], load["ratio"]
    split = load["median_reload_split_s"]
    merge, copy = split.get("merge_rows", 0), split.get("copy_rows", 0)
    inside = split.get("can_copy", 0) + merge + split.get("counts", 0) + split.get("guard", 0)

    def rate(step: str) -> str:
        r = rates[step]
        return f"{r['median']:,.0f} rows/s ({r['min']:,.0f}-{r['max']:,.0f})"

    def versus(key: str) -> str:
        r = load[key]
        return f"ratio {r['median']:.0%} ({r['min']:.0%}-{r['max']:.0%})"

    return [
        Row(
            "load throughput: source partition",
            f"{ROWS:,} rows of orders (bigint key, bigint, numeric(12,2), date, timestamp)",
        ),
        Row(
            "reference: COPY TO STDOUT | COPY FROM STDIN",
            f"{rate('reference')} into an empty table with the generated DDL",
        ),
        Row("generated load_partition, re-load", rate("re-load")),
        Row(
            "...of which, median round (s)",
            f"type checks {split.get('can_copy', 0):.2f}, COPY into stage {copy:.2f}, "
            f"compare and write {merge - copy:.2f}, counts {split.get('counts', 0):.2f}, "
            f"guard {split.get('guard', 0):.2f}, connect+commit "
            f"{split['seconds'] - inside:.2f}; total {split['seconds']:.2f}",
        ),
        Row(
            "ratio re-load / reference (per round)",
            f"{ratio['median']:.0%} ({ratio['min']:.0%}-{ratio['max']:.0%})",
            f">= {TARGET_RATIO:.0%}",
            verdict(ratio["median"] >= TARGET_RATIO),
        ),
        Row(
            "generated load_partition, re-load, every row changed",
            f"{rate('re-load, every row changed')}; {versus('changed_ratio')}",
        ),
        Row(
            "generated load_partition, first load (empty partition)",
            f"{rate('first load')}; {versus('first_load_ratio')}",
        ),
        Row("rounds per figure (median, spread min-max)", str(load["rounds"])),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"rounds per figure (default {ROUNDS})"
    )
    rounds = max(1, parser.parse_args().rounds)
    started = time.monotonic()
    log(f"recreate databases {SOURCE_DB} and {WAREHOUSE_DB}")
    recreate_databases()
    log(f"seed {ROWS:,} source rows of {DAY} (+ {NEIGHBOUR_ROWS:,} either side)")
    seed_source()
    results: dict[str, Any] = {"date": date.today().isoformat()}  # noqa: DTZ011
    with tempfile.TemporaryDirectory(prefix="portal-bench-backfill-") as workdir:
        results["load_throughput"] = load_throughput(rounds, Path(workdir))
    rows = report(results["load_throughput"]) + preview_section(rounds, results)
    results["targets"] = {
        "load_ratio": {
            "target": TARGET_RATIO,
            "pass": results["load_throughput"]["ratio"]["median"] >= TARGET_RATIO,
        }
    }
    results["wall_s"] = round(time.monotonic() - started, 1)
    print_table(rows)
    print(json.dumps(results, sort_keys=False))
    return exit_code(rows)


if __name__ == "__main__":
    run(main)
