"""Codegen of the COPY load: binary COPY statements only for PostgreSQL → PostgreSQL, names quoted.

What the statements do against real databases is tested in
tests/integration/test_template_tasks.py; here, what the render puts in SPEC.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipelines.authoring import codegen
from pipelines.authoring.spec import Column
from tests.conftest import EVENTS_HOURLY, ORDERS, PORTAL_URL, target


def spec_value(spec, env) -> dict:
    return codegen.check_source(
        codegen.render_dag(spec, env, version=1, portal_url=PORTAL_URL).source
    )


def test_postgres_to_postgres_renders_binary_copy_with_bound_partition_bounds():
    copy = spec_value(ORDERS, target())["copy"]
    cols = '"order_id", "customer_id", "amount", "order_date", "updated_at"'
    assert copy["source"] == (
        f'COPY (SELECT {cols} FROM "public"."orders" '
        'WHERE "order_date" >= %s AND "order_date" < %s) TO STDOUT (FORMAT BINARY)'
    )
    assert copy["target"] == f'COPY "analytics"."orders_daily" ({cols}) FROM STDIN (FORMAT BINARY)'
    assert copy["columns"] == ["order_id", "customer_id", "amount", "order_date", "updated_at"]
    assert copy["types"] == ["BIGINT", "BIGINT", "NUMERIC", "DATE", "TIMESTAMP"]
    assert copy["source_key"] == '"public"."orders"'


@pytest.mark.parametrize(
    ("source", "warehouse"), [("sqlite", "postgres"), ("postgres", "sqlite"), ("sqlite", "sqlite")]
)
def test_any_other_pair_of_dialects_inserts_row_by_row(source, warehouse):
    spec = replace(ORDERS, source_dialect=source)
    value = spec_value(spec, target("dev", warehouse, "" if warehouse == "sqlite" else "analytics"))
    assert value["copy"] is None


def test_the_key_check_is_rendered_for_a_postgres_warehouse_only():
    postgres = spec_value(ORDERS, target())
    sqlite = spec_value(EVENTS_HOURLY, target("dev", "sqlite", "", "dev__"))
    assert postgres["primary_key"] == ["order_id"]
    assert postgres["sql"]["key_enforced"] == codegen.KEY_ENFORCED
    assert "key_enforced" not in sqlite["sql"]


def test_a_hostile_column_name_stays_a_quoted_identifier_in_copy():
    name = "x\") TO PROGRAM 'rm -rf /' --"
    spec = replace(
        ORDERS,
        columns=(*ORDERS.columns, Column(name, "text")),
        primary_key=("order_id",),
    )
    copy = spec_value(spec, target())["copy"]
    quoted = codegen.quote_identifier(name, "postgres")
    assert quoted == '"x"") TO PROGRAM \'rm -rf /\' --"'
    assert f", {quoted} FROM " in copy["source"]
    assert copy["target"].endswith(f", {quoted}) FROM STDIN (FORMAT BINARY)")
    assert copy["columns"][-1] == name  # bound as data to the type check, never spliced


def test_the_merge_matches_by_key_inside_the_partition_only():
    merge = spec_value(ORDERS, target())["copy"]["merge"]
    table, in_range = '"analytics"."orders_daily"', 't."order_date" >= %s AND t."order_date" < %s'
    assert merge["stage"].startswith("CREATE TEMPORARY TABLE portal_stage ON COMMIT DROP AS ")
    assert merge["stage"].endswith(f"FROM {table} WITH NO DATA")
    assert merge["delete"] == (
        f"DELETE FROM {table} AS t WHERE {in_range} AND NOT EXISTS "
        '(SELECT FROM pg_temp.portal_stage AS s WHERE s."order_id" = t."order_id")'
    )
    assert f'WHERE s."order_id" = t."order_id" AND {in_range} AND (' in merge["update"]
    assert 't."amount" IS DISTINCT FROM s."amount"' in merge["update"]
    # numeric: 12.5 = 12.50, but a fresh load would store the source's scale
    assert 'scale(t."amount") IS DISTINCT FROM scale(s."amount")' in merge["update"]
    assert 'scale(t."customer_id")' not in merge["update"]
    assert '"order_id" = s."order_id"' not in merge["update"]  # the key is matched, not set
    assert merge["insert"].endswith(f'WHERE s."order_id" = t."order_id" AND {in_range})')


def test_a_table_of_key_columns_only_has_nothing_to_update():
    spec = replace(ORDERS, primary_key=tuple(c.name for c in ORDERS.columns))
    assert spec_value(spec, target())["copy"]["merge"]["update"] is None


def test_a_hostile_column_name_stays_a_quoted_identifier_in_the_merge():
    name = 'x" = 1; DROP TABLE orders; --'
    spec = replace(ORDERS, columns=(*ORDERS.columns, Column(name, "text")))
    merge = spec_value(spec, target())["copy"]["merge"]
    quoted = codegen.quote_identifier(name, "postgres")
    assert f"t.{quoted} IS DISTINCT FROM s.{quoted}" in merge["update"]
    assert f"{quoted} = s.{quoted}" in merge["update"]
    assert name not in merge["update"].replace(quoted, "")


def test_only_postgres_takes_the_create_lock():
    postgres = spec_value(ORDERS, target())["sql"]
    sqlite = spec_value(EVENTS_HOURLY, target("dev", "sqlite", "", "dev__"))["sql"]
    assert postgres["lock"] == codegen.CREATE_LOCK
    assert "pg_advisory_xact_lock" in postgres["lock"]
    assert "lock" not in sqlite


def test_versions_made_before_the_copy_load_keep_their_release():
    """Their pages offer Upgrade; the release they were rendered with stays known."""
    assert list(codegen.TEMPLATE_RELEASES)[:2] == ["2026.11.1", "2026.11.2"]
    assert codegen.TEMPLATE_RELEASES["2026.11.1"] != codegen.template_sha256()
