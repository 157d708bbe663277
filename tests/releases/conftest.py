"""Releases fixtures: dev (direct deploys), stage and prod (approval), a pipeline whose version 1
is ready to promote from dev (deployed, a successful run since, fresh, no page), alice requests,
bob approves, carol is a second editor, mallory is in no team."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from pipelines.authoring import services as authoring
from pipelines.authoring.forms import PipelineForm
from pipelines.deployments import services as deploy
from pipelines.models import Deployment, Environment, RunRecord
from tests.conftest import form_data, make_environment, make_health, make_user


@pytest.fixture
def team(team):
    team.quiet_email = "payments-alerts@example.com"
    team.oncall_email = "payments-oncall@example.com"
    team.save()
    return team


@pytest.fixture
def carol(team):
    return make_user("carol", team)


@pytest.fixture
def envs(db, tmp_path) -> dict[str, Environment]:
    rows = [("dev", 10, False), ("stage", 20, True), ("prod", 30, True)]
    return {
        slug: make_environment(
            slug,
            order,
            dags_folder=str(tmp_path / "dags" / slug),
            dag_id_prefix=f"{slug}__",
            target_schema=f"analytics_{slug}",
            requires_approval=approval,
            pages_oncall=slug == "prod",
        )
        for slug, order, approval in rows
    }


@pytest.fixture
def pipeline(orders, alice, team):
    form = PipelineForm(form_data(), user=alice)
    assert form.is_valid(), form.errors
    return authoring.pipeline_create(spec=form.spec, by=alice)


def edit(pipeline: Any, by: Any, **changes: Any) -> Any:
    """Save the next version with `changes` to the form fields."""
    form = PipelineForm(
        form_data(**changes) | {"change_note": "test edit"}, user=by, pipeline=pipeline
    )
    assert form.is_valid(), form.errors
    return authoring.pipeline_edit(
        pipeline=pipeline, spec=form.spec, by=by, change_note="test edit"
    )


def mark_deployed(version: Any, environment: Environment, by: Any, *, ago: float = 3) -> Deployment:
    """A deployment Airflow registered `ago` hours back (rows only: no Airflow)."""
    deployment = deploy.deployment_request(
        version=version, environment=environment, by=by, approved=True
    )
    at = timezone.now() - timedelta(hours=ago)
    Deployment.objects.filter(id=deployment.id).update(
        state=Deployment.State.DEPLOYED, written_at=at, registered_at=at, finished_at=at
    )
    Deployment.objects.filter(
        environment=environment,
        version__pipeline=version.pipeline,
        state=Deployment.State.DEPLOYED,
    ).exclude(id=deployment.id).update(state=Deployment.State.SUPERSEDED)
    deployment.refresh_from_db()
    return deployment


def succeed(version: Any, environment: Environment, *, ago: float = 1) -> RunRecord:
    """A successful run of `version`'s DAG in `environment`, `ago` hours back."""
    start = timezone.now() - timedelta(hours=ago)
    return RunRecord.objects.create(
        environment=environment,
        pipeline=version.pipeline,
        dag_id=environment.dag_id_for(version.pipeline.slug),
        dag_run_id=f"manual__{start.isoformat()}",
        run_type="manual",
        state="success",
        start_date=start,
        end_date=start + timedelta(minutes=2),
        duration_s=120,
        synced_at=timezone.now(),
    )


def make_ready(version: Any, source: Environment, by: Any) -> Deployment:
    """Make `version` pass every blocking check for the environment after `source`."""
    deployment = mark_deployed(version, source, by)
    succeed(version, source)
    from pipelines.models import PipelineHealth

    PipelineHealth.objects.filter(pipeline=version.pipeline, environment=source).delete()
    make_health(
        version.pipeline,
        source,
        freshness_lag_partitions=0,
        latest_loaded_partition=timezone.now() - timedelta(days=1),
    )
    return deployment


@pytest.fixture
def ready(pipeline, envs, alice):
    """Version 1, ready to promote dev → stage."""
    version = pipeline.versions.get(number=1)
    make_ready(version, envs["dev"], alice)
    return version
