"""Tables of monitoring. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from pipelines.authoring.models import Pipeline
from pipelines.core.airflow import DagRunState
from pipelines.core.models import Team
from pipelines.deployments.models import Environment

# A run Airflow marked failed before it ever started: cancelling a backfill fails its queued
# runs, and so does marking a queued run failed by hand. Nothing ran and nothing was written,
# so it is not a failure of the pipeline: health, alerts and the failures list leave it out,
# and a backfill counts it as cancelled. (A run that started and failed has a start_date.)
NEVER_STARTED = models.Q(state=DagRunState.FAILED, start_date__isnull=True)


class RunRecord(models.Model):
    """One Airflow DagRun of a portal pipeline, as last synced.

    Partition bounds are wall-clock times in the pipeline's zone, stored as if they were UTC
    (so that "2026-11-10 00:00" compares and sorts as a date, whatever the zone's offset).
    """

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="run_records")
    dag_id = models.CharField(max_length=250)
    dag_run_id = models.CharField(max_length=250)
    run_type = models.CharField(max_length=30, blank=True)
    state = models.CharField(max_length=20, choices=DagRunState.choices)
    logical_date = models.DateTimeField(null=True, blank=True)
    data_interval_start = models.DateTimeField(null=True, blank=True)
    data_interval_end = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    start_date = models.DateTimeField(null=True, blank=True)
    end_date = models.DateTimeField(null=True, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    partition_start = models.DateTimeField(null=True, blank=True)
    partition_end = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField()
    # A database default: the sync's bulk upsert lists only the columns it owns.
    error = models.TextField(
        blank=True,
        db_default="",
        help_text="Why a failed run failed: the failed task and its message.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "dag_id", "dag_run_id"], name="runrecord_unique_run"
            )
        ]
        indexes = [
            models.Index(
                fields=["pipeline", "environment", "-queued_at"], name="run_pipeline_recent"
            ),
            models.Index(
                fields=["pipeline", "environment", "state", "partition_end"], name="run_loaded"
            ),
            # The sync's "failed runs whose reason was not read yet": few rows, read each sync.
            models.Index(
                fields=["environment", "-queued_at"],
                condition=models.Q(state=DagRunState.FAILED, error=""),
                name="run_failed_unexplained",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dag_id} {self.dag_run_id} {self.state}"


class Verdict(models.TextChoices):
    """One word per pipeline × environment; `VERDICT_RANK` orders them worst first."""

    FAILING = "failing", "Failing"
    SLA_MISSED = "sla_missed", "SLA missed"
    STALE = "stale", "Stale"
    WARNING = "warning", "Warning"
    PAUSED = "paused", "Paused"
    NEVER_RUN = "never_run", "Never run"
    HEALTHY = "healthy", "Healthy"


VERDICT_RANK = {v: rank for rank, v in enumerate(Verdict.values)}


class PipelineHealth(models.Model):
    """The precomputed health of one pipeline in one environment: what every dashboard reads."""

    class SlaState(models.TextChoices):
        NONE = "none", "No SLA"
        MET = "met", "Met"
        AT_RISK = "at_risk", "At risk"
        MISSED = "missed", "Missed"

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="health")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=20, choices=Verdict.choices, default=Verdict.NEVER_RUN)
    verdict_rank = models.PositiveSmallIntegerField(default=VERDICT_RANK[Verdict.NEVER_RUN])
    reason = models.CharField(max_length=300, blank=True)
    is_paused = models.BooleanField(default=False)
    has_import_error = models.BooleanField(default=False)
    last_run_state = models.CharField(max_length=20, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    runs_7d = models.PositiveIntegerField(default=0)
    success_rate_7d = models.FloatField(null=True, blank=True)
    success_rate_30d = models.FloatField(null=True, blank=True)
    p50_duration_s = models.FloatField(null=True, blank=True)
    p95_duration_s = models.FloatField(null=True, blank=True)
    failing_streak = models.PositiveIntegerField(default=0)
    retrying = models.BooleanField(default=False)
    latest_loaded_partition = models.DateTimeField(null=True, blank=True)
    expected_partition = models.DateTimeField(null=True, blank=True)
    freshness_lag_partitions = models.IntegerField(null=True, blank=True)
    freshness_lag_hours = models.FloatField(null=True, blank=True)
    next_expected_run = models.DateTimeField(null=True, blank=True)
    sla_state = models.CharField(max_length=20, choices=SlaState.choices, default=SlaState.NONE)
    sla_misses_7d = models.PositiveIntegerField(default=0)
    sla_misses_30d = models.PositiveIntegerField(default=0)
    sla_deadlines_30d = models.PositiveIntegerField(default=0)
    sla_checked_until = models.DateTimeField(null=True, blank=True)
    refresh_at = models.DateTimeField(
        null=True, blank=True, help_text="When the clock alone changes this row (a fire, a grace)."
    )
    orchestrator_unreachable_since = models.DateTimeField(null=True, blank=True)
    computed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline", "environment"], name="health_unique_pipeline_environment"
            )
        ]
        indexes = [
            models.Index(fields=["refresh_at"], name="health_refresh_due"),
            models.Index(fields=["verdict_rank", "pipeline"], name="health_worst_first"),
            models.Index(fields=["environment", "verdict_rank"], name="health_env_worst"),
            models.Index(fields=["team", "verdict_rank"], name="health_team_worst"),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline_id}@{self.environment_id}: {self.verdict}"


class SlaMiss(models.Model):
    """A scheduled fire whose partitions were not loaded by fire time + SLA."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="sla_misses")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    fire_time = models.DateTimeField()
    deadline = models.DateTimeField()
    partition = models.CharField(max_length=50)
    partition_start = models.DateTimeField(null=True, help_text="First partition, wall clock.")
    loaded_at = models.DateTimeField(null=True, blank=True, help_text="When it finally loaded.")
    detected_at = models.DateTimeField()

    class Meta:
        ordering = ["-fire_time"]
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline", "environment", "fire_time"], name="slamiss_unique_fire"
            )
        ]
        indexes = [models.Index(fields=["environment", "-fire_time"], name="slamiss_recent")]

    def __str__(self) -> str:
        return f"{self.pipeline_id}@{self.environment_id} {self.fire_time:%Y-%m-%d %H:%M}"


class SyncState(models.Model):
    """Where the incremental sync of one environment stands; also its lock (a lease)."""

    environment = models.OneToOneField(Environment, on_delete=models.CASCADE, related_name="sync")
    watermark = models.DateTimeField(null=True, blank=True)
    airflow_watermark = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Airflow's clock when the last successful sync began reading (its Date "
        "header): the next sync asks for runs updated since then, by Airflow's clock.",
    )
    lease_until = models.DateTimeField(null=True, blank=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_runs_seen = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    unreachable_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"sync {self.environment_id} @ {self.watermark}"
