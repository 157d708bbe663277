"""Tables of alerts. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from pipelines.authoring.models import Pipeline
from pipelines.core.models import Team
from pipelines.core.outbox import Outbox, RetryPolicy
from pipelines.deployments.models import Environment


class Alert(models.Model):
    """One condition of one pipeline in one environment, from when it opened until it cleared.

    At most one open alert per `key` (pipeline × environment × kind): the partial unique
    constraint is what keeps two evaluations running at once from opening it twice.
    """

    class Kind(models.TextChoices):
        IMPORT_ERROR = "import_error", "Import error"
        RUN_FAILED = "run_failed", "Run failed"
        SLA_MISSED = "sla_missed", "SLA missed"
        STALE = "stale", "Data stale"
        RETRYING = "retrying", "Retrying"

    class Severity(models.TextChoices):
        PAGE = "page", "Page"
        WARNING = "warning", "Warning"

    class State(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    key = models.CharField(max_length=100, help_text="pipeline:environment:kind")
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="alerts")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    summary = models.CharField(max_length=300)
    detail = models.TextField(blank=True)
    runbook_url = models.URLField(max_length=500, blank=True)
    portal_url = models.URLField(max_length=500)
    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(
        null=True, blank=True, help_text="Last opened/reminder/escalated message (not resolved)."
    )
    notify_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"], condition=models.Q(state="open"), name="alert_one_open_per_key"
            )
        ]
        indexes = [
            models.Index(fields=["environment", "state"], name="alert_env_state"),
            models.Index(fields=["key", "-resolved_at"], name="alert_key_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.key} {self.severity} {self.state}"

    @staticmethod
    def key_for(pipeline_id: int, environment_id: int, kind: str) -> str:
        return f"{pipeline_id}:{environment_id}:{kind}"


class AlertDelivery(Outbox):
    """One message about an alert to one target; the row is the outbox the deliver task reads.

    PENDING → SENT, or FAILED with `last_error`: at once when the target rejects the message,
    after ALERT_DELIVERY_MAX_ATTEMPTS when it keeps failing (network, 5xx, 429).
    """

    OUTBOX_TASK = "pipelines.tasks.alert_deliver"
    OUTBOX_CLAIMABLE = ("pending",)
    OUTBOX_FAILED = "failed"

    class Event(models.TextChoices):
        NOTICE = "notice", "Notice"
        OPENED = "opened", "Opened"
        REMINDER = "reminder", "Reminder"
        ESCALATED = "escalated", "Escalated"
        RESOLVED = "resolved", "Resolved"

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    # A delivery without an alert is a notice (a promotion requested/decided, a rollback): it
    # carries its own subject and text and goes to the team's quiet targets.
    alert = models.ForeignKey(
        Alert, on_delete=models.CASCADE, null=True, blank=True, related_name="deliveries"
    )
    subject = models.CharField(max_length=300, blank=True, help_text="A notice's subject.")
    text = models.TextField(blank=True, help_text="A notice's text.")
    event = models.CharField(max_length=20, choices=Event.choices)
    channel = models.CharField(max_length=20, choices=Channel.choices)
    target = models.CharField(
        max_length=254, help_text="Email address, or the env variable holding the webhook URL."
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["state", "lease_until"], name="alertdelivery_due")]

    def __str__(self) -> str:
        return f"{self.event} {self.channel}:{self.target} {self.state}"

    @classmethod
    def retry_policy(cls) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=settings.ALERT_DELIVERY_MAX_ATTEMPTS,
            backoff_first_s=30,
            backoff_max_s=600,
            lease_s=120,
        )

    @classmethod
    def gave_up_message(cls, error: str, attempts: int) -> str:
        return f"Gave up: {error}"

    @classmethod
    def gave_up_fields(cls, message: str) -> dict[str, object]:
        return {"last_error": message}

    @property
    def error(self) -> str:
        """The admin's and the messages' name for `last_error`."""
        return self.last_error
