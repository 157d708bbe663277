"""Tables of deployments. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from pipelines.authoring.models import PipelineVersion
from pipelines.catalog.models import Dialect
from pipelines.core import airflow, secrets
from pipelines.core.dagfiles import validate_dag_id_prefix, validate_dags_folder
from pipelines.core.outbox import Outbox, RetryPolicy


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
    requires_approval = models.BooleanField(
        default=False,
        help_text="Deploys here only through an approved promotion or an allowed rollback.",
    )
    backfill_max_partitions = models.PositiveIntegerField(
        default=3000,
        help_text="The most partitions one backfill may load here; a platform admin may allow "
        "more on a request.",
    )
    readiness_success_days = models.PositiveSmallIntegerField(
        default=7,
        help_text="A version promoted here needs a successful run in the environment before "
        "this one within this many days (readiness checklist).",
    )
    pages_oncall = models.BooleanField(
        default=False, help_text="Pages here go to the teams' on-call targets (prod)."
    )

    class Meta:
        ordering = ["order"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Refuse an Airflow URL with credentials in it, a DAG-id prefix that overlaps another
        environment's on the same Airflow, and another Airflow's credential variables.

        "The same Airflow" is where the URLs lead (scheme, resolved addresses, port, path), not
        their spelling: localhost and 127.0.0.1 are one Airflow, with one DAG namespace, so
        prefixes "" and "dev", or "dev" and "dev_", would take in each other's DAG ids. A
        credential variable read for two different Airflows would send one's password to the
        other.
        """
        if problem := airflow.url_problem(self.airflow_url or ""):
            raise ValidationError({"airflow_url": problem})
        mine = airflow.airflow_address(self.airflow_url)
        my_variables = {self.airflow_username_env, self.airflow_password_env}
        others = Environment.objects.exclude(pk=self.pk).values_list(
            "slug", "airflow_url", "dag_id_prefix", "airflow_username_env", "airflow_password_env"
        )
        for slug, other_url, other_prefix, *other_variables in others:
            if airflow.url_problem(other_url) is None and mine.same_as(
                airflow.airflow_address(other_url)
            ):
                self._check_prefix(slug, other_prefix)
                continue
            shared = sorted(my_variables & set(other_variables))
            if shared:
                field = (
                    "airflow_password_env"
                    if self.airflow_password_env in shared
                    else "airflow_username_env"
                )
                raise ValidationError(
                    {
                        field: f"Environment “{slug}” reads {shared[0]} for another Airflow "
                        f"({other_url}): give each Airflow its own credential variables, so "
                        "one's password is never sent to the other."
                    }
                )

    def _check_prefix(self, slug: str, other_prefix: str) -> None:
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


class DeploymentQuerySet(models.QuerySet):
    """The one answer to "what is deployed where" (pages, API, runs and the sync all ask it)."""

    def deployed(self) -> DeploymentQuerySet:
        """What runs in Airflow now: one row per pipeline × environment, a newer deployment
        supersedes the older one."""
        return self.filter(state="deployed")

    def shown(self) -> DeploymentQuerySet:
        """The deployment a page shows per pipeline × environment: the newest request that no
        newer request superseded (pending, deploying, deployed or failed)."""
        return self.exclude(state="superseded")

    def running(self, pipeline: object, environment: object) -> Deployment | None:
        """What runs in `environment` now: the newest deployed request of `pipeline` there."""
        return (
            self.deployed()
            .filter(version__pipeline=pipeline, environment=environment)
            .select_related("version")
            .in_request_order()
            .last()
        )

    def in_request_order(self) -> DeploymentQuerySet:
        """Oldest request first. A rollback asks again for an older version, so "newest" is
        the newest *request* (REQUEST_ORDER), never the highest version number."""
        return self.order_by(*REQUEST_ORDER)

    def requested_after(self, deployment: Deployment) -> DeploymentQuerySet:
        """The requests of the same pipeline × environment made after `deployment`'s."""
        at = deployment.requested_at
        return self.filter(
            environment=deployment.environment_id,
            version__pipeline_id=deployment.version.pipeline_id,
        ).filter(models.Q(requested_at__gt=at) | models.Q(requested_at=at, id__gt=deployment.id))

    def update(self, **kwargs: object) -> int:
        if READ_ONLY_CODE_FIELDS & kwargs.keys():
            raise ValueError("A deployment's code is read-only once saved.")
        return super().update(**kwargs)


READ_ONLY_CODE_FIELDS = frozenset({"code", "code_sha256"})
REQUEST_ORDER = ("requested_at", "id")


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
    requested_at = models.DateTimeField(
        auto_now_add=True, help_text="Set again when the same version is asked for again."
    )
    written_at = models.DateTimeField(null=True, blank=True)
    airflow_written_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Airflow's clock when the file was written (its Date header, to the second): "
        "its parse and import-error times are compared with this, not the portal's clock.",
    )
    parsed_before = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Airflow's last parse of the DAG before the write: only a newer one counts.",
    )
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
        if self.registered_at is None or self.registered_at < self.requested_at:
            return None  # never registered, or asked for again (a rollback) and not yet
        return (self.registered_at - self.requested_at).total_seconds()
