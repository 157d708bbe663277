"""Release pages: promote a version (with the live readiness checklist), roll back, upgrade the
template, and the overview of pipelines left on an older template."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from pipelines.authoring import services as authoring
from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.core.forms import unknown_fields_error
from pipelines.dashboards import selectors
from pipelines.deployments.models import Environment
from pipelines.releases import checklist as readiness
from pipelines.releases import selectors as release_selectors
from pipelines.releases import services as releases
from pipelines.releases.forms import PromotionForm
from pipelines.web.access import checklist_pipeline, editable_pipeline


def _version(pipeline: Pipeline, raw: str) -> PipelineVersion:
    """The version a form names by number; 404 for anything else (not a number: not a 500)."""
    number = int(raw) if raw.isascii() and raw.isdigit() else 0
    return get_object_or_404(pipeline.versions, number=number)


def _checklist_context(pipeline: Pipeline, form: PromotionForm) -> dict[str, Any]:
    environment, version = form.chosen()
    context: dict[str, Any] = {
        "pipeline": pipeline,
        "chosen_environment": environment,
        "chosen_version": version,
    }
    if environment is None or version is None:
        return context
    items = readiness.checklist(version, environment)
    return context | {
        "items": items,
        "blocking": readiness.blocking_failures(items),
        "source": readiness.source_environment(environment),
        "change": release_selectors.environment_change(pipeline, version, environment),
    }


@require_http_methods(["GET", "POST"])
@login_required
def promote(request: HttpRequest, slug: str) -> HttpResponse:
    """Ask for a version in an approval environment; the checklist is shown as it stands now."""
    pipeline = editable_pipeline(request, slug)
    if request.method == "POST":
        form = PromotionForm(request.POST, pipeline=pipeline)
        if form.is_valid():
            data = form.cleaned_data
            try:
                promotion = releases.promotion_request(
                    version=data["version"],
                    environment=data["environment"],
                    by=request.user,
                    reason=data["reason"],
                )
            except releases.ReleaseError as exc:
                if exc.status == 403:
                    raise PermissionDenied(exc.message) from None
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(
                    request,
                    f"Promotion of version {promotion.version.number} to "
                    f"{promotion.environment.name} requested: an approver of team "
                    f"{pipeline.team.name} other than you decides it.",
                )
                return redirect(pipeline)
    else:
        asked = request.GET
        initial = {name: asked[name][:50] for name in ("environment", "version") if name in asked}
        form = PromotionForm(pipeline=pipeline, initial=initial)
    context = _checklist_context(pipeline, form) | {"form": form}
    return render(request, "pipelines/promote.html", context)


@require_GET
@login_required
def promote_checklist(request: HttpRequest, slug: str) -> HttpResponse:
    """The checklist and the change for the environment and version the form shows (htmx)."""
    pipeline = checklist_pipeline(request, slug)
    form = PromotionForm(request.GET, pipeline=pipeline)
    return render(request, "pipelines/_promote_checklist.html", _checklist_context(pipeline, form))


@require_POST
@login_required
def rollback(request: HttpRequest, slug: str) -> HttpResponse:
    """Return an environment to a version that ran there; the outcome is a message."""
    pipeline = editable_pipeline(request, slug)
    environment = get_object_or_404(Environment, slug=request.POST.get("environment", "")[:50])
    version = _version(pipeline, request.POST.get("version", ""))
    if unknown := unknown_fields_error(request.POST, ("environment", "version")):
        messages.error(request, unknown)
        return redirect(pipeline)
    try:
        releases.rollback(
            pipeline=pipeline, environment=environment, version=version, by=request.user
        )
    except releases.ReleaseError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            f"Rolling {environment.name} back to version {version.number}: the deployment "
            "below shows when Airflow has it.",
        )
    return redirect(pipeline)


@require_POST
@login_required
def upgrade(request: HttpRequest, slug: str) -> HttpResponse:
    """Make the next version on the current template (same spec)."""
    pipeline = editable_pipeline(request, slug)
    if unknown := unknown_fields_error(request.POST, ()):
        messages.error(request, unknown)
        return redirect(pipeline)
    version = authoring.pipeline_upgrade(pipeline=pipeline, by=request.user)
    if version is None:
        messages.info(request, "Already on the current template: nothing to upgrade.")
    else:
        messages.success(
            request,
            f"Version {version.number} made on template {version.template_label}: deploy it "
            "to the first environment, then promote it as usual.",
        )
    return redirect(pipeline)


@require_GET
@login_required
def upgrades(request: HttpRequest) -> HttpResponse:
    """Pipelines whose newest version is on an older template."""
    return render(request, "pipelines/upgrades.html", selectors.upgrades_list(user=request.user))
