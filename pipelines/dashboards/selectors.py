"""Reads for screens, each in a fixed number of queries."""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator  # noqa: F401  (api.py pages with it)
from django.db.models import Count, F, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.shortcuts import get_object_or_404
from django.utils import timezone

from pipelines.alerts.models import Alert
from pipelines.authoring import codegen
from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.catalog.models import SourceTable
from pipelines.core import schedule
from pipelines.core.airflow import DagRunState
from pipelines.core.models import Membership, Team
from pipelines.deployments.models import Deployment, Environment
from pipelines.monitoring import health
from pipelines.monitoring.models import NEVER_STARTED, PipelineHealth, RunRecord, SlaMiss, Verdict
from pipelines.releases.models import Promotion
from pipelines.runs.models import RunRequest


def pipeline_list() -> list[dict[str, Any]]:
    """Return one row per pipeline with its newest deployment per environment (3 queries)."""
    environments = list(Environment.objects.order_by("order"))
    pipelines = list(
        Pipeline.objects.select_related("team", "owner", "source_table__database").order_by("slug")
    )
    latest: dict[tuple[int, int], Deployment] = {}
    deployments = (
        Deployment.objects.shown()
        .filter(version__pipeline__in=pipelines)
        .select_related("version")
        .in_request_order()
    )
    for d in deployments:
        latest[(d.version.pipeline_id, d.environment_id)] = d
    return [
        {
            "pipeline": p,
            "deployments": [(e, latest.get((p.id, e.id))) for e in environments],
        }
        for p in pipelines
    ]


RECENT_RUNS = 20


def recent_runs(*, pipeline: Pipeline) -> dict[str, Any]:
    """The pipeline's newest runs and whether any is still active: what the runs table shows,
    and all it reads while it polls (one query)."""
    run_list = list(
        RunRequest.objects.filter(pipeline=pipeline)
        .select_related("environment", "requested_by", "decided_by")
        .order_by("-requested_at")[:RECENT_RUNS]
    )
    # A request awaiting approval may wait for hours: it does not keep the table polling.
    running = any(r.is_active and r.state != RunRequest.State.AWAITING_APPROVAL for r in run_list)
    return {"runs": run_list, "any_running": running}


def pipeline_detail(*, slug: str) -> dict[str, Any]:
    """Everything the pipeline page shows (seven queries, whatever the history)."""
    pipeline = get_object_or_404(
        Pipeline.objects.select_related("team", "owner", "source_table__database").prefetch_related(
            Prefetch(
                "versions",
                queryset=PipelineVersion.objects.select_related("created_by").order_by("-number"),
            )
        ),
        slug=slug,
    )
    versions = list(pipeline.versions.all())
    environments = list(Environment.objects.order_by("order"))
    deployments = list(
        Deployment.objects.filter(version__pipeline=pipeline)
        .select_related("version", "environment", "requested_by")
        .order_by("-requested_at")
    )
    return {
        "pipeline": pipeline,
        "version": versions[0],
        "spec": versions[0].spec,
        "versions": versions,
        "environments": environments,
        "panels": environment_panels(pipeline, versions, environments, deployments),
        "current_template": codegen.template_label(codegen.TEMPLATE_VERSION),
        "deployments": deployments,
        "any_deploying": any(d.is_active for d in deployments),
    } | recent_runs(pipeline=pipeline)


@dataclass(frozen=True)
class EnvironmentPanel:
    """One environment's column on the pipeline page."""

    environment: Environment
    latest: PipelineVersion
    shown: Deployment | None  # the newest request no newer one superseded, in any state
    running: Deployment | None  # what runs there now: releases.services.current_deployment
    health: PipelineHealth | None
    pending: Promotion | None
    rollback_targets: list[PipelineVersion]  # releases.services.rollback_targets, newest first

    @property
    def deploy_latest(self) -> bool:
        """Whether the Deploy button for the newest version makes sense here."""
        shown = self.shown
        return not self.environment.requires_approval and (
            shown is None
            or shown.version_id != self.latest.id
            or shown.state == Deployment.State.FAILED
        )

    @property
    def promote_latest(self) -> bool:
        """Whether to offer "Promote vN…": approval needed, none pending, not there already."""
        running = self.running
        return (
            self.environment.requires_approval
            and self.pending is None
            and (running is None or running.version_id != self.latest.id)
        )

    @property
    def diff_from(self) -> PipelineVersion | None:
        """The version running here when it is not the newest ("What would change" from it)."""
        running = self.running
        return running.version if running and running.version_id != self.latest.id else None


def environment_panels(
    pipeline: Pipeline,
    versions: list[PipelineVersion],
    environments: list[Environment],
    deployments: list[Deployment],
) -> list[EnvironmentPanel]:
    """One panel per environment, in order, in two queries whatever the number of environments
    and versions (health rows, promotions); `deployments` are all of the pipeline's, loaded.

    The rollback targets follow releases.services.rollback_targets (which asks per
    environment): versions that ran there or were approved there, except the one running.
    """
    health = {h.environment_id: h for h in PipelineHealth.objects.filter(pipeline=pipeline)}
    promotions = list(
        Promotion.objects.filter(
            pipeline=pipeline, state__in=(Promotion.State.PENDING, Promotion.State.APPROVED)
        ).select_related("version", "requested_by")
    )
    pending = {p.environment_id: p for p in promotions if p.is_pending}
    allowed: dict[int, set[int]] = defaultdict(set)
    for p in promotions:
        if p.state == Promotion.State.APPROVED:
            allowed[p.environment_id].add(p.version_id)
    shown: dict[int, Deployment] = {}
    running: dict[int, Deployment] = {}
    for d in sorted(deployments, key=lambda d: (d.requested_at, d.id)):  # REQUEST_ORDER
        if d.state != Deployment.State.SUPERSEDED:
            shown[d.environment_id] = d
        if d.state == Deployment.State.DEPLOYED:
            running[d.environment_id] = d
        if d.registered_at is not None:
            allowed[d.environment_id].add(d.version_id)
    panels = []
    for env in environments:
        now = running.get(env.id)
        targets = [
            v
            for v in versions  # newest first
            if v.id in allowed[env.id] and (now is None or v.id != now.version_id)
        ]
        panels.append(
            EnvironmentPanel(
                environment=env,
                latest=versions[0],
                shown=shown.get(env.id),
                running=now,
                health=health.get(env.id),
                pending=pending.get(env.id),
                rollback_targets=targets,
            )
        )
    return panels


def upgrades_list(*, user: object) -> dict[str, Any]:
    """Pipelines whose newest version is not on the current template, with where each runs
    (four queries, whatever the number of pipelines)."""
    release, sha256 = codegen.current_template()
    newest = (
        PipelineVersion.objects.filter(pipeline=OuterRef("pipeline"))
        .order_by("-number")
        .values("number")[:1]
    )
    stale = list(
        PipelineVersion.objects.annotate(newest=Subquery(newest))
        .filter(number=F("newest"))
        .exclude(template_version=release, template_sha256=sha256)
        .select_related("pipeline__team", "pipeline__owner")
        .order_by("pipeline__team__name", "pipeline__slug")
    )
    environments = list(Environment.objects.order_by("order"))
    runs: dict[int, dict[int, Deployment]] = defaultdict(dict)
    deployed = (
        Deployment.objects.deployed()
        .filter(version__pipeline__in=[v.pipeline_id for v in stale])
        .select_related("version")
        .in_request_order()
    )
    for d in deployed:
        runs[d.version.pipeline_id][d.environment_id] = d
    teams = (
        set(Membership.objects.filter(user=user).values_list("team_id", flat=True))
        if getattr(user, "is_authenticated", False)
        else set()
    )
    rows = [
        {
            "pipeline": v.pipeline,
            "version": v,
            "runs": [(e, runs[v.pipeline_id].get(e.id)) for e in environments],
            "can_upgrade": v.pipeline.team_id in teams,
        }
        for v in stale
    ]
    return {
        "rows": rows,
        "environments": environments,
        "current_label": codegen.template_label(release),
    }


def catalog_list() -> list[SourceTable]:
    return list(
        SourceTable.objects.select_related("database")
        .prefetch_related("columns")
        .order_by("database__name", "schema", "name")
    )


# --- Health dashboards: read PipelineHealth rows only, a fixed number of queries per page ---------

HEALTH_SORTS = {
    "worst": ["verdict_rank", "-freshness_lag_partitions", "pipeline__slug"],
    "name": ["pipeline__slug", "environment__order"],
    "lag": ["-freshness_lag_hours", "verdict_rank"],
    "last_run": ["-last_run_at"],
    "success": ["success_rate_7d", "verdict_rank"],
}
PER_PAGE = 50


# --- Keyset pages: a deep page costs no more than the first -------------------------------------
#
# A page is "the PER_PAGE rows after (or before) this row in the list's order", the row given by
# an opaque token of its sort values, so PostgreSQL seeks to it through the sort instead of
# sorting and skipping every row OFFSET would: the cost does not grow with the page number. The
# last page is the first page of the reversed order. `page=N` alone (an old link) still works,
# with OFFSET. NULL sorts as the greatest value on every database (PostgreSQL's own rule), so
# that a token's comparisons match the order.


@dataclass(frozen=True)
class Key:
    path: str  # "pipeline__slug"
    descending: bool
    nullable: bool

    def order(self, *, reverse: bool = False) -> Any:
        descending = self.descending != reverse
        if not self.nullable:
            return F(self.path).desc() if descending else F(self.path).asc()
        if descending:
            return F(self.path).desc(nulls_first=True)
        return F(self.path).asc(nulls_last=True)

    def after(self, value: Any, *, reverse: bool = False) -> Q | None:
        """Rows strictly after `value` in this key's order (reversed); None: no row is."""
        descending = self.descending != reverse
        nulls_first = descending
        if value is None:
            return Q(**{f"{self.path}__isnull": False}) if nulls_first else None
        beyond = Q(**{f"{self.path}__{'lt' if descending else 'gt'}": value})
        if self.nullable and not nulls_first:
            beyond |= Q(**{f"{self.path}__isnull": True})
        return beyond

    def equal(self, value: Any) -> Q:
        if value is None:
            return Q(**{f"{self.path}__isnull": True})
        return Q(**{self.path: value})


def keys_for(model: Any, order: list[str]) -> list[Key]:
    """Keys of `order` (Django order_by names), ending with "id" so that the order is total."""
    names = [*order, "id"] if order[-1].lstrip("-") != "id" else order
    return [Key(name.lstrip("-"), name.startswith("-"), _field(model, name).null) for name in names]


def _field(model: Any, name: str) -> Any:
    *relations, last = name.lstrip("-").split("__")
    for relation in relations:
        model = model._meta.get_field(relation).related_model
    return model._meta.get_field(last)


def keyset_token(obj: Any, keys: list[Key]) -> str:
    values = []
    for key in keys:
        value = obj
        for part in key.path.split("__"):
            value = getattr(value, part)
        values.append(value.isoformat() if isinstance(value, datetime) else value)
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _untoken(token: str, model: Any, keys: list[Key]) -> list[Any] | None:
    """The sort values a token names, each as its field reads it; None if it is not one of ours."""
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(values, list) or len(values) != len(keys):
            return None
        if any(isinstance(value, str) and "\x00" in value for value in values):
            return None  # PostgreSQL refuses NUL in text
        return [
            None if value is None else _field(model, key.path).to_python(value)
            for key, value in zip(keys, values, strict=True)
        ]
    except (ValueError, TypeError, OverflowError, ValidationError, binascii.Error):
        return None


def _seek(keys: list[Key], values: list[Any], *, reverse: bool) -> Q:
    """Rows after the row with `values` (before it if `reverse`), as one OR of prefixes."""
    condition = Q(pk__in=[])  # nothing
    equal = Q()
    for key, value in zip(keys, values, strict=True):
        beyond = key.after(value, reverse=reverse)
        if beyond is not None:
            condition |= equal & beyond
        equal &= key.equal(value)
    return condition


@dataclass
class KeysetPage:
    """One page of a list and the links around it; what the pager template shows."""

    object_list: list[Any]
    number: int
    num_pages: int
    count: int
    links: dict[str, str]  # first / previous / next / last -> query string

    @property
    def has_previous(self) -> bool:
        return "previous" in self.links

    @property
    def has_next(self) -> bool:
        return "next" in self.links


def keyset_page(
    rows: QuerySet,
    order: list[str],
    *,
    query: dict[str, str],
    page: str = "",
    after: str = "",
    before: str = "",
    per_page: int = PER_PAGE,
) -> KeysetPage:
    """The page of `rows` (in `order`) that page/after/before name; two queries, however deep.

    `query` holds the list's filters, kept in every link.
    """
    keys = keys_for(rows.model, order)
    forward = [k.order() for k in keys]
    count = rows.count()
    num_pages = max(1, -(-count // per_page))
    number = _page_number(page, num_pages)
    cursor_after = _untoken(after, rows.model, keys) if after else None
    cursor_before = _untoken(before, rows.model, keys) if before and not cursor_after else None
    if page == "last":
        shown = count - (num_pages - 1) * per_page
        found = _rows(rows, Q(), [k.order(reverse=True) for k in keys], 0, shown)[::-1]
    elif cursor_after is not None:
        found = _rows(rows, _seek(keys, cursor_after, reverse=False), forward, 0, per_page)
    elif cursor_before is not None:
        backward = [k.order(reverse=True) for k in keys]
        seek = _seek(keys, cursor_before, reverse=True)
        found = _rows(rows, seek, backward, 0, per_page)[::-1]
    else:  # the first page, or an old ?page=N link
        found = _rows(rows, Q(), forward, (number - 1) * per_page, per_page)
    links = {}

    def link(n: int | str, **cursor: str) -> str:
        return urlencode({**{k: v for k, v in query.items() if v}, "page": n, **cursor})

    if number > 1:
        links["first"] = link(1)
        if found:
            links["previous"] = link(number - 1, before=keyset_token(found[0], keys))
    if number < num_pages:
        if found:
            links["next"] = link(number + 1, after=keyset_token(found[-1], keys))
        links["last"] = link("last")
    return KeysetPage(found, number, num_pages, count, links)


def _rows(rows: QuerySet, where: Q, order: list[Any], start: int, limit: int) -> list[Any]:
    """The rows of one page, in one query: the page's ids are chosen in a subquery that joins
    only what the filter and the order need, then only those rows are read with their
    relations, so PostgreSQL sorts narrow rows instead of every joined one."""
    ids = rows.filter(where).order_by(*order).values("pk")[start : start + limit]
    return list(rows.filter(pk__in=ids).order_by(*order))


def _page_number(page: str, num_pages: int) -> int:
    if page == "last":
        return num_pages
    try:
        return min(max(1, int(page)), num_pages)
    except (TypeError, ValueError):
        return 1


@dataclass(frozen=True)
class HealthFilters:
    """The /health/ list's filters, as forms.HealthFilterForm cleans them."""

    team: str = ""
    environment: str = ""
    owner: str = ""
    verdict: str = ""
    sort: str = "worst"
    page: int = 1
    last: bool = False  # page=last
    after: str = ""  # keyset tokens (see keyset_page)
    before: str = ""


def health_queryset(filters: HealthFilters) -> QuerySet[PipelineHealth]:
    rows = PipelineHealth.objects.select_related("pipeline", "environment", "team", "owner")
    if filters.team:
        rows = rows.filter(team__slug=filters.team)
    if filters.environment:
        rows = rows.filter(environment__slug=filters.environment)
    if filters.owner:
        rows = rows.filter(owner__username=filters.owner)
    if filters.verdict:
        rows = rows.filter(verdict=filters.verdict)
    return rows.order_by(*HEALTH_SORTS[filters.sort], "id")


def health_overview(filters: HealthFilters) -> dict[str, Any]:
    """The overview page: one page of rows, verdict counts and the filter choices (6 queries)."""
    rows = health_queryset(filters)
    page = keyset_page(
        rows,
        HEALTH_SORTS[filters.sort],
        query={
            "team": filters.team,
            "environment": filters.environment,
            "owner": filters.owner,
            "verdict": filters.verdict,
            "sort": filters.sort if filters.sort != "worst" else "",
        },
        page="last" if filters.last else str(filters.page),
        after=filters.after,
        before=filters.before,
    )
    counts = dict(
        health_queryset(replace(filters, verdict=""))
        .order_by()
        .values_list("verdict")
        .annotate(n=Count("id"))
    )
    return {
        "page": page,
        "filters": filters,
        "counts": [(v, label, counts.get(v, 0)) for v, label in Verdict.choices],
        "teams": list(Team.objects.order_by("name").values_list("slug", "name")),
        "environments": list(Environment.objects.order_by("order").values_list("slug", "name")),
        "owners": list(
            PipelineHealth.objects.order_by("owner__username")
            .values_list("owner__username", flat=True)
            .distinct()
        ),
        "verdicts": Verdict.choices,
        "sorts": list(HEALTH_SORTS),
    }


CHART_RUNS = 40
CHART_W, CHART_H = 720, 160
CALENDAR = {"day": 35, "hour": 48}


RECENT_FAILURES = 5


def pipeline_health(*, pipeline: Pipeline, spec: Any, environment: Environment | None) -> dict:
    """Health rows of one pipeline, and for one environment its run chart and partition calendar.

    Four queries: health rows, recent runs, runs over the calendar window, SLA misses.
    """

    rows = list(
        PipelineHealth.objects.filter(pipeline=pipeline)
        .select_related("environment")
        .order_by("environment__order")
    )
    if environment is None:
        environment = rows[0].environment if rows else None
    if environment is None:
        return {"health_rows": rows, "health_env": None}
    recent = list(
        RunRecord.objects.filter(pipeline=pipeline, environment=environment)
        .exclude(NEVER_STARTED)
        .order_by("-queued_at")[:CHART_RUNS]
    )[::-1]
    grain = spec.partition_grain
    step = schedule.GRAINS[grain]
    row = next((r for r in rows if r.environment_id == environment.id), None)
    last = (
        health.from_stored(row.expected_partition)
        if row and row.expected_partition
        else schedule.floor_to_grain(timezone.now(), grain, spec.timezone) - step
    )
    first = last - step * (CALENDAR[grain] - 1)
    window = (
        RunRecord.objects.filter(
            pipeline=pipeline,
            environment=environment,
            partition_end__gt=health.as_stored(first),
            partition_start__lte=health.as_stored(last),
        )
        .exclude(NEVER_STARTED)
        .values_list("partition_start", "partition_end", "state", "queued_at")
    )
    covering: dict[datetime, list[tuple[datetime, str]]] = {}
    for start, end, state, queued in window:
        p = max(health.from_stored(start), first)
        while p < health.from_stored(end) and p <= last:
            covering.setdefault(p, []).append((queued, state))
            p += step
    late: set[datetime] = set()
    for miss in SlaMiss.objects.filter(
        pipeline=pipeline, environment=environment, fire_time__gte=timezone.now() - step * 60
    ):
        parts = schedule.partitions_for_fire(spec.schedule, spec.timezone, grain, miss.fire_time)
        late.update(parts)
    cells = []
    p = first
    while p <= last:
        states = [s for _, s in sorted(covering.get(p, []), reverse=True)]
        if DagRunState.SUCCESS in states:
            status = "late" if p in late else "loaded"
        elif states and states[0] in (DagRunState.RUNNING, DagRunState.QUEUED):
            status = "running"
        elif states and states[0] == DagRunState.FAILED:
            status = "failed"
        else:
            status = "missing"
        cells.append({"partition": schedule.format_partition(p, grain), "status": status})
        p += step
    return {
        "health_rows": rows,
        "health_env": environment,
        "chart": _run_chart(recent, spec.sla_minutes),
        # Why the latest runs failed (read from Airflow by the sync), newest first.
        "failures": [r for r in reversed(recent) if r.state == DagRunState.FAILED][
            :RECENT_FAILURES
        ],
        "calendar": cells,
        "calendar_grain": grain,
    }


def _run_chart(runs: list, sla_minutes: int | None) -> dict:
    """Bar geometry for an inline SVG: one bar per run, height = duration, colour = state."""
    durations = [r.duration_s or 0 for r in runs]
    sla_s = sla_minutes * 60 if sla_minutes else None
    top = max([*durations, sla_s or 0, 1]) * 1.1
    width = CHART_W / max(len(runs), 1)
    bars = []
    for i, r in enumerate(runs):
        h = max((r.duration_s or 0) / top * CHART_H, 2)
        bars.append(
            {
                "x": round(i * width + 1, 1),
                "y": round(CHART_H - h, 1),
                "w": round(max(width - 2, 1), 1),
                "h": round(h, 1),
                "state": r.state,
                "title": f"{r.dag_run_id}: {r.state}, {(r.duration_s or 0):.0f} s, "
                + (f"queued {r.queued_at:%Y-%m-%d %H:%M} UTC" if r.queued_at else "not queued"),
            }
        )
    sla_y = round(CHART_H - sla_s / top * CHART_H, 1) if sla_s else None
    return {"bars": bars, "w": CHART_W, "h": CHART_H, "sla_y": sla_y, "top_s": top}


def _choices() -> dict[str, Any]:
    return {
        "teams": list(Team.objects.order_by("name").values_list("slug", "name")),
        "environments": list(Environment.objects.order_by("order").values_list("slug", "name")),
    }


def sla_dashboard(
    *, team: str = "", environment: str = "", page: int | str = 1, after: str = "", before: str = ""
) -> dict[str, Any]:
    """Misses per week, compliance per team and pipeline, and each miss (9 queries)."""
    from django.db.models import Exists, OuterRef, Sum
    from django.db.models.functions import TruncWeek

    now = timezone.now()
    misses = SlaMiss.objects.all()
    rows = PipelineHealth.objects.exclude(sla_state=PipelineHealth.SlaState.NONE)
    if team:
        misses, rows = misses.filter(team__slug=team), rows.filter(team__slug=team)
    if environment:
        misses = misses.filter(environment__slug=environment)
        rows = rows.filter(environment__slug=environment)
    weekly = list(
        misses.filter(fire_time__gte=now - timedelta(weeks=8))
        .annotate(week=TruncWeek("fire_time"))
        .values("week")
        .annotate(n=Count("id"))
        .order_by("week")
    )
    peak = max([w["n"] for w in weekly] or [1])
    by_team = [
        {**t, "compliance": _compliance(t["deadlines"], t["missed"])}
        for t in rows.values("team__slug", "team__name")
        .annotate(deadlines=Sum("sla_deadlines_30d"), missed=Sum("sla_misses_30d"))
        .order_by("team__name")
    ]
    worst = [
        (h, _compliance(h.sla_deadlines_30d, h.sla_misses_30d))
        for h in rows.filter(sla_misses_30d__gt=0)
        .select_related("pipeline", "environment", "team")
        .order_by("-sla_misses_30d", "pipeline__slug")[:20]
    ]
    started = RunRecord.objects.filter(
        pipeline=OuterRef("pipeline"),
        environment=OuterRef("environment"),
        partition_start__lte=OuterRef("partition_start"),
        partition_end__gt=OuterRef("partition_start"),
        start_date__isnull=False,
    )
    listed = misses.select_related("pipeline", "environment", "team")
    page_obj = keyset_page(
        listed,
        ["-fire_time", "pipeline__slug"],
        query={"team": team, "environment": environment},
        page=str(page),
        after=after,
        before=before,
    )
    # "Started" is looked up for the shown rows only: PostgreSQL would evaluate a subquery in
    # the SELECT list for every row it sorts.
    started_ids = set(
        SlaMiss.objects.filter(
            Exists(started), id__in=[m.id for m in page_obj.object_list]
        ).values_list("id", flat=True)
    )
    for miss in page_obj.object_list:
        miss.started = miss.id in started_ids
    return {
        "weekly": [{**w, "pct": round(100 * w["n"] / peak)} for w in weekly],
        "by_team": by_team,
        "worst": worst,
        "misses": page_obj,
        "filters": {"team": team, "environment": environment},
        **_choices(),
    }


def _compliance(deadlines: int | None, missed: int | None) -> float | None:
    if not deadlines:
        return None
    return max(0.0, 1 - (missed or 0) / deadlines)


OWNERSHIP_LIST_ROWS = 50


def ownership() -> dict[str, Any]:
    """Who is on the hook for what, and what has nobody or no safety net (7 queries).

    The orphan and gap lists show their first OWNERSHIP_LIST_ROWS rows and a total.
    """
    from django.db.models import Exists, OuterRef

    member = Membership.objects.filter(team=OuterRef("team"), user=OuterRef("owner"))
    pipelines = Pipeline.objects.annotate(owner_in_team=Exists(member))
    no_route = (
        Q(team__oncall_email="")
        & Q(team__oncall_webhook_env="")
        & Q(team__quiet_email="")
        & Q(team__quiet_webhook_env="")
    )
    by_team = list(
        pipelines.values("team__slug", "team__name")
        .annotate(
            pipelines=Count("id"),
            owners=Count("owner", distinct=True),
            no_sla=Count("id", filter=Q(sla_minutes__isnull=True)),
            no_runbook=Count("id", filter=Q(runbook_url="")),
            no_route=Count("id", filter=no_route),
        )
        .order_by("team__name")
    )
    orphaned = pipelines.filter(Q(owner__is_active=False) | Q(owner_in_team=False))
    gapped = pipelines.filter(Q(sla_minutes__isnull=True) | Q(runbook_url="") | no_route)
    listed = OWNERSHIP_LIST_ROWS
    orphans = list(orphaned.select_related("team", "owner").order_by("team__name", "slug")[:listed])
    gaps = list(gapped.select_related("team", "owner").order_by("team__name", "slug")[:listed])
    on_hook = list(
        PipelineHealth.objects.values("owner__username", "team__name")
        .annotate(
            pipelines=Count("pipeline", distinct=True),
            failing=Count("id", filter=Q(verdict__in=["failing", "sla_missed"])),
            stale=Count("id", filter=Q(verdict="stale")),
            prod=Count("id", filter=Q(environment__pages_oncall=True)),
        )
        .order_by("-failing", "-stale", "owner__username")
    )
    teams_without_route = list(
        Team.objects.filter(
            oncall_email="", oncall_webhook_env="", quiet_email="", quiet_webhook_env=""
        )
        .order_by("name")
        .values_list("name", flat=True)
    )
    return {
        "by_team": by_team,
        "orphans": orphans,
        "orphans_total": orphaned.count(),
        "gaps": gaps,
        "gaps_total": gapped.count(),
        "on_hook": on_hook,
        "teams_without_route": teams_without_route,
    }


ALERT_STATES = ("open", "recent", "all")
RECENT_ALERTS = timedelta(days=7)


def alert_queryset(
    *, state: str = "open", team: str = "", environment: str = "", kind: str = ""
) -> QuerySet:
    """Open alerts, or open and resolved in the last 7 days ("recent"), or all; newest first."""

    rows = Alert.objects.select_related("pipeline", "environment", "team")
    if state == "open":
        rows = rows.filter(state=Alert.State.OPEN)
    elif state == "recent":
        rows = rows.filter(
            Q(state=Alert.State.OPEN) | Q(resolved_at__gte=timezone.now() - RECENT_ALERTS)
        )
    if team:
        rows = rows.filter(team__slug=team)
    if environment:
        rows = rows.filter(environment__slug=environment)
    if kind:
        rows = rows.filter(kind=kind)
    return rows.order_by(*ALERT_ORDER)


ALERT_ORDER = ["state", "-opened_at", "id"]


def alert_page(
    *,
    state: str,
    team: str,
    environment: str,
    kind: str,
    page: int | str,
    after: str = "",
    before: str = "",
) -> dict:
    rows = alert_queryset(state=state, team=team, environment=environment, kind=kind)
    filters = {"state": state, "team": team, "environment": environment, "kind": kind}
    return {
        "alerts": keyset_page(
            rows, ALERT_ORDER, query=filters, page=str(page), after=after, before=before
        ),
        "filters": {"state": state, "team": team, "environment": environment, "kind": kind},
        **_choices(),
    }
