"""Tables of the portal. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .core import secrets
from .core.dagfiles import validate_dag_id_prefix, validate_dags_folder
from .core.outbox import Outbox, RetryPolicy
from .spec import PipelineSpec


class Team(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    domain = models.SlugField(help_text="Business domain, used as the DAG's domain tag.")
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )
    # Alert routing (alerts.py): pages in an environment that pages on-call go to the on-call
    # targets, everything else to the quiet ones. Webhook URLs are secrets: only the *name* of
    # the environment variable holding one is stored.
    oncall_email = models.EmailField(blank=True)
    oncall_webhook_env = models.CharField(
        max_length=100,
        blank=True,
        validators=[secrets.validate_webhook_env_name],
        help_text="Env variable holding the on-call webhook URL; must end with _WEBHOOK.",
    )
    quiet_email = models.EmailField(blank=True)
    quiet_webhook_env = models.CharField(
        max_length=100,
        blank=True,
        validators=[secrets.validate_webhook_env_name],
        help_text="Env variable holding the quiet webhook URL; must end with _WEBHOOK.",
    )

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        EDITOR = "editor", "Editor"
        APPROVER = "approver", "Approver"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.EDITOR)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="membership_unique_team_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class Dialect(models.TextChoices):
    POSTGRES = "postgres", "PostgreSQL"
    SQLITE = "sqlite", "SQLite"


class SourceDatabase(models.Model):
    """A database pipelines read from; Airflow reaches it through `conn_id`."""

    name = models.SlugField(unique=True)
    dialect = models.CharField(max_length=20, choices=Dialect.choices)
    conn_id = models.CharField(
        max_length=250, help_text="Airflow connection id (the same in every environment)."
    )
    description = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class SourceTable(models.Model):
    database = models.ForeignKey(SourceDatabase, on_delete=models.CASCADE, related_name="tables")
    schema = models.CharField(max_length=63, blank=True)
    name = models.CharField(max_length=63)
    description = models.TextField(blank=True)
    introspected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["database__name", "schema", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["database", "schema", "name"], name="sourcetable_unique_name"
            )
        ]

    def __str__(self) -> str:
        return self.qualified_name

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


class SourceColumn(models.Model):
    class Kind(models.TextChoices):
        """Portable type families; codegen maps each to a warehouse type."""

        INTEGER = "integer", "integer"
        BIGINT = "bigint", "bigint"
        NUMERIC = "numeric", "numeric"
        FLOAT = "float", "float"
        TEXT = "text", "text"
        BOOLEAN = "boolean", "boolean"
        DATE = "date", "date"
        TIMESTAMP = "timestamp", "timestamp"
        # An instant (PostgreSQL timestamptz): partition bounds are instants in the pipeline's
        # zone, not wall-clock text read in the database session's zone.
        TIMESTAMPTZ = "timestamptz", "timestamp with time zone"

    table = models.ForeignKey(SourceTable, on_delete=models.CASCADE, related_name="columns")
    name = models.CharField(max_length=63)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    raw_type = models.CharField(max_length=100, blank=True)
    nullable = models.BooleanField(default=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "name"]
        constraints = [
            models.UniqueConstraint(fields=["table", "name"], name="sourcecolumn_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def is_temporal(self) -> bool:
        return self.kind in {self.Kind.DATE, self.Kind.TIMESTAMP, self.Kind.TIMESTAMPTZ}


class Environment(models.Model):
    """Where a pipeline runs. Secrets stay in the environment: only variable *names* are stored."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=50)
    order = models.PositiveSmallIntegerField(default=0, help_text="dev < stage < prod")
    airflow_url = models.URLField()
    airflow_username_env = models.CharField(
        max_length=100,
        default="PORTAL_AIRFLOW_USERNAME",
        validators=[secrets.validate_airflow_env_name],
        help_text=f"Env variable holding the Airflow user; must start with "
        f"{secrets.AIRFLOW_ENV_PREFIX}.",
    )
    airflow_password_env = models.CharField(
        max_length=100,
        default="PORTAL_AIRFLOW_PASSWORD",
        validators=[secrets.validate_airflow_env_name],
        help_text=f"Env variable holding the Airflow password; must start with "
        f"{secrets.AIRFLOW_ENV_PREFIX}.",
    )
    dags_folder = models.CharField(
        max_length=500,
        validators=[validate_dags_folder],
        help_text="Absolute, normalised path of the folder Airflow reads DAG files from.",
    )
    dag_id_prefix = models.CharField(
        max_length=30,
        blank=True,
        validators=[validate_dag_id_prefix],
        help_text="Letters, digits, _ and -. Set when several environments share one Airflow: "
        "no prefix there may start another.",
    )
    warehouse_conn_id = models.CharField(max_length=250)
    warehouse_dialect = models.CharField(max_length=20, choices=Dialect.choices)
    target_schema = models.CharField(max_length=63, blank=True)
    requires_approval = models.BooleanField(default=False)
    pages_oncall = models.BooleanField(
        default=False, help_text="Pages here go to the teams' on-call targets (prod)."
    )

    class Meta:
        ordering = ["order"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Refuse a DAG-id prefix that overlaps another environment's on the same Airflow.

        Airflow has one DAG namespace: with prefixes "" and "dev", or "dev" and "dev_", one
        environment's DAG ids (and the sync's prefix filter) would take in the other's.
        """
        url = self.airflow_url.rstrip("/").lower()
        others = Environment.objects.exclude(pk=self.pk).values_list(
            "slug", "airflow_url", "dag_id_prefix"
        )
        for slug, other_url, other_prefix in others:
            if other_url.rstrip("/").lower() != url:
                continue
            if self.dag_id_prefix.startswith(other_prefix) or other_prefix.startswith(
                self.dag_id_prefix
            ):
                raise ValidationError(
                    {
                        "dag_id_prefix": f"Environment “{slug}” uses the same Airflow with prefix "
                        f"“{other_prefix}”, which overlaps “{self.dag_id_prefix}”: one prefix "
                        "may not start the other. Give each environment its own, e.g. "
                        f"“{self.slug}__”."
                    }
                )

    def airflow_credentials(self) -> tuple[str, str]:
        """Return (username, password) read from the named environment variables.

        Raises SecretNameError for a name outside PORTAL_AIRFLOW_ (a row saved before the rule).
        """
        return (
            secrets.airflow_secret_get(self.airflow_username_env),
            secrets.airflow_secret_get(self.airflow_password_env),
        )

    def dag_id_for(self, pipeline_slug: str) -> str:
        return f"{self.dag_id_prefix}{pipeline_slug.replace('-', '_')}"


class Pipeline(models.Model):
    slug = models.SlugField(max_length=63, unique=True)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="pipelines")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_pipelines"
    )
    source_table = models.ForeignKey(SourceTable, on_delete=models.PROTECT)
    target_table = models.CharField(max_length=63, unique=True)
    # Copied from the newest version so dashboards can filter without reading spec JSON.
    sla_minutes = models.PositiveIntegerField(null=True, blank=True)
    runbook_url = models.URLField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def get_absolute_url(self) -> str:
        return reverse("pipelines:detail", args=[self.slug])


class PipelineVersion(models.Model):
    """An immutable spec. Editing a pipeline creates the next version; nothing updates a row."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec_json = models.JSONField()
    spec_sha256 = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pipeline", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "number"], name="version_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.pipeline_id} v{self.number}"

    @property
    def spec(self) -> PipelineSpec:
        return PipelineSpec.from_json(self.spec_json)


class DeploymentQuerySet(models.QuerySet):
    def update(self, **kwargs: object) -> int:
        if READ_ONLY_CODE_FIELDS & kwargs.keys():
            raise ValueError("A deployment's code is read-only once saved.")
        return super().update(**kwargs)


READ_ONLY_CODE_FIELDS = frozenset({"code", "code_sha256"})


class Deployment(Outbox):
    """One version in one environment. The row is the outbox the deploy task works from.

    Steps: PENDING (write the file) → DEPLOYING (written; Airflow to register it, checked
    again every few seconds) → DEPLOYED, or FAILED with `error`, or SUPERSEDED by a newer version.
    """

    OUTBOX_TASK = "pipelines.tasks.deployment_run"
    OUTBOX_CLAIMABLE = ("pending", "deploying")
    OUTBOX_FAILED = "failed"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DEPLOYING = "deploying", "Deploying"
        DEPLOYED = "deployed", "Deployed"
        FAILED = "failed", "Failed"
        SUPERSEDED = "superseded", "Superseded"

    version = models.ForeignKey(
        PipelineVersion, on_delete=models.PROTECT, related_name="deployments"
    )
    environment = models.ForeignKey(
        Environment, on_delete=models.PROTECT, related_name="deployments"
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    dag_id = models.CharField(max_length=250)
    code = models.TextField(help_text="The exact file written to the DAGs folder. Read-only.")
    code_sha256 = models.CharField(max_length=64)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    written_at = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "environment"], name="deployment_unique_version_environment"
            )
        ]
        indexes = [models.Index(fields=["state", "lease_until"])]

    def __str__(self) -> str:
        return f"{self.dag_id} v{self.version.number} → {self.environment}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding and self.pk is not None:
            stored = (
                Deployment.objects.filter(pk=self.pk).values_list("code", "code_sha256").first()
            )
            if stored is not None and stored != (self.code, self.code_sha256):
                raise ValueError("A deployment's code is read-only once saved.")
        super().save(*args, **kwargs)

    @classmethod
    def retry_policy(cls) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=settings.DEPLOY_MAX_ATTEMPTS,
            backoff_first_s=settings.DEPLOY_BACKOFF_FIRST_SECONDS,
            backoff_max_s=settings.DEPLOY_BACKOFF_MAX_SECONDS,
            lease_s=settings.DEPLOY_LEASE_SECONDS,
        )

    @classmethod
    def gave_up_fields(cls, message: str) -> dict[str, object]:
        return {"error": message, "finished_at": timezone.now()}

    @property
    def last_attempt_error(self) -> str:
        """The API's and the deployment table's name for `last_error`."""
        return self.last_error

    @property
    def is_active(self) -> bool:
        return self.state in {self.State.PENDING, self.State.DEPLOYING}

    @property
    def deploy_seconds(self) -> float | None:
        """Seconds from the request to Airflow registering the DAG."""
        if self.registered_at is None:
            return None
        return (self.registered_at - self.requested_at).total_seconds()


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


class ApiToken(models.Model):
    """A personal API token; only its SHA-256 is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise a token.")
    key_sha256 = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} {self.prefix}…"


# --- Health (issue 3): runs synced from Airflow, one precomputed verdict per pipeline × env ----


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
    state = models.CharField(max_length=20)
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
                condition=models.Q(state="failed", error=""),
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
    lease_until = models.DateTimeField(null=True, blank=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_runs_seen = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    unreachable_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"sync {self.environment_id} @ {self.watermark}"


# --- Alerts (issue 4): one row per condition while it holds; deliveries are its outbox -------


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


class AlertDelivery(models.Model):
    """One message about an alert to one target; the row is the outbox the deliver task reads."""

    class Event(models.TextChoices):
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

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=20, choices=Event.choices)
    channel = models.CharField(max_length=20, choices=Channel.choices)
    target = models.CharField(
        max_length=254, help_text="Email address, or the env variable holding the webhook URL."
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["state", "lease_until"], name="alertdelivery_due")]

    def __str__(self) -> str:
        return f"{self.event} {self.channel}:{self.target} {self.state}"
