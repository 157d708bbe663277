"""Codegen: golden files for reference specs, the shape check, and hostile strings as data."""

from __future__ import annotations

import ast
import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.authoring import codegen
from pipelines.authoring.spec import Column, PipelineSpec
from tests.conftest import EVENTS_HOURLY, ORDERS, PORTAL_URL, target

GOLDEN = Path(__file__).parent / "golden"
REFERENCES = {
    "orders_daily_postgres.py": (ORDERS, target()),
    "events_hourly_sqlite.py": (EVENTS_HOURLY, target("dev", "sqlite", "", "dev__")),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_render_matches_golden_file(name):
    spec, env = REFERENCES[name]
    rendered = codegen.render_dag(spec, env, version=1, portal_url=PORTAL_URL)
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered.source)
    assert rendered.source == golden.read_text(), "run with UPDATE_GOLDEN=1 to accept a change"


def test_render_bakes_in_the_defaults():
    spec = codegen.render_dag(ORDERS, target(), version=3, portal_url=PORTAL_URL)
    value = codegen.check_source(spec.source)
    assert value["dag_id"] == "orders_daily"
    assert value["tags"][:4] == ["self-serve", "team:payments", "domain:finance", "env:prod"]
    assert "revenue" in value["tags"]
    assert value["max_active_runs"] == 1
    assert value["retries"] == 3
    assert value["retry_delay_s"] == 300
    assert value["max_retry_delay_s"] == 3600
    assert value["execution_timeout_s"] == 3600
    assert value["portal"]["version"] == 3
    assert "catchup=False" in spec.source
    assert "retry_exponential_backoff" in spec.source
    assert value["sql"]["delete_target"] == (
        'DELETE FROM "analytics"."orders_daily" WHERE "order_date" >= %s AND "order_date" < %s'
    )
    assert 'PRIMARY KEY ("order_id")' in value["sql"]["create_target"]


def test_sqlite_statements_use_qmark_and_no_schema():
    value = codegen.check_source(
        codegen.render_dag(
            EVENTS_HOURLY, target("dev", "sqlite", "", "dev__"), version=1, portal_url=PORTAL_URL
        ).source
    )
    assert value["dag_id"] == "dev__events_hourly"
    assert value["sql"]["count_target"] == (
        'SELECT COUNT(*) FROM "events_hourly" WHERE "seen_at" >= ? AND "seen_at" < ?'
    )
    assert value["partition_type"] == "timestamp"


def test_the_guarded_swap_settings_reach_the_dag():
    spec = replace(ORDERS, shrink_guard_percent=80, adopt_existing_table=True, allow_empty=True)
    value = codegen.check_source(
        codegen.render_dag(spec, target(), version=1, portal_url=PORTAL_URL).source
    )
    assert value["shrink_guard_percent"] == 80
    assert value["adopt_existing_table"] is True
    assert value["allow_empty"] is True
    assert value["target_name"] == "analytics.orders_daily"
    assert value["target_key"] == '"analytics"."orders_daily"'
    assert value["sql"]["create_register"] == [
        'CREATE SCHEMA IF NOT EXISTS "analytics"',
        'CREATE TABLE IF NOT EXISTS "analytics"."portal_managed_tables" (table_name TEXT '
        "PRIMARY KEY, pipeline TEXT NOT NULL, how TEXT NOT NULL, at TEXT NOT NULL)",
    ]
    assert value["sql"]["create_index"] == (
        'CREATE INDEX IF NOT EXISTS "orders_daily__partition" ON "analytics"."orders_daily" '
        '("order_date")'
    )


def test_a_timestamptz_partition_column_is_an_instant_column():
    columns = (*ORDERS.columns[:4], Column("updated_at", "timestamptz"))
    spec = replace(ORDERS, columns=columns, partition_column="updated_at")
    for dialect, ddl in (("postgres", '"updated_at" TIMESTAMPTZ'), ("sqlite", '"updated_at" TEXT')):
        value = codegen.check_source(
            codegen.render_dag(
                spec, target("dev", dialect, "analytics"), version=1, portal_url=PORTAL_URL
            ).source
        )
        assert value["partition_type"] == "timestamptz"
        assert value["instant_columns"] == [4]
        assert ddl in value["sql"]["create_target"]


def test_a_spec_saved_before_the_guard_loads_with_the_safe_defaults():
    data = ORDERS.to_json()
    del data["shrink_guard_percent"], data["adopt_existing_table"]
    spec = PipelineSpec.from_json(data)
    assert (spec.shrink_guard_percent, spec.adopt_existing_table) == (50, False)


def test_quote_identifier_doubles_embedded_quotes():
    assert codegen.quote_identifier('we"ird', "postgres") == '"we""ird"'
    assert codegen.quote_identifier('we"ird', "sqlite") == '"we""ird"'


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s + "\nimport os\n",
        lambda s: s.replace("catchup=False", "catchup=True"),
        lambda s: s.replace("SPEC = {", 'SPEC = {"x": __import__("os").getcwd(), ', 1),
        lambda s: s.replace("SPEC = {", 'SPEC = {"x": f"{1}", ', 1),
        lambda s: s.replace("SPEC = {", "SPEC = SPEC2 = {", 1),
        lambda s: s + "\nSPEC = {}\n",
        lambda s: s[:-10],
        # The task code is a string constant compiled at run time: it is template, not data.
        lambda s: s.replace(
            "def load_partition(**context) -> dict:\n",
            "def load_partition(**context) -> dict:\n    import os\n",
            1,
        ),
        lambda s: s.replace(" duplicate keys in {span}", " dupes in {span}", 1),
    ],
)
def test_check_source_refuses_anything_off_template(tamper):
    source = codegen.render_dag(ORDERS, target(), version=1, portal_url=PORTAL_URL).source
    with pytest.raises(codegen.CodegenError):
        codegen.check_source(tamper(source))


def _shape(source: str) -> str:
    tree = ast.parse(source)
    codegen.spec_node(tree).value = ast.Constant(None)
    return ast.dump(tree)


FREE_TEXT = [
    "name", "owner", "team", "team_domain", "description", "runbook_url", "source_database",
    "source_schema", "source_table", "target_table", "partition_column", "source_conn_id",
    "schedule", "timezone",
]  # fmt: skip


def bound(name: str) -> str:
    """A quoted name as it stands in a statement run with parameters: psycopg reads "%%" as %."""
    return codegen.quote_identifier(name, "postgres").replace("%", "%%")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FREE_TEXT), text=st.text(min_size=0, max_size=200))
def test_any_typed_string_stays_data(field, text):
    """Whatever a user types, the module's shape is the template's and the value round-trips."""
    changes = {field: text}
    if field == "partition_column":  # the spec must still name the column it partitions on
        changes["columns"] = (*ORDERS.columns[:3], Column(text, "date"), ORDERS.columns[4])
    spec = replace(ORDERS, **changes)
    rendered = codegen.render_dag(spec, target(), version=1, portal_url=PORTAL_URL)
    value = codegen.check_source(rendered.source)
    assert _shape(rendered.source) == _shape(
        codegen.render_dag(ORDERS, target(), version=1, portal_url=PORTAL_URL).source
    )
    if field in ("description",):
        assert value["description"] == text
    elif field == "owner":
        assert value["owner"] == text
    elif field == "runbook_url":
        assert text in value["doc_md"]
    elif field in ("source_table", "partition_column"):
        assert bound(text) in value["sql"]["select_source"]
    elif field == "target_table":
        assert bound(text) in value["sql"]["delete_target"]
    elif field == "name":
        assert value["portal"]["pipeline"] == text
    elif field == "source_conn_id":
        assert value["source_conn_id"] == text
    elif field in ("schedule", "timezone"):
        assert value[field] == text
    elif field == "source_schema" and text:
        assert bound(text) in value["sql"]["select_source"]
    elif field == "team":
        assert f"team:{text}" in value["tags"]
    elif field == "team_domain":
        assert f"domain:{text}" in value["tags"]
    else:  # source_database, or an empty source_schema
        assert text in value["doc_md"] or not text


@settings(max_examples=100, deadline=None)
@given(tags=st.lists(st.text(max_size=60), max_size=5))
def test_any_tags_stay_data(tags):
    spec = replace(ORDERS, tags=tuple(tags))
    value = codegen.check_source(
        codegen.render_dag(spec, target(), version=1, portal_url=PORTAL_URL).source
    )
    assert set(tags) <= set(value["tags"])
