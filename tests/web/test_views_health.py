"""Health overview, its API and /metrics: precomputed rows, fixed query counts, filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from tests.conftest import make_health, make_pipeline, make_user


@pytest.fixture
def fleet(team, alice, bob, orders, environments):
    """Three pipelines in dev and prod with different verdicts; bob owns one."""
    from pipelines.models import Team

    other = Team.objects.create(slug="growth", name="Growth", domain="marketing")
    carol = make_user("carol", other)
    failing = {"failing_streak": 3, "reason": "Last 3 runs failed."}
    stale = {"freshness_lag_partitions": 2, "freshness_lag_hours": 48.0}
    specs = [
        ("payments-failing", team, alice, "failing", failing),
        ("payments-stale", team, bob, "stale", stale),
        ("growth-ok", other, carol, "healthy", {"success_rate_7d": 1.0}),
    ]
    for slug, t, owner, verdict, extra in specs:
        p = make_pipeline(slug, t, owner, orders)
        make_health(p, environments["dev"], verdict=verdict, **extra)
        make_health(p, environments["prod"], verdict="healthy")
    return specs


def add_rows(n, orders, environments, team, owner):
    for i in range(n):
        p = make_pipeline(f"bulk-{i:04d}", team, owner, orders)
        make_health(p, environments["dev"], verdict="healthy")


def test_overview_is_worst_first(client, alice, fleet):
    client.force_login(alice)
    body = client.get(reverse("pipelines:health")).content.decode()
    assert body.index("payments-failing") < body.index("payments-stale") < body.index("growth-ok")
    assert "Last 3 runs failed." in body
    assert "2 behind" in body


def test_overview_query_count_does_not_grow_with_pipelines(
    client, alice, fleet, orders, environments, team, django_assert_num_queries
):
    client.force_login(alice)
    url = reverse("pipelines:health")
    with django_assert_num_queries(8) as small:  # session, user, + 6 for the page
        client.get(url)
    add_rows(120, orders, environments, team, alice)
    with django_assert_num_queries(len(small.captured_queries)):
        response = client.get(url)
    assert "Page 1 of 3" in response.content.decode()


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ({"team": "growth"}, ["growth-ok"], ["payments-failing"]),
        ({"verdict": "stale"}, ["payments-stale"], ["growth-ok", "payments-failing"]),
        ({"owner": "bob"}, ["payments-stale"], ["payments-failing"]),
        ({"environment": "prod", "verdict": "failing"}, [], ["payments-failing"]),
        ({"verdict": "<script>", "sort": "'; drop", "page": "x"}, ["payments-failing"], []),
    ],
)
def test_overview_filters(client, alice, fleet, query, shown, hidden):
    client.force_login(alice)
    body = client.get(reverse("pipelines:health"), query).content.decode()
    for slug in shown:
        assert f"/pipelines/{slug}/" in body
    for slug in hidden:
        assert f"/pipelines/{slug}/" not in body
    assert "<script>" not in body


def test_htmx_filter_returns_only_the_table(client, alice, fleet):
    client.force_login(alice)
    response = client.get(
        reverse("pipelines:health"),
        {"verdict": "failing"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="health-table",
    )
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="health-table">')
    assert "<html" not in body


def test_api_health_filters_and_fields(api_client, fleet):
    body = api_client.get("/api/v1/health", {"team": "payments", "environment": "dev"}).json()
    assert body["count"] == 2
    first = body["results"][0]
    assert first["pipeline"] == "payments-failing"
    assert first["verdict"] == "failing"
    assert first["failing_streak"] == 3
    for key in [
        "last_run_state", "last_run_at", "success_rate_7d", "p95_duration_s",
        "freshness_lag_partitions", "latest_loaded_partition", "expected_partition", "sla_state",
    ]:  # fmt: skip
        assert key in first
    assert api_client.get("/api/v1/health", {"verdict": "bogus"}).status_code == 422
    assert api_client.get("/api/v1/health", {"page": 99}).status_code == 422


def test_api_health_paginates(api_client, fleet, orders, environments, team, alice):
    add_rows(60, orders, environments, team, alice)
    first = api_client.get("/api/v1/health").json()
    assert (first["count"], first["pages"], len(first["results"])) == (66, 2, 50)
    second = api_client.get("/api/v1/health", {"page": 2}).json()
    assert len(second["results"]) == 16


def test_metrics_exposes_health(client, fleet, settings, environments):
    from pipelines.models import PipelineHealth

    PipelineHealth.objects.filter(pipeline__slug="growth-ok", environment__slug="dev").update(
        last_success_at=datetime(2026, 11, 20, tzinfo=UTC)
    )
    settings.DEBUG = True  # open without a token or a login only while DEBUG is on
    text = client.get("/metrics").content.decode()
    assert (
        'portal_pipeline_verdict{environment="dev",owner="alice",pipeline="payments-failing",'
        'team="payments",verdict="failing"} 1.0'
    ) in text
    assert (
        'portal_pipeline_freshness_lag_partitions{environment="dev",owner="bob",'
        'pipeline="payments-stale",team="payments"} 2.0'
    ) in text
    assert "portal_pipeline_last_success_timestamp_seconds" in text
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
