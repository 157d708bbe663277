"""Run now on a pipeline's page, and the four-eyes decision on a run that can replace loaded
data in an environment that requires approval (releases.runs)."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import trigger_client_event

from pipelines.authoring.models import Pipeline
from pipelines.dashboards import selectors
from pipelines.releases import runs as run_approvals
from pipelines.releases.forms import DecisionForm
from pipelines.runs import services as runs
from pipelines.runs.forms import RunNowForm
from pipelines.runs.models import RunRequest
from pipelines.web.access import editable_pipeline
from pipelines.web.approvals import queue_page
from pipelines.web.decisions import decision_answer


@require_http_methods(["GET", "POST"])
@login_required
def run_create(request: HttpRequest, slug: str) -> HttpResponse:
    if request.method == "GET":
        return redirect("pipelines:detail", slug=slug)
    pipeline = editable_pipeline(request, slug)
    form = RunNowForm(request.POST, pipeline=pipeline)
    if form.is_valid():
        try:
            run_approvals.run_now(by=request.user, **form.asked())
        except runs.RunError as exc:
            form.add_error(exc.field, exc.message)
    if not request.htmx:
        return redirect(pipeline)
    context = {"pipeline": pipeline} | selectors.recent_runs(pipeline=pipeline)
    context.update(
        run_form=form
        if form.errors
        else RunNowForm(
            pipeline=pipeline, initial={"partition": request.POST.get("partition", "")}
        ),
        can_edit=True,
    )
    response = render(request, "pipelines/_runs.html", context)
    return trigger_client_event(response, "pipeline-changed") if not form.errors else response


@require_GET
@login_required
def run_case(request: HttpRequest, slug: str) -> HttpResponse:
    """What Run now would do with the form's values, said before submitting (htmx, as the user
    types): runs at once, waits for an approver and why, or is refused and why."""
    pipeline = editable_pipeline(request, slug)
    form = RunNowForm(request.GET, pipeline=pipeline)
    case, error = None, ""
    if form.is_valid():
        try:
            case = run_approvals.run_case(**form.asked())
        except runs.RunError as exc:
            error = exc.message
    return render(request, "pipelines/_run_case.html", {"case": case, "error": error, "form": form})


@require_GET
@login_required
def run_table(request: HttpRequest, slug: str) -> HttpResponse:
    """The runs table alone (htmx polls it while a run is active): the pipeline and its runs."""
    pipeline = get_object_or_404(Pipeline, slug=slug)
    context = {"pipeline": pipeline} | selectors.recent_runs(pipeline=pipeline)
    for run in context["runs"]:
        runs.refresh_if_stale(run)
    return render(request, "pipelines/_run_table.html", context)


def _decide(
    request: HttpRequest, run_id: int, action: str, decide: Callable[[str], RunRequest], done: str
) -> HttpResponse:
    """Decide from the approvals queue; a refusal renders the queue with the reason."""

    def refused(status: int, error: str, form: DecisionForm) -> HttpResponse:
        get_object_or_404(RunRequest, id=run_id)
        if form.errors.get("comment"):
            error = f"Run #{run_id}: " + " ".join(form.errors["comment"])
        return queue_page(request, status=status, error=error)

    then = reverse("pipelines:approvals") + "#run-approvals"
    if action == "withdraw":
        run = get_object_or_404(RunRequest.objects.select_related("pipeline"), id=run_id)
        then = run.pipeline.get_absolute_url()
    return decision_answer(request, action, decide, done=done, then=then, refused=refused)


@require_POST
@login_required
def run_approve(request: HttpRequest, run_id: int) -> HttpResponse:
    def approve(comment: str) -> RunRequest:
        return run_approvals.run_approve(run_id=run_id, by=request.user, comment=comment)

    done = f"Approved: run #{run_id} goes to Airflow now; its state shows on the pipeline's page."
    return _decide(request, run_id, "approve", approve, done)


@require_POST
@login_required
def run_reject(request: HttpRequest, run_id: int) -> HttpResponse:
    def reject(comment: str) -> RunRequest:
        return run_approvals.run_reject(run_id=run_id, by=request.user, comment=comment)

    return _decide(
        request, run_id, "reject", reject, f"Rejected run #{run_id}: the requester is told why."
    )


@require_POST
@login_required
def run_withdraw(request: HttpRequest, run_id: int) -> HttpResponse:
    def withdraw(_comment: str) -> RunRequest:
        return run_approvals.run_withdraw(run_id=run_id, by=request.user)

    return _decide(request, run_id, "withdraw", withdraw, f"Withdrew run #{run_id}.")
