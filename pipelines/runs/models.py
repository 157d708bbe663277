"""Tables of runs. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from pipelines.authoring.models import Pipeline
from pipelines.core.airflow import TERMINAL_RUN_STATES, DagRunState
from pipelines.core.outbox import Outbox, RetryPolicy
from pipelines.deployments.models import Environment

# Submitting is one API call: a short lease. The first try and the 10 retries with backoff that
# Celery's retry_backoff gave before the outbox did; then the request ends failed, and says why.
SUBMIT_POLICY = RetryPolicy(max_attempts=11, backoff_first_s=1, backoff_max_s=600, lease_s=120)


class RunRequest(Outbox):
    """A user's "run now for partition P". The row is the outbox the submit task works from.

    Outbox states: PENDING (to trigger in Airflow) → SUBMITTED, or FAILED with `last_error`.
    In an environment that requires approval, a run that can replace loaded data (a re-load, or
    one that accepts a smaller partition) starts AWAITING_APPROVAL and becomes PENDING only when
    an approver who did not ask approves it (releases.runs); REJECTED or WITHDRAWN otherwise.
    Following the run once submitted (`run_state`, UNTRACKED) is not outbox work: the refresh
    has its own throttle, `refreshed_at`, and never touches the lease.
    """

    OUTBOX_TASK = "pipelines.tasks.run_submit"
    OUTBOX_CLAIMABLE = ("pending",)
    OUTBOX_FAILED = "failed"

    class State(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        PENDING = "pending", "Pending"
        SUBMITTED = "submitted", "Submitted"
        FAILED = "failed", "Failed to submit"
        UNTRACKED = "untracked", "No longer followed"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Withdrawn"

    # Still to run or running, awaiting a decision included: one such request per partition.
    ACTIVE_STATES = ("awaiting_approval", "pending", "submitted")

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="run_requests")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="+")
    partition = models.CharField(max_length=20, help_text="YYYY-MM-DD or YYYY-MM-DDTHH:00")
    dag_id = models.CharField(max_length=250)
    dag_run_id = models.CharField(max_length=250, unique=True)
    logical_date = models.DateTimeField()
    accept_smaller = models.BooleanField(
        default=False,
        help_text="The user accepted that this run may shrink the partition (shrink guard off).",
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    run_state = models.CharField(
        max_length=20, blank=True, choices=DagRunState.choices, help_text="Airflow's DagRun state."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    # Four eyes (releases.runs): why the request waits, the partition's state it was asked
    # against (a request is stale once that changes), and who decided.
    approval_reason = models.CharField(max_length=500, blank=True)
    partition_fingerprint = models.CharField(max_length=64, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.CharField(max_length=500, blank=True)
    # auto_now is not bumped by QuerySet.update(): every update in runs.py sets it explicitly.
    updated_at = models.DateTimeField(auto_now=True)
    refreshed_at = models.DateTimeField(
        null=True, blank=True, help_text="When a refresh from Airflow was last enqueued."
    )
    # The base's `last_error` is the error the user sees under the run: why submitting is
    # retrying or failed, why the run failed in Airflow, or that it is no longer followed.
    last_error = models.TextField(
        blank=True,
        help_text="Why submitting failed, why the run failed, or why it is not followed.",
    )

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["state", "lease_until"])]
        constraints = [
            # At most one request per pipeline × environment × partition awaiting approval,
            # still to submit or running in Airflow: a double-click gets the active one back
            # (runs.run_request).
            models.UniqueConstraint(
                fields=["pipeline", "environment", "partition"],
                condition=models.Q(state__in=["awaiting_approval", "pending", "submitted"])
                & ~models.Q(run_state__in=[DagRunState.FAILED, DagRunState.SUCCESS]),
                name="runrequest_one_active_per_partition",
            )
        ]

    def __str__(self) -> str:
        return f"{self.dag_id} {self.partition}"

    TERMINAL_RUN_STATES = TERMINAL_RUN_STATES

    @classmethod
    def retry_policy(cls) -> RetryPolicy:
        return SUBMIT_POLICY

    @classmethod
    def gave_up_fields(cls, message: str) -> dict[str, object]:
        return {"last_error": message, "updated_at": timezone.now()}

    @property
    def error(self) -> str:
        """The pages' and the API's name for `last_error`."""
        return self.last_error

    def conf(self) -> dict[str, object]:
        """The DagRun conf the generated DAG reads (partition_bounds, the shrink guard)."""
        conf: dict[str, object] = {"partition": self.partition}
        if self.accept_smaller:
            conf["accept_smaller"] = True
        return conf

    @property
    def is_active(self) -> bool:
        if self.state not in self.ACTIVE_STATES:
            return False
        return self.run_state not in self.TERMINAL_RUN_STATES
