"""Tables of backfills. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from pipelines.authoring.models import Pipeline
from pipelines.core.outbox import Outbox, RetryPolicy
from pipelines.deployments.models import Environment

# Airflow's backfill is watched by asking it every few seconds; one step never waits. The lease
# is the outbox's rule (Celery's hard time limit and a margin).
BACKFILL_POLICY = RetryPolicy(max_attempts=12, backoff_first_s=5, backoff_max_s=900)


class Backfill(Outbox):
    """A range of partitions reloaded through Airflow's backfill API. The row is the outbox the
    backfill step works from: it submits the chunks one after another (Airflow runs one backfill
    per DAG at a time), follows each, and carries out pause, resume and cancel (`wanted`).

    AWAITING_APPROVAL (environments with requires_approval) → QUEUED → RUNNING ⇄ PAUSED →
    SUCCEEDED | FAILED | CANCELLED; REJECTED by an approver. QUEUED means "the next chunk is to
    be submitted" (first, or after the previous finished); `airflow_backfill_id` is then empty,
    and `chunk_submitting_at` says whether a create of it may have reached Airflow.
    """

    OUTBOX_TASK = "pipelines.tasks.backfill_step"
    OUTBOX_CLAIMABLE = ("queued", "running", "paused")
    OUTBOX_FAILED = "failed"

    class State(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        REJECTED = "rejected", "Rejected"

    class Reprocess(models.TextChoices):
        MISSING = "missing", "Missing only"
        FAILED = "failed", "Missing and failed"
        ALL = "all", "Everything"

    class Wanted(models.TextChoices):
        RUN = "run", "Run"
        PAUSE = "pause", "Pause"
        CANCEL = "cancel", "Cancel"

    ACTIVE_STATES = ("awaiting_approval", "queued", "running", "paused")

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="backfills")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="+")
    dag_id = models.CharField(max_length=250)
    first_partition = models.CharField(max_length=20, help_text="YYYY-MM-DD or YYYY-MM-DDTHH:00")
    last_partition = models.CharField(max_length=20, help_text="Inclusive.")
    from_date = models.DateTimeField(
        help_text="Airflow's backfill range start: the first run's logical date."
    )
    to_date = models.DateTimeField(help_text="Airflow's backfill range end (inclusive).")
    reprocess = models.CharField(max_length=10, choices=Reprocess.choices)
    max_active_runs = models.PositiveSmallIntegerField(default=1)
    reason = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64, help_text="Of the previewed set of runs.")
    partitions = models.PositiveIntegerField(help_text="Partitions the runs load.")
    runs = models.PositiveIntegerField(help_text="Runs Airflow creates.")
    # [[from, to], …] ISO datetimes, each one Airflow backfill; submitted in order.
    chunks = models.JSONField(default=list)
    chunk_index = models.PositiveIntegerField(default=0, help_text="The chunk submitted last.")
    airflow_backfill_id = models.BigIntegerField(
        null=True, blank=True, help_text="Airflow's backfill of the current chunk, once known."
    )
    chunk_submitting_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a create of the current chunk was first sent to Airflow, while its "
        "Airflow id is unknown: Airflow may have made it, so a step looks there before it "
        "creates again.",
    )
    # {done, failed, cancelled, running}: the runs of the chunks finished so far, read from
    # Airflow as each finished. An ended backfill shows these, not the synced runs: a later
    # backfill re-running the same runs would otherwise take its progress back.
    counted = models.JSONField(default=dict, blank=True)
    state = models.CharField(
        max_length=20, choices=State.choices, default=State.QUEUED, db_index=True
    )
    wanted = models.CharField(max_length=10, choices=Wanted.choices, default=Wanted.RUN)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.CharField(max_length=500, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            # One active backfill per pipeline × environment, in the database: two identical
            # requests at the same moment make one backfill, and ranges never overlap (Airflow
            # itself runs one backfill per DAG).
            models.UniqueConstraint(
                fields=["pipeline", "environment"],
                condition=models.Q(state__in=["awaiting_approval", "queued", "running", "paused"]),
                name="backfill_one_active",
            )
        ]
        indexes = [models.Index(fields=["state", "lease_until"], name="backfill_due")]

    def __str__(self) -> str:
        return f"{self.dag_id} {self.first_partition}…{self.last_partition} ({self.state})"

    @classmethod
    def retry_policy(cls) -> RetryPolicy:
        return BACKFILL_POLICY

    @classmethod
    def gave_up_fields(cls, message: str) -> dict[str, object]:
        return {"last_error": message, "finished_at": timezone.now(), "updated_at": timezone.now()}

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def error(self) -> str:
        return self.last_error
