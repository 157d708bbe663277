"""The reference pipeline: orders-daily, a daily load of a PostgreSQL orders table.

One spec that the codegen golden files, the DAG-parse tests and the benchmarks (bench/health.py,
bench/backfill.py) all describe, each varying what it needs with `dataclasses.replace`. It lives
here, not in the tests, because a benchmark must not import the test suite.
"""

from __future__ import annotations

from pipelines.authoring.spec import Column, PipelineSpec

ORDERS = PipelineSpec(
    name="orders-daily",
    team="payments",
    team_domain="finance",
    owner="alice",
    source_database="shop",
    source_dialect="postgres",
    source_conn_id="shop_source",
    source_schema="public",
    source_table="orders",
    columns=(
        Column("order_id", "bigint"),
        Column("customer_id", "bigint"),
        Column("amount", "numeric"),
        Column("order_date", "date"),
        Column("updated_at", "timestamp"),
    ),
    target_table="orders_daily",
    schedule="0 2 * * *",
    timezone="UTC",
    primary_key=("order_id",),
    partition_column="order_date",
    partition_grain="day",
    sla_minutes=120,
    retries=3,
    retry_delay_minutes=5,
    execution_timeout_minutes=60,
    tags=("revenue",),
    runbook_url="https://wiki.example.com/runbooks/orders",
    description="Daily orders into the warehouse.",
)
