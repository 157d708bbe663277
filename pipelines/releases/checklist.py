"""The launch-readiness checklist: one small function per check, each with its reason.

A check reads `Facts` (gathered once, in a fixed number of queries, by `facts_for`) and returns
`(ok, reason)`. It blocks a promotion unless registered with `blocking=False` (advisory: shown,
not blocking). A platform team extends the list by adding a function here:

    @check("my_rule", "What it asks for", blocking=False)
    def my_rule(f: Facts) -> tuple[bool, str]:
        return ok, "why, in a sentence a requester can act on"

The checklist is evaluated live on the promote form, snapshotted on the request, and evaluated
again when an approver decides (a blocking item failing then makes the request stale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from pipelines.alerts.models import Alert
from pipelines.authoring import codegen
from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.authoring.spec import PipelineSpec
from pipelines.core import schedule
from pipelines.core.airflow import DagRunState
from pipelines.core.errors import user_error
from pipelines.core.models import Membership
from pipelines.deployments.models import Deployment, Environment
from pipelines.deployments.services import render_for
from pipelines.monitoring.models import PipelineHealth, RunRecord
from pipelines.runs.models import RunRequest


@dataclass(frozen=True)
class Item:
    """One evaluated check, as the page, the API and the snapshot show it."""

    check: str
    label: str
    ok: bool
    blocking: bool
    reason: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Facts:
    """Everything the checks read about one version going to one environment."""

    pipeline: Pipeline
    version: PipelineVersion
    spec: PipelineSpec
    target: Environment
    source: Environment | None
    now: datetime
    owner_membership: Membership | None = None
    # this version's deployment in the source environment, and when it stopped running there
    source_deployment: Deployment | None = None
    source_replaced_at: datetime | None = None
    source_successes: int = 0
    source_last_success: datetime | None = None
    source_health: PipelineHealth | None = None
    source_page_alerts: list[Alert] = field(default_factory=list)
    target_active_runs: list[RunRequest] = field(default_factory=list)
    render_error: str | None = None


CheckFn = Callable[[Facts], tuple[bool, str]]


@dataclass(frozen=True)
class Check:
    name: str
    label: str
    blocking: bool
    fn: CheckFn


CHECKS: list[Check] = []


def check(name: str, label: str, *, blocking: bool = True) -> Callable[[CheckFn], CheckFn]:
    def register(fn: CheckFn) -> CheckFn:
        CHECKS.append(Check(name, label, blocking, fn))
        return fn

    return register


def source_environment(target: Environment) -> Environment | None:
    """The environment a version is promoted from: the one just before `target` in order."""
    return Environment.objects.filter(order__lt=target.order).order_by("-order", "-id").first()


def facts_for(
    version: PipelineVersion, target: Environment, *, now: datetime | None = None
) -> Facts:
    """Gather the facts in a fixed number of queries (about ten, whatever the history)."""
    now = now or timezone.now()
    # Read afresh: the checklist is evaluated again at a decision, on rows that may have changed.
    pipeline = Pipeline.objects.select_related("team", "owner").get(pk=version.pipeline_id)
    source = source_environment(target)
    facts = Facts(
        pipeline=pipeline,
        version=version,
        spec=version.spec,
        target=target,
        source=source,
        now=now,
        owner_membership=Membership.objects.filter(
            team_id=pipeline.team_id, user_id=pipeline.owner_id
        )
        .select_related("user")
        .first(),
    )
    try:
        render_for(version, target)
    except codegen.CodegenError as exc:
        facts.render_error = str(exc)
    facts.target_active_runs = list(
        RunRequest.objects.filter(
            pipeline=pipeline,
            environment=target,
            state__in=(RunRequest.State.PENDING, RunRequest.State.SUBMITTED),
        ).exclude(run_state__in=RunRequest.TERMINAL_RUN_STATES)
    )
    if source is None:
        return facts
    history = list(
        Deployment.objects.filter(version__pipeline=pipeline, environment=source)
        .in_request_order()
        .values_list("id", "version_id", "state", "registered_at")
    )
    mine = [row for row in history if row[1] == version.id]
    if mine:
        dep_id = mine[-1][0]
        facts.source_deployment = Deployment.objects.get(id=dep_id)
        later = [at for pk, _, _, at in history[[r[0] for r in history].index(dep_id) + 1 :] if at]
        facts.source_replaced_at = min(later) if later else None
    deployment = facts.source_deployment
    if deployment is not None and deployment.registered_at is not None:
        window_start = max(
            deployment.registered_at, now - timedelta(days=target.readiness_success_days)
        )
        runs = RunRecord.objects.filter(
            pipeline=pipeline,
            environment=source,
            state=DagRunState.SUCCESS,
            start_date__gte=window_start,
        )
        if facts.source_replaced_at is not None:
            runs = runs.filter(start_date__lt=facts.source_replaced_at)
        facts.source_successes = runs.count()
        facts.source_last_success = (
            runs.order_by("-end_date").values_list("end_date", flat=True).first()
        )
    facts.source_health = PipelineHealth.objects.filter(
        pipeline=pipeline, environment=source
    ).first()
    facts.source_page_alerts = list(
        Alert.objects.filter(
            pipeline=pipeline,
            environment=source,
            state=Alert.State.OPEN,
            severity=Alert.Severity.PAGE,
        )
    )
    return facts


def evaluate(facts: Facts) -> list[Item]:
    """Run every check; a check that raises fails with the error as its reason (never a 500)."""
    items = []
    for c in CHECKS:
        try:
            ok, reason = c.fn(facts)
        except Exception as exc:  # a platform team's check with a bug must not hide the others
            ok, reason = False, f"The check itself failed: {user_error(exc, doing=c.name)}."
        items.append(Item(c.name, c.label, bool(ok), c.blocking, reason))
    return items


def checklist(
    version: PipelineVersion, target: Environment, *, now: datetime | None = None
) -> list[Item]:
    return evaluate(facts_for(version, target, now=now))


def blocking_failures(items: list[Item]) -> list[Item]:
    return [item for item in items if item.blocking and not item.ok]


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "never"


def _src(f: Facts) -> str:
    return f.source.name if f.source else "the environment before"


# --- the checks ---------------------------------------------------------------------------


@check("owner", "Owner set, active and in the team")
def owner_in_team(f: Facts) -> tuple[bool, str]:
    owner = f.pipeline.owner
    team = f.pipeline.team.name
    if not owner.is_active:
        return False, f"Owner {owner.get_username()} is deactivated: edit the pipeline's owner."
    if f.owner_membership is None:
        return False, f"Owner {owner.get_username()} is not a member of team {team}."
    return True, f"{owner.get_username()}, active, member of {team}."


@check("alert_route", "Team has an alert route for the target environment")
def alert_route(f: Facts) -> tuple[bool, str]:
    team = f.pipeline.team
    if f.target.pages_oncall:
        targets = [t for t in (team.oncall_email, team.oncall_webhook_env) if t]
        kind = "on-call"
    else:
        targets = [t for t in (team.quiet_email, team.quiet_webhook_env) if t]
        kind = "alert"
    if not targets:
        return False, (
            f"Team {team.name} has no {kind} email or webhook, and {f.target.name} "
            f"{'pages on-call' if f.target.pages_oncall else 'sends alerts to the quiet route'}."
        )
    return True, f"{kind.capitalize()} route: {', '.join(targets)}."


@check("sla", "SLA set")
def sla_set(f: Facts) -> tuple[bool, str]:
    if not f.spec.sla_minutes:
        return False, "No SLA: edit the pipeline and set one."
    return True, f"{f.spec.sla_minutes} minutes after the scheduled time."


@check("runbook", "Runbook URL set")
def runbook_set(f: Facts) -> tuple[bool, str]:
    if not f.spec.runbook_url:
        return False, "No runbook URL: whoever is paged needs one."
    return True, f.spec.runbook_url


@check("retries", "Retries ≥ 1")
def retries(f: Facts) -> tuple[bool, str]:
    if f.spec.retries < 1:
        return False, "Retries is 0: one network blip fails the run."
    return True, f"{f.spec.retries} retries with backoff."


@check("template", "On the current template")
def template_current(f: Facts) -> tuple[bool, str]:
    if not f.version.template_is_current:
        return False, (
            f"Made with {f.version.template_label}; the portal renders "
            f"{codegen.template_label(codegen.TEMPLATE_VERSION)} now: Upgrade first."
        )
    return True, f.version.template_label


@check("parsed", "Renders, and Airflow parsed it without import errors")
def parsed(f: Facts) -> tuple[bool, str]:
    if f.render_error:
        return False, f"The DAG does not render for {f.target.name}: {f.render_error}"
    d = f.source_deployment
    if d is None:
        return False, f"Version {f.version.number} was never deployed to {_src(f)}."
    if d.registered_at is None:
        state = d.get_state_display().lower()
        why = f": {d.error.splitlines()[0][:200]}" if d.error else ""
        return False, f"Its deployment to {_src(f)} is {state}{why}."
    if (
        f.source_health is not None
        and f.source_health.has_import_error
        and (f.source_replaced_at is None)
    ):
        return False, f"Airflow reports an import error for it in {_src(f)} now."
    return True, f"Registered in {_src(f)} {_when(d.registered_at)} with no import error."


@check("successful_run", "A successful run of this version in the source environment")
def successful_run(f: Facts) -> tuple[bool, str]:
    days = f.target.readiness_success_days
    if f.source is None:
        return False, f"No environment comes before {f.target.name}."
    if f.source_successes < 1:
        return False, (
            f"No successful run of version {f.version.number} in {_src(f)} within the last "
            f"{days} days: run it there first (Run now)."
        )
    runs = "run" if f.source_successes == 1 else "runs"
    return True, (
        f"{f.source_successes} successful {runs} in {_src(f)} within {days} days, the newest "
        f"ending {_when(f.source_last_success)}."
    )


@check("fresh", "Data fresh in the source environment")
def fresh(f: Facts) -> tuple[bool, str]:
    h = f.source_health
    if h is None:
        return False, f"No health computed in {_src(f)} yet (the sync has not seen it)."
    if h.latest_loaded_partition is None:
        return False, f"No partition is loaded in {_src(f)} yet."
    lag = h.freshness_lag_partitions
    if lag and lag > 0:
        return (
            False,
            f"{_src(f)} is {lag} partition(s) behind ({h.freshness_lag_hours or 0:.1f} h).",
        )
    newest = schedule.format_partition(h.latest_loaded_partition, f.spec.partition_grain)
    return True, f"Up to date in {_src(f)}: the newest partition, {newest}, is loaded."


@check("no_page_alert", "No open page-severity alert in the source environment")
def no_page_alert(f: Facts) -> tuple[bool, str]:
    if f.source_page_alerts:
        first = f.source_page_alerts[0]
        return False, f"{first.get_kind_display()} in {_src(f)}: {first.summary}"
    return True, f"No page is open in {_src(f)}."


@check(
    "target_quiet",
    "No active run-now or backfill in the target environment on the same table",
    blocking=False,
)
def target_quiet(f: Facts) -> tuple[bool, str]:
    if f.target_active_runs:
        partitions = ", ".join(r.partition for r in f.target_active_runs[:3])
        return False, (
            f"A run-now of {partitions} is active in {f.target.name}: it would load with the "
            "old version's code, or race the new file."
        )
    return True, f"Nothing is loading {f.pipeline.target_table} in {f.target.name} now."


@check("dst", "The schedule's DST behaviour is explicit", blocking=False)
def dst_explicit(f: Facts) -> tuple[bool, str]:
    notes = schedule.dst_notes(f.spec.schedule, f.spec.timezone, f.spec.partition_grain, now=f.now)
    if not notes:
        return True, f"No fire is skipped or repeated by DST in {f.spec.timezone} this year."
    return False, f"{notes[0].day:%Y-%m-%d}: {notes[0].text}" + (
        f" (and {len(notes) - 1} more change(s))" if len(notes) > 1 else ""
    )
