"""Register a source database's tables in the catalog by introspecting it."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import psycopg
from django.db import transaction
from django.utils import timezone

from pipelines.catalog.models import Dialect, SourceColumn, SourceDatabase, SourceTable
from pipelines.core.models import Team

Kind = SourceColumn.Kind
# Database type names (lower-case, without size) → the portable kinds codegen understands.
KINDS = {
    "smallint": Kind.INTEGER, "integer": Kind.INTEGER, "int": Kind.INTEGER, "int2": Kind.INTEGER,
    "int4": Kind.INTEGER, "bigint": Kind.BIGINT, "int8": Kind.BIGINT, "numeric": Kind.NUMERIC,
    "decimal": Kind.NUMERIC, "real": Kind.FLOAT, "double precision": Kind.FLOAT,
    "float": Kind.FLOAT, "float4": Kind.FLOAT, "float8": Kind.FLOAT, "double": Kind.FLOAT,
    "text": Kind.TEXT, "character varying": Kind.TEXT, "varchar": Kind.TEXT, "character": Kind.TEXT,
    "char": Kind.TEXT, "uuid": Kind.TEXT, "boolean": Kind.BOOLEAN, "bool": Kind.BOOLEAN,
    "date": Kind.DATE, "timestamp": Kind.TIMESTAMP, "datetime": Kind.TIMESTAMP,
    "timestamp without time zone": Kind.TIMESTAMP, "timestamp with time zone": Kind.TIMESTAMPTZ,
    "timestamptz": Kind.TIMESTAMPTZ,
}  # fmt: skip


class CatalogError(Exception):
    pass


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    raw_type: str
    nullable: bool


def kind_of(raw_type: str) -> str:
    # "timestamp(3) with time zone": the precision sits inside the name, not at its end.
    base = " ".join(re.sub(r"\([^)]*\)", " ", raw_type.lower()).split())
    return KINDS.get(base, Kind.TEXT)


def dialect_of(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme in ("postgres", "postgresql"):
        return Dialect.POSTGRES
    if scheme == "sqlite":
        return Dialect.SQLITE
    raise CatalogError(
        f"Unsupported database URL scheme {scheme!r}: use postgresql:// or sqlite://"
    )


def sqlite_path(url: str) -> str:
    """Return the file of a sqlite:///relative or sqlite:////absolute URL."""
    return unquote(url.removeprefix("sqlite:///"))


def introspect(url: str, *, schema: str = "") -> dict[str, list[ColumnInfo]]:
    """Return {table: [columns]} for the tables of one database (one schema for PostgreSQL)."""
    dialect = dialect_of(url)
    if dialect == Dialect.SQLITE:
        with sqlite3.connect(f"file:{sqlite_path(url)}?mode=ro", uri=True) as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            return {
                name: [
                    ColumnInfo(row[1], row[2] or "text", not row[3] and not row[5])
                    for row in conn.execute("SELECT * FROM pragma_table_info(?)", (name,))
                ]
                for name in names
            }
    tables: dict[str, list[ColumnInfo]] = {}
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable = 'YES' "
            "FROM information_schema.columns WHERE table_schema = %s "
            "ORDER BY table_name, ordinal_position",
            (schema or "public",),
        )
        for table, column, data_type, nullable in rows:
            tables.setdefault(table, []).append(ColumnInfo(column, data_type, nullable))
    return tables


@transaction.atomic
def source_register(
    *,
    name: str,
    url: str,
    conn_id: str,
    schema: str = "",
    tables: list[str] | None = None,
    teams: list[str] | None = None,
) -> list[SourceTable]:
    """Introspect `url` and upsert its tables and columns under SourceDatabase `name`, and grant
    it to the teams named by slug (grants add up: registering again never revokes one)."""
    granted = list(Team.objects.filter(slug__in=teams or []))
    unknown = sorted(set(teams or []) - {t.slug for t in granted})
    if unknown:
        raise CatalogError(f"No team {', '.join(unknown)}.")
    found = introspect(url, schema=schema)
    if tables:
        missing = sorted(set(tables) - set(found))
        if missing:
            raise CatalogError(f"No table {', '.join(missing)} in that database.")
        found = {t: found[t] for t in tables}
    database, _ = SourceDatabase.objects.update_or_create(
        name=name, defaults={"dialect": dialect_of(url), "conn_id": conn_id}
    )
    database.teams.add(*granted)
    db_schema = schema if database.dialect == Dialect.POSTGRES else ""
    result = []
    for table_name, columns in found.items():
        table, _ = SourceTable.objects.update_or_create(
            database=database,
            schema=db_schema,
            name=table_name,
            defaults={"introspected_at": timezone.now()},
        )
        table.columns.exclude(name__in=[c.name for c in columns]).delete()
        for position, col in enumerate(columns):
            SourceColumn.objects.update_or_create(
                table=table,
                name=col.name,
                defaults={
                    "kind": kind_of(col.raw_type),
                    "raw_type": col.raw_type,
                    "nullable": col.nullable,
                    "position": position,
                },
            )
        result.append(table)
    return result
