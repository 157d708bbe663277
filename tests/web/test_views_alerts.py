"""Alert list: the page and GET /api/v1/alerts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from pipelines.models import Alert
from tests.conftest import make_pipeline


def make_alert(pipeline, environment, kind, *, state="open", resolved_days_ago=None, **fields):
    now = timezone.now()
    return Alert.objects.create(
        key=Alert.key_for(pipeline.id, environment.id, kind)
        + ("" if state == "open" else f":{now}"),
        pipeline=pipeline,
        environment=environment,
        team=pipeline.team,
        kind=kind,
        severity=fields.pop("severity", "page"),
        state=state,
        summary=fields.pop("summary", f"{kind} on {pipeline.slug}"),
        portal_url=f"http://portal.test/pipelines/{pipeline.slug}/",
        runbook_url=fields.pop("runbook_url", ""),
        opened_at=now - timedelta(days=(resolved_days_ago or 0) + 1),
        last_seen_at=now,
        resolved_at=now - timedelta(days=resolved_days_ago)
        if resolved_days_ago is not None
        else None,
        **fields,
    )


@pytest.fixture
def alerts(team, alice, orders, environments):
    p = make_pipeline("orders-daily", team, alice, orders)
    return {
        "failed": make_alert(p, environments["prod"], "run_failed", runbook_url="https://wiki/x"),
        "retrying": make_alert(p, environments["dev"], "retrying", severity="warning"),
        "old": make_alert(p, environments["prod"], "stale", state="resolved", resolved_days_ago=20),
        "recent": make_alert(
            p, environments["prod"], "sla_missed", state="resolved", resolved_days_ago=1
        ),
    }


def test_api_lists_open_and_recent_by_default(api_client, alerts):
    body = api_client.get("/api/v1/alerts").json()
    assert {a["kind"] for a in body["results"]} == {"run_failed", "retrying", "sla_missed"}
    assert body["results"][0]["state"] == "open"
    failed = next(a for a in body["results"] if a["kind"] == "run_failed")
    assert failed["runbook_url"] == "https://wiki/x"
    assert failed["portal_url"].endswith("/pipelines/orders-daily/")


@pytest.mark.parametrize(
    ("query", "kinds"),
    [
        ({"state": "open"}, {"run_failed", "retrying"}),
        ({"state": "all"}, {"run_failed", "retrying", "stale", "sla_missed"}),
        ({"state": "open", "environment": "dev"}, {"retrying"}),
        ({"state": "all", "kind": "stale"}, {"stale"}),
    ],
)
def test_api_alert_filters(api_client, alerts, query, kinds):
    body = api_client.get("/api/v1/alerts", query).json()
    assert {a["kind"] for a in body["results"]} == kinds


def test_api_alert_bad_filters(api_client, alerts):
    response = api_client.get("/api/v1/alerts", {"state": "closed", "kind": "fire"})
    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"state", "kind"}


def test_alert_page(client, alice, alerts):
    client.force_login(alice)
    body = client.get(reverse("pipelines:alerts")).content.decode()
    assert f'id="alert-{alerts["failed"].id}"' in body
    assert f'id="alert-{alerts["old"].id}"' not in body
    assert "runbook" in body
    everything = client.get(reverse("pipelines:alerts"), {"state": "all"}).content.decode()
    assert f'id="alert-{alerts["old"].id}"' in everything
