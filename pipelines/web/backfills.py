"""Backfill pages: the form with its live preview, one backfill's page (progress polled while it
runs; pause, resume, cancel; approve or reject while it awaits approval), the list across
pipelines, and a pipeline's recent backfills.

The preview is a fragment the form asks for as the user types: the counts, the first and last
partitions, the estimate and the schedule facts, the fingerprint of what it shows (into the
submit form), and every guardrail's message next to its field (out-of-band swaps). Refusals of
the services are shown, never a 500: next to the field they name, or on top of the page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from pipelines.authoring.models import Pipeline
from pipelines.backfills import selectors
from pipelines.backfills import services as backfills
from pipelines.backfills.forms import BackfillForm
from pipelines.backfills.models import Backfill
from pipelines.core import access
from pipelines.core.forms import unknown_fields_error
from pipelines.core.models import Team
from pipelines.dashboards.forms import BackfillFilterForm
from pipelines.dashboards.selectors import keyset_page
from pipelines.deployments.models import Deployment, Environment
from pipelines.releases import selectors as release_selectors
from pipelines.releases import services as releases
from pipelines.releases.forms import DecisionForm
from pipelines.web.access import backfillable_pipeline
from pipelines.web.decisions import decision_answer

# Where each form field's errors show; "form" holds the form's own ("__all__" in the form's and
# BackfillError's errors: templates cannot read a name that starts with an underscore).
ERROR_SLOTS = ("form", "environment", "start", "end", "reprocess", "max_active_runs", "reason")
FORM_FIELDS = ("environment", "start", "end", "reprocess", "max_active_runs", "reason")


# --- the form and its preview ----------------------------------------------------------------


def _widgets(form: BackfillForm) -> BackfillForm:
    """Date inputs for a day grain, "YYYY-MM-DDTHH:00" text for an hour grain; reprocess as
    radio buttons with their help text."""
    fields = form.fields
    fields["reprocess"].widget = forms.RadioSelect(choices=fields["reprocess"].choices)
    for name in ("start", "end"):
        if form.grain == "hour":
            widget = forms.TextInput(
                attrs={"placeholder": "YYYY-MM-DDTHH:00", "pattern": r"\d{4}-\d{2}-\d{2}T\d{2}:00"}
            )
        else:
            widget = forms.TextInput()
            widget.input_type = "date"
        fields[name].widget = widget
    return form


def _bound(pipeline: Pipeline, data: Any) -> BackfillForm:
    """The form over `data` (posted or in the query string), with the defaults for what is
    not given."""
    defaults = {
        "environment": _default_environment(pipeline),
        "reprocess": Backfill.Reprocess.MISSING,
        "max_active_runs": "1",
    }
    # Every posted key reaches the form, which refuses one it does not know (StrictForm).
    given = {name: data[name] for name in data}
    return _widgets(BackfillForm(defaults | given, pipeline=pipeline))


def _asked(pipeline: Pipeline, query: Any) -> BackfillForm:
    """The form a GET shows: over the query string when it names a field (a link to a
    prepared backfill), else unbound with the defaults."""
    if any(name in query for name in FORM_FIELDS):
        return _bound(pipeline, query)
    initial = {"environment": _default_environment(pipeline)}
    return _widgets(BackfillForm(pipeline=pipeline, initial=initial))


def _default_environment(pipeline: Pipeline) -> str:
    """The first environment the pipeline runs in (else the first there is)."""
    running = (
        Deployment.objects.deployed()
        .filter(version__pipeline=pipeline)
        .order_by("environment__order")
        .values_list("environment__slug", flat=True)
        .first()
    )
    if running:
        return running
    return Environment.objects.order_by("order").values_list("slug", flat=True).first() or ""


def _form_errors(form: BackfillForm, *, while_typing: bool) -> dict[str, list[str]]:
    """The form's errors by slot; while typing, a field not filled in yet is no error."""
    errors: dict[str, list[str]] = {}
    for name, found in form.errors.as_data().items():
        shown = [e for e in found if not (while_typing and e.code == "required")]
        if shown:
            errors[name] = [message for e in shown for message in e.messages]
    return errors


def _preview(
    request: HttpRequest, form: BackfillForm
) -> tuple[backfills.Preview | None, dict[str, list[str]]]:
    """The preview of what the form asks for, or the errors that stop it."""
    if not form.is_bound:
        return None, {}
    if not form.is_valid():
        return None, _form_errors(form, while_typing=True)
    try:
        preview = backfills.backfill_preview(**form.asked(), by=request.user)
    except backfills.BackfillError as exc:
        return exc.preview, {name: [message] for name, message in exc.errors.items()}
    return preview, {}


def duration(seconds: float | None) -> str:
    """A duration as people say it: "under a minute", "about 14 min", "about 3 h 20 min"."""
    if seconds is None:
        return ""
    if seconds < 60:
        return "under a minute" if seconds else "nothing to wait for"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"
    return f"about {round(hours / 24)} days"


def _preview_context(
    request: HttpRequest,
    pipeline: Pipeline,
    form: BackfillForm,
    preview: backfills.Preview | None,
    errors: dict[str, list[str]],
) -> dict[str, Any]:
    slotted: dict[str, list[str]] = {}
    for name, found in errors.items():
        slotted.setdefault(name if name in ERROR_SLOTS else "form", []).extend(found)
    errors = slotted
    return {
        "pipeline": pipeline,
        "form": form,
        "preview": preview,
        "estimate": duration(preview.estimate_seconds) if preview else "",
        "errors": errors,
        "slots": [(name, errors.get(name, [])) for name in ERROR_SLOTS],
        "is_admin": access.is_platform_admin(request.user),
    }


@require_http_methods(["GET", "POST"])
@login_required
def backfill_form(request: HttpRequest, slug: str) -> HttpResponse:
    """Ask for a backfill; the preview follows the inputs (backfill_preview_fragment) and the
    submit carries the fingerprint of the preview the user saw."""
    pipeline = backfillable_pipeline(request, slug)
    changed = False
    if request.method == "POST":
        form = _bound(pipeline, request.POST)
        if form.is_valid():
            try:
                backfill = _request(request, form)
            except backfills.BackfillError as exc:
                if exc.status == 403:
                    raise PermissionDenied(str(exc)) from None
                errors = {name: [message] for name, message in exc.errors.items()}
                changed = exc.status == 409 and exc.preview is not None
                if changed:
                    preview = exc.preview
                else:
                    preview, more = _preview(request, form)
                    errors = more | errors
            else:
                messages.success(request, _requested(backfill))
                return redirect("pipelines:backfill-detail", backfill_id=backfill.id)
        else:
            preview, errors = None, _form_errors(form, while_typing=False)
    else:
        form = _asked(pipeline, request.GET)
        preview, errors = _preview(request, form)
    context = _preview_context(request, pipeline, form, preview, errors) | {"changed": changed}
    return render(request, "pipelines/backfill_form.html", context)


def _request(request: HttpRequest, form: BackfillForm) -> Backfill:
    data = form.cleaned_data
    return backfills.backfill_request(
        **form.asked(), reason=data["reason"], fingerprint=data["fingerprint"], by=request.user
    )


def _requested(backfill: Backfill) -> str:
    what = (
        f"Backfill #{backfill.id} of {backfill.first_partition} → {backfill.last_partition} "
        f"({backfill.partitions} partition{'s' if backfill.partitions != 1 else ''}) in "
        f"{backfill.environment.name}"
    )
    if backfill.state == Backfill.State.AWAITING_APPROVAL:
        return (
            f"{what} requested: an approver of team {backfill.pipeline.team.name} other than "
            "you decides it; it starts once approved."
        )
    return f"{what} queued: its progress shows below."


@require_GET
@login_required
def backfill_preview_fragment(request: HttpRequest, slug: str) -> HttpResponse:
    """The preview of what the form shows now, and every field's errors (out of band)."""
    pipeline = backfillable_pipeline(request, slug)
    form = _bound(pipeline, request.GET)
    preview, errors = _preview(request, form)
    context = _preview_context(request, pipeline, form, preview, errors) | {"oob": True}
    return render(request, "pipelines/_backfill_preview.html", context)


# --- one backfill ----------------------------------------------------------------------------


def _progress_context(request: HttpRequest, backfill: Backfill) -> dict[str, Any]:
    counts = backfills.progress(backfill)
    return {
        "backfill": backfill,
        "counts": counts,
        "eta": duration(backfills.eta_seconds(backfill, counts)),
        "can_edit": access.can_backfill(request.user, backfill.pipeline),
        "polling": selectors.changing(backfill),
    }


def _page(
    request: HttpRequest,
    backfill: Backfill,
    *,
    status: int = 200,
    error: str = "",
    posted: dict[str, DecisionForm] | None = None,
) -> HttpResponse:
    posted = posted or {}
    teams = release_selectors.approver_team_ids(request.user)
    context = _progress_context(request, backfill) | {
        "pipeline": backfill.pipeline,
        "error": error,
        "may_decide": selectors.may_decide(request.user, backfill, teams),
        "is_requester": backfill.requested_by_id == request.user.pk,
        "approve_form": posted.get("approve") or DecisionForm(auto_id="approve_%s"),
        "reject_form": posted.get("reject") or DecisionForm(auto_id="reject_%s"),
    }
    return render(request, "pipelines/backfill.html", context, status=status)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def backfill_detail(request: HttpRequest, backfill_id: int) -> HttpResponse:
    """The request and its progress; htmx polls the progress alone while it runs."""
    backfill = selectors.backfill_get(backfill_id=backfill_id)
    if request.htmx:
        context = _progress_context(request, backfill)
        return render(request, "pipelines/_backfill_progress.html", context)
    return _page(request, backfill)


def _control(
    request: HttpRequest,
    backfill_id: int,
    control: Callable[..., Backfill],
    done: str,
) -> HttpResponse:
    """Pause, resume or cancel; a refusal renders the page with the reason and its status."""
    if unknown := unknown_fields_error(request.POST, ()):
        backfill = selectors.backfill_get(backfill_id=backfill_id)
        return _page(request, backfill, status=422, error=unknown)
    try:
        control(backfill_id=backfill_id, by=request.user)
    except backfills.BackfillError as exc:
        if exc.status == 404:
            raise Http404(str(exc)) from None
        backfill = selectors.backfill_get(backfill_id=backfill_id)
        return _page(request, backfill, status=exc.status, error=str(exc))
    messages.success(request, done)
    return redirect("pipelines:backfill-detail", backfill_id=backfill_id)


@require_POST
@login_required
def backfill_pause(request: HttpRequest, backfill_id: int) -> HttpResponse:
    done = "Pausing: runs already started finish; no new run starts until you resume."
    return _control(request, backfill_id, backfills.backfill_pause, done)


@require_POST
@login_required
def backfill_resume(request: HttpRequest, backfill_id: int) -> HttpResponse:
    done = "Resuming: the remaining runs start again."
    return _control(request, backfill_id, backfills.backfill_resume, done)


@require_POST
@login_required
def backfill_cancel(request: HttpRequest, backfill_id: int) -> HttpResponse:
    done = "Cancelling: runs already started finish; the rest are not run."
    return _control(request, backfill_id, backfills.backfill_cancel, done)


def _decide(
    request: HttpRequest,
    backfill_id: int,
    action: str,
    decide: Callable[[str], Backfill],
    done: str,
) -> HttpResponse:
    """Approve or reject with the promotions' rules; a refusal renders the page with the
    reason and its status (403, 409, 422)."""

    def refused(status: int, error: str, form: DecisionForm) -> HttpResponse:
        backfill = selectors.backfill_get(backfill_id=backfill_id)
        return _page(request, backfill, status=status, error=error, posted={action: form})

    then = reverse("pipelines:backfill-detail", args=[backfill_id])
    return decision_answer(request, action, decide, done=done, then=then, refused=refused)


@require_POST
@login_required
def backfill_approve(request: HttpRequest, backfill_id: int) -> HttpResponse:
    def approve(comment: str) -> Backfill:
        return releases.backfill_approve(backfill_id=backfill_id, by=request.user, comment=comment)

    done = "Approved: the backfill is queued; its progress shows below."
    return _decide(request, backfill_id, "approve", approve, done)


@require_POST
@login_required
def backfill_reject(request: HttpRequest, backfill_id: int) -> HttpResponse:
    def reject(comment: str) -> Backfill:
        return releases.backfill_reject(backfill_id=backfill_id, by=request.user, comment=comment)

    done = "Rejected: the requester is told why."
    return _decide(request, backfill_id, "reject", reject, done)


# --- lists -----------------------------------------------------------------------------------


@require_GET
@login_required
def backfill_list(request: HttpRequest) -> HttpResponse:
    """Backfills across pipelines by team, environment and state, newest first, with the
    progress of the page's rows (in one query)."""
    form = BackfillFilterForm(request.GET)
    values = form.values
    filters = {name: values[name] for name in ("team", "environment", "state", "pipeline")}
    page = keyset_page(
        selectors.backfill_queryset(**filters),
        selectors.LIST_ORDER,
        query=filters,
        page=str(values["page"]),
        after=values["after"],
        before=values["before"],
    )
    progress = selectors.progress_for(page.object_list)
    context = {
        "form": form,
        "filters": filters,
        "page": page,
        "rows": [(b, progress[b.id]) for b in page.object_list],
        "states": Backfill.State.choices,
        "teams": Team.objects.order_by("name"),
        "environments": Environment.objects.order_by("order"),
    }
    return render(request, "pipelines/backfills.html", context)


@require_GET
@login_required
def pipeline_backfills(request: HttpRequest, slug: str) -> HttpResponse:
    """A pipeline's recent backfills with their progress (the pipeline page loads it)."""
    pipeline = get_object_or_404(Pipeline, slug=slug)
    rows = selectors.pipeline_backfills(pipeline=pipeline)
    context = {
        "pipeline": pipeline,
        "rows": rows,
        "polling": any(selectors.changing(b) for b, _ in rows),
    }
    return render(request, "pipelines/_backfill_recent.html", context)
