"""The audit log page and GET /api/v1/audit: one filter form, newest first, keyset pages."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from pipelines.core.audit import audit_record
from pipelines.core.models import AuditEvent
from pipelines.dashboards.selectors import PER_PAGE
from tests.conftest import make_pipeline

API = "/api/v1/audit"


@pytest.fixture
def story(alice, bob, team, orders, environments):
    """alice creates and deploys orders-daily; bob runs refunds in prod; the system acts once."""
    orders_daily = make_pipeline("orders-daily", team, alice, orders)
    refunds = make_pipeline("refunds", team, bob, orders)
    audit_record(actor=alice, action="pipeline_created", pipeline=orders_daily, summary="a1")
    audit_record(
        actor=alice,
        action="deployment_requested",
        pipeline=orders_daily,
        environment=environments["dev"],
        summary="a2",
    )
    audit_record(
        actor=bob,
        action="run_requested",
        pipeline=refunds,
        environment=environments["prod"],
        summary="b1",
    )
    audit_record(actor=None, action="environment_changed", environment=environments["prod"])


def summaries(page) -> list[str]:
    return [e.summary for e in page.context["events"].object_list]


def test_page_lists_newest_first_and_is_in_the_nav(client, alice, story):
    client.force_login(alice)

    page = client.get(reverse("pipelines:audit"))

    assert page.status_code == 200
    assert summaries(page) == ["", "b1", "a2", "a1"]
    html = page.content.decode()
    assert f'href="{reverse("pipelines:audit")}"' in html
    assert "system" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"pipeline": "orders-daily"}, ["a2", "a1"]),
        ({"actor": "bob"}, ["b1"]),
        ({"action": "deployment_requested"}, ["a2"]),
        ({"environment": "prod"}, ["", "b1"]),
        ({"actor": "alice", "environment": "dev"}, ["a2"]),
    ],
)
def test_page_and_api_filter_alike(client, api_client, alice, story, query, expected):
    api_rows = api_client.get(API, query).json()["results"]
    client.force_login(alice)

    assert summaries(client.get(reverse("pipelines:audit"), query)) == expected
    # The API's alice has a token, whose creation is an event too.
    assert [r["summary"] for r in api_rows if r["action"] != "api_token_created"] == expected


def test_bad_filter_is_shown_on_the_page_and_422_in_the_api(client, api_client, alice, story):
    client.force_login(alice)

    page = client.get(reverse("pipelines:audit"), {"action": "dropped_table"})
    api = api_client.get(API, {"action": "dropped_table"})

    assert page.status_code == 200
    # The bad value is ignored: the page lists as if it were not given.
    assert summaries(page) == summaries(client.get(reverse("pipelines:audit")))
    assert "Use one of:" in page.content.decode()
    assert api.status_code == 422
    assert "Use one of:" in api.json()["errors"]["action"][0]


def test_api_answers_typed_events(api_client, alice, story):
    body = api_client.get(API, {"action": "deployment_requested"}).json()

    assert body["count"] == 1
    [row] = body["results"]
    assert row["actor"] == "alice"
    assert row["pipeline"] == "orders-daily"
    assert row["environment"] == "dev"
    assert set(row) == {
        "id",
        "at",
        "actor",
        "action",
        "pipeline",
        "environment",
        "summary",
        "before",
        "after",
    }
    system = api_client.get(API, {"action": "environment_changed"}).json()["results"][0]
    assert (system["actor"], system["pipeline"]) == (None, None)


def test_page_pages_by_keyset_through_every_event(client, alice):
    for n in range(PER_PAGE + 5):
        audit_record(actor=alice, action="api_token_created", summary=f"e{n}")
    client.force_login(alice)

    first = client.get(reverse("pipelines:audit"))
    links = first.context["events"].links
    second = client.get(reverse("pipelines:audit") + "?" + links["next"])

    seen = summaries(first) + summaries(second)
    assert seen == [f"e{n}" for n in reversed(range(PER_PAGE + 5))]
    assert "after=" in links["next"]


def test_page_needs_login(client, db):
    assert client.get(reverse("pipelines:audit")).status_code == 302


def test_api_needs_a_token(client, db):
    assert client.get(API).status_code == 401


def test_every_audit_json_answer_round_trips(api_client, story):
    body = api_client.get(API).json()
    assert json.loads(json.dumps(body)) == body
    assert body["count"] == AuditEvent.objects.count()
