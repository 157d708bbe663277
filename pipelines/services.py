"""Pipeline services: create a pipeline from a validated spec."""

from __future__ import annotations

from django.db import transaction

from . import deploy
from .models import Environment, Pipeline, PipelineVersion, SourceTable, Team
from .spec import PipelineSpec


@transaction.atomic
def pipeline_create(
    *, spec: PipelineSpec, by: object, deploy_to: Environment | None = None
) -> Pipeline:
    """Create the pipeline and its immutable version 1; optionally request a deployment.

    Everything happens in one transaction: a failure leaves no pipeline, no version, no row in
    the outbox, and no task is enqueued (enqueueing happens on commit).
    """
    from django.contrib.auth import get_user_model

    team = Team.objects.get(slug=spec.team)
    owner = get_user_model().objects.get(username=spec.owner)
    table = SourceTable.objects.get(
        database__name=spec.source_database, schema=spec.source_schema, name=spec.source_table
    )
    pipeline = Pipeline.objects.create(
        slug=spec.name,
        team=team,
        owner=owner,
        source_table=table,
        target_table=spec.target_table,
        sla_minutes=spec.sla_minutes,
        runbook_url=spec.runbook_url,
        created_by=by,
    )
    version = PipelineVersion.objects.create(
        pipeline=pipeline,
        number=1,
        spec_json=spec.to_json(),
        spec_sha256=spec.sha256(),
        created_by=by,
    )
    if deploy_to is not None:
        deploy.deployment_request(version=version, environment=deploy_to, by=by)
    return pipeline


def can_edit(user: object, pipeline: Pipeline) -> bool:
    """Only members of the pipeline's team may change it."""
    return bool(
        getattr(user, "is_authenticated", False)
        and pipeline.team.memberships.filter(user=user).exists()
    )
