"""Any column name works in the generated SQL: run on PostgreSQL with psycopg's placeholders.

A name like "share_%", "a%sb", "{x}" or one with quotes must stay a name: psycopg reads "%" in a
statement run with parameters as a placeholder unless it is doubled. The statements are run here
as the DAG runs them (with or without parameters) on the test database.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.authoring import codegen
from pipelines.authoring.spec import Column
from tests.conftest import ORDERS, target

NAME = st.text(alphabet="%{}\"'s?a_ $\\", min_size=1, max_size=12)
BOUNDS = (date(2026, 11, 10), date(2026, 11, 11))


def spec_with(key: str, value: str, day: str):
    columns = (Column(key, "bigint"), Column(value, "text"), Column(day, "date"))
    return replace(
        ORDERS,
        columns=columns,
        primary_key=(key,),
        partition_column=day,
        source_schema="portal_names",
        source_table=f"t{day}",
        target_table=f"t{day}",
    )


def run_load_statements(spec) -> dict[str, object]:
    """Create the table, load one row by INSERT, count, merge from a staged copy, COPY out."""
    env = target(schema="portal_names")
    sql = codegen.build_sql(spec, env)
    copy = codegen.build_copy(spec, env)
    merge = copy["merge"]
    seen: dict[str, object] = {}
    with connection.cursor() as cur:
        for statement in sql["create_register"]:
            cur.execute(statement)
        cur.execute(sql["create_target"])
        cur.execute(sql["create_index"])
        cur.executemany(sql["insert_target"], [(1, "one", BOUNDS[0]), (2, "two", BOUNDS[0])])
        cur.execute(sql["count_target"], BOUNDS)
        seen["count"] = cur.fetchone()[0]
        cur.execute(sql["duplicate_keys"], BOUNDS)
        seen["duplicates"] = cur.fetchone()[0]
        cur.execute(sql["select_source"], BOUNDS)
        seen["rows"] = sorted(cur.fetchall())
        cur.execute(merge["stage"])
        cur.execute(f"INSERT INTO pg_temp.portal_stage SELECT * FROM {spec_table(spec)}")
        cur.execute(merge["differ"], BOUNDS)
        seen["differ"] = cur.fetchone()[0]
        for step in ("delete", "update", "insert"):
            cur.execute(merge[step], BOUNDS)
        with cur.cursor.copy(copy["source"], BOUNDS) as out:
            out.set_types(["int8", "text", "date"])
            seen["copied"] = sorted(out.rows())
        cur.execute(sql["delete_target"], BOUNDS)
        cur.execute(sql["count_target"], BOUNDS)
        seen["after_delete"] = cur.fetchone()[0]
    return seen


def spec_table(spec) -> str:
    return codegen.qualified(spec.source_schema, spec.source_table, "postgres")


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(names=st.lists(NAME, min_size=3, max_size=3, unique=True))
def test_any_column_name_survives_the_generated_load(names):
    spec = spec_with(*names)
    with transaction.atomic():
        seen = run_load_statements(spec)
        transaction.set_rollback(True)
    assert seen == {
        "count": 2,
        "duplicates": 0,
        "rows": [(1, "one", BOUNDS[0]), (2, "two", BOUNDS[0])],
        "differ": 0,
        "after_delete": 0,
        "copied": [(1, "one", BOUNDS[0]), (2, "two", BOUNDS[0])],
    }


@pytest.mark.django_db
def test_a_percent_column_is_doubled_only_where_parameters_are_bound():
    spec = spec_with("id", "share_%", "day%s")
    sql = codegen.build_sql(spec, target())
    assert '"share_%%"' in sql["insert_target"]
    assert '"day%%s" >= %s' in sql["count_target"]
    assert '"share_%"' in sql["create_target"]  # run without parameters: sent as it is
    with transaction.atomic():
        assert run_load_statements(spec)["count"] == 2
        transaction.set_rollback(True)
