"""Tables of core. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from pipelines.core import secrets


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


class ApiToken(models.Model):
    """A personal API token; only its SHA-256 is stored (core/tokens.py creates and checks it).

    `public_id` names the token in lists, URLs and the audit log: it is random and shares no
    character with the secret. A token answers only while it is not revoked, not expired and its
    user is active.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read: GET anything the user may see"
        WRITE = "write", "Write: create, change, run, deploy"
        APPROVE = "approve", "Approve: approve or reject requests (with write)"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    public_id = models.CharField(max_length=24, unique=True)
    name = models.CharField(max_length=100, default="default")
    key_sha256 = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list, help_text="A list of read, write, approve.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.public_id} ({self.name})"

    def state_at(self, now: datetime) -> str:
        """active, expired or revoked at `now`."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"


class AppendOnlyError(RuntimeError):
    """An audit event was about to be changed or deleted."""


class AuditEventQuerySet(models.QuerySet):
    # Bulk writes skip save()/delete(): refuse them here too (PostgreSQL's trigger is the floor).
    def update(self, **kwargs: object) -> int:
        raise AppendOnlyError("Audit events are append-only: they cannot be updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("Audit events are append-only: they cannot be deleted.")


class AuditEvent(models.Model):
    """Who did what, when, to which pipeline and environment. Append-only (core/audit.py writes)."""

    class Action(models.TextChoices):
        PIPELINE_CREATED = "pipeline_created", "Pipeline created"
        PIPELINE_EDITED = "pipeline_edited", "Pipeline edited"
        DEPLOYMENT_REQUESTED = "deployment_requested", "Deployment requested"
        RUN_REQUESTED = "run_requested", "Run requested"
        RUN_APPROVED = "run_approved", "Run approved"
        RUN_REJECTED = "run_rejected", "Run rejected"
        RUN_WITHDRAWN = "run_withdrawn", "Run withdrawn"
        API_TOKEN_CREATED = "api_token_created", "API token created"
        API_TOKEN_REVOKED = "api_token_revoked", "API token revoked"
        ENVIRONMENT_CHANGED = "environment_changed", "Environment changed"
        PIPELINE_UPGRADED = "pipeline_upgraded", "Pipeline upgraded to the current template"
        PROMOTION_REQUESTED = "promotion_requested", "Promotion requested"
        PROMOTION_APPROVED = "promotion_approved", "Promotion approved"
        PROMOTION_REJECTED = "promotion_rejected", "Promotion rejected"
        PROMOTION_WITHDRAWN = "promotion_withdrawn", "Promotion withdrawn"
        ROLLBACK = "rollback", "Rollback"
        BACKFILL_REQUESTED = "backfill_requested", "Backfill requested"
        BACKFILL_APPROVED = "backfill_approved", "Backfill approved"
        BACKFILL_REJECTED = "backfill_rejected", "Backfill rejected"
        BACKFILL_PAUSED = "backfill_paused", "Backfill paused"
        BACKFILL_RESUMED = "backfill_resumed", "Backfill resumed"
        BACKFILL_CANCELLED = "backfill_cancelled", "Backfill cancelled"

    # PROTECT everywhere: an event outlives nothing it names (a delete would rewrite history).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audit_events",
        help_text="Empty for the system.",
    )
    action = models.CharField(max_length=40, choices=Action.choices)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # By string: core sits below authoring and deployments and may not import them.
    pipeline = models.ForeignKey(
        "pipelines.Pipeline",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    environment = models.ForeignKey(
        "pipelines.Environment",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    summary = models.TextField(blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["-at", "-id"], name="auditevent_newest")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor or 'system'} {self.action}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise AppendOnlyError("Audit events are append-only: they cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("Audit events are append-only: they cannot be deleted.")
