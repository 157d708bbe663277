"""A backfill through the API on the real Airflow 3.3.2, for both warehouse dialects.

Two pipelines over the same source are deployed to dev: `bf` is backfilled, `runs` is loaded
by Run now, one run per partition. Both load while the backfill runs (the cheapest order: no
wait for one before the other, no truncate), and the partitions' checksums are compared table
to table. With one pipeline per dialect reused for every step:

1. a 7-day backfill, reprocess "missing", one run at a time: previewed, submitted with the
   preview's fingerprint (202), followed through GET /api/v1/backfills/{id} with the health
   sync in the loop until it succeeded with done == 7; the table holds exactly those rows;
2. its checksum equals that of the same 7 days loaded by Run now;
3. a second request while the first is active: 422 in the preview, 409 on submit, with the
   message that says which backfill is active and what to do;
4. the same days again with "Everything": the 7 runs re-run (done == 7 for the new
   backfill), the checksum unchanged (nothing counted twice);
5. the same again, cancelled once its first run has started: cancelled in the portal,
   completed in Airflow, the queued runs never started and count as cancelled (not failed),
   and the checksum still unchanged.

The days are the 7 latest complete partitions a backfill of the freshly deployed DAG takes as
"missing": those before the one loaded by the scheduled run that unpausing the DAG creates
(catchup=False: the latest complete interval, yesterday after 02:00 UTC). The test deploys one
pipeline after the other and waits for that run of each before it goes on, because of two
races seen here:
- in a PostgreSQL warehouse, first runs at the same moment race to create the schema, the
  register and the table (CREATE … IF NOT EXISTS in two transactions: one fails with a unique
  violation on pg_namespace or pg_type and waits 5 minutes for its retry); Airflow does not
  count backfill runs against the DAG's max_active_runs, so a backfill's first run runs beside
  that run. Template 2026.11.3 serializes create_target with an advisory lock
  (test_template_tasks.py shows two first runs at once both succeed); the wait stays because
  the scheduled run's partition is what decides the test's 7 days;
- on a SQLite metadata database, a backfill created while the scheduler writes (here: creating
  that run) was refused (503) or killed the scheduler, which then never came back. The test
  Airflow keeps its metadata in PostgreSQL since; scheduler_alive still fails fast if it dies.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.utils import timezone

from pipelines.core import schedule
from pipelines.core.airflow import AirflowClient, AirflowUnavailable
from pipelines.core.tokens import token_create
from pipelines.models import Backfill, Environment, RunRecord
from pipelines.monitoring import sync
from tests.conftest import pipeline_payload
from tests.integration.conftest import (
    IT_DIR,
    PG_WAREHOUSE,
    RUN_TIMEOUT,
    dag_runs,
    deploy,
    get,
    pg_url,
    post,
    request_body,
    run_partition,
    scheduled_partition,
    source_rows,
    submit,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

# A backfill ends in Airflow up to 30 s after its last run (the scheduler marks backfills
# complete every 30 s), so it takes its runs plus that.
BACKFILL_TIMEOUT = RUN_TIMEOUT + 60


# --- the warehouse -----------------------------------------------------------------------------


def range_rows(kind: str, table: str, days: list[date]) -> list[tuple]:
    """Every column of every row of `days` in the warehouse table, in key order."""
    first, last = days[0], days[-1]
    if kind == "sqlite":
        with sqlite3.connect(IT_DIR / "warehouse.sqlite3") as conn:
            return conn.execute(
                f'SELECT * FROM "{table}" WHERE order_date BETWEEN ? AND ? ORDER BY order_id',
                (first.isoformat(), last.isoformat()),
            ).fetchall()
    with psycopg.connect(pg_url(PG_WAREHOUSE)) as conn:
        return conn.execute(
            f'SELECT * FROM analytics."{table}" WHERE order_date BETWEEN %s AND %s '
            "ORDER BY order_id",
            (first, last),
        ).fetchall()


def checksum(kind: str, table: str, days: list[date]) -> tuple[int, str]:
    """(rows, SHA-256 of every column of every row in key order) of `days`."""
    rows = range_rows(kind, table, days)
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


def loaded_days(kind: str, table: str) -> dict[date, list[tuple]]:
    """{day: its rows as source_rows gives them} of every partition in the table."""
    if kind == "sqlite":
        with sqlite3.connect(IT_DIR / "warehouse.sqlite3") as conn:
            rows = conn.execute(
                f'SELECT order_id, customer_id, amount, order_date FROM "{table}" ORDER BY order_id'
            ).fetchall()
    else:
        with psycopg.connect(pg_url(PG_WAREHOUSE)) as conn:
            rows = conn.execute(
                "SELECT order_id, customer_id, amount, order_date "
                f'FROM analytics."{table}" ORDER BY order_id'
            ).fetchall()
    days: dict[date, list[tuple]] = {}
    for r in rows:
        day = date.fromisoformat(str(r[3]))
        days.setdefault(day, []).append((r[0], r[1], f"{float(r[2]):.2f}", str(r[3])))
    return days


# --- Airflow -----------------------------------------------------------------------------------


def backfill_runs(
    airflow: AirflowClient, dag_id: str, days: list[date], **params: Any
) -> list[dict[str, Any]]:
    """The DAG's backfill runs of `days` (a run's logical date is its partition's start)."""
    runs = dag_runs(airflow, dag_id, run_type="backfill", **params)
    return [r for r in runs if datetime.fromisoformat(r["logical_date"]).date() in days]


def latest_fire_partition(at: datetime) -> date:
    """The partition the latest fire of the default schedule before `at` loads (catchup=False:
    the one a DAG unpaused at `at` runs first)."""
    spec = pipeline_payload()
    expr, tz = spec["schedule"], spec["timezone"]
    fire = schedule.previous_fire_time(expr, tz, before=at)
    (partition,) = schedule.partitions_for_fire(expr, tz, spec["partition_grain"], fire)
    return partition.date()


def scheduler_alive(airflow: AirflowClient) -> None:
    """Fail at once when the test Airflow's scheduler has stopped: nothing would run any more.

    Seen here while the test Airflow's metadata was in SQLite: Airflow 3.3 answers a backfill
    created while the database is busy with 503 ("Backfill creation is not supported on SQLite
    under concurrent access"), and the scheduler can die of the half-made runs (StaleDataError
    or ObjectDeletedError on dag_run in standalone.log); `airflow standalone` does not restart
    it. Not seen on PostgreSQL; kept so that a dead scheduler fails with its reason, not after
    a timeout.
    """
    try:
        health = airflow.health()
    except AirflowUnavailable:
        return
    if health["scheduler"]["status"] != "healthy":
        pytest.fail(f"The test Airflow's scheduler has stopped; see standalone.log. {health}")


def stuck_tasks(airflow: AirflowClient, dag_id: str) -> list[dict[str, Any]]:
    """Task instances of the DAG's running runs that are not done, with their logs' ends."""
    stuck = []
    for run in dag_runs(airflow, dag_id, state="running"):
        for task in airflow.task_instances(dag_id, run["dag_run_id"]):
            if task["state"] in ("success", "skipped"):
                continue
            tries = range(1, int(task.get("try_number") or 0) + 1)
            logs = [airflow.task_log(dag_id, run["dag_run_id"], task["task_id"], n) for n in tries]
            stuck.append(
                {
                    "run": run["dag_run_id"],
                    "task": task["task_id"],
                    "state": task["state"],
                    "logs": [[str(line)[:300] for line in log[-6:]] for log in logs],
                }
            )
    return stuck


# --- the portal's API --------------------------------------------------------------------------


def follow(client, key: str, backfill_id: int, days: list[date], *, until) -> dict[str, Any]:
    """Sync dev's runs and read the backfill until `until(backfill)`; return it.

    On a timeout the failure shows the backfill and what Airflow says about it."""
    dev = Environment.objects.get(slug="dev")
    airflow = AirflowClient.for_environment(dev)
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    while time.monotonic() < deadline:
        sync.environment_sync(environment_id=dev.id)
        backfill = get(client, f"/api/v1/backfills/{backfill_id}", key)
        if until(backfill):
            return backfill
        scheduler_alive(airflow)
        time.sleep(1)
    theirs = backfill["airflow_backfill_id"] and airflow.backfill_get(
        backfill["airflow_backfill_id"]
    )
    dag_id = Backfill.objects.get(id=backfill_id).dag_id
    runs = [
        {k: r[k] for k in ("dag_run_id", "state", "queued_at", "start_date", "end_date")}
        for r in backfill_runs(airflow, dag_id, days)
    ]
    fields = ("dag_run_id", "run_type", "state", "queued_at")
    records = list(RunRecord.objects.filter(dag_id=dag_id).values(*fields))
    pytest.fail(
        f"timed out waiting for backfill {backfill_id}: {backfill}\nAirflow's backfill: "
        f"{theirs}\nAirflow's runs: {runs}\nsynced runs: {records}\nunfinished tasks: "
        f"{stuck_tasks(airflow, dag_id)}\nAirflow's health: {airflow.health()}"
    )


def ended(backfill: dict[str, Any]) -> bool:
    return backfill["state"] in ("succeeded", "failed", "cancelled")


def test_backfill_matches_runs_refuses_overlap_reruns_and_cancels(client, warehouse, alice):
    kind, key = warehouse, token_create(user=alice)
    airflow = AirflowClient.for_environment(Environment.objects.get(slug="dev"))
    started = time.monotonic()
    timings: dict[str, float] = {}

    def lap(step: str) -> None:
        timings[step] = round(time.monotonic() - started, 1)

    bf, runs = unique("bf"), unique("runs")
    deployed_from = timezone.now()
    dag_ids = {bf: deploy(client, key, bf)}
    scheduled = scheduled_partition(airflow, dag_ids[bf])
    days = [scheduled - timedelta(days=n) for n in range(7, 0, -1)]
    dag_ids[runs] = deploy(client, key, runs)
    theirs = scheduled_partition(airflow, dag_ids[runs])
    deployed_until = timezone.now()
    # Each first scheduled run loads the partition of the latest fire when its DAG was
    # unpaused. Deployed one after the other, the two may straddle 02:00 UTC: then `runs`
    # loads the next day, which is not one of `days` either.
    at_start, at_end = latest_fire_partition(deployed_from), latest_fire_partition(deployed_until)
    assert scheduled in {at_start, at_end}
    assert theirs == (scheduled if at_start == at_end else at_end)
    bf_table, runs_table = bf.replace("-", "_"), runs.replace("-", "_")
    lap("deployed")

    # 1. A 7-day backfill of the missing partitions, one run at a time.
    preview, first = submit(client, bf, key, days, "missing")
    assert (preview["runs"], preview["partitions"], preview["missing"]) == (7, 7, 7), preview
    assert preview["first"] == [d.isoformat() for d in days[:5]]
    assert first["state"] == "queued"
    assert (first["runs"], first["max_active_runs"], first["reprocess"]) == (7, 1, "missing")

    # 3. A second request while it is active: a guardrail in the preview, 409 on submit.
    tail = (
        f"(#{first['id']}, {days[0]} → {days[-1]}): one runs at a time; wait for it to finish "
        "or cancel it."
    )
    says = [f"A backfill of {bf} in Dev is {state} {tail}" for state in ("queued", "running")]
    url = f"/api/v1/pipelines/{bf}/backfills"
    body = request_body(days, "all")
    again = post(client, f"{url}/preview", body, key)
    assert again.status_code == 422, again.content
    assert again.json()["errors"]["start"][0] in says, again.content
    body |= {"reason": "Overlaps the first.", "fingerprint": preview["fingerprint"]}
    conflict = post(client, url, body, key)
    assert conflict.status_code == 409, conflict.content
    assert conflict.json()["detail"] in says, conflict.content
    lap("submitted, overlap refused")

    # 2. Meanwhile the same days by Run now into the other pipeline's table.
    for day in days:
        try:
            run = run_partition(client, runs, day, key)
        except pytest.fail.Exception as exc:
            stuck = stuck_tasks(airflow, dag_ids[runs])
            pytest.fail(f"{exc}\nunfinished tasks: {stuck}\nAirflow's health: {airflow.health()}")
        assert run["run_state"] == "success", run
    by_runs = checksum(kind, runs_table, days)
    assert by_runs[0] == sum(len(source_rows(d)) for d in days) > 0
    lap("run now x7")

    done = follow(client, key, first["id"], days, until=lambda b: ended(b) and b["done"] == 7)
    assert done["state"] == "succeeded", done
    assert (done["done"], done["failed"], done["queued"], done["running"]) == (7, 0, 0, 0)
    assert done["percent"] == 100
    loaded = loaded_days(kind, bf_table)
    assert {d: loaded[d] for d in days} == {d: source_rows(d) for d in days}
    assert set(loaded) == {*days, scheduled}  # and the scheduled run's partition
    assert checksum(kind, bf_table, days) == by_runs
    lap("backfill 1 succeeded")

    # 4. Everything again: each run re-runs and replaces its partition.
    preview, rerun = submit(client, bf, key, days, "all")
    assert (preview["runs"], preview["loaded"], preview["missing"]) == (7, 7, 0), preview
    done = follow(client, key, rerun["id"], days, until=lambda b: ended(b) and b["done"] == 7)
    assert done["state"] == "succeeded", done
    assert (done["done"], done["failed"]) == (7, 0)
    re_ran = backfill_runs(airflow, dag_ids[bf], days)
    assert len(re_ran) == 7
    # Queued again by this backfill (Airflow clears them when it is created).
    requested_at = datetime.fromisoformat(done["requested_at"])
    assert all(datetime.fromisoformat(r["queued_at"]) >= requested_at for r in re_ran), re_ran
    assert checksum(kind, bf_table, days) == by_runs
    lap("backfill 2 (all) succeeded")

    # 5. Cancelled once its first run has started: the queued runs never start.
    _, doomed = submit(client, bf, key, days, "all")
    wait_for(
        lambda: backfill_runs(airflow, dag_ids[bf], days, state="running"),
        timeout=RUN_TIMEOUT,
        what="the cancelled backfill's first run to start",
    )
    cancelled = post(client, f"/api/v1/backfills/{doomed['id']}/cancel", {}, key)
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["wanted"] == "cancel"
    done = follow(client, key, doomed["id"], days, until=ended)
    assert done["state"] == "cancelled", done
    assert airflow.backfill_get(done["airflow_backfill_id"])["completed_at"] is not None
    # The run that had started finishes; none of the others ever starts.
    final = wait_for(
        lambda: (
            (found := backfill_runs(airflow, dag_ids[bf], days))
            and all(r["state"] in ("success", "failed") for r in found)
            and found
        ),
        timeout=RUN_TIMEOUT,
        what="the started run to finish",
    )
    succeeded = [r for r in final if r["state"] == "success"]
    never_ran = [r for r in final if r["start_date"] is None]
    assert 1 <= len(succeeded) < 7, final
    assert len(succeeded) + len(never_ran) == 7, final
    # As counted when it was cancelled: the runs that never started are cancelled, not failed
    # (Airflow marks them failed), and the started one is done or still running then.
    done = follow(client, key, doomed["id"], days, until=ended)
    assert (done["state"], done["failed"], done["queued"]) == ("cancelled", 0, 0), done
    assert done["cancelled"] == len(never_ran), done
    assert done["done"] + done["running"] == len(succeeded), done
    assert checksum(kind, bf_table, days) == by_runs
    lap("backfill 3 cancelled")
    print(f"{kind}: {timings}; the cancelled backfill as the API shows it: {done}")
