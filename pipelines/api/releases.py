"""JSON API of releases: promotions and their approvals queue, rollback, template upgrade and the
readiness checklist (a ninja Router that v1.py adds to its `api`, so the Bearer auth applies).

Every refusal comes from pipelines.releases.services.ReleaseError, whose `status` is the answer:
422 puts the message under its field (with the checklist when a blocking check is the reason),
403, 404 and 409 answer {"detail"} (a 409 carries the checklist too when it is the reason).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from pipelines.api.v1 import (
    DeploymentOut,
    EditOut,
    ErrorsOut,
    InputSchema,
    allowed_pipeline,
    deployment_out,
    editable_pipeline,
    filtered_page,
    form_errors,
    require_scope,
)
from pipelines.authoring import services as authoring
from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.core import access
from pipelines.dashboards.forms import PromotionFilterForm
from pipelines.deployments.models import Environment
from pipelines.releases import checklist as readiness
from pipelines.releases import selectors, services
from pipelines.releases.forms import COMMENT_MAX, REASON_MAX, DecisionForm, PromotionForm
from pipelines.releases.models import Promotion

router = Router(tags=["releases"])


# --- What the API reads ----------------------------------------------------------------------


class PromotionIn(InputSchema):
    """Checked by PromotionForm, the promote page's form: the same fields, the same messages."""

    environment: str = Field(description="Slug of an environment that requires approval.")
    version: int = Field(description="Number of the pipeline version to promote.")
    reason: str = Field(
        description=str(PromotionForm.base_fields["reason"].help_text),
        json_schema_extra={"maxLength": REASON_MAX},
    )


class DecisionIn(InputSchema):
    comment: str = Field(
        "",
        description="Optional when approving; required when rejecting (the requester reads it).",
        json_schema_extra={"maxLength": COMMENT_MAX},
    )


class RollbackIn(InputSchema):
    environment: str = Field(description="Slug of the environment to roll back.")
    version: int = Field(
        description="A version that ran in the environment before, or was approved there."
    )


# --- What it answers -------------------------------------------------------------------------


class ChecklistItemOut(Schema):
    check: str = Field(description="The check's stable name, e.g. successful_run.")
    label: str
    ok: bool
    blocking: bool = Field(description="A failing blocking item refuses the promotion.")
    reason: str


class ChecklistOut(Schema):
    pipeline: str
    version: int
    environment: str
    source_environment: str | None = Field(description="Where runs and freshness are read.")
    ready: bool = Field(description="No blocking item fails.")
    checklist: list[ChecklistItemOut]


class PromotionDeploymentOut(Schema):
    id: int
    state: str = Field(description="pending, deploying, deployed, failed or superseded.")


class PromotionOut(Schema):
    id: int
    pipeline: str
    version: int
    environment: str
    source_environment: str | None
    state: str = Field(description="pending, approved, rejected or withdrawn.")
    reason: str
    requested_by: str
    requested_at: datetime
    checklist: list[ChecklistItemOut] = Field(description="As evaluated when it was filed.")
    decided_by: str | None
    decided_at: datetime | None
    decision_comment: str
    decision_checklist: list[ChecklistItemOut] | None = Field(
        description="As evaluated at the approval; null otherwise."
    )
    deployment: PromotionDeploymentOut | None = Field(
        description="The deployment the approval requested."
    )


class PromotionPage(Schema):
    count: int
    page: int
    pages: int
    results: list[PromotionOut]


class PromotionErrorsOut(Schema):
    errors: dict[str, list[str]] = Field(description="Messages per field; __all__ for the rest.")
    checklist: list[ChecklistItemOut] = Field(
        default_factory=list, description="The evaluated checklist when a blocking item failed."
    )


class DetailOut(Schema):
    detail: str


class ConflictOut(Schema):
    detail: str
    checklist: list[ChecklistItemOut] = Field(
        default_factory=list, description="The checklist now, when a failing check is the reason."
    )


REFUSED: dict[int, Any] = {403: DetailOut, 404: DetailOut, 409: ConflictOut}
CHECKLIST_REFUSAL = (
    "Only members of team {team} or a platform admin may read the checklists of {slug}."
)


def items_out(items: list[readiness.Item]) -> list[dict[str, Any]]:
    return [item.as_json() for item in items]


def refused(exc: services.ReleaseError) -> Status:
    """The answer for a refusal, by its status."""
    if exc.status == 422:
        body: dict[str, Any] = {"errors": {exc.field or "__all__": [exc.message]}}
        if exc.checklist:
            body["checklist"] = items_out(exc.checklist)
        return Status(422, body)
    if exc.status == 409:
        return Status(409, {"detail": exc.message, "checklist": items_out(exc.checklist)})
    return Status(exc.status, {"detail": exc.message})


def promotion_out(p: Promotion) -> dict[str, Any]:
    return {
        "id": p.id,
        "pipeline": p.pipeline.slug,
        "version": p.version.number,
        "environment": p.environment.slug,
        "source_environment": p.source_environment.slug if p.source_environment else None,
        "state": p.state,
        "reason": p.reason,
        "requested_by": p.requested_by.get_username(),
        "requested_at": p.requested_at,
        "checklist": p.checklist,
        "decided_by": p.decided_by.get_username() if p.decided_by else None,
        "decided_at": p.decided_at,
        "decision_comment": p.decision_comment,
        "decision_checklist": p.decision_checklist,
        "deployment": (
            {"id": p.deployment.id, "state": p.deployment.state} if p.deployment else None
        ),
    }


def target_of(
    pipeline: Pipeline, environment: str, number: int | None
) -> tuple[Environment | None, PipelineVersion | None, dict[str, list[str]]]:
    """The environment and version a request names (the newest without a number), or errors."""
    env = Environment.objects.filter(slug=environment).first()
    versions = pipeline.versions.order_by("-number")
    version = versions.first() if number is None else versions.filter(number=number).first()
    errors = {}
    if env is None:
        errors["environment"] = [f"No environment “{environment}”."]
    if version is None:
        errors["version"] = [f"{pipeline.slug} has no version {number}."]
    return env, version, errors


# --- Promotions ------------------------------------------------------------------------------


@router.post(
    "/pipelines/{slug}/promotions",
    response={201: PromotionOut, 422: PromotionErrorsOut, **REFUSED},
    description="File a promotion of a version into an environment that requires approval. "
    "422: a blocking checklist item fails (the checklist rides along), or the version already "
    "runs there. 409: a request for the pipeline and environment is pending.",
)
def promotion_create(request: HttpRequest, slug: str, payload: PromotionIn) -> Any:
    pipeline = editable_pipeline(request, slug)
    form = PromotionForm({**payload.dict(), "version": str(payload.version)}, pipeline=pipeline)
    if not form.is_valid():
        return Status(422, {"errors": form_errors(form)})
    try:
        promotion = services.promotion_request(by=request.user, **form.cleaned_data)
    except services.ReleaseError as exc:
        return refused(exc)
    return Status(201, promotion_out(promotion))


@router.get("/promotions", response={200: PromotionPage, 422: ErrorsOut})
def promotion_list(
    request: HttpRequest,
    state: str = "pending",
    environment: str = "",
    pipeline: str = "",
    page: str = "1",
) -> Any:
    """The approvals queue, newest first; state=pending|approved|rejected|withdrawn|all; 50 per
    page (page: a number or last). Only requests whose checklist the caller may read (their
    teams' pipelines; all for a platform admin)."""
    form = PromotionFilterForm(
        {"state": state, "environment": environment, "pipeline": pipeline, "page": page}
    )
    return filtered_page(
        request,
        form,
        lambda filters: (
            selectors.promotion_queryset(**filters)
            .filter(access.checklist_readers(request.user))
            .select_related("decided_by", "deployment")
        ),
        promotion_out,
    )


@router.get(
    "/promotions/{promotion_id}",
    response={200: PromotionOut, 403: DetailOut, 404: DetailOut},
    description="403: the request carries its checklist, which only the pipeline's team and "
    "platform admins read.",
)
def promotion_get(request: HttpRequest, promotion_id: int) -> Any:
    promotion = selectors.promotion_get(promotion_id=promotion_id)
    if not access.can_read_checklist(request.user, promotion.pipeline):
        return Status(
            403,
            {
                "detail": CHECKLIST_REFUSAL.format(
                    team=promotion.pipeline.team.slug, slug=promotion.pipeline.slug
                )
            },
        )
    return promotion_out(promotion)


def decided(promotion: Promotion) -> dict[str, Any]:
    """The decided request as its page shows it (the service's row, re-read with relations)."""
    return promotion_out(selectors.promotion_get(promotion_id=promotion.id))


@router.post(
    "/promotions/{promotion_id}/approve",
    response={200: PromotionOut, 422: ErrorsOut, **REFUSED},
    description="Approve and deploy (a token with the approve scope). 403: not an approver of "
    "the team, your own request, or the token lacks the approve scope. "
    "409: already decided, or stale (deployed to since, or a blocking check fails now).",
)
def promotion_approve(
    request: HttpRequest, promotion_id: int, payload: DecisionIn | None = None
) -> Any:
    require_scope(request, "approve")
    form = DecisionForm({"comment": payload.comment if payload else ""})
    if not form.is_valid():  # the page's form: the same sentence for an overlong comment
        return Status(422, {"errors": form_errors(form)})
    comment = form.cleaned_data["comment"]
    try:
        promotion = services.promotion_approve(
            promotion_id=promotion_id, by=request.user, comment=comment
        )
    except services.ReleaseError as exc:
        return refused(exc)
    return decided(promotion)


@router.post(
    "/promotions/{promotion_id}/reject",
    response={200: PromotionOut, 422: ErrorsOut, **REFUSED},
    description="Reject with a comment (required: the requester reads it). Needs a token with "
    "the approve scope.",
)
def promotion_reject(
    request: HttpRequest, promotion_id: int, payload: DecisionIn | None = None
) -> Any:
    require_scope(request, "approve")
    form = DecisionForm({"comment": payload.comment if payload else ""})
    if not form.is_valid():
        return Status(422, {"errors": form_errors(form)})
    comment = form.cleaned_data["comment"]
    try:
        promotion = services.promotion_reject(
            promotion_id=promotion_id, by=request.user, comment=comment
        )
    except services.ReleaseError as exc:
        return refused(exc)
    return decided(promotion)


@router.post(
    "/promotions/{promotion_id}/withdraw",
    response={200: PromotionOut, 422: ErrorsOut, **REFUSED},
    description="The requester (or a platform admin) takes a pending request back.",
)
def promotion_withdraw(request: HttpRequest, promotion_id: int) -> Any:
    try:
        promotion = services.promotion_withdraw(promotion_id=promotion_id, by=request.user)
    except services.ReleaseError as exc:
        return refused(exc)
    return decided(promotion)


# --- Rollback, upgrade, checklist ------------------------------------------------------------


@router.post(
    "/pipelines/{slug}/rollback",
    response={202: DeploymentOut, 422: ErrorsOut, **REFUSED},
    description="Return an environment to a version that ran there before (or was approved "
    "there), without a new approval. 403: any other version into an environment that requires "
    "approval: file a promotion.",
)
def rollback_create(request: HttpRequest, slug: str, payload: RollbackIn) -> Any:
    pipeline = editable_pipeline(request, slug)
    env, version, errors = target_of(pipeline, payload.environment, payload.version)
    if errors:
        return Status(422, {"errors": errors})
    try:
        deployment = services.rollback(
            pipeline=pipeline, environment=env, version=version, by=request.user
        )
    except services.ReleaseError as exc:
        return refused(exc)
    return Status(202, deployment_out(deployment))


@router.post(
    "/pipelines/{slug}/upgrade",
    response={200: EditOut, 201: EditOut, 403: DetailOut, 404: DetailOut},
    description="Make the next version with the newest spec on the current template (201). "
    "200 with created=false: the newest version is on it already.",
)
def pipeline_upgrade(request: HttpRequest, slug: str) -> Any:
    pipeline = editable_pipeline(request, slug)
    version = authoring.pipeline_upgrade(pipeline=pipeline, by=request.user)
    if version is None:
        newest = pipeline.versions.order_by("-number").first()
        return Status(200, {"version": newest.number, "created": False})
    return Status(201, {"version": version.number, "created": True})


@router.get(
    "/pipelines/{slug}/checklist",
    response={200: ChecklistOut, 422: ErrorsOut, 403: DetailOut, 404: DetailOut},
    description="The readiness checklist now, for a version (default: the newest) going to an "
    "environment, as the promote form shows it. 403: not a member of the pipeline's team nor a "
    "platform admin (the promote page's rule).",
)
def checklist_get(
    request: HttpRequest, slug: str, environment: str, version: int | None = None
) -> Any:
    pipeline = allowed_pipeline(request, slug, access.can_read_checklist, CHECKLIST_REFUSAL)
    env, found, errors = target_of(pipeline, environment, version)
    if errors:
        return Status(422, {"errors": errors})
    items = readiness.checklist(found, env)
    source = readiness.source_environment(env)
    return {
        "pipeline": pipeline.slug,
        "version": found.number,
        "environment": env.slug,
        "source_environment": source.slug if source else None,
        "ready": not readiness.blocking_failures(items),
        "checklist": items_out(items),
    }
