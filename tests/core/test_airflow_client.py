"""AirflowClient at its HTTP boundary (faked with `responses`): auth, retries, typed errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests
import responses
from responses import matchers

from pipelines.core.airflow import (
    AirflowAuthError,
    AirflowClient,
    AirflowConflict,
    AirflowCredentialsError,
    AirflowError,
    AirflowNotFound,
    AirflowUnavailable,
    server_date,
)

BASE = "http://airflow.test:8080"


@pytest.fixture
def client(settings):
    return AirflowClient(BASE, "portal", "secret", timeout=2, retries=2)


def token(value="tok-1"):
    responses.add(
        responses.POST,
        f"{BASE}/auth/token",
        json={"access_token": value},
        status=201,
        match=[matchers.json_params_matcher({"username": "portal", "password": "secret"})],
    )


@responses.activate
def test_authenticates_once_and_sends_bearer(client):
    token()
    responses.add(
        responses.GET,
        f"{BASE}/api/v2/dags/d1",
        json={"dag_id": "d1"},
        match=[matchers.header_matcher({"Authorization": "Bearer tok-1"})],
    )
    assert client.get_dag("d1") == {"dag_id": "d1"}
    assert client.get_dag("d1") == {"dag_id": "d1"}
    assert [c.request.url.split(BASE)[1] for c in responses.calls].count("/auth/token") == 1


@responses.activate
def test_refreshes_an_expired_token_once(client):
    token("old")
    responses.add(responses.GET, f"{BASE}/api/v2/dags/d1", status=401, json={"detail": "expired"})
    token("new")
    responses.add(
        responses.GET,
        f"{BASE}/api/v2/dags/d1",
        json={"dag_id": "d1"},
        match=[matchers.header_matcher({"Authorization": "Bearer new"})],
    )
    assert client.get_dag("d1")["dag_id"] == "d1"


@responses.activate
def test_bad_credentials_are_a_typed_permanent_error(client):
    responses.add(
        responses.POST, f"{BASE}/auth/token", status=401, json={"detail": "Invalid credentials"}
    )
    with pytest.raises(AirflowAuthError, match="Invalid credentials"):
        client.get_dag("d1")


@responses.activate
def test_missing_dag_is_none_and_conflict_is_typed(client):
    token()
    responses.add(
        responses.GET, f"{BASE}/api/v2/dags/nope", status=404, json={"detail": "not found"}
    )
    assert client.get_dag("nope") is None
    responses.add(
        responses.POST,
        f"{BASE}/api/v2/dags/d1/dagRuns",
        status=409,
        json={"detail": "DAG Run with run_id r1 already exists"},
    )
    with pytest.raises(AirflowConflict, match="already exists"):
        client.trigger_run(
            "d1", dag_run_id="r1", logical_date=datetime(2026, 11, 10, tzinfo=UTC), conf={}
        )
    responses.add(
        responses.GET, f"{BASE}/api/v2/dags/d1/dagRuns/r2", status=404, json={"detail": "x"}
    )
    with pytest.raises(AirflowNotFound):
        client.get_run("d1", "r2")


@responses.activate
def test_validation_errors_carry_airflows_message(client):
    token()
    responses.add(
        responses.POST,
        f"{BASE}/api/v2/dags/d1/dagRuns",
        status=422,
        json={
            "detail": [{"loc": ["body", "logical_date"], "msg": "Input should be a valid datetime"}]
        },
    )
    with pytest.raises(AirflowError, match="body.logical_date: Input should be a valid datetime"):
        client.trigger_run(
            "d1", dag_run_id="r1", logical_date=datetime(2026, 11, 10, tzinfo=UTC), conf={}
        )


def test_naive_logical_date_is_refused_before_sending(client):
    with pytest.raises(ValueError, match="time-zone aware"):
        client.trigger_run("d1", dag_run_id="r", logical_date=datetime(2026, 1, 1), conf={})  # noqa: DTZ001


@responses.activate
def test_5xx_is_retried_then_unavailable(client):
    token()
    for _ in range(3):
        responses.add(responses.GET, f"{BASE}/api/v2/dags/d1", status=503, body="busy")
    with pytest.raises(AirflowUnavailable, match="503"):
        client.get_dag("d1")
    assert len([c for c in responses.calls if c.request.url.endswith("/dags/d1")]) == 3


@responses.activate
def test_5xx_then_success_recovers(client):
    token()
    responses.add(responses.GET, f"{BASE}/api/v2/dags/d1", status=502, body="bad gateway")
    responses.add(responses.GET, f"{BASE}/api/v2/dags/d1", json={"dag_id": "d1"})
    assert client.get_dag("d1") == {"dag_id": "d1"}


@responses.activate
def test_connection_refused_is_unavailable(client):
    responses.add(
        responses.POST, f"{BASE}/auth/token", body=requests.ConnectionError("Connection refused")
    )
    with pytest.raises(AirflowUnavailable, match="unreachable"):
        client.get_dag("d1")


@responses.activate
def test_import_errors_are_parsed(client):
    token()
    responses.add(
        responses.GET,
        f"{BASE}/api/v2/importErrors",
        match=[matchers.query_param_matcher({"filename_pattern": "x.py"}, strict_match=False)],
        json={
            "import_errors": [
                {
                    "filename": "dev/x.py",
                    "stack_trace": "SyntaxError",
                    "timestamp": "2026-11-23T18:00:00Z",
                }
            ],
            "total_entries": 1,
        },
    )
    (error,) = client.import_errors(filename_pattern="x.py")
    assert error.filename == "dev/x.py"
    assert error.stack_trace == "SyntaxError"


@responses.activate
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_an_error_and_is_not_followed(client, status):
    elsewhere = responses.add(
        responses.POST, "http://evil.test/auth/token", json={"access_token": "x"}, status=201
    )
    responses.add(
        responses.POST,
        f"{BASE}/auth/token",
        status=status,
        headers={"Location": "http://evil.test/auth/token"},
    )
    with pytest.raises(AirflowError) as caught:
        client.get_dag("d1")
    assert caught.value.status == status
    assert f"answered {status}, a redirect, which the portal does not follow" in (
        caught.value.message
    )
    assert elsewhere.call_count == 0
    assert "secret" not in caught.value.message


@responses.activate
def test_a_redirect_of_an_api_call_is_not_followed_either(client):
    token()
    elsewhere = responses.add(responses.GET, "http://evil.test/api/v2/dags/d1", json={})
    responses.add(
        responses.GET,
        f"{BASE}/api/v2/dags/d1",
        status=307,
        headers={"Location": "http://evil.test/api/v2/dags/d1"},
    )
    with pytest.raises(AirflowError, match="a redirect"):
        client.get_dag("d1")
    assert elsewhere.call_count == 0


@pytest.mark.parametrize(
    "url", ["http://portal:secret@airflow.test:8080", "http://portal@airflow.test:8080"]
)
def test_a_url_with_userinfo_is_refused_when_used(settings, url):
    with pytest.raises(AirflowError) as caught:
        AirflowClient(url, "portal", "secret")
    assert "Put no user name or password in the Airflow URL" in caught.value.message
    assert "secret" not in caught.value.message
    assert "portal@" not in caught.value.message


@responses.activate
def test_an_unreachable_airflow_error_names_no_credential(client):
    responses.add(responses.POST, f"{BASE}/auth/token", body=requests.ConnectionError("refused"))
    with pytest.raises(AirflowUnavailable) as caught:
        client.get_dag("d1")
    assert "secret" not in caught.value.message


@responses.activate
def test_a_backfill_create_is_sent_once_even_on_a_5xx(client):
    """Airflow gives each backfill a new id: a repeated create would make a second one. The
    caller reconciles with the list of backfills instead (backfills.services)."""
    token()
    for _ in range(3):
        responses.add(responses.POST, f"{BASE}/api/v2/backfills", status=503, body="busy")
    start = datetime(2026, 11, 1, 2, tzinfo=UTC)
    with pytest.raises(AirflowUnavailable, match="503"):
        client.backfill_create("d1", start, start, reprocess="none", max_active_runs=1)
    creates = [c for c in responses.calls if c.request.url.endswith("/api/v2/backfills")]
    assert len(creates) == 1
    # Other calls are still retried (safe to repeat).
    for _ in range(3):
        responses.add(responses.GET, f"{BASE}/api/v2/backfills/1", status=503, body="busy")
    with pytest.raises(AirflowUnavailable):
        client.backfill_get(1)
    assert len([c for c in responses.calls if c.request.url.endswith("/backfills/1")]) == 3


def test_unreadable_credentials_are_a_sentence_naming_the_variable(db, monkeypatch):
    from tests.conftest import make_environment

    env = make_environment(
        "dev",
        0,
        airflow_username_env="PORTAL_AIRFLOW_IT_USER",
        airflow_password_env="PORTAL_AIRFLOW_IT_PASSWORD",
    )
    monkeypatch.setenv("PORTAL_AIRFLOW_IT_USER", "portal")
    monkeypatch.delenv("PORTAL_AIRFLOW_IT_PASSWORD", raising=False)
    with pytest.raises(AirflowCredentialsError) as caught:
        AirflowClient.for_environment(env)
    assert caught.value.message == (
        "The credentials of Dev's Airflow cannot be read: PORTAL_AIRFLOW_IT_PASSWORD is not set "
        "in the portal's environment."
    )
    monkeypatch.setenv("PORTAL_AIRFLOW_IT_PASSWORD", "s3cret")
    assert AirflowClient.for_environment(env).password == "s3cret"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Sat, 05 Dec 2026 20:29:04 GMT", datetime(2026, 12, 5, 20, 29, 4, tzinfo=UTC)),
        # A proxy's Date beside Airflow's: requests joins them; the first is Airflow's clock.
        (
            "Sat, 05 Dec 2026 20:29:04 GMT, Sat, 05 Dec 2026 20:29:09 GMT",
            datetime(2026, 12, 5, 20, 29, 4, tzinfo=UTC),
        ),
        ("Sat, 05 Dec 2026 20:29:04 -0000", datetime(2026, 12, 5, 20, 29, 4, tzinfo=UTC)),
        ("Sat, 05 Dec 2026 21:29:04 +0100", datetime(2026, 12, 5, 20, 29, 4, tzinfo=UTC)),
        ("", None),
        ("not a date", None),
    ],
)
def test_airflows_clock_is_read_aware_from_any_date_header(header, expected):
    when = server_date(header)
    assert when == expected
    assert when is None or when.tzinfo is not None  # a naive time would fail the row's save
