"""Tables of runs. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from pipelines.authoring.models import Pipeline
from pipelines.deployments.models import Environment


class RunRequest(models.Model):
    """A user's "run now for partition P". The row is the outbox the trigger task works from."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SUBMITTED = "submitted", "Submitted"
        FAILED = "failed", "Failed to submit"
        UNTRACKED = "untracked", "No longer followed"

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
    run_state = models.CharField(max_length=20, blank=True, help_text="Airflow's DagRun state.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # auto_now is not bumped by QuerySet.update(): every update in runs.py sets it explicitly.
    updated_at = models.DateTimeField(auto_now=True)
    refreshed_at = models.DateTimeField(
        null=True, blank=True, help_text="When a refresh from Airflow was last enqueued."
    )
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["state", "lease_until"])]
        constraints = [
            # At most one request per pipeline × environment × partition still to submit or
            # running in Airflow: a double-click gets the active one back (runs.run_request).
            models.UniqueConstraint(
                fields=["pipeline", "environment", "partition"],
                condition=models.Q(state__in=["pending", "submitted"])
                & ~models.Q(run_state__in=["failed", "success"]),
                name="runrequest_one_active_per_partition",
            )
        ]

    def __str__(self) -> str:
        return f"{self.dag_id} {self.partition}"

    TERMINAL_RUN_STATES = frozenset({"success", "failed"})

    def conf(self) -> dict[str, object]:
        """The DagRun conf the generated DAG reads (partition_bounds, the shrink guard)."""
        conf: dict[str, object] = {"partition": self.partition}
        if self.accept_smaller:
            conf["accept_smaller"] = True
        return conf

    @property
    def is_active(self) -> bool:
        if self.state not in (self.State.PENDING, self.State.SUBMITTED):
            return False
        return self.run_state not in self.TERMINAL_RUN_STATES
