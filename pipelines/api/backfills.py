"""JSON API of backfills: preview, submit, follow, pause / resume / cancel, and the approval of a
backfill into an environment that requires one (a ninja Router that v1.py adds to its `api`, so
the Bearer auth applies).

The payload is checked by BackfillForm, the backfill page's form, then by backfills.services: the
same fields and the same sentences as the page. A BackfillError's `errors` ({field: message}) is a
422 {"errors": {field: [message]}}; its 409 is {"detail"} with the new "preview" when the set of
runs changed since the one submitted; 403 and 404 are {"detail"}. Approvals are releases'
(ReleaseError, the promotions' rules).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from pipelines.api.releases import DecisionIn, DetailOut
from pipelines.api.v1 import (
    ErrorsOut,
    InputSchema,
    allowed_pipeline,
    filtered_page,
    form_errors,
    require_scope,
)
from pipelines.backfills import selectors
from pipelines.backfills import services as backfills
from pipelines.backfills.forms import MAX_ACTIVE_RUNS, REASON_MAX, BackfillForm
from pipelines.backfills.models import Backfill
from pipelines.core import access
from pipelines.dashboards.forms import BackfillFilterForm
from pipelines.releases import services as releases
from pipelines.releases.forms import DecisionForm

router = Router(tags=["backfills"])


def form_help(name: str) -> str:
    return str(BackfillForm.base_fields[name].help_text)


# --- What the API reads ----------------------------------------------------------------------


class BackfillPreviewIn(InputSchema):
    """Checked by BackfillForm, the backfill page's form: the same fields, the same messages."""

    environment: str = Field(description="Slug of an environment the pipeline is deployed to.")
    start: str = Field(description="First partition: YYYY-MM-DD, or YYYY-MM-DDTHH:00 (hourly).")
    end: str = Field(description="Last partition, included; the same format as start.")
    reprocess: str = Field(
        Backfill.Reprocess.MISSING,
        description=form_help("reprocess"),
        json_schema_extra={"enum": list(Backfill.Reprocess.values)},
    )
    max_active_runs: int = Field(
        1,
        description=form_help("max_active_runs"),
        json_schema_extra={"minimum": 1, "maximum": MAX_ACTIVE_RUNS},
    )
    allow_over_cap: bool = Field(
        False,
        description="More partitions than the environment's cap allows (platform admins only).",
    )


class BackfillIn(BackfillPreviewIn):
    reason: str = Field(
        description="Why: shown with the backfill and in the audit log.",
        json_schema_extra={"maxLength": REASON_MAX},
    )
    fingerprint: str = Field(
        description="The preview's fingerprint: the submit is refused (409, with the new "
        "preview) when what would run changed since.",
        json_schema_extra={"maxLength": 64},
    )


# --- What it answers -------------------------------------------------------------------------


class PreviewOut(Schema):
    environment: str
    start: str
    end: str
    reprocess: str
    max_active_runs: int
    partitions: int = Field(description="Partitions the backfill's runs load.")
    runs: int = Field(description="Runs Airflow creates.")
    first: list[str] = Field(description="The first few partitions it loads.")
    last: list[str] = Field(description="The last few partitions it loads (when more than few).")
    loaded: int = Field(description="Partitions in the range loaded now.")
    failed: int = Field(description="Partitions in the range whose run failed.")
    running: int = Field(description="Partitions in the range whose run is not finished.")
    missing: int = Field(description="Partitions in the range with no run.")
    estimate_seconds: float | None = Field(
        description="From the pipeline's typical run time at this concurrency; null: unknown."
    )
    next_run: datetime | None = Field(description="The next scheduled run there.")
    sla_deadline: datetime | None = Field(description="That run's SLA deadline.")
    fingerprint: str = Field(description="Send it with the submit.")
    notes: list[str]


class BackfillOut(Schema):
    id: int
    pipeline: str
    environment: str
    state: str = Field(
        description="awaiting_approval, queued, running, paused, succeeded, failed, cancelled "
        "or rejected."
    )
    wanted: str = Field(
        description="What was asked last (run, pause or cancel); the next step carries it out."
    )
    start: str = Field(description="First partition.")
    end: str = Field(description="Last partition, included.")
    reprocess: str
    max_active_runs: int
    reason: str
    requested_by: str
    requested_at: datetime
    partitions: int
    runs: int = Field(description="Runs Airflow creates.")
    done: int = Field(
        description="Runs that succeeded: from the synced runs while it is active, as Airflow "
        "counted them once it has ended."
    )
    failed: int = Field(description="Runs that started and failed.")
    cancelled: int = Field(description="Runs a cancel stopped before they started (or never made).")
    queued: int = Field(description="Runs not started yet.")
    running: int = Field(
        description="Runs running now; on a cancelled backfill, those running when it was "
        "cancelled (Airflow lets them finish)."
    )
    percent: int = Field(description="Finished runs (succeeded, failed or cancelled) of all.")
    eta_seconds: float | None = Field(description="Null: no typical run time known yet.")
    error: str = Field(description="Why it failed, or what the last step waits for.")
    chunk: int = Field(description="The chunk submitted last (from 1).")
    chunks: int = Field(description="Airflow backfills it is submitted as, one after another.")
    airflow_backfill_id: int | None
    submitted_at: datetime | None
    finished_at: datetime | None
    decided_by: str | None = Field(description="Who approved or rejected it.")
    decided_at: datetime | None
    decision_comment: str


class BackfillPage(Schema):
    count: int
    page: int
    pages: int
    results: list[BackfillOut]


class BackfillConflictOut(Schema):
    detail: str
    preview: PreviewOut | None = Field(
        None, description="The new preview, when what would run changed since the one sent."
    )


REFUSED: dict[int, Any] = {403: DetailOut, 404: DetailOut, 409: BackfillConflictOut}


def refused(exc: backfills.BackfillError) -> Status:
    """The answer for a refusal, by its status."""
    if exc.status == 422:
        return Status(422, {"errors": {f: [m] for f, m in exc.errors.items()}})
    if exc.status == 409:
        preview = exc.preview.as_json() if exc.preview else None
        return Status(409, {"detail": str(exc), "preview": preview})
    return Status(exc.status, {"detail": str(exc)})


def decision_refused(exc: releases.ReleaseError) -> Status:
    if exc.status == 422:
        return Status(422, {"errors": {exc.field or "__all__": [exc.message]}})
    return Status(exc.status, {"detail": exc.message})


def backfill_out(b: Backfill, counts: dict[str, Any], eta: float | None) -> dict[str, Any]:
    return {
        "id": b.id,
        "pipeline": b.pipeline.slug,
        "environment": b.environment.slug,
        "state": b.state,
        "wanted": b.wanted,
        "start": b.first_partition,
        "end": b.last_partition,
        "reprocess": b.reprocess,
        "max_active_runs": b.max_active_runs,
        "reason": b.reason,
        "requested_by": b.requested_by.get_username(),
        "requested_at": b.requested_at,
        "partitions": b.partitions,
        "runs": b.runs,
        **{k: counts[k] for k in ("done", "running", "failed", "cancelled", "queued", "percent")},
        "eta_seconds": eta,
        "error": b.error,
        "chunk": b.chunk_index + 1,
        "chunks": len(b.chunks),
        "airflow_backfill_id": b.airflow_backfill_id,
        "submitted_at": b.submitted_at,
        "finished_at": b.finished_at,
        "decided_by": b.decided_by.get_username() if b.decided_by else None,
        "decided_at": b.decided_at,
        "decision_comment": b.decision_comment,
    }


def backfill_answer(backfill_id: int) -> dict[str, Any]:
    """One backfill as GET shows it, with its progress (re-read with its relations)."""
    backfill = selectors.backfill_get(backfill_id=backfill_id)
    counts = backfills.progress(backfill)
    return backfill_out(backfill, counts, backfills.eta_seconds(backfill, counts))


def checked(request: HttpRequest, slug: str, payload: BackfillPreviewIn) -> BackfillForm:
    """The page's form over the payload, for a pipeline the user may backfill (else 403/404)."""
    pipeline = allowed_pipeline(
        request,
        slug,
        access.can_backfill,
        "Only members of team {team} or a platform admin may backfill {slug}.",
    )
    return BackfillForm(payload.dict(), pipeline=pipeline)


# --- Preview and submit ----------------------------------------------------------------------


@router.post(
    "/pipelines/{slug}/backfills/preview",
    response={200: PreviewOut, 422: ErrorsOut, **REFUSED},
    description="What a backfill of the range would run, and the fingerprint to submit it "
    "with. 422: a guardrail refuses it, another active backfill there included (the message is "
    "under its field, as on the page).",
)
def backfill_preview(request: HttpRequest, slug: str, payload: BackfillPreviewIn) -> Any:
    form = checked(request, slug, payload)
    if not form.is_valid():
        return Status(422, {"errors": form_errors(form)})
    try:
        preview = backfills.backfill_preview(**form.asked(), by=request.user)
    except backfills.BackfillError as exc:
        if exc.status == 409:  # an active backfill: a conflict on submit, a guardrail here
            return Status(422, {"errors": {f: [m] for f, m in exc.errors.items()}})
        return refused(exc)
    return preview.as_json()


@router.post(
    "/pipelines/{slug}/backfills",
    response={202: BackfillOut, 422: ErrorsOut, **REFUSED},
    description="Submit exactly the previewed backfill. 409: what would run changed since the "
    "preview (the new preview rides along), or another backfill is active there. Into an "
    "environment that requires approval it waits for an approver (state awaiting_approval).",
)
def backfill_create(request: HttpRequest, slug: str, payload: BackfillIn) -> Any:
    form = checked(request, slug, payload)
    if not form.is_valid():
        return Status(422, {"errors": form_errors(form)})
    data = form.cleaned_data
    try:
        backfill = backfills.backfill_request(
            **form.asked(), reason=data["reason"], fingerprint=data["fingerprint"], by=request.user
        )
    except backfills.BackfillError as exc:
        return refused(exc)
    return Status(202, backfill_answer(backfill.id))


# --- Follow ----------------------------------------------------------------------------------


@router.get("/backfills", response={200: BackfillPage, 422: ErrorsOut})
def backfill_list(
    request: HttpRequest,
    pipeline: str = "",
    environment: str = "",
    state: str = "",
    team: str = "",
    page: str = "1",
) -> Any:
    """Backfills, newest first, with their progress; 50 per page (page: a number or last)."""
    form = BackfillFilterForm(
        {
            "pipeline": pipeline,
            "environment": environment,
            "state": state,
            "team": team,
            "page": page,
        }
    )
    answer = filtered_page(
        request, form, lambda filters: selectors.backfill_queryset(**filters), lambda b: b
    )
    if isinstance(answer, dict):  # progress of the whole page at once, not a query per row
        rows = answer["results"]
        progress = selectors.backfill_progress(rows)
        answer["results"] = [backfill_out(b, *progress[b.id]) for b in rows]
    return answer


@router.get("/backfills/{backfill_id}", response={200: BackfillOut, 404: DetailOut})
def backfill_get(request: HttpRequest, backfill_id: int) -> Any:
    """One backfill and its progress, from the synced runs (Airflow is not asked)."""
    return backfill_answer(backfill_id)


# --- Pause, resume, cancel -------------------------------------------------------------------


def controlled(request: HttpRequest, backfill_id: int, service: Any) -> Any:
    try:
        backfill = service(backfill_id=backfill_id, by=request.user)
    except backfills.BackfillError as exc:
        return refused(exc)
    return backfill_answer(backfill.id)


@router.post(
    "/backfills/{backfill_id}/pause",
    response={200: BackfillOut, **REFUSED},
    description="Pause a queued or running backfill (wanted turns pause; the next step pauses "
    "it in Airflow). 409: it is in another state.",
)
def backfill_pause(request: HttpRequest, backfill_id: int) -> Any:
    return controlled(request, backfill_id, backfills.backfill_pause)


@router.post(
    "/backfills/{backfill_id}/resume",
    response={200: BackfillOut, **REFUSED},
    description="Resume a paused backfill. 409: it is not paused.",
)
def backfill_resume(request: HttpRequest, backfill_id: int) -> Any:
    return controlled(request, backfill_id, backfills.backfill_resume)


@router.post(
    "/backfills/{backfill_id}/cancel",
    response={200: BackfillOut, **REFUSED},
    description="Cancel an active backfill (one awaiting approval is cancelled at once). "
    "409: it has ended.",
)
def backfill_cancel(request: HttpRequest, backfill_id: int) -> Any:
    return controlled(request, backfill_id, backfills.backfill_cancel)


# --- Approval --------------------------------------------------------------------------------


def decision(
    request: HttpRequest, backfill_id: int, payload: DecisionIn | None, service: Any
) -> Any:
    require_scope(request, "approve")
    form = DecisionForm({"comment": payload.comment if payload else ""})
    if not form.is_valid():  # the page's form: the same sentence for an overlong comment
        return Status(422, {"errors": form_errors(form)})
    try:
        backfill = service(
            backfill_id=backfill_id, by=request.user, comment=form.cleaned_data["comment"]
        )
    except releases.ReleaseError as exc:
        return decision_refused(exc)
    return backfill_answer(backfill.id)


@router.post(
    "/backfills/{backfill_id}/approve",
    response={200: BackfillOut, 422: ErrorsOut, 403: DetailOut, 404: DetailOut, 409: DetailOut},
    description="Approve and queue a backfill awaiting approval (a token with the approve "
    "scope). 403: not an approver of the team, your own request, or the token lacks the approve "
    "scope. 409: already decided, or stale (what it would run changed, or "
    "a scheduled run would race it now).",
)
def backfill_approve(
    request: HttpRequest, backfill_id: int, payload: DecisionIn | None = None
) -> Any:
    return decision(request, backfill_id, payload, releases.backfill_approve)


@router.post(
    "/backfills/{backfill_id}/reject",
    response={200: BackfillOut, 422: ErrorsOut, 403: DetailOut, 404: DetailOut, 409: DetailOut},
    description="Reject with a comment (required: the requester reads it). Needs a token with "
    "the approve scope.",
)
def backfill_reject(
    request: HttpRequest, backfill_id: int, payload: DecisionIn | None = None
) -> Any:
    return decision(request, backfill_id, payload, releases.backfill_reject)
