"""Reads of promotions: the approvals queue, the nav badge and one request's page.

Who may decide a request is the services' rule (an approver of the team or a platform admin,
not the requester); these reads answer it for many rows at once without a query per row.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from pipelines.authoring.codegen import CodegenError
from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.backfills import selectors as backfill_selectors
from pipelines.core import access
from pipelines.core.models import Membership
from pipelines.deployments.models import Environment
from pipelines.deployments.selectors import NOT_COMPARED, shown_value, version_diff
from pipelines.deployments.services import render_for
from pipelines.releases import checklist as readiness
from pipelines.releases import services
from pipelines.releases.models import Promotion
from pipelines.runs.models import RunRequest

QUEUE_ORDER = ["-requested_at", "-id"]
# The queue's state filter: one state, or every state.
QUEUE_STATES = (*Promotion.State.values, "all")


def promotion_queryset(
    *, state: str = Promotion.State.PENDING, environment: str = "", pipeline: str = ""
) -> QuerySet[Promotion]:
    """Requests in `state` ("all": any) into `environment` of `pipeline` (slugs; empty: any),
    newest first, with what a queue row shows."""
    rows = Promotion.objects.select_related(
        "pipeline__team", "version", "environment", "source_environment", "requested_by"
    )
    if state != "all":
        rows = rows.filter(state=state)
    if environment:
        rows = rows.filter(environment__slug=environment)
    if pipeline:
        rows = rows.filter(pipeline__slug=pipeline)
    return rows.order_by(*QUEUE_ORDER)


def approver_team_ids(user: object) -> set[int]:
    """The teams whose promotions `user` approves (one query; none for a visitor)."""
    if not getattr(user, "is_authenticated", False):
        return set()
    return set(
        Membership.objects.filter(user=user, role=Membership.Role.APPROVER).values_list(
            "team_id", flat=True
        )
    )


def may_decide(user: object, promotion: Promotion, approver_teams: set[int]) -> bool:
    """Whether `user` may approve or reject `promotion` now (core.access.may_decide, no query:
    `approver_teams` is `approver_team_ids(user)`)."""
    return promotion.is_pending and access.may_decide(user, promotion, approver_teams)


def run_may_decide(user: object, run: RunRequest, approver_teams: set[int]) -> bool:
    """Whether `user` may approve or reject the run-now request `run` now (no query)."""
    return run.state == RunRequest.State.AWAITING_APPROVAL and access.may_decide(
        user, run, approver_teams
    )


def runs_awaiting_approval(*, environment: str = "", pipeline: str = "") -> list[RunRequest]:
    """Run-now requests waiting for an approver, newest first (one query, at most 100)."""
    rows = RunRequest.objects.filter(state=RunRequest.State.AWAITING_APPROVAL).select_related(
        "pipeline__team", "environment", "requested_by"
    )
    if environment:
        rows = rows.filter(environment__slug=environment)
    if pipeline:
        rows = rows.filter(pipeline__slug=pipeline)
    return list(rows.order_by("-requested_at", "-id")[:100])


def promotion_pending_count(*, user: object) -> int:
    """How many requests `user` may decide (promotions, backfills, run-now re-loads): the nav
    badge, in one query."""
    if not getattr(user, "is_authenticated", False):
        return 0
    pending = access.decidable_by(user, Promotion.objects.filter(state=Promotion.State.PENDING))
    backfills = backfill_selectors.decidable_queryset(user=user)
    runs = access.decidable_by(
        user, RunRequest.objects.filter(state=RunRequest.State.AWAITING_APPROVAL)
    )
    # No ORDER BY inside the UNION: SQLite refuses one in a compound statement's parts.
    return (
        pending.order_by()
        .values("id")
        .union(backfills.order_by().values("id"), runs.order_by().values("id"), all=True)
        .count()
    )


def promotion_get(*, promotion_id: int) -> Promotion:
    """The request with everything its page shows about it; 404 if there is none."""
    return get_object_or_404(
        Promotion.objects.select_related(
            "pipeline__team",
            "version",
            "environment",
            "source_environment",
            "requested_by",
            "decided_by",
            "deployment__version",
        ),
        id=promotion_id,
    )


def environment_change(
    pipeline: Pipeline, version: PipelineVersion, environment: Environment
) -> dict[str, Any]:
    """What deploying `version` changes in `environment`: the version running there now
    against it (spec field by field, the DAG as rendered there).

    `first` when nothing runs there yet (the spec and the code are shown whole); `same` when
    `version` already runs there; `error` when a version no longer renders.
    """
    current = services.current_deployment(pipeline, environment)
    diff: dict[str, Any] = {"current": current, "first": current is None, "same": False}
    try:
        if current is None:
            spec = version.spec_json
            diff["spec"] = [
                {"field": key, "before": "", "after": shown_value(spec[key])}
                for key in sorted(spec.keys() - NOT_COMPARED)
            ]
            diff["source"] = render_for(version, environment).source
        elif current.version_id == version.id:
            diff["same"] = True
        else:
            diff |= version_diff(before=current.version, after=version, environment=environment)
    except CodegenError as exc:
        diff["error"] = f"The DAG does not render for {environment.name}: {exc}"
    return diff


def promotion_diff(promotion: Promotion) -> dict[str, Any]:
    """What approving `promotion` changes in its target environment."""
    return environment_change(promotion.pipeline, promotion.version, promotion.environment)


def promotion_page(*, promotion: Promotion, user: object) -> dict[str, Any]:
    """What /promotions/<id>/ shows: the request, its checklists, staleness, the diff."""
    may = may_decide(user, promotion, approver_team_ids(user))
    return {
        "promotion": promotion,
        "pipeline": promotion.pipeline,
        "checklist_then": promotion.checklist,
        "checklist_decided": promotion.decision_checklist,
        "checklist_now": readiness.checklist(promotion.version, promotion.environment),
        "stale": services.staleness(promotion) if promotion.is_pending else None,
        "diff": promotion_diff(promotion),
        "may_decide": may,
        "is_requester": promotion.requested_by_id == getattr(user, "pk", None),
    }
