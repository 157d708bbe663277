"""Authoring services: create a pipeline from a validated spec."""

from __future__ import annotations

from django.db import transaction

from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.authoring.spec import PipelineSpec
from pipelines.catalog.models import SourceTable
from pipelines.core.audit import audit_record
from pipelines.core.models import Team


@transaction.atomic
def pipeline_create(*, spec: PipelineSpec, by: object) -> Pipeline:
    """Create the pipeline and its immutable version 1, in one transaction."""
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
    PipelineVersion.objects.create(
        pipeline=pipeline,
        number=1,
        spec_json=spec.to_json(),
        spec_sha256=spec.sha256(),
        created_by=by,
    )
    audit_record(actor=by, action="pipeline_created", pipeline=pipeline, after=spec.to_json())
    return pipeline
