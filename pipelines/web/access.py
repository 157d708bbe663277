"""What a view may show or change for its user, answered with the HTTP error a page gives (the
rules themselves are core.access's)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from pipelines.authoring.models import Pipeline
from pipelines.core import access


def editable_pipeline(request: HttpRequest, slug: str) -> Pipeline:
    """The pipeline `slug` (with its team and owner) if the user may change it: 404 if there is
    none, 403 if the user is not a member of its team."""
    pipeline = get_object_or_404(Pipeline.objects.select_related("team", "owner"), slug=slug)
    if not access.can_edit(request.user, pipeline):
        raise PermissionDenied(f"Only members of team {pipeline.team.name} may change this.")
    return pipeline


def backfillable_pipeline(request: HttpRequest, slug: str) -> Pipeline:
    """The pipeline `slug` if the user may backfill it (a member of its team or a platform
    admin): 404 if there is none, 403 otherwise."""
    pipeline = get_object_or_404(Pipeline.objects.select_related("team", "owner"), slug=slug)
    if not access.can_backfill(request.user, pipeline):
        raise PermissionDenied(
            f"Only members of team {pipeline.team.name} or a platform admin may backfill this."
        )
    return pipeline
