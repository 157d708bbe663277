"""Reads for screens, each in a fixed number of queries."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from django.shortcuts import get_object_or_404

from .models import Deployment, Environment, Pipeline, PipelineVersion, RunRequest, SourceTable


def pipeline_list() -> list[dict[str, Any]]:
    """Return one row per pipeline with its newest deployment per environment (3 queries)."""
    environments = list(Environment.objects.order_by("order"))
    pipelines = list(
        Pipeline.objects.select_related("team", "owner", "source_table__database").order_by("slug")
    )
    latest: dict[tuple[int, int], Deployment] = {}
    deployments = (
        Deployment.objects.filter(version__pipeline__in=pipelines)
        .exclude(state=Deployment.State.SUPERSEDED)
        .select_related("version")
        .order_by("version__number", "requested_at")
    )
    for d in deployments:
        latest[(d.version.pipeline_id, d.environment_id)] = d
    return [
        {
            "pipeline": p,
            "deployments": [(e, latest.get((p.id, e.id))) for e in environments],
        }
        for p in pipelines
    ]


def pipeline_detail(*, slug: str) -> dict[str, Any]:
    """Everything the pipeline page shows."""
    pipeline = get_object_or_404(
        Pipeline.objects.select_related("team", "owner", "source_table__database").prefetch_related(
            Prefetch("versions", queryset=PipelineVersion.objects.order_by("-number"))
        ),
        slug=slug,
    )
    versions = list(pipeline.versions.all())
    environments = list(Environment.objects.order_by("order"))
    deployments = list(
        Deployment.objects.filter(version__pipeline=pipeline)
        .select_related("version", "environment", "requested_by")
        .order_by("-requested_at")
    )
    current = {}
    for d in sorted(deployments, key=lambda d: (d.version.number, d.requested_at)):
        if d.state != Deployment.State.SUPERSEDED:
            current[d.environment_id] = d
    run_list = list(
        RunRequest.objects.filter(pipeline=pipeline)
        .select_related("environment", "requested_by")
        .order_by("-requested_at")[:20]
    )
    return {
        "pipeline": pipeline,
        "version": versions[0],
        "spec": versions[0].spec,
        "versions": versions,
        "environments": environments,
        "env_rows": [(e, current.get(e.id)) for e in environments],
        "deployments": deployments,
        "any_deploying": any(d.is_active for d in deployments),
        "runs": run_list,
        "any_running": any(r.is_active for r in run_list),
    }


def catalog_list() -> list[SourceTable]:
    return list(
        SourceTable.objects.select_related("database")
        .prefetch_related("columns")
        .order_by("database__name", "schema", "name")
    )
