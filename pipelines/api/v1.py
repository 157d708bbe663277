"""JSON API under /api/v1/ (django-ninja, OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs).

The API validates with the same PipelineForm as the web form, so both give the same messages.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Field, NinjaAPI, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer
from pydantic import ConfigDict

from pipelines.authoring import services
from pipelines.authoring.codegen import CodegenError
from pipelines.authoring.forms import BOUNDS, DEFAULTS, MAX_TAGS, PipelineForm
from pipelines.authoring.models import Pipeline
from pipelines.core import access, tokens
from pipelines.core.errors import user_error
from pipelines.dashboards import audit as audit_selectors
from pipelines.dashboards import selectors
from pipelines.dashboards.forms import AlertFilterForm, AuditFilterForm, HealthFilterForm
from pipelines.deployments import selectors as deploy_selectors
from pipelines.deployments import services as deploy
from pipelines.deployments.models import Deployment, Environment
from pipelines.releases import runs as run_approvals
from pipelines.runs import services as runs
from pipelines.runs.forms import RunNowForm
from pipelines.runs.models import RunRequest
from pipelines.templatetags.portal import partition

# A GET needs the read scope, anything else the write scope; approving needs approve as well.
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class BearerToken(HttpBearer):
    """A live API token (core/tokens.py); request.auth is the ApiToken, request.user its user."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        found = tokens.token_authenticate(token)
        if found is None:
            return None
        request.user = found.user
        request.auth = found
        require_scope(request, "read" if request.method in SAFE_METHODS else "write")
        return found


def require_scope(request: HttpRequest, scope: str) -> None:
    """Answer 403, with a sentence naming `scope`, unless the caller's token has it.

    The method's scope (read or write) is checked for every call; an endpoint that approves or
    rejects calls `require_scope(request, "approve")` first.
    """
    refusal = tokens.missing_scope(request.auth, scope)
    if refusal:
        raise HttpError(403, refusal)


def docs_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The API docs and the OpenAPI document: open while DEBUG is on (make run), otherwise for
    logged-in users only (a visitor is sent to the login page)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.DEBUG and not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return wrapped


api = NinjaAPI(
    title="Pipeline Portal API",
    version="1",
    urls_namespace="api",
    auth=BearerToken(),
    docs_url="/docs",
    docs_decorator=docs_login_required,
)


def form_errors(form: Any) -> dict[str, list[str]]:
    return {field: [str(m) for m in messages] for field, messages in form.errors.items()}


def errors_response(request: HttpRequest, errors: dict[str, list[str]]) -> HttpResponse:
    return api.create_response(request, {"errors": errors}, status=422)


class InputSchema(Schema):
    """The base of every body the API reads: a field it does not know is refused (422 naming
    it), so a misspelled option is never silently replaced by its default."""

    model_config = ConfigDict(extra="forbid")


def _error_message(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind == "missing":  # the form's words for a missing field
        return "This field is required."
    if kind == "extra_forbidden":
        return "Unknown field: this endpoint does not take it (check the spelling)."
    return item.get("msg") or "Invalid."


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    for item in exc.errors:
        loc = [str(p) for p in item.get("loc", []) if p not in ("body", "payload", "query")]
        # One key per field (not per list item); an unknown field is the key of its own error.
        msg = _error_message(item)
        if len(loc) > 1:
            msg = f"{'.'.join(loc[1:])}: {msg}"
        errors.setdefault(loc[0] if loc else "__all__", []).append(msg)
    return errors_response(request, errors)


def _query_names(operation: Any) -> set[str] | None:
    """The query parameters `operation` reads, or None when they cannot be told."""
    names: set[str] = set()
    for model in getattr(operation, "models", ()):
        if getattr(model, "__ninja_param_source__", None) != "query":
            continue
        for name, field in model.model_fields.items():
            names.add(field.alias or name)
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, Schema):  # Query[Schema], flattened
                names.update(f.alias or n for n, f in kind.model_fields.items())
    return names


def refuse_unknown_query(run: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer 422 naming each query parameter the operation does not read: a misspelled filter
    (?verdit=failing) would otherwise be ignored and answer everything."""
    operation = getattr(run, "__self__", None)
    known = _query_names(operation)

    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        unknown = sorted(set(request.GET) - known) if known is not None else []
        if unknown:
            message = (
                "Unknown query parameter: this endpoint does not take it (check the spelling)."
            )
            return errors_response(request, {name[:100]: [message] for name in unknown[:10]})
        return run(request, *args, **kwargs)

    return checked


api.add_decorator(refuse_unknown_query, mode="view")


@api.exception_handler(Exception)
def on_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    """A bug answers 500 with a sentence and a reference; the log has the traceback (ninja's
    default would show the traceback itself while DEBUG is on)."""
    error = user_error(exc, doing=f"{request.method} {request.path}")
    return api.create_response(request, {"detail": f"The request failed: {error}."}, status=500)


@api.exception_handler(AuthenticationError)
def on_auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return api.create_response(
        request, {"detail": "Send a valid token: Authorization: Bearer <token>."}, status=401
    )


def form_help(name: str) -> str:
    """Return PipelineForm's help text for a field, so the API documents what the form says."""
    return str(PipelineForm.base_fields[name].help_text)


def form_default(name: str) -> Any:
    return PipelineForm.base_fields[name].initial


def form_bounds(name: str) -> dict[str, int]:
    """The field's range as JSON Schema keywords: documented here, enforced by the form."""
    low, high = BOUNDS[name]
    return {"minimum": low, "maximum": high}


class PipelineIn(InputSchema):
    """A new pipeline. Types are checked here (a wrong JSON type is a 422 on its field); values
    are checked by PipelineForm, the one validation the web form uses too."""

    name: str = Field(description=form_help("name"))
    team: str = Field(description="Slug of a team you are a member of.")
    owner: str = Field(description=form_help("owner") + " A member of the team.")
    source: str = Field(
        description="Source table as database.table, or the table name alone when it is unique "
        "among the sources granted to your teams. The source must be granted to the team."
    )
    target_table: str = Field(description=form_help("target_table"))
    schedule: str = Field(description=form_help("schedule"), examples=[form_default("schedule")])
    timezone: str = Field(description=form_help("timezone"), examples=[form_default("timezone")])
    primary_key: list[str] = Field(
        description="One or more source columns that identify a row.",
        json_schema_extra={"minItems": 1},
    )
    partition_column: str = Field(
        description="A date or timestamp column of the source: each run loads one partition."
    )
    partition_grain: str = Field(
        form_default("partition_grain"),
        description="One partition per day or per hour.",
        json_schema_extra={"enum": ["day", "hour"]},
    )
    sla_minutes: int | None = Field(
        None, description=form_help("sla_minutes"), json_schema_extra=form_bounds("sla_minutes")
    )
    retries: int = Field(
        DEFAULTS["retries"],
        description="Retries of a failed task.",
        json_schema_extra=form_bounds("retries"),
    )
    retry_delay_minutes: int = Field(
        DEFAULTS["retry_delay_minutes"],
        description="Minutes before the first retry. " + form_help("retry_delay_minutes"),
        json_schema_extra=form_bounds("retry_delay_minutes"),
    )
    execution_timeout_minutes: int = Field(
        DEFAULTS["execution_timeout_minutes"],
        description="Timeout per task, in minutes.",
        json_schema_extra=form_bounds("execution_timeout_minutes"),
    )
    tags: list[str] = Field(
        default_factory=list,
        description='Tags, e.g. ["finance", "daily-close"].',
        json_schema_extra={"maxItems": MAX_TAGS},
    )
    runbook_url: str = Field("", description=form_help("runbook_url"))
    description: str = Field("", description="What the pipeline is for, in a few sentences.")
    allow_empty: bool = Field(False, description=form_help("allow_empty"))
    shrink_guard_percent: int = Field(
        form_default("shrink_guard_percent"),
        description=form_help("shrink_guard_percent"),
        json_schema_extra={"minimum": 0, "maximum": 100},
    )
    adopt_existing_table: bool = Field(False, description=form_help("adopt_existing_table"))


class PipelineEditIn(PipelineIn):
    """An edit: the same fields (name, team and target table are the pipeline's and may be
    left out) and a change note; a new immutable version unless nothing changed."""

    name: str = Field("", description="Ignored: a pipeline's name does not change.")
    team: str = Field("", description="Ignored: a pipeline's team does not change here.")
    target_table: str = Field("", description="Ignored: a new table is a new pipeline.")
    change_note: str = Field(description="Why this change (the version list, the audit log).")


class DeploymentIn(InputSchema):
    environment: str = Field(description="Slug of the environment, e.g. dev.")
    version: int = Field(description="Number of the pipeline version to deploy.")


class RunIn(InputSchema):
    environment: str
    partition: str
    accept_smaller: bool = Field(
        False,
        description="Turn the shrink guard off for this run: the partition may end up smaller "
        "than the pipeline's guard allows (recorded on the run).",
    )


# --- What the API answers (typed, so the OpenAPI document describes it) ------------------------


class ErrorsOut(Schema):
    errors: dict[str, list[str]] = Field(description="Messages per field; __all__ for the rest.")


class DeploymentOut(Schema):
    id: int
    pipeline: str
    version: int
    environment: str
    dag_id: str
    state: str = Field(description="pending, deploying, deployed, failed or superseded.")
    error: str = Field(description="Why the deployment failed (Airflow's import error, …).")
    last_attempt_error: str = Field(description="Why the last attempt did not finish yet.")
    attempts: int
    requested_at: datetime
    registered_at: datetime | None
    deploy_seconds: float | None = Field(description="From the request to Airflow registering it.")


class PipelineOut(Schema):
    slug: str
    version: int = Field(description="The newest version.")
    versions: list[int]
    team: str
    owner: str
    target_table: str
    spec: dict[str, Any] = Field(description="The newest version's spec, as stored.")
    deployments: list[DeploymentOut]


class RunOut(Schema):
    id: int
    pipeline: str
    environment: str
    partition: str = Field(description="2026-11-10, or 2026-11-10T13:00 for an hour grain.")
    dag_id: str
    dag_run_id: str
    state: str = Field(
        description="The request: awaiting_approval, pending, submitted, failed, untracked, "
        "rejected or withdrawn."
    )
    run_state: str = Field(description="Airflow's DagRun state: queued, running, success, failed.")
    accept_smaller: bool
    error: str = Field(description="Why it failed: the failed task and its message, from Airflow.")
    requested_at: datetime
    requested_by: str
    approval_reason: str = Field(
        description="Why it waits for an approver (empty when it needed none)."
    )
    decided_by: str | None = Field(description="Who approved, rejected or withdrew it.")
    decided_at: datetime | None
    decision_comment: str


class HealthOut(Schema):
    pipeline: str
    environment: str
    team: str
    owner: str
    verdict: str
    reason: str
    last_run_state: str | None
    last_run_at: datetime | None
    last_success_at: datetime | None
    success_rate_7d: float | None
    success_rate_30d: float | None
    p50_duration_s: float | None
    p95_duration_s: float | None
    failing_streak: int
    freshness_lag_partitions: int | None
    freshness_lag_hours: float | None
    latest_loaded_partition: str | None
    expected_partition: str | None
    next_expected_run: datetime | None
    sla_state: str
    sla_misses_7d: int
    is_paused: bool
    orchestrator_unreachable_since: datetime | None
    computed_at: datetime | None


class AlertOut(Schema):
    id: int
    pipeline: str
    environment: str
    team: str
    kind: str
    severity: str
    state: str
    summary: str
    detail: str
    runbook_url: str | None
    portal_url: str
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    notify_count: int


class HealthPage(Schema):
    count: int
    page: int
    pages: int
    results: list[HealthOut]


class AlertPage(Schema):
    count: int
    page: int
    pages: int
    results: list[AlertOut]


class EditOut(Schema):
    version: int = Field(description="The newest version after the edit.")
    created: bool = Field(description="False when nothing changed (no new version).")


class VersionOut(Schema):
    number: int
    created_by: str
    created_at: datetime
    change_note: str
    spec_sha256: str
    template: str = Field(description="The codegen template release it is rendered with.")
    template_current: bool = Field(description="False: Upgrade makes a version on the current one.")


class SpecChangeOut(Schema):
    field: str
    before: str
    after: str


class DiffOut(Schema):
    environment: str = Field(description="The code is rendered for this environment.")
    spec: list[SpecChangeOut]
    code: str = Field(description="The generated DAG as a unified diff.")


def deployment_out(d: Deployment) -> dict[str, Any]:
    return {
        "id": d.id,
        "pipeline": d.version.pipeline.slug,
        "version": d.version.number,
        "environment": d.environment.slug,
        "dag_id": d.dag_id,
        "state": d.state,
        "error": d.error,
        "last_attempt_error": d.last_attempt_error,
        "attempts": d.attempts,
        "requested_at": d.requested_at,
        "registered_at": d.registered_at,
        "deploy_seconds": d.deploy_seconds,
    }


def pipeline_out(p: Pipeline) -> dict[str, Any]:
    versions = list(p.versions.all())
    latest = versions[0]
    return {
        "slug": p.slug,
        "version": latest.number,
        "versions": [v.number for v in versions],
        "team": p.team.slug,
        "owner": p.owner.username,
        "target_table": p.target_table,
        "spec": latest.spec_json,
        "deployments": [
            deployment_out(d)
            for d in Deployment.objects.filter(version__pipeline=p).select_related(
                "version__pipeline", "environment"
            )
        ],
    }


def run_out(r: RunRequest) -> dict[str, Any]:
    return {
        "id": r.id,
        "pipeline": r.pipeline.slug,
        "environment": r.environment.slug,
        "partition": r.partition,
        "dag_id": r.dag_id,
        "dag_run_id": r.dag_run_id,
        "state": r.state,
        "run_state": r.run_state,
        "accept_smaller": r.accept_smaller,
        "error": r.error,
        "requested_at": r.requested_at,
        "requested_by": r.requested_by.get_username(),
        "approval_reason": r.approval_reason,
        "decided_by": r.decided_by.get_username() if r.decided_by else None,
        "decided_at": r.decided_at,
        "decision_comment": r.decision_comment,
    }


def allowed_pipeline(
    request: HttpRequest, slug: str, rule: Callable[[object, Pipeline], bool], refusal: str
) -> Pipeline:
    """The pipeline `slug` if `rule` lets the user at it: 404 if there is none, 403 with
    `refusal` (which may name {team} and {slug}) otherwise."""
    pipeline = get_object_or_404(Pipeline.objects.select_related("team", "owner"), slug=slug)
    if not rule(request.user, pipeline):
        raise HttpError(403, refusal.format(team=pipeline.team.slug, slug=slug))
    return pipeline


def editable_pipeline(request: HttpRequest, slug: str) -> Pipeline:
    return allowed_pipeline(
        request, slug, access.can_edit, "Only members of team {team} may change {slug}."
    )


@api.post("/pipelines", response={201: PipelineOut, 422: ErrorsOut})
def pipeline_create(request: HttpRequest, payload: PipelineIn) -> Any:
    form = PipelineForm(payload.dict(), user=request.user)
    if not form.is_valid():
        return Status(422, {"errors": form_errors(form)})
    try:
        pipeline = services.pipeline_create(spec=form.spec, by=request.user)
    except services.CreateError as exc:  # created by another request meanwhile: as the form says
        return Status(422, {"errors": {exc.field: [exc.message]}})
    except CodegenError as exc:  # a render that fails the shape check is a bug, said plainly
        return Status(422, {"errors": {"__all__": [str(exc)]}})
    return Status(201, pipeline_out(pipeline))


@api.put("/pipelines/{slug}", response={200: EditOut, 422: ErrorsOut})
def pipeline_edit(request: HttpRequest, slug: str, payload: PipelineEditIn) -> Any:
    pipeline = editable_pipeline(request, slug)
    form = PipelineForm(payload.dict(), user=request.user, pipeline=pipeline)
    if not form.is_valid():
        return Status(422, {"errors": form_errors(form)})
    try:
        version = services.pipeline_edit(
            pipeline=pipeline,
            spec=form.spec,
            by=request.user,
            change_note=form.cleaned_data["change_note"],
        )
    except services.EditError as exc:
        return Status(422, {"errors": {"__all__": [str(exc)]}})
    if version is None:
        return {"version": pipeline.versions.order_by("-number").first().number, "created": False}
    return {"version": version.number, "created": True}


@api.get("/pipelines/{slug}/versions", response=list[VersionOut])
def version_list(request: HttpRequest, slug: str) -> Any:
    pipeline = get_object_or_404(Pipeline, slug=slug)
    return [
        {
            "number": v.number,
            "created_by": v.created_by.get_username(),
            "created_at": v.created_at,
            "change_note": v.change_note,
            "spec_sha256": v.spec_sha256,
            "template": v.template_label,
            "template_current": v.template_is_current,
        }
        for v in pipeline.versions.select_related("created_by").order_by("-number")
    ]


@api.get("/pipelines/{slug}/versions/{a}/diff/{b}", response={200: DiffOut, 422: ErrorsOut})
def version_diff(request: HttpRequest, slug: str, a: int, b: int, environment: str = "") -> Any:
    pipeline = get_object_or_404(Pipeline, slug=slug)
    before = get_object_or_404(pipeline.versions, number=a)
    after = get_object_or_404(pipeline.versions, number=b)
    envs = Environment.objects.order_by("order")
    env = envs.filter(slug=environment).first() if environment else envs.first()
    if env is None:
        return Status(422, {"errors": {"environment": [f"No environment “{environment}”."]}})
    diff = deploy_selectors.version_diff(before=before, after=after, environment=env)
    return {"environment": env.slug, "spec": diff["spec"], "code": diff["code"]}


@api.get("/pipelines/{slug}", response=PipelineOut)
def pipeline_get(request: HttpRequest, slug: str) -> Any:
    return pipeline_out(
        get_object_or_404(Pipeline.objects.select_related("team", "owner"), slug=slug)
    )


@api.get("/pipelines/{slug}/versions/{number}/dag")
def pipeline_dag(request: HttpRequest, slug: str, number: int, environment: str = "dev") -> Any:
    pipeline = get_object_or_404(Pipeline, slug=slug)
    version = get_object_or_404(pipeline.versions, number=number)
    env = Environment.objects.filter(slug=environment).first()
    if env is None:
        return errors_response(request, {"environment": [f"No environment “{environment}”."]})
    rendered = deploy.render_for(version, env)
    return HttpResponse(rendered.source, content_type="text/x-python; charset=utf-8")


@api.post(
    "/pipelines/{slug}/deployments",
    response={202: DeploymentOut, 422: ErrorsOut},
    description="Deploy a version to an environment without `requires_approval` (dev). Into "
    "one that requires approval: 403; file a promotion instead.",
)
def deployment_create(request: HttpRequest, slug: str, payload: DeploymentIn) -> Any:
    pipeline = editable_pipeline(request, slug)
    env = Environment.objects.filter(slug=payload.environment).first()
    version = pipeline.versions.filter(number=payload.version).first()
    errors = {}
    if env is None:
        errors["environment"] = [f"No environment “{payload.environment}”."]
    if version is None:
        errors["version"] = [f"{slug} has no version {payload.version}."]
    if errors:
        return Status(422, {"errors": errors})
    try:
        deployment = deploy.deployment_request(version=version, environment=env, by=request.user)
    except deploy.ApprovalRequired as exc:
        raise HttpError(403, str(exc)) from None
    except deploy.DeployError as exc:
        return Status(422, {"errors": {"version": [str(exc)]}})
    return Status(202, deployment_out(deployment))


@api.get("/deployments/{deployment_id}", response=DeploymentOut)
def deployment_get(request: HttpRequest, deployment_id: int) -> Any:
    return deployment_out(
        get_object_or_404(
            Deployment.objects.select_related("version__pipeline", "environment"), id=deployment_id
        )
    )


@api.post(
    "/pipelines/{slug}/runs",
    response={200: RunOut, 202: RunOut, 422: ErrorsOut},
    description="Run the deployed pipeline for one partition. 202: a new run request was "
    "accepted; in an environment that requires approval, a run that can replace loaded data "
    "(a re-load, or accept_smaller) is accepted in state awaiting_approval and nothing reaches "
    "Airflow until an approver other than you approves it (POST /runs/{id}/approve); "
    "POST /pipelines/{slug}/runs/preview says which case applies. 200: a request for the same "
    "pipeline, environment and partition is still awaiting approval, pending or running; that "
    "request is returned (same id) and nothing new is triggered. 422: the partition is "
    "malformed, before the pipeline's start date, not complete yet, the pipeline is not "
    "deployed to the environment, or a backfill there covers the partition.",
)
def run_create(request: HttpRequest, slug: str, payload: RunIn) -> Any:
    pipeline = editable_pipeline(request, slug)
    form = RunNowForm(payload.dict(), pipeline=pipeline)
    if not form.is_valid():
        return Status(422, {"errors": form_errors(form)})
    try:
        run, created = run_approvals.run_now(by=request.user, **form.asked())
    except runs.RunError as exc:
        return Status(422, {"errors": {exc.field: [exc.message]}})
    return Status(202 if created else 200, run_out(run))


@api.get("/runs/{run_id}", response=RunOut)
def run_get(request: HttpRequest, run_id: int) -> Any:
    run = get_object_or_404(
        RunRequest.objects.select_related("pipeline", "environment", "requested_by", "decided_by"),
        id=run_id,
    )
    runs.refresh_if_stale(run)
    return run_out(run)


def paginated(request: HttpRequest, rows: Any, page: int | str, out: Any) -> Any:
    """One page of `rows` as {count, page, pages, results}, or 422 for a page that is not there."""
    paginator = selectors.Paginator(rows, selectors.PER_PAGE)
    if page == "last":
        page = max(paginator.num_pages, 1)
    if page < 1 or page > max(paginator.num_pages, 1):
        return errors_response(request, {"page": [f"There are {paginator.num_pages} pages."]})
    current = paginator.page(page) if paginator.count else []
    return {
        "count": paginator.count,
        "page": page,
        "pages": paginator.num_pages,
        "results": [out(item) for item in current],
    }


def filtered_page(request: HttpRequest, form: Any, rows: Any, out: Any) -> Any:
    """One page of `rows(filters)` for a list's filter form, or 422 with the form's field errors.

    The form is the one its page uses; the API pages by number, so the keyset tokens are dropped.
    """
    if not form.is_valid():
        return errors_response(request, form_errors(form))
    filters = dict(form.values)
    page = filters.pop("page")
    filters.pop("after", None)
    filters.pop("before", None)
    return paginated(request, rows(filters), page, out)


def _partition(value: Any) -> str | None:
    return None if value is None else partition(value)


def health_out(h: Any) -> dict[str, Any]:
    return {
        "pipeline": h.pipeline.slug,
        "environment": h.environment.slug,
        "team": h.team.slug,
        "owner": h.owner.username,
        "verdict": h.verdict,
        "reason": h.reason,
        "last_run_state": h.last_run_state or None,
        "last_run_at": h.last_run_at,
        "last_success_at": h.last_success_at,
        "success_rate_7d": h.success_rate_7d,
        "success_rate_30d": h.success_rate_30d,
        "p50_duration_s": h.p50_duration_s,
        "p95_duration_s": h.p95_duration_s,
        "failing_streak": h.failing_streak,
        "freshness_lag_partitions": h.freshness_lag_partitions,
        "freshness_lag_hours": h.freshness_lag_hours,
        "latest_loaded_partition": _partition(h.latest_loaded_partition),
        "expected_partition": _partition(h.expected_partition),
        "next_expected_run": h.next_expected_run,
        "sla_state": h.sla_state,
        "sla_misses_7d": h.sla_misses_7d,
        "is_paused": h.is_paused,
        "orchestrator_unreachable_since": h.orchestrator_unreachable_since,
        "computed_at": h.computed_at,
    }


@api.get("/health", response={200: HealthPage, 422: ErrorsOut})
def health_list(
    request: HttpRequest,
    team: str = "",
    environment: str = "",
    verdict: str = "",
    owner: str = "",
    sort: str = "worst",
    page: str = "1",
) -> Any:
    """One object per pipeline × environment, worst first; 50 per page (page: a number or last)."""
    form = HealthFilterForm(
        {
            "team": team,
            "environment": environment,
            "verdict": verdict,
            "owner": owner,
            "sort": sort,
            "page": page,
        }
    )
    return filtered_page(
        request, form, lambda _: selectors.health_queryset(form.filters()), health_out
    )


def alert_out(a: Any) -> dict[str, Any]:
    return {
        "id": a.id,
        "pipeline": a.pipeline.slug,
        "environment": a.environment.slug,
        "team": a.team.slug,
        "kind": a.kind,
        "severity": a.severity,
        "state": a.state,
        "summary": a.summary,
        "detail": a.detail,
        "runbook_url": a.runbook_url or None,
        "portal_url": a.portal_url,
        "opened_at": a.opened_at,
        "last_seen_at": a.last_seen_at,
        "resolved_at": a.resolved_at,
        "notify_count": a.notify_count,
    }


@api.get("/alerts", response={200: AlertPage, 422: ErrorsOut})
def alert_list(
    request: HttpRequest,
    state: str = "recent",
    team: str = "",
    environment: str = "",
    kind: str = "",
    page: str = "1",
) -> Any:
    """Open alerts and those resolved in the last 7 days (state=recent), or state=open|all."""
    form = AlertFilterForm(
        {"state": state, "team": team, "environment": environment, "kind": kind, "page": page}
    )
    return filtered_page(
        request, form, lambda filters: selectors.alert_queryset(**filters), alert_out
    )


# --- Audit log -----------------------------------------------------------------------------------


class AuditOut(Schema):
    id: int
    at: datetime
    actor: str | None = Field(description="Username; null for the system.")
    action: str
    pipeline: str | None
    environment: str | None
    summary: str
    before: Any = Field(None, description="The changed values before the action, or null.")
    after: Any = Field(None, description="The values after the action, or null.")


class AuditPage(Schema):
    count: int
    page: int
    pages: int
    results: list[AuditOut]


def audit_out(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at,
        "actor": e.actor.get_username() if e.actor else None,
        "action": e.action,
        "pipeline": e.pipeline.slug if e.pipeline else None,
        "environment": e.environment.slug if e.environment else None,
        "summary": e.summary,
        "before": e.before,
        "after": e.after,
    }


@api.get("/audit", response={200: AuditPage, 422: ErrorsOut})
def audit_list(
    request: HttpRequest,
    pipeline: str = "",
    actor: str = "",
    action: str = "",
    environment: str = "",
    page: str = "1",
) -> Any:
    """The audit log, newest first; 50 per page (page: a number or last)."""
    form = AuditFilterForm(
        {
            "pipeline": pipeline,
            "actor": actor,
            "action": action,
            "environment": environment,
            "page": page,
        }
    )
    return filtered_page(
        request,
        form,
        lambda filters: audit_selectors.audit_queryset(viewer=request.user, **filters),
        audit_out,
    )


# Promotions, rollback, upgrade, checklist: their own module, which builds on the helpers above.
api.add_router("", "pipelines.api.releases.router")
# Backfills: preview, submit, follow, pause / resume / cancel, approval.
api.add_router("", "pipelines.api.backfills.router")
api.add_router("", "pipelines.api.runs.router")
# The caller's API tokens: create, list, revoke.
api.add_router("", "pipelines.api.tokens.router")
