"""What a view may show or change for its user, answered with the HTTP error a page gives (the
rules themselves are core.access's)."""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from pipelines.authoring.models import Pipeline
from pipelines.core import access


def _allowed_pipeline(
    request: HttpRequest, slug: str, rule: Callable[[object, Pipeline], bool], refusal: str
) -> Pipeline:
    """The pipeline `slug` (with its team and owner) if `rule` lets the user at it: 404 if there
    is none, 403 with `refusal` (which may name {team}) otherwise."""
    pipeline = get_object_or_404(Pipeline.objects.select_related("team", "owner"), slug=slug)
    if not rule(request.user, pipeline):
        raise PermissionDenied(refusal.format(team=pipeline.team.name))
    return pipeline


def editable_pipeline(request: HttpRequest, slug: str) -> Pipeline:
    """The pipeline if the user may change it (a member of its team)."""
    return _allowed_pipeline(
        request, slug, access.can_edit, "Only members of team {team} may change this."
    )


def backfillable_pipeline(request: HttpRequest, slug: str) -> Pipeline:
    """The pipeline if the user may backfill it (a member of its team or a platform admin)."""
    return _allowed_pipeline(
        request,
        slug,
        access.can_backfill,
        "Only members of team {team} or a platform admin may backfill this.",
    )


def checklist_pipeline(request: HttpRequest, slug: str) -> Pipeline:
    """The pipeline if the user may read its readiness checklist (its team, a platform admin)."""
    return _allowed_pipeline(
        request,
        slug,
        access.can_read_checklist,
        "Only members of team {team} or a platform admin may read this checklist.",
    )
