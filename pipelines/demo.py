"""The demo world `make run` shows: teams, users, environments on the local Airflow, a source."""

from __future__ import annotations

import random
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from orchestrator.local import sqlite_conn_uri
from pipelines.catalog.services import source_register
from pipelines.models import Environment, Membership, Team

DEMO_PASSWORD = "demo-portal-2026"  # noqa: S105 - printed in the README, demo data only
ENVIRONMENTS = [("dev", "Dev", 10, False), ("stage", "Stage", 20, True), ("prod", "Prod", 30, True)]
ORDER_DAYS = 28
ORDERS_PER_DAY = 40


def source_path() -> Path:
    return settings.DEMO_DIR / "source.sqlite3"


def warehouse_path(env_slug: str) -> Path:
    return settings.DEMO_DIR / f"warehouse_{env_slug}.sqlite3"


def demo_connections() -> dict[str, str]:
    """The Airflow connections the demo needs: one source, one warehouse per environment."""
    conns = {"demo_source": sqlite_conn_uri(source_path())}
    for slug, *_ in ENVIRONMENTS:
        conns[f"demo_warehouse_{slug}"] = sqlite_conn_uri(warehouse_path(slug))
    return conns


def order_rows(
    today: date, *, days: int = ORDER_DAYS, per_day: int = ORDERS_PER_DAY
) -> list[tuple]:
    """Deterministic orders for the `days` days up to and including `today`."""
    rng = random.Random(42)
    rows = []
    order_id = 1000
    for offset in range(days, -1, -1):
        day = today - timedelta(days=offset)
        for _ in range(per_day):
            order_id += 1
            created = datetime.combine(day, datetime.min.time()) + timedelta(
                seconds=rng.randrange(86400)
            )
            rows.append(
                (
                    order_id,
                    rng.randrange(1, 500),
                    round(rng.uniform(5, 400), 2),
                    day.isoformat(),
                    created.isoformat(sep=" "),
                )
            )
    return rows


ORDERS_DDL = (
    "CREATE TABLE IF NOT EXISTS orders (order_id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, "
    "amount NUMERIC(12, 2) NOT NULL, order_date DATE NOT NULL, updated_at TIMESTAMP NOT NULL)"
)


def build_source(path: Path, today: date) -> int:
    """Create (or top up) the demo SQLite source; return the number of orders in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(ORDERS_DDL)
        conn.executemany("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?)", order_rows(today))
        return conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]


@transaction.atomic
def seed_demo(*, today: date, airflow_url: str, dags_root: Path) -> None:
    """Create or update the demo world. Idempotent: running it twice changes nothing."""
    User = get_user_model()
    # Alert routes: with DEBUG's console email backend the messages show in the worker's output.
    demo_team, _ = Team.objects.update_or_create(
        slug="demo",
        defaults={
            "name": "Demo",
            "domain": "sales",
            "oncall_email": "oncall-demo@example.com",
            "quiet_email": "data-alerts-demo@example.com",
        },
    )
    other_team, _ = Team.objects.update_or_create(
        slug="finance", defaults={"name": "Finance", "domain": "finance"}
    )
    for username, team, role, staff in [
        ("demo", demo_team, Membership.Role.EDITOR, True),
        ("dana", demo_team, Membership.Role.APPROVER, False),
        ("frank", other_team, Membership.Role.EDITOR, False),
    ]:
        user, created = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
        user.is_staff = user.is_superuser = staff
        user.save()
        Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
    for slug, name, order, approval in ENVIRONMENTS:
        Environment.objects.update_or_create(
            slug=slug,
            defaults={
                "name": name,
                "order": order,
                "airflow_url": airflow_url,
                "dags_folder": str(dags_root / slug),
                "dag_id_prefix": f"{slug}__",
                "warehouse_conn_id": f"demo_warehouse_{slug}",
                "warehouse_dialect": "sqlite",
                "target_schema": "",
                "requires_approval": approval,
                "pages_oncall": slug == "prod",
            },
        )
    build_source(source_path(), today)
    for slug, *_ in ENVIRONMENTS:
        sqlite3.connect(warehouse_path(slug)).close()
    # Granted to team demo only: frank (finance) sees the catalog scoped to his team's sources.
    source_register(
        name="shop",
        url=f"sqlite:///{source_path().resolve()}",
        conn_id="demo_source",
        teams=["demo"],
    )
