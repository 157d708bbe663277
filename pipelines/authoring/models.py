"""Tables of authoring. One-row properties only: no queries, no I/O."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse

from pipelines.authoring import codegen
from pipelines.authoring.spec import PipelineSpec
from pipelines.catalog.models import SourceTable
from pipelines.core.models import Team

IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Words that PostgreSQL or SQLite reserve: a table named like one would need quoting everywhere
# a person writes SQL by hand, so the portal refuses it even though its own SQL quotes it.
RESERVED_WORDS = frozenset(
    """all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create current_catalog current_date current_role current_time
    current_timestamp current_user default deferrable desc distinct do else end except false
    fetch for foreign from grant group having in initially intersect into lateral leading
    limit localtime localtimestamp not null offset on only or order placing primary
    references returning select session_user some symmetric table then to trailing true
    union unique user using variadic when where window with abort action add after attach
    autoincrement before begin between by cascade commit conflict cross database delete
    detach drop each escape exclusive exists explain fail filter full glob if ignore
    immediate index indexed inner insert instead is isnull join key left like match natural
    no notnull of outer plan pragma query raise recursive regexp reindex release rename
    replace restrict right rollback row rows savepoint set temp temporary transaction
    trigger update vacuum values view virtual without""".split()  # noqa: SIM905
)


def validate_target_table(table: str) -> None:
    """Refuse a warehouse table name the portal may not write to (the form and the admin ask).

    The register of managed tables lives in every target schema: a pipeline writing to it
    would let one load rewrite which tables the portal owns.
    """
    if not IDENTIFIER_RE.match(table):
        raise ValidationError(
            "Use a plain SQL identifier: lower-case letters, digits and underscores, "
            "not starting with a digit, at most 63 characters."
        )
    if table in RESERVED_WORDS:
        raise ValidationError(f"“{table}” is a reserved SQL word; choose another name.")
    if table == codegen.REGISTER_TABLE:
        raise ValidationError(
            f"“{table}” is the portal's register of the tables it manages; choose another name."
        )


class Pipeline(models.Model):
    slug = models.SlugField(max_length=63, unique=True)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="pipelines")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_pipelines"
    )
    source_table = models.ForeignKey(SourceTable, on_delete=models.PROTECT)
    target_table = models.CharField(max_length=63, unique=True, validators=[validate_target_table])
    # Writing into a warehouse table the portal did not create replaces data someone else
    # loaded: only a platform admin may allow it (core.access.can_adopt_existing_table).
    adopt_allowed = models.BooleanField(
        default=False,
        help_text="A platform admin allowed this pipeline to adopt an existing warehouse table "
        "(its editors may then set “Adopt an existing table”).",
    )
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
