"""Tables of releases. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.deployments.models import Deployment, Environment


class Promotion(models.Model):
    """A request to deploy one version into an environment that requires approval.

    PENDING → APPROVED (the approval creates the deployment, in the same transaction, through
    the deploy outbox), REJECTED or WITHDRAWN (by the requester). A decided request is final.
    At most one request per pipeline × environment is pending (a partial unique constraint).
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Withdrawn"

    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="promotions")
    version = models.ForeignKey(PipelineVersion, on_delete=models.PROTECT, related_name="+")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="+")
    source_environment = models.ForeignKey(
        Environment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Where the checklist looked for runs, freshness and alerts.",
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    reason = models.CharField(max_length=500)
    checklist = models.JSONField(help_text="The checklist as evaluated when the request was filed.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.CharField(max_length=500, blank=True)
    decision_checklist = models.JSONField(
        null=True, blank=True, help_text="The checklist as evaluated at the decision."
    )
    deployment = models.ForeignKey(
        Deployment, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline", "environment"],
                condition=models.Q(state="pending"),
                name="promotion_one_pending",
            )
        ]
        indexes = [models.Index(fields=["state", "environment"], name="promotion_queue")]

    def __str__(self) -> str:
        return f"{self.pipeline_id} v{self.version_id} → {self.environment_id} ({self.state})"

    @property
    def is_pending(self) -> bool:
        return self.state == self.State.PENDING
