"""Web views: authorize, validate, call one service or selector, render (page or htmx fragment)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import trigger_client_event

from pipelines.alerts.models import Alert
from pipelines.authoring import codegen
from pipelines.authoring import services as authoring
from pipelines.authoring.codegen import CodegenError
from pipelines.authoring.forms import PipelineForm, granted_source_tables, initial_from_spec
from pipelines.authoring.models import Pipeline
from pipelines.catalog.models import SourceTable
from pipelines.core import access, schedule
from pipelines.core.errors import user_error
from pipelines.core.forms import unknown_fields_error
from pipelines.dashboards import audit as audit_selectors
from pipelines.dashboards import selectors
from pipelines.dashboards.forms import (
    AlertFilterForm,
    AuditFilterForm,
    HealthFilterForm,
    SlaFilterForm,
)
from pipelines.deployments import selectors as deploy_selectors
from pipelines.deployments import services as deploy
from pipelines.deployments.models import Environment
from pipelines.runs.forms import RunNowForm
from pipelines.web.access import editable_pipeline


@require_GET
@login_required
def pipeline_list(request: HttpRequest) -> HttpResponse:
    return render(request, "pipelines/list.html", {"rows": selectors.pipeline_list()})


@require_http_methods(["GET", "POST"])
@login_required
def pipeline_create(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = PipelineForm(request.POST, user=request.user)
        if form.is_valid():
            first_env = Environment.objects.order_by("order").first()
            try:
                pipeline = deploy.pipeline_create_and_deploy(
                    spec=form.spec, by=request.user, environment=first_env
                )
            except authoring.CreateError as exc:  # created by another request meanwhile
                form.add_error(exc.field, exc.message)
            except CodegenError as exc:
                form.add_error(None, f"The DAG could not be generated: {exc}")
            except deploy.DeployError as exc:
                form.add_error(None, str(exc))
            else:
                return redirect(pipeline)
    else:
        form = PipelineForm(user=request.user, initial={"owner": request.user.get_username()})
    context = {
        "form": form,
        "explain": explain_schedule(
            form["schedule"].value() or "",
            form["timezone"].value() or "UTC",
            grain=form["partition_grain"].value() or "day",
        ),
        "presets": list(schedule.PRESETS.items()),
        "tz_names": schedule.zone_names(),
        "first_environment": Environment.objects.order_by("order").first(),
    }
    context |= column_choices(request.user, form["source"].value())
    return render(request, "pipelines/create.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def pipeline_edit(request: HttpRequest, slug: str) -> HttpResponse:
    """Edit through the same guarded form; saving makes the next immutable version."""
    pipeline = editable_pipeline(request, slug)
    latest = pipeline.versions.order_by("-number").first()
    if request.method == "POST":
        form = PipelineForm(request.POST, user=request.user, pipeline=pipeline)
        if form.is_valid():
            try:
                version = authoring.pipeline_edit(
                    pipeline=pipeline,
                    spec=form.spec,
                    by=request.user,
                    change_note=form.cleaned_data["change_note"],
                )
            except authoring.EditError as exc:
                form.add_error(None, str(exc))
            else:
                if version is None:
                    form.add_error(None, "Nothing changed: no new version was made.")
                else:
                    return redirect(pipeline)
    else:
        form = PipelineForm(
            user=request.user, pipeline=pipeline, initial=initial_from_spec(latest.spec)
        )
    context = {
        "form": form,
        "pipeline": pipeline,
        "latest": latest,
        "explain": explain_schedule(
            form["schedule"].value() or "",
            form["timezone"].value() or "UTC",
            grain=form["partition_grain"].value() or "day",
        ),
        "presets": list(schedule.PRESETS.items()),
        "tz_names": schedule.zone_names(),
    }
    context |= column_choices(request.user, form["source"].value())
    return render(request, "pipelines/create.html", context)


@require_GET
@login_required
def version_diff(request: HttpRequest, slug: str, a: int, b: int) -> HttpResponse:
    """What changes from version a to version b: the spec field by field, the DAG side by side."""
    pipeline = get_object_or_404(Pipeline, slug=slug)
    before = get_object_or_404(pipeline.versions, number=a)
    after = get_object_or_404(pipeline.versions, number=b)
    envs = list(Environment.objects.order_by("order"))
    env = next((e for e in envs if e.slug == request.GET.get("environment", "")[:50]), None)
    env = env or (envs[0] if envs else None)
    if env is None:
        raise PermissionDenied("No environment is configured.")
    diff = deploy_selectors.version_diff(before=before, after=after, environment=env)
    context = {
        "pipeline": pipeline,
        "before": before,
        "after": after,
        "environment": env,
        "environments": envs,
        "diff": diff,
    }
    return render(request, "pipelines/version_diff.html", context)


def explain_schedule(cron: str, tz: str, now: datetime | None = None, grain: str = "day") -> dict:
    """Describe a cron in words with its next five fire times and DST notes, or say what is wrong.

    The DST notes cover the next year: each fire a change skips or repeats in `tz`, when
    Airflow runs instead and which `grain` partitions that run loads.
    """
    now = now or timezone.now()
    grain = grain if grain in schedule.GRAINS else "day"
    try:
        cron = schedule.validate_cron(cron)
        schedule.validate_timezone(tz)
        times = schedule.next_fire_times(cron, tz, 5, after=now)
        dst = schedule.dst_notes(cron, tz, grain, now=now)
    except schedule.ScheduleError as exc:
        return {"error": str(exc)}
    except schedule.schedule_errors() as exc:  # parsed, but croniter cannot walk it
        return {"error": f"The portal cannot work out when this runs: {user_error(exc)}."}
    return {
        "cron": cron,
        "tz": tz,
        "description": schedule.describe(cron),
        # Formatted here: the template's date filter would convert to the portal's own zone.
        "times": [
            (t.strftime("%a %Y-%m-%d %H:%M %Z"), t.astimezone(UTC).strftime("%a %Y-%m-%d %H:%M"))
            for t in times
        ],
        "dst": [(note.day.isoformat(), note.text) for note in dst],
    }


@require_GET
@login_required
def schedule_explain(request: HttpRequest) -> HttpResponse:
    explain = explain_schedule(
        request.GET.get("schedule", "")[:100],
        request.GET.get("timezone", "UTC")[:64],
        grain=request.GET.get("partition_grain", "day"),
    )
    return render(request, "pipelines/_schedule_explain.html", {"explain": explain})


def column_choices(user: object, source: str | None) -> dict:
    """The columns of `source` when it is granted to a team of `user` (none otherwise)."""
    tables = {f"{t.database.name}.{t.qualified_name}": t for t in granted_source_tables(user)}
    table: SourceTable | None = tables.get(source or "")
    columns = list(table.columns.all()) if table else []
    return {"columns": columns, "source_table": table}


@require_GET
@login_required
def source_columns(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "pipelines/_source_columns.html",
        column_choices(request.user, request.GET.get("source")),
    )


@require_POST
@login_required
def pipeline_preview(request: HttpRequest) -> HttpResponse:
    """Render the DAG the form would deploy to the first environment, or list what blocks it.

    With ?pipeline=<slug> (the edit form), the form validates as an edit of that pipeline.
    """
    slug = request.GET.get("pipeline", "")
    pipeline = editable_pipeline(request, slug[:63]) if slug else None
    form = PipelineForm(request.POST, user=request.user, pipeline=pipeline)
    if pipeline is not None:
        form.fields["change_note"].required = False  # asked for on save, not for a preview
    latest = pipeline.versions.order_by("-number").first() if pipeline else None
    number = latest.number + 1 if latest else 1  # the version a save would make
    context: dict = {"form": form}
    env = Environment.objects.order_by("order").first()
    if form.is_valid() and env is not None:
        try:
            context["rendered"] = codegen.render_dag(
                form.spec, env, version=number, portal_url=deploy.portal_url_for(form.spec.name)
            )
            context["environment"] = env
        except CodegenError as exc:
            context["codegen_error"] = str(exc)
    return render(request, "pipelines/_dag_preview.html", context)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def pipeline_detail(request: HttpRequest, slug: str) -> HttpResponse:
    context = selectors.pipeline_detail(slug=slug)
    context |= _pipeline_health(request, context["pipeline"], context["spec"])
    context["can_edit"] = access.can_edit(request.user, context["pipeline"])
    # core.access.can_backfill, without asking for the membership twice.
    context["can_backfill"] = context["can_edit"] or access.is_platform_admin(request.user)
    context["run_form"] = RunNowForm(
        pipeline=context["pipeline"],
        initial={"partition": (timezone.now() - timedelta(days=1)).date().isoformat()},
    )
    return render(request, "pipelines/detail.html", context)


@require_GET
@login_required
def deployment_table(request: HttpRequest, slug: str) -> HttpResponse:
    context = selectors.pipeline_detail(slug=slug)
    context["can_edit"] = access.can_edit(request.user, context["pipeline"])
    return render(request, "pipelines/_deployment_table.html", context)


@require_POST
@login_required
def deployment_create(request: HttpRequest, slug: str) -> HttpResponse:
    pipeline = editable_pipeline(request, slug)
    number = request.POST.get("version", "")  # not a number (or NUL): 404, not a 500
    version = get_object_or_404(
        pipeline.versions, number=int(number) if number.isascii() and number.isdigit() else 0
    )
    env = get_object_or_404(Environment, slug=request.POST.get("environment", ""))
    error = unknown_fields_error(request.POST, ("version", "environment")) or ""
    try:
        if not error:
            deploy.deployment_request(version=version, environment=env, by=request.user)
    except deploy.ApprovalRequired as exc:
        raise PermissionDenied(str(exc)) from None
    except deploy.DeployError as exc:
        error = str(exc)
    if not request.htmx:
        return redirect(pipeline)
    context = selectors.pipeline_detail(slug=slug)
    context["can_edit"] = True
    context["deploy_error"] = error
    response = render(request, "pipelines/_deployment_table.html", context)
    return trigger_client_event(response, "pipeline-changed")


@require_GET
@login_required
def dag_source(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    pipeline = get_object_or_404(Pipeline, slug=slug)
    version = get_object_or_404(pipeline.versions, number=number)
    envs = list(Environment.objects.order_by("order"))
    env = next(
        (e for e in envs if e.slug == request.GET.get("environment")), envs[0] if envs else None
    )
    if env is None:
        raise PermissionDenied("No environment is configured.")
    rendered = deploy.render_for(version, env)
    return render(
        request,
        "pipelines/dag_source.html",
        {
            "pipeline": pipeline,
            "version": version,
            "environment": env,
            "environments": envs,
            "rendered": rendered,
        },
    )


@require_GET
@login_required
def catalog(request: HttpRequest) -> HttpResponse:
    return render(
        request, "pipelines/catalog.html", {"tables": selectors.catalog_list(user=request.user)}
    )


def _pipeline_health(request: HttpRequest, pipeline: Pipeline, spec) -> dict:
    env = Environment.objects.filter(slug=request.GET.get("environment", "")[:50]).first()
    return selectors.pipeline_health(pipeline=pipeline, spec=spec, environment=env)


@require_GET
@login_required
def pipeline_health(request: HttpRequest, slug: str) -> HttpResponse:
    pipeline = get_object_or_404(Pipeline, slug=slug)
    context = {"pipeline": pipeline} | _pipeline_health(
        request, pipeline, pipeline.versions.first().spec
    )
    return render(request, "pipelines/_pipeline_health.html", context)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def health_overview(request: HttpRequest) -> HttpResponse:
    form = HealthFilterForm(request.GET)
    context = selectors.health_overview(form.filters()) | {"form": form}
    fragment = request.htmx and request.htmx.target == "health-table"
    template = "pipelines/_health_table.html" if fragment else "pipelines/health.html"
    return render(request, template, context)


@require_GET
@login_required
def sla_dashboard(request: HttpRequest) -> HttpResponse:
    form = SlaFilterForm(request.GET)
    context = selectors.sla_dashboard(**form.values) | {"form": form}
    return render(request, "pipelines/sla.html", context)


@require_GET
@login_required
def ownership(request: HttpRequest) -> HttpResponse:
    return render(request, "pipelines/ownership.html", selectors.ownership())


@require_GET
@login_required
def alert_list(request: HttpRequest) -> HttpResponse:
    form = AlertFilterForm(request.GET)
    context = selectors.alert_page(**form.values) | {"form": form, "kinds": Alert.Kind.choices}
    return render(request, "pipelines/alerts.html", context)


@require_GET
@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    context = audit_selectors.audit_page(viewer=request.user, **form.values) | {"form": form}
    return render(request, "pipelines/audit.html", context)
