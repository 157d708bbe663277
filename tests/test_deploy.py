"""The deploy service against a fake Airflow client: outbox, claims, failures, supersession."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import deploy, services
from pipelines.airflow import AirflowUnavailable
from pipelines.forms import PipelineForm
from pipelines.models import Deployment, PipelineVersion
from tests.conftest import pipeline_payload


@pytest.fixture
def pipeline(alice, orders, environments):
    form = PipelineForm(pipeline_payload(), user=alice)
    assert form.is_valid(), form.errors
    return services.pipeline_create(spec=form.spec, by=alice)


@pytest.fixture
def version(pipeline):
    return pipeline.versions.get(number=1)


def test_deploy_writes_file_and_records_registration(version, environments, alice, fake_airflow):
    deployment = deploy.deployment_request(
        version=version, environment=environments["dev"], by=alice
    )
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYED
    path = Path(environments["dev"].dags_folder) / "orders_daily.py"
    assert path.read_text() == deployment.code
    assert deployment.registered_at >= deployment.requested_at
    assert deployment.deploy_seconds is not None
    assert fake_airflow.dags["orders_daily"]["is_paused"] is False
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temp file left"


def test_same_version_twice_is_a_no_op(version, environments, alice, fake_airflow):
    first = deploy.deployment_request(version=version, environment=environments["dev"], by=alice)
    deploy.deployment_run(deployment_id=first.id)
    second = deploy.deployment_request(version=version, environment=environments["dev"], by=alice)
    assert second.id == first.id
    calls = len(fake_airflow.calls)
    deploy.deployment_run(deployment_id=first.id)  # a duplicate task: claims nothing
    assert len(fake_airflow.calls) == calls
    assert Deployment.objects.count() == 1


def test_airflow_down_keeps_it_pending_and_retries(version, environments, alice, fake_airflow):
    fake_airflow.down = True
    deployment = deploy.deployment_request(
        version=version, environment=environments["dev"], by=alice
    )
    with pytest.raises(AirflowUnavailable):
        deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.PENDING
    assert "unreachable" in deployment.last_attempt_error
    assert deployment.attempts == 1
    fake_airflow.down = False
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYED
    assert deployment.attempts == 2


def test_import_error_fails_with_airflow_text(version, environments, alice, fake_airflow):
    fake_airflow.reject["orders_daily.py"] = "Traceback ...\nNameError: name 'x' is not defined"
    deployment = deploy.deployment_request(
        version=version, environment=environments["dev"], by=alice
    )
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.FAILED
    assert "NameError: name 'x' is not defined" in deployment.error
    # Asking again retries the failed deployment instead of ignoring it.
    fake_airflow.reject.clear()
    again = deploy.deployment_request(version=version, environment=environments["dev"], by=alice)
    assert again.id == deployment.id
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYED
    assert deployment.error == ""


def test_newer_version_supersedes_and_older_never_overwrites(
    pipeline, version, environments, alice, fake_airflow
):
    dev = environments["dev"]
    v1 = deploy.deployment_request(version=version, environment=dev, by=alice)
    deploy.deployment_run(deployment_id=v1.id)
    spec2 = version.spec_json | {"description": "v2"}
    version2 = PipelineVersion.objects.create(
        pipeline=pipeline, number=2, spec_json=spec2, spec_sha256="x", created_by=alice
    )
    v2 = deploy.deployment_request(version=version2, environment=dev, by=alice)
    deploy.deployment_run(deployment_id=v2.id)
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.state, v2.state) == (Deployment.State.SUPERSEDED, Deployment.State.DEPLOYED)
    assert "'description': 'v2'" in (Path(dev.dags_folder) / "orders_daily.py").read_text()


def test_requests_enqueue_only_on_commit(
    version, environments, alice, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        deploy.deployment_request(version=version, environment=environments["dev"], by=alice)
    assert len(callbacks) == 1


def test_sweep_finds_rows_left_pending(version, environments, alice):
    deployment = deploy.deployment_request(
        version=version, environment=environments["dev"], by=alice
    )
    assert deploy.deployments_due() == []  # too fresh: the on-commit enqueue goes first
    Deployment.objects.filter(id=deployment.id).update(
        requested_at=deployment.requested_at - deploy.SWEEP_GRACE * 2
    )
    assert deploy.deployments_due() == [deployment.id]


def test_broker_down_keeps_the_request_for_the_sweep(
    version, environments, alice, monkeypatch, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    from pipelines import tasks

    def refuse(*args):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.deployment_run, "delay", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        deployment = deploy.deployment_request(
            version=version, environment=environments["dev"], by=alice
        )
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.PENDING  # saved, not lost, nothing raised
