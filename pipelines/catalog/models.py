"""Tables of catalog. One-row properties only: no queries, no I/O."""

from __future__ import annotations

from django.db import models

from pipelines.core.models import Team


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
    # Data belongs to teams: a pipeline of a team may read this database only when it is granted
    # to that team. Platform admins grant in the admin (audited there).
    teams = models.ManyToManyField(
        Team,
        blank=True,
        related_name="granted_sources",
        help_text="Teams whose pipelines may read this database.",
    )

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
