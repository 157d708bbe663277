"""Render a PipelineSpec into the source of an Airflow DAG file, and check what was rendered.

The template (templates/partitioned_load.py.tmpl) is static code. Everything a user typed enters
the file in exactly one place, the `SPEC = {...}` literal, written with `pprint.pformat` (repr):
no user value is ever spliced into code as text. `check_source` parses every render and compares
its AST with the template's, so a render that differs in anything but that literal is refused.

The SQL inside SPEC is built here for the environment's dialects, with identifiers quoted by the
dialect's rules; the generated tasks pass partition bounds as bind parameters (psycopg merges
those of a COPY statement client-side, as quoted literals) and never hand a SPEC value to a
Jinja-templated field.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import pprint
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from psycopg import sql as pgsql

from pipelines.authoring.spec import PipelineSpec
from pipelines.core.errors import user_error

TEMPLATE_PATH = Path(__file__).parent / "templates" / "partitioned_load.py.tmpl"
# What a PipelineVersion records as "the template it was rendered with": a name people read and
# the SHA-256 of the template file. Change the template → add a release here with its new hash
# (tests/authoring/test_template_version.py fails until then); every pipeline on an older one is
# then listed for "Upgrade".
TEMPLATE_NAME = "partitioned_load"
TEMPLATE_RELEASES = {
    "2026.11.1": "74aace4491e38a8866c4c13ac74d97dec38af2ca499eb8bb3cc8048449bd4a16",
    # Binary COPY between two PostgreSQL databases of matching column types; duplicate-key
    # counting skipped where the target's primary key rules duplicates out.
    "2026.11.2": "951a6e13c3636930b81e54204c4f2c7072855af551bb964bd96737ae0be8172e",
    # A re-load by COPY writes only what differs (staged, then merged by key); create_target
    # takes an advisory lock, so two first runs at once no longer race on the catalog.
    "2026.11.3": "6160990762c29933540567f1b393b9a7d1c04abcb5db776ce997ffaef6bc8610",
}
TEMPLATE_VERSION = next(reversed(TEMPLATE_RELEASES))
SPEC_TOKEN = "__PORTAL_SPEC__"
# Far enough back that backfills of historical partitions are possible; catchup=False means
# nothing runs for these dates unless someone asks.
START_DATE = "2020-01-01"
MAX_RETRY_DELAY_FACTOR = 12
MAX_RETRY_DELAY_CAP_S = 6 * 3600
PLACEHOLDERS = {"postgres": "%s", "sqlite": "?"}
WAREHOUSE_TYPES = {
    "postgres": {
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "numeric": "NUMERIC",
        "float": "DOUBLE PRECISION",
        "text": "TEXT",
        "boolean": "BOOLEAN",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ",
    },
    # SQLite keeps dates as ISO text; TEXT affinity stops it from turning them into numbers.
    "sqlite": {
        "integer": "INTEGER",
        "bigint": "INTEGER",
        "numeric": "NUMERIC",
        "float": "REAL",
        "text": "TEXT",
        "boolean": "INTEGER",
        "date": "TEXT",
        "timestamp": "TEXT",
        "timestamptz": "TEXT",
    },
}
# The warehouse's register of the tables the portal created or was told to adopt (one per
# schema): a table that exists but is not in it is never written to unless adopted.
REGISTER_TABLE = "portal_managed_tables"
# Whether the table (first parameter) has an immediate primary key whose columns are all among
# the pipeline's key columns (second): then no two of its rows share a key.
KEY_ENFORCED = (
    "SELECT EXISTS (SELECT FROM pg_catalog.pg_index x WHERE x.indrelid = to_regclass(%s) "
    "AND x.indisprimary AND x.indimmediate AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a "
    "WHERE a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey) "
    "AND a.attname::text <> ALL (%s::text[])))"
)
# Taken first in create_target's transaction (PostgreSQL): two first runs at once (a backfill's
# beside the scheduled one, or two pipelines new in one schema) would otherwise both create the
# schema or table and one would fail on a unique index of the catalog. Held for milliseconds.
CREATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('pipeline-portal create_target'))"
# Whether a source and a target column hold the same type, for binary COPY: the type itself, or
# varchar for text (the same bytes on the wire; a varchar(n) target still checks its length).
COPY_TYPES_MATCH = (
    "SELECT COUNT(*) FROM unnest(%s::text[], %s::text[]) AS w(name, type) "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = to_regclass(%s) AND a.attname = w.name "
    "AND a.attnum > 0 AND NOT a.attisdropped "
    "WHERE CASE a.atttypid WHEN 'varchar'::regtype THEN 'text'::regtype ELSE a.atttypid END "
    "= w.type::regtype"
)


class CodegenError(Exception):
    """A render that does not have the template's shape; never deployed."""


class RenderTarget(Protocol):
    """What codegen needs of an Environment (the model satisfies it)."""

    slug: str
    warehouse_conn_id: str
    warehouse_dialect: str
    target_schema: str

    def dag_id_for(self, pipeline_slug: str) -> str: ...


@dataclass(frozen=True)
class RenderedDag:
    dag_id: str
    source: str
    sha256: str


def quote_identifier(name: str, dialect: str) -> str:
    """Quote one SQL identifier by the dialect's rules."""
    if dialect == "postgres":
        return pgsql.Identifier(name).as_string(None)
    if dialect == "sqlite":
        # SQLite's rule (sqlite.org/lang_keywords.html): double quotes, an embedded one doubled.
        return '"' + name.replace('"', '""') + '"'
    raise CodegenError(f"Unknown SQL dialect {dialect!r}")


def bindable(statement: str, dialect: str) -> str:
    """Return `statement` as psycopg must receive it with parameters: every `%` inside a quoted
    identifier or literal doubled, so a column named "share_%" or "a%sb" is a name, not a
    placeholder. A statement without placeholders is run without parameters, so it is sent as
    it is and left alone; SQLite's "?" placeholders need nothing.
    """
    if dialect != "postgres":
        return statement
    out: list[str] = []
    quote: str | None = None
    has_placeholder = False
    for char in statement:
        if quote is None:
            if char in "\"'":
                quote = char
            elif char == "%":
                has_placeholder = True
            out.append(char)
            continue
        if char == quote:  # an embedded quote is doubled: it closes and opens again
            quote = None
        out.append("%%" if char == "%" else char)
    return "".join(out) if has_placeholder else statement


def qualified(schema: str, name: str, dialect: str) -> str:
    if schema and dialect != "sqlite":
        return f"{quote_identifier(schema, dialect)}.{quote_identifier(name, dialect)}"
    return quote_identifier(name, dialect)


def build_sql(spec: PipelineSpec, target: RenderTarget) -> dict[str, str]:
    """Return the statements the DAG runs, for the source's and the warehouse's dialects."""
    src_dialect, wh_dialect = spec.source_dialect, target.warehouse_dialect
    src_ph, wh_ph = PLACEHOLDERS[src_dialect], PLACEHOLDERS[wh_dialect]

    def cols(dialect: str, names: list[str]) -> str:
        return ", ".join(quote_identifier(n, dialect) for n in names)

    names = [c.name for c in spec.columns]
    source = qualified(spec.source_schema, spec.source_table, src_dialect)
    table = qualified(target.target_schema, spec.target_table, wh_dialect)
    src_pc = quote_identifier(spec.partition_column, src_dialect)
    wh_pc = quote_identifier(spec.partition_column, wh_dialect)
    src_where = f"{src_pc} >= {src_ph} AND {src_pc} < {src_ph}"
    wh_where = f"{wh_pc} >= {wh_ph} AND {wh_pc} < {wh_ph}"
    types = WAREHOUSE_TYPES[wh_dialect]
    key = set(spec.primary_key)
    column_defs = ", ".join(
        f"{quote_identifier(c.name, wh_dialect)} {types[c.kind]}"
        + (" NOT NULL" if c.name in key else "")
        for c in spec.columns
    )
    key_cols = cols(wh_dialect, list(spec.primary_key))
    register = qualified(target.target_schema, REGISTER_TABLE, wh_dialect)
    create_register = [
        f"CREATE TABLE IF NOT EXISTS {register} (table_name TEXT PRIMARY KEY, "
        "pipeline TEXT NOT NULL, how TEXT NOT NULL, at TEXT NOT NULL)"
    ]
    if target.target_schema and wh_dialect == "postgres":
        schema = quote_identifier(target.target_schema, wh_dialect)
        create_register.insert(0, f"CREATE SCHEMA IF NOT EXISTS {schema}")
    if wh_dialect == "postgres":
        target_exists = f"SELECT to_regclass({wh_ph}) IS NOT NULL"
    else:
        target_exists = f"SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = {wh_ph}"
    extra = {"key_enforced": KEY_ENFORCED, "lock": CREATE_LOCK} if wh_dialect == "postgres" else {}
    # PostgreSQL truncates names to 63 bytes itself; doing it here keeps the name predictable.
    index = quote_identifier(f"{spec.target_table}__partition"[:63], wh_dialect)
    statements = {
        "create_register": create_register,
        "register_owner": f"SELECT pipeline FROM {register} WHERE table_name = {wh_ph}",
        "register_insert": (
            f"INSERT INTO {register} (table_name, pipeline, how, at) "
            f"VALUES ({wh_ph}, {wh_ph}, {wh_ph}, {wh_ph})"
        ),
        "target_exists": target_exists,
        "create_target": f"CREATE TABLE IF NOT EXISTS {table} ({column_defs}, "
        f"PRIMARY KEY ({key_cols}))",
        "create_index": f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({wh_pc})",
        "select_source": f"SELECT {cols(src_dialect, names)} FROM {source} WHERE {src_where}",
        "delete_target": f"DELETE FROM {table} WHERE {wh_where}",
        "insert_target": (
            f"INSERT INTO {table} ({cols(wh_dialect, names)}) "
            f"VALUES ({', '.join([wh_ph] * len(names))})"
        ),
        "count_target": f"SELECT COUNT(*) FROM {table} WHERE {wh_where}",
        "duplicate_keys": (
            f"SELECT COUNT(*) FROM (SELECT {key_cols} FROM {table} WHERE {wh_where} "
            f"GROUP BY {key_cols} HAVING COUNT(*) > 1) AS d"
        ),
        **extra,
    }
    return {
        name: bindable(sql, src_dialect if name == "select_source" else wh_dialect)
        if isinstance(sql, str)
        else sql
        for name, sql in statements.items()
    }


def build_copy(spec: PipelineSpec, target: RenderTarget) -> dict[str, Any] | None:
    """Return the binary COPY statements of a PostgreSQL → PostgreSQL load, else None.

    Binary COPY carries no type information: a date sent into an integer column would land as
    a number. The load therefore streams with COPY only after `types_match` has found every
    column with the warehouse type of its kind on both sides (run once per side with the
    columns, their types and that side's table); otherwise it inserts row by row.
    """
    if (spec.source_dialect, target.warehouse_dialect) != ("postgres", "postgres"):
        return None
    names = [c.name for c in spec.columns]
    cols = ", ".join(quote_identifier(n, "postgres") for n in names)
    source = qualified(spec.source_schema, spec.source_table, "postgres")
    table = qualified(target.target_schema, spec.target_table, "postgres")
    pc = quote_identifier(spec.partition_column, "postgres")
    return {
        "columns": names,
        "types": [WAREHOUSE_TYPES["postgres"][c.kind] for c in spec.columns],
        "source_key": source,
        "types_match": COPY_TYPES_MATCH,
        # psycopg binds COPY's parameters client-side, as quoted literals.
        "source": bindable(
            f"COPY (SELECT {cols} FROM {source} WHERE {pc} >= %s AND {pc} < %s) "
            "TO STDOUT (FORMAT BINARY)",
            "postgres",
        ),
        "target": f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)",
        "merge": build_merge(spec, table),
    }


def build_merge(spec: PipelineSpec, table: str) -> dict[str, Any]:
    """Return the statements of a re-load that writes only what differs (PostgreSQL).

    The source's rows are staged in a temporary table (binary COPY, no index to maintain), then
    the target's partition is brought to them: rows whose key is gone are deleted, rows that
    differ are updated, new keys are inserted. Rows that did not change are not written at all.
    When most rows differ (`differ` counts them), updating them one by one costs more than
    rewriting the partition: it is deleted and every staged row inserted (`insert_all`).
    Only the partition's own rows are matched (a key found elsewhere in the table is a
    duplicate, as with delete-and-insert). A row differs when a column `IS DISTINCT FROM` its
    staged value or, for numeric, has another scale: 12.5 = 12.50 in SQL, but a fresh load
    would store the source's 12.50, and a merged partition must read the same.
    """
    q = functools.partial(quote_identifier, dialect="postgres")
    names = [c.name for c in spec.columns]
    key, rest = list(spec.primary_key), [n for n in names if n not in spec.primary_key]
    numeric = {c.name for c in spec.columns if c.kind == "numeric"}

    def differs_in(name: str) -> str:
        t, s = f"t.{q(name)}", f"s.{q(name)}"
        if name in numeric:
            return f"{t} IS DISTINCT FROM {s} OR scale({t}) IS DISTINCT FROM scale({s})"
        return f"{t} IS DISTINCT FROM {s}"

    cols = ", ".join(q(n) for n in names)
    stage = "pg_temp.portal_stage"
    pc = q(spec.partition_column)
    in_range = f"t.{pc} >= %s AND t.{pc} < %s"
    same_key = " AND ".join(f"s.{q(k)} = t.{q(k)}" for k in key)
    update = differ = None
    if rest:
        differs = " OR ".join(differs_in(n) for n in rest)
        where = f"{same_key} AND {in_range} AND ({differs})"
        sets = ", ".join(f"{q(n)} = s.{q(n)}" for n in rest)
        update = f"UPDATE {table} AS t SET {sets} FROM {stage} AS s WHERE {where}"
        differ = f"SELECT COUNT(*) FROM {table} AS t JOIN {stage} AS s ON {where}"
    statements = {
        # A warehouse may refuse temporary tables (REVOKE TEMP): the load then deletes and
        # copies instead of failing.
        "can_stage": "SELECT has_database_privilege(current_database(), 'TEMP')",
        # Dropped at the end of the load's transaction, committed or rolled back.
        "stage": (
            f"CREATE TEMPORARY TABLE portal_stage ON COMMIT DROP AS "
            f"SELECT {cols} FROM {table} WITH NO DATA"
        ),
        "stage_copy": f"COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)",
        "analyze": f"ANALYZE {stage}",
        "delete": (
            f"DELETE FROM {table} AS t WHERE {in_range} "
            f"AND NOT EXISTS (SELECT FROM {stage} AS s WHERE {same_key})"
        ),
        "differ": differ,
        "update": update,
        # When most rows differ: the partition deleted (delete_target) and all staged rows put in.
        "insert_all": f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}",
        "insert": (
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} AS s "
            f"WHERE NOT EXISTS (SELECT FROM {table} AS t WHERE {same_key} AND {in_range})"
        ),
    }
    return {
        name: sql if sql is None else bindable(sql, "postgres") for name, sql in statements.items()
    }


def target_names(spec: PipelineSpec, target: RenderTarget) -> tuple[str, str]:
    """Return (name for people and the register, the name the existence check looks up)."""
    dialect = target.warehouse_dialect
    name = spec.target_table
    if target.target_schema and dialect != "sqlite":
        name = f"{target.target_schema}.{spec.target_table}"
    if dialect == "postgres":
        return name, qualified(target.target_schema, spec.target_table, dialect)
    return name, spec.target_table


def build_doc_md(spec: PipelineSpec, portal_url: str) -> str:
    lines = [
        f"### {spec.name}",
        "",
        spec.description or "_No description._",
        "",
        f"* **Owner:** {spec.owner} (team {spec.team})",
        f"* **Loads:** {spec.source_database}.{spec.source_table} → {spec.target_table}, "
        f"one {spec.partition_grain} partition of {spec.partition_column} at a time",
        f"* **Runbook:** {spec.runbook_url or 'none given'}",
        f"* **SLA:** {spec.sla_minutes} minutes after the scheduled time"
        if spec.sla_minutes
        else "* **SLA:** none",
        "",
        # Airflow reads a doc_md that ends in ".md" as a template file name: this fixed last
        # line keeps a user's description from ever being taken for one.
        f"Generated by Pipeline Portal: {portal_url}",
    ]
    return "\n".join(lines)


def build_spec_literal(
    spec: PipelineSpec, target: RenderTarget, *, version: int, portal_url: str
) -> dict[str, Any]:
    """Return the dict that becomes the DAG file's SPEC literal."""
    tags = ["self-serve", f"team:{spec.team}", f"domain:{spec.team_domain}", f"env:{target.slug}"]
    tags += [t for t in spec.tags if t not in tags]
    retry_delay_s = spec.retry_delay_minutes * 60
    target_name, target_key = target_names(spec, target)
    return {
        "dag_id": target.dag_id_for(spec.name),
        "description": spec.description,
        "doc_md": build_doc_md(spec, portal_url),
        "owner": spec.owner,
        "tags": tags,
        "schedule": spec.schedule,
        "timezone": spec.timezone,
        "start_date": START_DATE,
        "retries": spec.retries,
        "retry_delay_s": retry_delay_s,
        "max_retry_delay_s": min(retry_delay_s * MAX_RETRY_DELAY_FACTOR, MAX_RETRY_DELAY_CAP_S),
        "execution_timeout_s": spec.execution_timeout_minutes * 60,
        "max_active_runs": 1,
        "partition_grain": spec.partition_grain,
        "partition_type": spec.partition_kind,
        "allow_empty": spec.allow_empty,
        "shrink_guard_percent": spec.shrink_guard_percent,
        "adopt_existing_table": spec.adopt_existing_table,
        "source_conn_id": spec.source_conn_id,
        "source_dialect": spec.source_dialect,
        "target_conn_id": target.warehouse_conn_id,
        "warehouse_dialect": target.warehouse_dialect,
        "target_name": target_name,
        "target_key": target_key,
        "instant_columns": [i for i, c in enumerate(spec.columns) if c.kind == "timestamptz"],
        "primary_key": list(spec.primary_key),
        "sql": build_sql(spec, target),
        "copy": build_copy(spec, target),
        "portal": {
            "pipeline": spec.name,
            "version": version,
            "environment": target.slug,
            "url": portal_url,
            "template": f"{TEMPLATE_NAME} {TEMPLATE_VERSION}",
        },
    }


@functools.cache
def _template() -> str:
    text = TEMPLATE_PATH.read_text()
    if text.count(SPEC_TOKEN) != 1:
        raise CodegenError(f"The template must contain {SPEC_TOKEN} exactly once.")
    return text


@functools.cache
def template_sha256() -> str:
    """SHA-256 of the template file as it is on disk now."""
    return hashlib.sha256(TEMPLATE_PATH.read_bytes()).hexdigest()


def template_label(version: str) -> str:
    return f"{TEMPLATE_NAME} {version}"


def current_template() -> tuple[str, str]:
    """(release, SHA-256) a new version records; the hash is the release's pinned one."""
    return TEMPLATE_VERSION, TEMPLATE_RELEASES[TEMPLATE_VERSION]


def current_release() -> str:  # the model fields' defaults (migrations name them)
    return current_template()[0]


def current_release_sha256() -> str:
    return current_template()[1]


@functools.cache
def _skeleton() -> str:
    """The template's AST with the SPEC value blanked: what every render must match."""
    return ast.dump(ast.parse(_template().replace(SPEC_TOKEN, "None")))


def render_dag(
    spec: PipelineSpec, target: RenderTarget, *, version: int, portal_url: str
) -> RenderedDag:
    """Render and check the DAG file for `spec` in `target`; raise CodegenError if off-shape."""
    literal = build_spec_literal(spec, target, version=version, portal_url=portal_url)
    source = _template().replace(SPEC_TOKEN, pprint.pformat(literal, sort_dicts=False, width=100))
    check_source(source)
    return RenderedDag(
        dag_id=literal["dag_id"],
        source=source,
        sha256=hashlib.sha256(source.encode()).hexdigest(),
    )


_LITERAL_NODES = (ast.Dict, ast.List, ast.Tuple, ast.Constant, ast.Load)


def spec_node(tree: ast.Module) -> ast.Assign:
    """Return the module's single top-level `SPEC = ...` assignment."""
    found = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == "SPEC"
    ]
    if len(found) != 1:
        raise CodegenError("The DAG file must assign SPEC exactly once at top level.")
    return found[0]


def check_source(source: str) -> dict[str, Any]:
    """Check a rendered DAG file against the template's shape; return the SPEC value.

    Raises CodegenError when the file does not parse, when SPEC holds anything but plain data
    (dicts, lists, strings, numbers, booleans, None), or when any other part of the module differs
    from the template.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise CodegenError(f"The rendered DAG does not parse: {user_error(exc)}.") from None
    assign = spec_node(tree)
    for node in ast.walk(assign.value):
        if not isinstance(node, _LITERAL_NODES):
            raise CodegenError(f"SPEC may hold only data, found {type(node).__name__}.")
    value = ast.literal_eval(assign.value)
    assign.value = ast.Constant(None)
    if ast.dump(tree) != _skeleton():
        raise CodegenError("The rendered DAG differs from the template outside SPEC.")
    return value
