"""JSON API of run now under four eyes: which case a run is before it is submitted, and the
decision on one awaiting approval (a ninja Router that v1.py adds to its `api`, so the Bearer
auth applies). Filing a run is `POST /pipelines/{slug}/runs` in v1.py; both read the run page's
form (RunNowForm) and the same service (releases.runs), so the sentences are the page's.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from pipelines.api.releases import REFUSED, DecisionIn, refused
from pipelines.api.v1 import (
    ErrorsOut,
    RunIn,
    RunOut,
    editable_pipeline,
    form_errors,
    require_scope,
    run_out,
)
from pipelines.releases import runs as run_approvals
from pipelines.releases.forms import DecisionForm
from pipelines.releases.services import ReleaseError
from pipelines.runs import services as runs
from pipelines.runs.forms import RunNowForm
from pipelines.runs.models import RunRequest

router = Router(tags=["runs"])


class RunCaseOut(Schema):
    partition: str = Field(description="The partition, spelled as the pipeline's grain says.")
    needs_approval: bool = Field(
        description="True: the request would wait for an approver (state awaiting_approval)."
    )
    message: str = Field(description="Which case applies and why, as the page says it.")


@router.post(
    "/pipelines/{slug}/runs/preview",
    response={200: RunCaseOut, 422: ErrorsOut},
    description="Say, before submitting, what POST /pipelines/{slug}/runs would do with this "
    "payload: run at once, or wait for an approver (and why). Nothing is filed. 422: what the "
    "submit would refuse (a malformed or incomplete partition, not deployed, a backfill there "
    "covers the partition).",
)
def run_preview(request: HttpRequest, slug: str, payload: RunIn) -> Any:
    pipeline = editable_pipeline(request, slug)
    form = RunNowForm(payload.dict(), pipeline=pipeline)
    if not form.is_valid():
        return Status(422, {"errors": form_errors(form)})
    try:
        case = run_approvals.run_case(**form.asked())
    except runs.RunError as exc:
        return Status(422, {"errors": {exc.field: [exc.message]}})
    return case.as_json()


def _answer(run_id: int) -> dict[str, Any]:
    run = RunRequest.objects.select_related(
        "pipeline", "environment", "requested_by", "decided_by"
    ).get(id=run_id)
    return run_out(run)


def _decision(request: HttpRequest, payload: DecisionIn | None, decide: Any) -> Any:
    require_scope(request, "approve")
    form = DecisionForm({"comment": payload.comment if payload else ""})
    if not form.is_valid():  # the page's form: the same sentence for an overlong comment
        return Status(422, {"errors": form_errors(form)})
    try:
        run = decide(form.cleaned_data["comment"])
    except ReleaseError as exc:
        return refused(exc)
    return _answer(run.id)


@router.post(
    "/runs/{run_id}/approve",
    response={200: RunOut, 422: ErrorsOut, **REFUSED},
    description="Approve a run awaiting approval: it goes to Airflow (a token with the approve "
    "scope). 403: not an approver of the team, your own request, or the token lacks the approve "
    "scope. 409: already decided, or stale (the partition's runs "
    "changed, another version was deployed, or a backfill now covers it).",
)
def run_approve(request: HttpRequest, run_id: int, payload: DecisionIn | None = None) -> Any:
    return _decision(
        request,
        payload,
        lambda comment: run_approvals.run_approve(run_id=run_id, by=request.user, comment=comment),
    )


@router.post(
    "/runs/{run_id}/reject",
    response={200: RunOut, 422: ErrorsOut, **REFUSED},
    description="Reject with a comment (required: the requester reads it). Needs a token with "
    "the approve scope.",
)
def run_reject(request: HttpRequest, run_id: int, payload: DecisionIn | None = None) -> Any:
    return _decision(
        request,
        payload,
        lambda comment: run_approvals.run_reject(run_id=run_id, by=request.user, comment=comment),
    )


@router.post(
    "/runs/{run_id}/withdraw",
    response={200: RunOut, 422: ErrorsOut, **REFUSED},
    description="The requester takes back a run still awaiting approval.",
)
def run_withdraw(request: HttpRequest, run_id: int) -> Any:
    try:
        run = run_approvals.run_withdraw(run_id=run_id, by=request.user)
    except ReleaseError as exc:
        return refused(exc)
    return _answer(run.id)
