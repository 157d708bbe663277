"""AirflowClient's backfill calls at the HTTP boundary (faked with `responses`): the exact JSON
sent, what comes back, and the 409 of a DAG that already has a backfill running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import responses
from responses import matchers

from pipelines.core.airflow import (
    AirflowBackfillRunning,
    AirflowClient,
    AirflowConflict,
    AirflowError,
    AirflowNotFound,
)

BASE = "http://airflow.test:8080"
DAG = "dev__orders_daily"
FROM = datetime(2026, 11, 1, 2, tzinfo=UTC)
TO = datetime(2026, 11, 6, 2, tzinfo=UTC)
NEW_YORK = timezone(timedelta(hours=-5))
# A backfill as Airflow 3.3.2 answers it (BackfillResponse).
BACKFILL = {
    "id": 7,
    "dag_id": DAG,
    "from_date": "2026-11-01T02:00:00Z",
    "to_date": "2026-11-06T02:00:00Z",
    "dag_run_conf": {},
    "is_paused": False,
    "reprocess_behavior": "failed",
    "max_active_runs": 2,
    "created_at": "2026-11-24T01:00:00Z",
    "completed_at": None,
    "updated_at": "2026-11-24T01:00:00Z",
    "dag_display_name": DAG,
}


@pytest.fixture
def client(settings):
    return AirflowClient(BASE, "portal", "secret", timeout=2, retries=0)


@pytest.fixture
def airflow():
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, f"{BASE}/auth/token", json={"access_token": "t"}, status=201)
        yield mocked


def test_dry_run_sends_aware_dates_and_explicit_max_active_runs(client, airflow):
    airflow.add(
        responses.POST,
        f"{BASE}/api/v2/backfills/dry_run",
        match=[
            matchers.json_params_matcher(
                {
                    "dag_id": DAG,
                    "from_date": "2026-11-01T02:00:00+00:00",
                    "to_date": "2026-11-06T02:00:00-05:00",
                    "reprocess_behavior": "none",
                    "max_active_runs": 1,
                    "run_backwards": False,
                }
            )
        ],
        json={
            "backfills": [
                {"logical_date": "2026-11-01T02:00:00Z", "partition_key": None},
                {"logical_date": "2026-11-02T02:00:00Z", "partition_key": None},
            ],
            "total_entries": 2,
        },
    )
    dates = client.backfill_dry_run(
        DAG, FROM, TO.replace(tzinfo=NEW_YORK), reprocess="none", max_active_runs=1
    )
    assert dates == [FROM, FROM + timedelta(days=1)]
    assert all(d.tzinfo is not None for d in dates)


def test_dry_run_of_a_range_without_runs_is_an_empty_list(client, airflow):
    airflow.add(
        responses.POST,
        f"{BASE}/api/v2/backfills/dry_run",
        json={"backfills": [], "total_entries": 0},
    )
    assert client.backfill_dry_run(DAG, FROM, TO, reprocess="completed", max_active_runs=10) == []


def test_create_sends_the_conf_and_returns_the_backfill(client, airflow):
    airflow.add(
        responses.POST,
        f"{BASE}/api/v2/backfills",
        match=[
            matchers.json_params_matcher(
                {
                    "dag_id": DAG,
                    "from_date": "2026-11-01T02:00:00+00:00",
                    "to_date": "2026-11-06T02:00:00+00:00",
                    "reprocess_behavior": "failed",
                    "max_active_runs": 2,
                    "run_backwards": False,
                    "dag_run_conf": {"accept_smaller": True},
                }
            )
        ],
        json=BACKFILL,
    )
    created = client.backfill_create(
        DAG,
        FROM,
        TO,
        reprocess="failed",
        max_active_runs=2,
        dag_run_conf={"accept_smaller": True},
    )
    assert created["id"] == 7
    assert created["completed_at"] is None


def test_create_without_conf_sends_none_of_it(client, airflow):
    airflow.add(
        responses.POST,
        f"{BASE}/api/v2/backfills",
        match=[
            matchers.json_params_matcher(
                {
                    "dag_id": DAG,
                    "from_date": "2026-11-01T02:00:00+00:00",
                    "to_date": "2026-11-06T02:00:00+00:00",
                    "reprocess_behavior": "completed",
                    "max_active_runs": 10,
                    "run_backwards": False,
                }
            )
        ],
        json=BACKFILL,
    )
    assert client.backfill_create(DAG, FROM, TO, reprocess="completed", max_active_runs=10)


def test_a_backfill_already_running_is_its_own_conflict(client, airflow):
    airflow.add(
        responses.POST,
        f"{BASE}/api/v2/backfills",
        status=409,
        json={"detail": f"There is already a running backfill for dag {DAG}"},
    )
    with pytest.raises(AirflowBackfillRunning) as raised:
        client.backfill_create(DAG, FROM, TO, reprocess="none", max_active_runs=1)
    assert isinstance(raised.value, AirflowConflict)  # callers catching conflicts still do
    assert raised.value.status == 409
    assert raised.value.message.startswith(
        f"Airflow is still running another backfill of {DAG} (one per DAG at a time): wait "
        "until it completes or cancel it, then submit again."
    )
    assert "There is already a running backfill" in raised.value.message


def test_a_range_with_nothing_to_create_is_airflows_422(client, airflow):
    airflow.add(
        responses.POST,
        f"{BASE}/api/v2/backfills",
        status=422,
        json={"detail": f"No runs to create for Dag {DAG} in the range [{FROM}, {TO}]"},
    )
    with pytest.raises(AirflowError, match="No runs to create") as raised:
        client.backfill_create(DAG, FROM, TO, reprocess="none", max_active_runs=1)
    assert not isinstance(raised.value, AirflowConflict)
    assert raised.value.status == 422


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"from_date": datetime(2026, 11, 1)}, "from_date must be time-zone aware"),  # noqa: DTZ001
        ({"to_date": datetime(2026, 11, 6)}, "to_date must be time-zone aware"),  # noqa: DTZ001
        ({"reprocess": "missing"}, "reprocess must be one of none, failed, completed"),
        ({"max_active_runs": 0}, "max_active_runs must be at least 1"),
    ],
)
def test_bad_arguments_are_refused_before_sending(client, changes, message):
    arguments = {
        "from_date": FROM,
        "to_date": TO,
        "reprocess": "none",
        "max_active_runs": 1,
    } | changes
    with responses.RequestsMock():  # any request would fail the test
        with pytest.raises(ValueError, match=message):
            client.backfill_create(DAG, **arguments)
        with pytest.raises(ValueError, match=message):
            client.backfill_dry_run(DAG, **arguments)


@pytest.mark.parametrize(
    ("call", "method", "path"),
    [
        ("backfill_get", responses.GET, "/api/v2/backfills/7"),
        ("backfill_pause", responses.PUT, "/api/v2/backfills/7/pause"),
        ("backfill_unpause", responses.PUT, "/api/v2/backfills/7/unpause"),
        ("backfill_cancel", responses.PUT, "/api/v2/backfills/7/cancel"),
    ],
)
def test_one_backfill_by_id(client, airflow, call, method, path):
    airflow.add(method, f"{BASE}{path}", json=BACKFILL)
    assert getattr(client, call)(7) == BACKFILL


def test_pausing_a_completed_backfill_is_a_conflict(client, airflow):
    airflow.add(
        responses.PUT,
        f"{BASE}/api/v2/backfills/7/pause",
        status=409,
        json={"detail": "Backfill is already completed."},
    )
    with pytest.raises(AirflowConflict, match="already completed") as raised:
        client.backfill_pause(7)
    assert not isinstance(raised.value, AirflowBackfillRunning)


def test_an_unknown_backfill_is_not_found(client, airflow):
    airflow.add(
        responses.GET,
        f"{BASE}/api/v2/backfills/99",
        status=404,
        json={"detail": "Backfill not found"},
    )
    with pytest.raises(AirflowNotFound):
        client.backfill_get(99)


def test_backfills_of_a_dag_page_through_every_one(client, airflow, monkeypatch):
    monkeypatch.setattr(AirflowClient, "PAGE_SIZE", 2)
    pages = [[{**BACKFILL, "id": 1}, {**BACKFILL, "id": 2}], [{**BACKFILL, "id": 3}]]
    for offset, page in zip((0, 2), pages, strict=True):
        airflow.add(
            responses.GET,
            f"{BASE}/api/v2/backfills",
            match=[
                matchers.query_param_matcher(
                    {"dag_id": DAG, "limit": "2", "offset": str(offset), "order_by": "id"}
                )
            ],
            json={"backfills": page, "total_entries": 3},
        )
    assert [b["id"] for b in client.backfill_list(DAG)] == [1, 2, 3]


def test_backfill_runs_asks_for_the_backfill_runs_of_the_range(client, airflow):
    run = {"dag_run_id": "backfill__2026-11-01T02:00:00+00:00", "state": "failed"}
    airflow.add(
        responses.GET,
        f"{BASE}/api/v2/dags/{DAG}/dagRuns",
        match=[
            matchers.query_param_matcher(
                {
                    "logical_date_gte": FROM.isoformat(),
                    "logical_date_lte": TO.isoformat(),
                    "run_type": "backfill",
                    "limit": "100",
                    "offset": "0",
                    "order_by": "id",
                }
            )
        ],
        json={"dag_runs": [run], "total_entries": 1},
    )
    assert client.backfill_runs(DAG, FROM, TO) == [run]
