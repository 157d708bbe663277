"""A backfill never loses track of Airflow: the real Airflow 3.3.2 behind a fault-injecting proxy.

The dev environment's Airflow URL is a proxy (faulty_proxy.py) in front of the test Airflow;
what Airflow really made is read from Airflow itself, not through the proxy. One pipeline is
deployed, and four daily partitions are backfilled in chunks of two runs (two Airflow backfills
each time), three times:

1. the first create's reply is dropped after Airflow made the backfill: the portal adopts that
   backfill instead of creating a second one;
2. the first pause is answered 409 (as Airflow answers a pause of a chunk that has just
   completed): the backfill is paused, resumed, and carries on to its end;
3. every answer is held longer than the outbox lease, and a second worker claims the row each
   time the lease has run out: whoever holds the claim, one Airflow backfill per chunk.

Each ends succeeded with the four runs done, and Airflow holds exactly one backfill per chunk,
of exactly the chunk's range.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from django.db import connection

from pipelines.backfills import tasks
from pipelines.core.airflow import AirflowClient
from pipelines.core.tokens import token_create
from pipelines.models import Backfill
from tests.integration.conftest import (
    RUN_TIMEOUT,
    dag_runs,
    deploy,
    dev_environment,
    get,
    post,
    scheduled_partition,
    submit,
    unique,
    wait_for,
)
from tests.integration.faulty_proxy import FaultyProxy, faulty_proxy

pytestmark = pytest.mark.integration

DAYS = 4
CHUNK_RUNS = 2  # two Airflow backfills per portal backfill
# Its runs, one at a time, and up to 30 s per chunk for Airflow to mark it complete.
BACKFILL_TIMEOUT = 2 * RUN_TIMEOUT + 120
ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture
def proxy(airflow, worker, team) -> Any:
    """The dev environment, its Airflow URL pointing at a proxy in front of the test Airflow."""
    with faulty_proxy(airflow.url) as proxy:
        dev_environment("sqlite", proxy.url)
        yield proxy


def follow(client, key: str, backfill_id: int, proxy: FaultyProxy) -> dict[str, Any]:
    """Read the backfill until it has ended; return it."""

    def ended() -> dict[str, Any] | None:
        backfill = get(client, f"/api/v1/backfills/{backfill_id}", key)
        return backfill if backfill["state"] in ENDED else None

    try:
        return wait_for(ended, timeout=BACKFILL_TIMEOUT, interval=1, what="the backfill to end")
    except pytest.fail.Exception as exc:
        row = Backfill.objects.get(id=backfill_id)
        pytest.fail(f"{exc}\nrow: {row.__dict__}\nthrough the proxy: {proxy.seen[-30:]}")


def state_is(client, key: str, backfill_id: int, *states: str) -> Any:
    def check() -> dict[str, Any] | None:
        backfill = get(client, f"/api/v1/backfills/{backfill_id}", key)
        return backfill if backfill["state"] in states else None

    return check


def test_backfills_keep_track_of_airflow_through_a_faulty_proxy(
    client, proxy, airflow, alice, settings, caplog
):
    caplog.set_level(logging.INFO, logger="pipelines.backfills.services")
    settings.BACKFILL_CHUNK_RUNS = CHUNK_RUNS
    key = token_create(user=alice)
    theirs = AirflowClient(airflow.url, "portal", airflow.users["portal"])  # not proxied
    name = unique("faults")
    dag_id = deploy(client, key, name)
    scheduled = scheduled_partition(theirs, dag_id)
    days: list[date] = [scheduled - timedelta(days=n) for n in range(DAYS, 0, -1)]
    known: set[int] = set()

    def adoptions(backfill_id: int) -> int:
        said = f"backfill {backfill_id} adopted Airflow's backfill"
        return sum(said in r.getMessage() for r in caplog.records)

    def one_airflow_backfill_per_chunk(backfill_id: int) -> None:
        """Airflow's backfills of the DAG made since the last check: one per chunk, in order,
        each of exactly its chunk's range."""
        made = [b for b in theirs.backfill_list(dag_id) if b["id"] not in known]
        known.update(b["id"] for b in made)
        chunks = Backfill.objects.get(id=backfill_id).chunks
        assert len(chunks) == DAYS // CHUNK_RUNS
        want = [[datetime.fromisoformat(d) for d in chunk] for chunk in chunks]
        got = [[datetime.fromisoformat(b[k]) for k in ("from_date", "to_date")] for b in made]
        assert got == want, (made, proxy.seen)
        assert all(b["completed_at"] for b in made), made

    def succeeded_with_every_run(done: dict[str, Any]) -> None:
        row = Backfill.objects.get(id=done["id"])
        runs = [
            {k: r.get(k) for k in ("dag_run_id", "state", "queued_at", "start_date", "end_date")}
            for r in dag_runs(theirs, dag_id, run_type="backfill")
        ]
        facts = (
            f"{done}\nsubmitted_at {row.submitted_at}, counted {row.counted}, chunks "
            f"{row.chunks}\nAirflow's runs: {runs}\nAirflow's backfills: "
            f"{theirs.backfill_list(dag_id)}\nthrough the proxy: {proxy.seen[-40:]}"
        )
        assert done["state"] == "succeeded", facts
        assert (done["runs"], done["done"], done["failed"], done["cancelled"]) == (
            DAYS,
            DAYS,
            0,
            0,
        ), facts
        assert (done["queued"], done["running"], done["percent"]) == (0, 0, 100), facts

    # 1. The first create's reply is lost after Airflow made it.
    proxy.drop_create_replies = 1
    _, lost = submit(client, name, key, days, "missing")
    done = follow(client, key, lost["id"], proxy)
    assert [s for s in proxy.seen if "reply dropped" in s[2]], proxy.seen
    succeeded_with_every_run(done)
    one_airflow_backfill_per_chunk(lost["id"])
    assert adoptions(lost["id"]) == 1, caplog.text  # the lost one, found in Airflow's list

    # 2. The first pause meets Airflow's 409; pause, resume, and it carries on.
    _, paused = submit(client, name, key, days, "all")
    wait_for(
        lambda: (
            (b := state_is(client, key, paused["id"], "running")()) and b["airflow_backfill_id"]
        ),
        timeout=RUN_TIMEOUT,
        what="the first chunk to be submitted",
    )
    proxy.conflict_pauses = 1
    response = post(client, f"/api/v1/backfills/{paused['id']}/pause", {}, key)
    assert response.status_code == 200, response.content
    shown = wait_for(
        state_is(client, key, paused["id"], "paused", *ENDED),
        timeout=60,
        what="the backfill to be paused",
    )
    assert (shown["state"], shown["error"]) == ("paused", ""), shown
    assert [s for s in proxy.seen if s[2] == "answered 409"], proxy.seen
    response = post(client, f"/api/v1/backfills/{paused['id']}/resume", {}, key)
    assert response.status_code == 200, response.content
    succeeded_with_every_run(follow(client, key, paused["id"], proxy))
    one_airflow_backfill_per_chunk(paused["id"])

    # 3. Every answer comes after the lease has run out; a second worker takes the row each
    # time it can (the lease rule's floor, lowered here so that the test takes minutes).
    settings.CELERY_TASK_TIME_LIMIT, settings.OUTBOX_LEASE_MARGIN_SECONDS = 1, 1
    assert Backfill.lease_seconds() == 2
    proxy.delay_s = 2.5
    _, slow = submit(client, name, key, days, "all")
    stop, steps = threading.Event(), []

    def second_worker() -> None:
        try:
            while not stop.is_set():
                tasks.backfill_step(slow["id"])
                steps.append(time.monotonic())
                time.sleep(0.5)
        finally:
            connection.close()

    thread = threading.Thread(target=second_worker, daemon=True)
    thread.start()
    try:
        done = follow(client, key, slow["id"], proxy)
    finally:
        stop.set()
        thread.join(timeout=60)
        proxy.delay_s = 0
    succeeded_with_every_run(done)
    one_airflow_backfill_per_chunk(slow["id"])
    assert steps, "the second worker never ran"
    # A create outlived its lease and the next claim found what it had made.
    assert adoptions(slow["id"]) >= 1, caplog.text
