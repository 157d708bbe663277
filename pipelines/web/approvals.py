"""The approvals queue and one promotion's page, where approvers decide and requesters withdraw.

Decisions are plain form posts to the releases services, answered as web.decisions says: a
refusal renders the promotion's page again with the message and the service's status.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from pipelines.backfills import selectors as backfill_selectors
from pipelines.dashboards.forms import PromotionFilterForm
from pipelines.dashboards.selectors import keyset_page
from pipelines.deployments.models import Environment
from pipelines.releases import selectors
from pipelines.releases import services as releases
from pipelines.releases.forms import DecisionForm
from pipelines.releases.models import Promotion
from pipelines.web.decisions import decision_answer


@require_GET
@login_required
def approval_queue(request: HttpRequest) -> HttpResponse:
    """Promotions by state (pending unless asked) and environment, newest first, each saying
    whether the viewer may decide it; the backfills and run-now re-loads awaiting approval."""
    return queue_page(request)


def queue_page(request: HttpRequest, *, status: int = 200, error: str = "") -> HttpResponse:
    """The approvals queue, with `error` (a refused decision) above it and `status`."""
    form = PromotionFilterForm(request.GET)
    values = form.values
    filters = {name: values[name] for name in ("state", "environment", "pipeline")}
    page = keyset_page(
        selectors.promotion_queryset(**filters),
        selectors.QUEUE_ORDER,
        query=filters,
        page=str(values["page"]),
        after=values["after"],
        before=values["before"],
    )
    teams = selectors.approver_team_ids(request.user)
    scope = {"environment": filters["environment"], "pipeline": filters["pipeline"]}
    context = {
        "form": form,
        "filters": filters,
        "page": page,
        "error": error,
        "rows": [(p, selectors.may_decide(request.user, p, teams)) for p in page.object_list],
        "backfill_rows": [
            (b, backfill_selectors.may_decide(request.user, b, teams))
            for b in backfill_selectors.awaiting_approval(**scope)
        ],
        "run_rows": [
            (r, selectors.run_may_decide(request.user, r, teams))
            for r in selectors.runs_awaiting_approval(**scope)
        ],
        "states": selectors.QUEUE_STATES,
        "environments": Environment.objects.filter(requires_approval=True).order_by("order"),
    }
    return render(request, "pipelines/approvals.html", context, status=status)


@require_GET
def approvals_badge(request: HttpRequest) -> HttpResponse:
    """The nav's count of requests the viewer may decide, which base.html loads after the page
    so that no page pays for its query; empty when there is none to decide.

    A visitor gets the empty badge, not a login redirect: a page drawn before the session
    ended would swap the login page into its nav.
    """
    count = selectors.promotion_pending_count(user=request.user)
    return render(request, "pipelines/_approvals_badge.html", {"count": count})


def _page(
    request: HttpRequest,
    promotion: Promotion,
    *,
    status: int = 200,
    error: str = "",
    posted: dict[str, DecisionForm] | None = None,
) -> HttpResponse:
    posted = posted or {}
    context = selectors.promotion_page(promotion=promotion, user=request.user) | {
        "error": error,
        "approve_form": posted.get("approve") or DecisionForm(auto_id="approve_%s"),
        "reject_form": posted.get("reject") or DecisionForm(auto_id="reject_%s"),
    }
    return render(request, "pipelines/promotion.html", context, status=status)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def promotion_detail(request: HttpRequest, promotion_id: int) -> HttpResponse:
    """The request, its checklists, and what approving would change; htmx polls the
    deployment's state alone."""
    promotion = selectors.promotion_get(promotion_id=promotion_id)
    if request.htmx:
        return render(request, "pipelines/_approval_deployment.html", {"promotion": promotion})
    return _page(request, promotion)


def _decide(
    request: HttpRequest,
    promotion_id: int,
    action: str,
    decide: Callable[[str], Promotion],
    done: str,
) -> HttpResponse:
    """Call `decide(comment)`; on success say `done` and show the page, on a refusal render the
    page with the reason and the refusal's status."""

    def refused(status: int, error: str, form: DecisionForm) -> HttpResponse:
        promotion = selectors.promotion_get(promotion_id=promotion_id)
        return _page(request, promotion, status=status, error=error, posted={action: form})

    then = reverse("pipelines:promotion", args=[promotion_id])
    return decision_answer(request, action, decide, done=done, then=then, refused=refused)


@require_POST
@login_required
def promotion_approve(request: HttpRequest, promotion_id: int) -> HttpResponse:
    def approve(comment: str) -> Promotion:
        return releases.promotion_approve(
            promotion_id=promotion_id, by=request.user, comment=comment
        )

    done = "Approved: the version is being deployed; its state shows below."
    return _decide(request, promotion_id, "approve", approve, done)


@require_POST
@login_required
def promotion_reject(request: HttpRequest, promotion_id: int) -> HttpResponse:
    def reject(comment: str) -> Promotion:
        return releases.promotion_reject(
            promotion_id=promotion_id, by=request.user, comment=comment
        )

    done = "Rejected: the requester is told why."
    return _decide(request, promotion_id, "reject", reject, done)


@require_POST
@login_required
def promotion_withdraw(request: HttpRequest, promotion_id: int) -> HttpResponse:
    def withdraw(_comment: str) -> Promotion:
        return releases.promotion_withdraw(promotion_id=promotion_id, by=request.user)

    done = "Withdrawn: file a new request when the version is ready again."
    return _decide(request, promotion_id, "withdraw", withdraw, done)
