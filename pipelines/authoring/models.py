"""Tables of authoring. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from pipelines.authoring import codegen
from pipelines.authoring.spec import PipelineSpec
from pipelines.catalog.models import SourceTable
from pipelines.core.models import Team


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
    change_note = models.CharField(
        max_length=200, blank=True, help_text="Why this version was made (required from v2 on)."
    )
    template_version = models.CharField(
        max_length=40,
        default=codegen.current_release,
        help_text="The codegen template release this version is rendered with.",
    )
    template_sha256 = models.CharField(max_length=64, default=codegen.current_release_sha256)

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

    @property
    def template_label(self) -> str:
        return codegen.template_label(self.template_version)

    @property
    def template_is_current(self) -> bool:
        """Rendered with the template the portal has now (same release, same file hash)."""
        return (self.template_version, self.template_sha256) == codegen.current_template()
