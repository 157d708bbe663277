"""The JSON API: tokens, create, read, DAG source, deployments and runs."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from pipelines.core.tokens import token_create
from pipelines.deployments import services as deploy
from pipelines.models import ApiToken, Deployment, RunRequest
from tests.conftest import pipeline_payload


def post(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


@pytest.fixture
def created(api_client, alice, orders, environments):
    response = post(api_client, "/api/v1/pipelines", pipeline_payload())
    assert response.status_code == 201, response.content
    return response.json()


def test_no_token_or_bad_token_is_401(client, db):
    assert client.get("/api/v1/pipelines/x").status_code == 401
    response = client.get("/api/v1/pipelines/x", HTTP_AUTHORIZATION="Bearer pp_nope")
    assert response.status_code == 401
    assert "Bearer" in response.json()["detail"]


def test_create_answers_201_with_slug_and_version(created):
    assert created["slug"] == "orders-daily"
    assert created["version"] == 1
    assert created["spec"]["primary_key"] == ["order_id"]
    assert created["deployments"] == []


def test_get_pipeline_and_dag_source(api_client, created):
    body = api_client.get("/api/v1/pipelines/orders-daily").json()
    assert body["team"] == "payments"
    response = api_client.get("/api/v1/pipelines/orders-daily/versions/1/dag?environment=dev")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/x-python")
    source = response.content.decode()
    assert "'dag_id': 'orders_daily'" in source
    assert api_client.get("/api/v1/pipelines/orders-daily/versions/9/dag").status_code == 404
    bad_env = api_client.get("/api/v1/pipelines/orders-daily/versions/1/dag?environment=moon")
    assert bad_env.status_code == 422


def test_deployment_202_then_get(api_client, created, fake_airflow):
    response = post(
        api_client,
        "/api/v1/pipelines/orders-daily/deployments",
        {"environment": "dev", "version": 1},
    )
    assert response.status_code == 202
    deployment = response.json()
    assert deployment["state"] == "pending"
    deploy.deployment_run(deployment_id=deployment["id"])
    got = api_client.get(f"/api/v1/deployments/{deployment['id']}").json()
    assert got["state"] == "deployed"
    assert got["deploy_seconds"] is not None
    again = post(
        api_client,
        "/api/v1/pipelines/orders-daily/deployments",
        {"environment": "dev", "version": 1},
    )
    assert again.json()["id"] == deployment["id"]
    assert Deployment.objects.count() == 1


def test_deployment_validation(api_client, created):
    response = post(
        api_client,
        "/api/v1/pipelines/orders-daily/deployments",
        {"environment": "moon", "version": 7},
    )
    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"environment", "version"}
    missing = post(api_client, "/api/v1/pipelines/orders-daily/deployments", {"environment": "dev"})
    assert missing.status_code == 422
    assert "version" in missing.json()["errors"]


def test_run_needs_a_deployment_then_triggers(api_client, created, fake_airflow):
    body = {"environment": "dev", "partition": "2026-11-10"}
    response = post(api_client, "/api/v1/pipelines/orders-daily/runs", body)
    assert response.status_code == 422
    assert "not deployed to Dev" in response.json()["errors"]["environment"][0]
    dep = post(
        api_client,
        "/api/v1/pipelines/orders-daily/deployments",
        {"environment": "dev", "version": 1},
    ).json()
    deploy.deployment_run(deployment_id=dep["id"])
    response = post(api_client, "/api/v1/pipelines/orders-daily/runs", body)
    assert response.status_code == 202
    run = RunRequest.objects.get()
    from pipelines.runs import services as runs

    runs.run_submit(run_request_id=run.id)
    runs.run_submit(run_request_id=run.id)  # a duplicate task triggers nothing
    assert fake_airflow.calls.count("trigger_run") == 1
    (key,) = fake_airflow.runs
    assert fake_airflow.runs[key]["conf"] == {"partition": "2026-11-10"}
    got = api_client.get(f"/api/v1/runs/{run.id}").json()
    assert got["state"] == "submitted"
    assert got["run_state"] == "queued"


@pytest.mark.parametrize("partition", ["2026-02-30", "tomorrow", "2999-01-01", "{{ ds }}"])
def test_run_rejects_bad_partitions(api_client, created, partition):
    response = post(
        api_client,
        "/api/v1/pipelines/orders-daily/runs",
        {"environment": "dev", "partition": partition},
    )
    assert response.status_code == 422
    assert "partition" in response.json()["errors"]
    assert not RunRequest.objects.exists()


def test_only_team_members_may_change(client, created, mallory):
    key = token_create(user=mallory)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    assert client.get("/api/v1/pipelines/orders-daily", **auth).status_code == 200  # may read
    response = client.post(
        "/api/v1/pipelines/orders-daily/deployments",
        json.dumps({"environment": "dev", "version": 1}),
        content_type="application/json",
        **auth,
    )
    assert response.status_code == 403
    assert not Deployment.objects.exists()


def test_malformed_json_is_a_clear_error(api_client, created):
    response = api_client.post("/api/v1/pipelines", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": "Cannot parse request body"}


def test_create_api_token_command_prints_a_working_token(alice, capsys, client):
    call_command("create_api_token", "alice")
    key = capsys.readouterr().out.strip()
    assert key.startswith("pp_")
    token = ApiToken.objects.get()
    assert token.key_sha256 != key
    assert key not in token.key_sha256
    response = client.get("/api/v1/pipelines/none", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 404


def test_openapi_document_lists_the_endpoints(client, alice):
    client.force_login(alice)  # with DEBUG off the document needs a login
    doc = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/pipelines" in doc["paths"]
    assert "/api/v1/pipelines/{slug}/runs" in doc["paths"]


def test_the_openapi_document_types_every_json_answer(client, alice):
    """Every JSON answer has a schema in the document (the DAG source is text/x-python)."""
    client.force_login(alice)

    def typed(schema: dict) -> bool:  # an object, or a list of objects
        return "$ref" in schema or "$ref" in schema.get("items", {})

    doc = client.get("/api/v1/openapi.json").json()
    untyped = [
        f"{method.upper()} {path} {status}"
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        for status, answer in operation["responses"].items()
        if status.startswith(("2", "4"))
        and status != "204"  # no content
        and "/dag" not in path
        and not typed(answer.get("content", {}).get("application/json", {}).get("schema", {}))
    ]
    assert untyped == []
    run = doc["components"]["schemas"]["RunOut"]["properties"]
    assert run["error"]["type"] == "string"
    assert run["requested_at"]["format"] == "date-time"


@pytest.mark.parametrize("debug", [True, False])
def test_a_bug_behind_the_api_is_a_500_sentence_not_a_traceback(
    api_client, alice, orders, environments, settings, monkeypatch, caplog, debug
):
    from pipelines.api import v1

    settings.DEBUG = debug

    def bug(*args, **kwargs):
        raise TypeError("int() argument must be a string, not 'NoneType'")

    monkeypatch.setattr(v1, "pipeline_out", bug)
    post(api_client, "/api/v1/pipelines", pipeline_payload())
    response = api_client.get("/api/v1/pipelines/orders-daily")
    assert response.status_code == 500
    detail = response.json()["detail"]
    assert detail.startswith("The request failed: an internal error (reference ")
    assert "int()" not in detail
    assert "Traceback" not in response.content.decode()
    assert "TypeError: int() argument" in caplog.text
