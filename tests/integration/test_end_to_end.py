"""The walking skeleton against a real Airflow 3.3.2: API → deploy → run → idempotent partitions.

Run once with the SQLite warehouse that `make run` uses and once with PostgreSQL (production).
"""

from __future__ import annotations

import pytest

from pipelines.core.tokens import token_create
from pipelines.models import Deployment
from tests.conftest import pipeline_payload
from tests.integration.conftest import (
    DEPLOY_TIMEOUT,
    get,
    past_partitions,
    post,
    run_partition,
    source_rows,
    unique,
    wait_deployment,
    wait_for,
    warehouse_rows,
    warehouse_total,
)

pytestmark = pytest.mark.integration


def test_api_deploy_run_and_reload_partitions(client, warehouse, alice):
    key = token_create(user=alice)
    name = unique("orders")
    table = name.replace("-", "_")
    payload = pipeline_payload(name=name, target_table=table, source="orders")
    created = post(client, "/api/v1/pipelines", payload, key)
    assert created.status_code == 201, created.content
    assert created.json()["version"] == 1

    deployment = post(
        client, f"/api/v1/pipelines/{name}/deployments", {"environment": "dev", "version": 1}, key
    )
    assert deployment.status_code == 202
    deployment_id = deployment.json()["id"]
    done = wait_deployment(client, deployment_id, key, what="the deployment to finish")
    assert done["state"] == "deployed", done["error"]
    assert 0 < done["deploy_seconds"] < DEPLOY_TIMEOUT
    airflow_errors = [
        e for e in _import_errors(warehouse) if e["filename"].endswith(f"{done['dag_id']}.py")
    ]
    assert airflow_errors == []

    first, second = past_partitions()

    def run(day):
        final = run_partition(client, name, day, key)
        assert final["run_state"] == "success", final

    run(first)
    expected_first = source_rows(first)
    assert len(expected_first) > 0
    assert warehouse_rows(warehouse, table, first) == expected_first

    run(first)  # the same partition again: replaced, not duplicated
    assert warehouse_rows(warehouse, table, first) == expected_first

    before_second = warehouse_total(warehouse, table)
    run(second)
    assert warehouse_rows(warehouse, table, second) == source_rows(second)
    assert warehouse_rows(warehouse, table, first) == expected_first
    assert warehouse_total(warehouse, table) == before_second + len(source_rows(second))


def _import_errors(kind):
    from pipelines.core.airflow import AirflowClient
    from pipelines.models import Environment

    client = AirflowClient.for_environment(Environment.objects.get(slug="dev"))
    return [e.__dict__ for e in client.import_errors()]


def test_file_airflow_rejects_is_a_failed_deployment_with_its_message(client, warehouse, alice):
    """A render that passes every portal check but that Airflow cannot import (here a time zone
    unknown to Airflow, planted in the stored spec) ends failed with Airflow's own message.

    Tampering with the stored code itself is no way to get there: the deploy re-renders and
    refuses code that differs (tests/deployments/test_deploy.py)."""
    from pipelines.models import PipelineVersion

    key = token_create(user=alice)
    name = unique("broken")
    payload = pipeline_payload(name=name, target_table=name.replace("-", "_"))
    assert post(client, "/api/v1/pipelines", payload, key).status_code == 201
    version = PipelineVersion.objects.get(pipeline__slug=name)
    PipelineVersion.objects.filter(id=version.id).update(
        spec_json={**version.spec_json, "timezone": "Mars/Olympus"}
    )
    response = post(
        client, f"/api/v1/pipelines/{name}/deployments", {"environment": "dev", "version": 1}, key
    )
    assert response.status_code == 202, response.content
    done = wait_deployment(client, response.json()["id"], key, what="the broken deployment")
    assert done["state"] == "failed"
    assert "Mars/Olympus" in done["error"], done["error"]


def test_deploy_while_airflow_is_down_waits_then_lands(client, warehouse, alice, airflow):
    """Airflow unreachable: the deployment stays pending with the reason, then lands later."""
    from pipelines.deployments import services as deploy
    from pipelines.models import Environment

    key = token_create(user=alice)
    name = unique("outage")
    payload = pipeline_payload(name=name, target_table=name.replace("-", "_"))
    assert post(client, "/api/v1/pipelines", payload, key).status_code == 201
    env = Environment.objects.get(slug="dev")
    Environment.objects.filter(id=env.id).update(airflow_url="http://127.0.0.1:9")  # closed port
    response = post(
        client, f"/api/v1/pipelines/{name}/deployments", {"environment": "dev", "version": 1}, key
    )
    deployment_id = response.json()["id"]
    pending = wait_for(
        lambda: (
            (d := get(client, f"/api/v1/deployments/{deployment_id}", key))["last_attempt_error"]
            and d
        ),
        timeout=30,
        what="the first failed attempt",
    )
    # In flight, never failed: pending, or already claimed again by the worker's retry.
    assert pending["state"] in ("pending", "deploying")
    assert "unreachable" in pending["last_attempt_error"]
    Environment.objects.filter(id=env.id).update(airflow_url=airflow.url)  # Airflow is back
    # What the Celery retry or the sweep does; if the worker's own retry holds the claim right
    # now, this call is a no-op and the worker finishes the job.
    deploy.deployment_run(deployment_id=deployment_id)
    done = wait_deployment(client, deployment_id, key, what="the deployment after the outage")
    assert done["state"] == "deployed", done
    assert Deployment.objects.filter(version__pipeline__slug=name).count() == 1
