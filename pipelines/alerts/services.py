"""Alerts: one per condition of a pipeline in an environment, routed, deduplicated, resolved.

`alerts_evaluate` reads what sync and SLA evaluation precomputed (PipelineHealth, open SlaMiss)
and decides, per pipeline × environment, which conditions hold:

    import_error  page     Airflow cannot import the DAG file
    run_failed    page     the newest finished run failed (a DagRun fails only after its last retry)
    sla_missed    page     a partition was not loaded by its SLA deadline and still is not
    stale         warning  the partition that should exist by now is missing (not while paused);
                  page     from ALERT_STALE_PAGE_PARTITIONS partitions behind
    retrying      warning  a task waits to retry and no run has failed

One incident, one page: the first four are causes in that order and a condition opens an alert
only while no earlier one holds (a failed run also leaves the data stale and misses the SLA; the
failure is what to act on). An alert already open stays open until its own condition clears.

Deduplication, with window = ALERT_DEDUP_MINUTES since the last opened/reminder/escalated message:
- an open alert is not notified again inside the window; past it, one reminder per window;
- a warning that becomes a page (stale data falling further behind) notifies at once;
- a condition that clears resolves its alert at once (a "resolved" message); if it comes back
  while the last message is still inside the window, the same alert re-opens without a message
  (a flapping failure does not page twice in one window; the reminder follows the window);
- while the orchestrator is unreachable the kinds read from runs are frozen (neither opened nor
  resolved from rows that cannot be refreshed); SLA misses still page, they run on the clock.

Race safety: each transition is a conditional UPDATE, or an INSERT guarded by the partial unique
constraint (one open alert per key) in its own savepoint, and writes its deliveries only if it
won. Deliveries are outbox rows (core/outbox.py) that `tasks.alert_deliver` sends once the
transaction commits; the outbox sweep sends again any that were left behind.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from pipelines.alerts.models import Alert, AlertDelivery
from pipelines.authoring.models import Pipeline
from pipelines.core import schedule
from pipelines.core.errors import user_error
from pipelines.core.models import Team
from pipelines.core.secrets import webhook_env_problem
from pipelines.deployments.models import Environment
from pipelines.monitoring import health, monitor
from pipelines.monitoring.models import PipelineHealth, SlaMiss

logger = logging.getLogger(__name__)
Kind, Severity, State = Alert.Kind, Alert.Severity, Alert.State
Event, Channel = AlertDelivery.Event, AlertDelivery.Channel
CAUSES = (Kind.IMPORT_ERROR, Kind.RUN_FAILED, Kind.SLA_MISSED, Kind.STALE)
# Read from synced runs and flags, so unknown while the orchestrator is unreachable.
FROM_RUNS = frozenset({Kind.IMPORT_ERROR, Kind.RUN_FAILED, Kind.STALE, Kind.RETRYING})


@dataclass(frozen=True)
class Condition:
    kind: str
    severity: str
    summary: str
    detail: str = ""


@dataclass
class EvaluateResult:
    opened: int = 0
    reopened: int = 0
    reminded: int = 0
    escalated: int = 0
    resolved: int = 0
    delivery_ids: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)  # pipeline id: what failed


def dedup_window() -> timedelta:
    return timedelta(minutes=settings.ALERT_DEDUP_MINUTES)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def _partition(stored: datetime | None, grain: str) -> str:
    return schedule.format_partition(health.from_stored(stored), grain) if stored else "none"


def conditions_for(
    row: PipelineHealth, *, grain: str, open_misses: list[SlaMiss]
) -> dict[str, Condition]:
    """Return the conditions that hold for one health row, by kind. `open_misses` newest first."""
    found: dict[str, Condition] = {}
    if row.has_import_error:
        found[Kind.IMPORT_ERROR] = Condition(
            Kind.IMPORT_ERROR,
            Severity.PAGE,
            "Airflow cannot import the DAG file.",
            "No run starts until a version that imports is deployed; the pipeline page shows "
            "Airflow's error.",
        )
    if row.failing_streak:
        runs = "run" if row.failing_streak == 1 else f"{row.failing_streak} runs"
        found[Kind.RUN_FAILED] = Condition(
            Kind.RUN_FAILED,
            Severity.PAGE,
            f"Last {runs} failed after all retries.",
            f"Newest run queued {_when(row.last_run_at)}; last success "
            f"{_when(row.last_success_at)}.",
        )
    elif row.retrying:
        found[Kind.RETRYING] = Condition(
            Kind.RETRYING,
            Severity.WARNING,
            "A task failed and is waiting to retry.",
            "Nothing to do yet: Airflow retries it. A failure after the last retry pages.",
        )
    if open_misses:
        newest = open_misses[0]
        earlier = len(open_misses) - 1
        more = f" {earlier} earlier deadline(s) also missed and still unloaded." if earlier else ""
        found[Kind.SLA_MISSED] = Condition(
            Kind.SLA_MISSED,
            Severity.PAGE,
            f"Partition {newest.partition} missed its SLA deadline.",
            f"Scheduled {_when(newest.fire_time)}, due by {_when(newest.deadline)}, "
            f"not loaded yet.{more}",
        )
    lag = row.freshness_lag_partitions
    if lag and lag > 0 and not row.is_paused:
        severity = (
            Severity.PAGE if lag >= settings.ALERT_STALE_PAGE_PARTITIONS else Severity.WARNING
        )
        many = "partition" if lag == 1 else "partitions"
        found[Kind.STALE] = Condition(
            Kind.STALE,
            severity,
            f"Data is {lag} {many} behind ({row.freshness_lag_hours or 0:.1f} h).",
            f"Newest loaded partition {_partition(row.latest_loaded_partition, grain)}; "
            f"expected {_partition(row.expected_partition, grain)} by now.",
        )
    return found


def _suppressed(kind: str, holding: dict[str, Condition]) -> bool:
    """A cause opens no alert while an earlier cause holds (one incident, one page)."""
    if kind not in CAUSES:
        return False
    return any(earlier in holding for earlier in CAUSES[: CAUSES.index(kind)])


def _due(alert: Alert, now: datetime, window: timedelta) -> bool:
    return alert.last_notified_at is None or now - alert.last_notified_at >= window


def _rises(old: str, new: str) -> bool:
    return old == Severity.WARNING and new == Severity.PAGE


def route(*, team: Team, environment: Environment, severity: str) -> list[tuple[str, str]]:
    """Return [(channel, target)]: pages where the environment pages on-call go on-call."""
    if severity == Severity.PAGE and environment.pages_oncall:
        email, webhook_env = team.oncall_email, team.oncall_webhook_env
    else:
        email, webhook_env = team.quiet_email, team.quiet_webhook_env
    targets = [(Channel.EMAIL, email)] if email else []
    if webhook_env:
        targets.append((Channel.WEBHOOK, webhook_env))
    if not targets and settings.ALERT_FALLBACK_EMAIL:
        targets.append((Channel.EMAIL, settings.ALERT_FALLBACK_EMAIL))
    return targets


def portal_url(pipeline: Pipeline) -> str:
    return settings.PORTAL_BASE_URL.rstrip("/") + pipeline.get_absolute_url()


def alerts_evaluate(
    *,
    environment: Environment,
    pipeline_ids: Iterable[int] | None = None,
    now: datetime | None = None,
) -> EvaluateResult:
    """Open, remind, escalate and resolve the alerts of `environment` (or of `pipeline_ids`).

    Reads in a fixed number of queries; each transition (rare) is one guarded write.
    """
    now = now or timezone.now()
    ids = None if pipeline_ids is None else sorted(set(pipeline_ids))

    def scoped(queryset):
        queryset = queryset.filter(environment=environment)
        return queryset if ids is None else queryset.filter(pipeline_id__in=ids)

    rows = {
        row.pipeline_id: row
        for row in scoped(PipelineHealth.objects.select_related("pipeline", "team"))
    }
    deployed = monitor.deployed_pipelines(environment, ids)
    misses: dict[int, list[SlaMiss]] = defaultdict(list)
    for miss in scoped(SlaMiss.objects.filter(loaded_at__isnull=True)).order_by("-fire_time"):
        misses[miss.pipeline_id].append(miss)
    open_alerts: dict[int, dict[str, Alert]] = defaultdict(dict)
    for alert in scoped(Alert.objects.filter(state=State.OPEN).select_related("team")):
        open_alerts[alert.pipeline_id][alert.kind] = alert
    window = dedup_window()
    recently_resolved = {
        alert.key: alert
        for alert in scoped(
            Alert.objects.filter(
                state=State.RESOLVED,
                resolved_at__gte=now - window,
                last_notified_at__gt=now - window,
            )
        ).order_by("resolved_at")  # the newest per key wins
    }

    result = EvaluateResult()
    deliveries: list[AlertDelivery] = []

    def notify(alert: Alert, event: str) -> None:
        deliveries.extend(
            AlertDelivery(alert=alert, event=event, channel=channel, target=target)
            for channel, target in route(
                team=alert.team, environment=environment, severity=alert.severity
            )
        )

    touched: list[Alert] = []

    def evaluate_one(pid: int) -> None:
        row, d = rows.get(pid), deployed.get(pid)
        if row is None or d is None:  # no longer deployed here: nothing holds
            holding, frozen = {}, frozenset()
        else:
            holding = conditions_for(row, grain=d.spec.partition_grain, open_misses=misses[pid])
            frozen = FROM_RUNS if row.orchestrator_unreachable_since else frozenset()
        for kind, alert in open_alerts[pid].items():
            if kind in frozen:
                continue
            condition = holding.get(kind)
            if condition is None:
                if _resolve(alert, now):
                    result.resolved += 1
                    notify(alert, Event.RESOLVED)
                continue
            if _rises(alert.severity, condition.severity):
                if _notified(alert, now, severity=condition.severity):
                    result.escalated += 1
                    notify(alert, Event.ESCALATED)
            elif _due(alert, now, window) and _notified(alert, now):
                result.reminded += 1
                notify(alert, Event.REMINDER)
            alert.severity, alert.summary = condition.severity, condition.summary
            alert.detail, alert.last_seen_at = condition.detail, now
            touched.append(alert)
        for kind, condition in holding.items():
            if kind in open_alerts[pid] or kind in frozen or _suppressed(kind, holding):
                continue
            previous = recently_resolved.get(Alert.key_for(pid, environment.id, kind))
            if previous is not None and not _rises(previous.severity, condition.severity):
                result.reopened += _reopen(previous, condition, now)
                continue
            alert = _open(row, d.spec.runbook_url, environment, condition, now)
            if alert is not None:
                result.opened += 1
                notify(alert, Event.OPENED)

    with transaction.atomic():
        for pid in sorted(set(rows) | set(open_alerts)):
            try:
                evaluate_one(pid)
            except Exception as exc:  # one pipeline's bug must not stop the others' alerts
                doing = f"evaluating the alerts of pipeline {pid} in {environment.slug}"
                error = user_error(exc, doing=doing)
                result.errors[pid] = f"Its alerts could not be evaluated: {error}."
        Alert.objects.bulk_update(touched, ["severity", "summary", "detail", "last_seen_at"])
        for delivery in AlertDelivery.objects.bulk_create(deliveries):
            result.delivery_ids.append(delivery.id)
            AlertDelivery.enqueue(delivery.id)
    return result


def _open(
    row: PipelineHealth, runbook_url: str, environment: Environment, condition: Condition, now
) -> Alert | None:
    """Insert the open alert; None if another evaluation opened it first (the constraint)."""
    alert = Alert(
        key=Alert.key_for(row.pipeline_id, environment.id, condition.kind),
        pipeline=row.pipeline,
        environment=environment,
        team=row.team,
        kind=condition.kind,
        severity=condition.severity,
        summary=condition.summary,
        detail=condition.detail,
        runbook_url=runbook_url,
        portal_url=portal_url(row.pipeline),
        opened_at=now,
        last_seen_at=now,
        last_notified_at=now,
        notify_count=1,
    )
    try:
        with transaction.atomic():
            alert.save(force_insert=True)
    except IntegrityError:
        return None
    return alert


def _reopen(alert: Alert, condition: Condition, now: datetime) -> bool:
    """Re-open a just-resolved alert without a message (it was notified inside the window)."""
    try:
        with transaction.atomic():
            return (
                Alert.objects.filter(id=alert.id, state=State.RESOLVED).update(
                    state=State.OPEN,
                    resolved_at=None,
                    last_seen_at=now,
                    severity=condition.severity,
                    summary=condition.summary,
                    detail=condition.detail,
                )
                == 1
            )
    except IntegrityError:  # a new alert for the key was opened meanwhile
        return False


def _resolve(alert: Alert, now: datetime) -> bool:
    return (
        Alert.objects.filter(id=alert.id, state=State.OPEN).update(
            state=State.RESOLVED, resolved_at=now
        )
        == 1
    )


def _notified(alert: Alert, now: datetime, *, severity: str | None = None) -> bool:
    """Claim this notification: only one evaluation moves last_notified_at from what it read."""
    changes = {"last_notified_at": now, "notify_count": F("notify_count") + 1}
    if severity is not None:
        changes["severity"] = severity
    won = (
        Alert.objects.filter(
            id=alert.id,
            state=State.OPEN,
            severity=alert.severity,
            last_notified_at=alert.last_notified_at,
        ).update(**changes)
        == 1
    )
    if won:
        alert.last_notified_at, alert.notify_count = now, alert.notify_count + 1
        alert.severity = severity or alert.severity
    return won


# --- Delivery -----------------------------------------------------------------------------------


class DeliveryRetry(Exception):
    """A transient failure (network, 5xx, 429): try again in `seconds`."""

    def __init__(self, message: str, *, seconds: int) -> None:
        super().__init__(message)
        self.seconds = seconds


class DeliveryRejected(Exception):
    """A permanent failure: sending again would not help."""


@transaction.atomic
def notice_send(
    *,
    team: Team,
    environment: Environment,
    subject: str,
    text: str,
    emails: Iterable[str] = (),
) -> list[AlertDelivery]:
    """Announce something that is not an alert (a promotion asked for or decided, a rollback)
    through the team's quiet targets for `environment` and to `emails` (the people involved).

    The deliveries are outbox rows written in the caller's transaction; they are sent on
    commit, retried with backoff, once each.
    """
    targets = route(team=team, environment=environment, severity=Severity.WARNING)
    targets += [(Channel.EMAIL, email) for email in emails if email]
    unique = list(dict.fromkeys(targets))
    deliveries = AlertDelivery.objects.bulk_create(
        AlertDelivery(
            event=Event.NOTICE,
            channel=channel,
            target=target,
            subject=subject[:300],
            text=text,
        )
        for channel, target in unique
    )
    for delivery in deliveries:
        AlertDelivery.enqueue(delivery.id)
    return deliveries


def message_for(delivery: AlertDelivery) -> tuple[str, str]:
    """Return (subject, text) for one delivery: what, where, why, the runbook and the portal."""
    alert = delivery.alert
    if alert is None:  # a notice carries its own words
        return delivery.subject, delivery.text
    label = {
        Event.OPENED: alert.get_severity_display().upper(),
        Event.REMINDER: "REMINDER",
        Event.ESCALATED: "PAGE",
        Event.RESOLVED: "RESOLVED",
    }[delivery.event]
    subject = (
        f"[{label}] {alert.get_kind_display()}: {alert.pipeline.slug} in {alert.environment.name}"
    )
    if delivery.event == Event.RESOLVED:
        what = [f"Cleared at {_when(delivery.created_at)}. It was: {alert.summary}"]
    else:
        what = [f"What's wrong: {alert.summary}", alert.detail]
    if delivery.event == Event.REMINDER:
        what.append(f"Still open since {_when(alert.opened_at)}.")
    runbook = alert.runbook_url or "none — add one to the pipeline in the portal"
    lines = [
        subject,
        "",
        *[line for line in what if line],
        "",
        f"Severity: {alert.get_severity_display()} · Kind: {alert.get_kind_display()} · "
        f"Pipeline: {alert.pipeline.slug} · Environment: {alert.environment.name}",
        f"Runbook: {runbook}",
        f"Portal: {alert.portal_url}",
    ]
    return subject, "\n".join(lines)


# "@here", "@channel", "@everyone" (and Slack's "!here"… inside <>): a zero-width space after
# the "@" leaves them readable and notifies no one.
_BROADCAST_RE = re.compile(r"@(here|channel|everyone)\b", re.IGNORECASE)


def slack_text(text: str) -> str:
    """Return `text` as Slack shows it verbatim: no mention, broadcast or link markup survives.

    Reasons, comments and names are typed by users and quoted in messages; escaped here, once,
    for every message the webhook sends (the portal's own words use no Slack markup).
    """
    # Reference: https://api.slack.com/reference/surfaces/formatting#escaping
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST_RE.sub("@\u200b\\1", escaped)


def _post_webhook(env_name: str, text: str) -> None:
    """POST a Slack-compatible message to the URL held by environment variable `env_name`."""
    # Reference: https://api.slack.com/messaging/webhooks ("text" is the fallback and the message)
    # The name is checked again here: a row saved before the rule may hold any name.
    if problem := webhook_env_problem(env_name):
        raise DeliveryRejected(problem)
    url = os.environ.get(env_name, "")
    if not url:
        raise DeliveryRejected(f"Environment variable {env_name} is not set.")
    response = requests.post(
        url,
        json={"text": slack_text(text)},
        timeout=settings.ALERT_WEBHOOK_TIMEOUT_SECONDS,
        allow_redirects=False,  # the URL is a secret: never send the message on elsewhere
    )
    if response.status_code == 429 or response.status_code >= 500:
        raise requests.HTTPError(f"webhook answered {response.status_code}", response=response)
    if response.status_code >= 400:
        raise DeliveryRejected(f"Webhook answered {response.status_code}: {response.text[:200]}")
    if response.status_code >= 300:
        raise DeliveryRejected(
            f"Webhook answered {response.status_code}, a redirect, which is not followed: set "
            f"${env_name} to the address that answers itself."
        )


def _error_text(delivery: AlertDelivery, exc: Exception) -> str:
    """The delivery's last_error: a sentence, never a driver's text (requests' holds the URL,
    and a webhook URL is a secret)."""
    if isinstance(exc, requests.HTTPError):  # our own words: "webhook answered 503"
        return f"The {exc}."
    if delivery.channel == Channel.WEBHOOK:
        where = f"the webhook in ${delivery.target}"
    else:
        where = f"{delivery.target} through the mail server"
    if isinstance(exc, requests.Timeout | TimeoutError):
        return f"No answer in time delivering to {where}."
    if isinstance(exc, OSError):  # requests', socket and SMTP errors
        return f"Could not deliver to {where}: the connection failed or the server refused it."
    return f"Could not deliver to {where}: {user_error(exc, doing=f'delivery {delivery.id}')}."


def delivery_send(*, delivery_id: int) -> None:
    """Send one delivery. Safe to call twice; raises DeliveryRetry on a transient failure.

    The claim lets one worker in; a rejection ends the delivery failed at once, a transient
    failure is retried with backoff until ALERT_DELIVERY_MAX_ATTEMPTS ends it failed.
    """
    token = AlertDelivery.claim(delivery_id)
    if token is None:
        return
    delivery = AlertDelivery.objects.select_related("alert__pipeline", "alert__environment").get(
        id=delivery_id
    )
    try:
        subject, text = message_for(delivery)
        if delivery.channel == Channel.EMAIL:
            send_mail(subject, text, None, [delivery.target])
        else:
            _post_webhook(delivery.target, text)
    except DeliveryRejected as exc:
        AlertDelivery.finish(
            delivery_id, token, state=AlertDelivery.State.FAILED, last_error=str(exc)
        )
        return
    # requests' errors, socket and SMTP errors are all OSErrors; anything else (a bug, an odd
    # target) is retried the same way, up to the cap, so the claim is never left held.
    except Exception as exc:
        error = _error_text(delivery, exc)
        seconds = AlertDelivery.release(delivery_id, token, error=error)
        if seconds is None:  # the attempt cap ended it failed (or a newer claim owns it)
            return
        logger.warning("alert delivery %s failed (%s); retry in %s s", delivery_id, error, seconds)
        raise DeliveryRetry(error, seconds=seconds) from exc
    AlertDelivery.finish(
        delivery_id, token, state=AlertDelivery.State.SENT, last_error="", sent_at=timezone.now()
    )
