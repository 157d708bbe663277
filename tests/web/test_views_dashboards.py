"""The SLA and ownership dashboards: what they show and a query count that does not grow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from pipelines.models import Membership, RunRecord, SlaMiss
from tests.conftest import make_health, make_pipeline


@pytest.fixture
def world(client, team, alice, bob, orders, environments):
    client.force_login(alice)
    late = make_pipeline("late-loader", team, alice, orders)
    late.sla_minutes, late.runbook_url = 60, "https://wiki.example.com/late"
    late.save()
    make_health(
        late, environments["prod"], verdict="sla_missed", sla_state="missed",
        sla_misses_30d=2, sla_deadlines_30d=30,
    )  # fmt: skip
    fire = timezone.now() - timedelta(hours=5)
    for i, started in enumerate([False, True]):
        partition = datetime(2026, 11, 10 + i, tzinfo=UTC)
        SlaMiss.objects.create(
            pipeline=late, environment=environments["prod"], team=team,
            fire_time=fire - timedelta(days=i),
            deadline=fire - timedelta(days=i, hours=-1),
            partition=partition.date().isoformat(), partition_start=partition, detected_at=fire,
        )  # fmt: skip
        if started:
            RunRecord.objects.create(
                environment=environments["prod"], pipeline=late, dag_id="late_loader",
                dag_run_id=f"r{i}", state="running", queued_at=fire, start_date=fire,
                partition_start=partition, partition_end=partition + timedelta(days=1),
                synced_at=fire,
            )  # fmt: skip
    orphan = make_pipeline("orphaned", team, bob, orders)
    Membership.objects.filter(user=bob).delete()  # bob left the team
    make_health(orphan, environments["dev"], verdict="healthy")
    return client


def test_sla_dashboard(world):
    body = world.get(reverse("pipelines:sla")).content.decode()
    assert "late-loader" in body
    assert "never started" in body
    assert "started, not loaded yet" in body
    assert "93%" in body  # 28 of 30 deadlines met
    assert 'class="wbar"' in body


def test_ownership_dashboard(world):
    body = world.get(reverse("pipelines:ownership")).content.decode()
    assert 'id="orphan-orphaned"' in body
    assert "owner left the team" in body
    assert 'id="gap-orphaned"' in body  # no SLA, no runbook
    assert "No alert route: Payments" in body
    # One row per team, even when some of its pipelines are orphans.
    assert body.count("<td>Payments</td><td>2</td>") == 1


@pytest.mark.parametrize("name", ["pipelines:sla", "pipelines:ownership"])
def test_dashboard_queries_do_not_grow(world, name, team, alice, orders, environments,
                                       django_assert_num_queries):  # fmt: skip
    url = reverse(name)
    world.get(url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as before:
        world.get(url)
    for i in range(40):
        p = make_pipeline(f"more-{i}", team, alice, orders)
        make_health(p, environments["prod"], verdict="stale", sla_state="met", sla_deadlines_30d=5)
    with django_assert_num_queries(len(before.captured_queries)):
        world.get(url)
