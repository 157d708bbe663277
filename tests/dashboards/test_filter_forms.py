"""Filter forms: one per list page, the page and the API give the same field errors.

A page lists as if the bad value were not given and says why next to the filter (status 200);
the API answers 422 with {"errors": {field: [messages]}}.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from pipelines.dashboards.forms import AlertFilterForm, HealthFilterForm, SlaFilterForm
from pipelines.models import Alert
from tests.conftest import make_health, make_pipeline

HEALTH = (reverse("pipelines:health"), "/api/v1/health")
ALERTS = (reverse("pipelines:alerts"), "/api/v1/alerts")


@pytest.fixture
def world(client, api_client, alice, team, orders, environments):
    """One failing pipeline in dev with an open alert; alice is logged in and holds a token."""
    client.force_login(alice)
    pipeline = make_pipeline("orders-daily", team, alice, orders)
    make_health(pipeline, environments["dev"], verdict="failing")
    now = timezone.now()
    alert = Alert.objects.create(
        key=Alert.key_for(pipeline.id, environments["dev"].id, "run_failed"),
        pipeline=pipeline,
        environment=environments["dev"],
        team=team,
        kind="run_failed",
        severity="page",
        state="open",
        summary="Run failed",
        portal_url="http://portal.test/pipelines/orders-daily/",
        opened_at=now - timedelta(hours=1),
        last_seen_at=now,
    )
    return {"pipeline": pipeline, "alert": alert}


@pytest.mark.parametrize(
    ("urls", "field", "value"),
    [
        (HEALTH, "verdict", "bogus"),
        (HEALTH, "sort", "'; drop"),
        (HEALTH, "team", "no such!"),
        (HEALTH, "environment", "<prod>"),
        (HEALTH, "owner", "a b"),
        (HEALTH, "page", "x"),
        (HEALTH, "page", "-1"),
        (HEALTH, "page", "0"),
        (HEALTH, "page", "9" * 5000),
        (ALERTS, "state", "closed"),
        (ALERTS, "kind", "fire"),
        (ALERTS, "team", "pay ments"),
        (ALERTS, "environment", "d/e/v"),
        (ALERTS, "page", "1.5"),
    ],
)
def test_a_bad_filter_is_the_same_field_error_on_page_and_api(client, world, urls, field, value):
    page_url, api_url = urls
    api = client.get(api_url, {field: value})
    assert api.status_code == 422
    errors = api.json()["errors"]
    assert list(errors) == [field]
    page = client.get(page_url, {field: value})
    assert page.status_code == 200
    body = page.content.decode()
    for message in errors[field]:
        assert escape(message) in body
    assert "/pipelines/orders-daily/" in body  # listed as if the filter were not given
    assert "<prod>" not in body  # a value shown back is escaped


def test_sla_page_shows_a_bad_filter_next_to_it_and_ignores_it(client, world):
    response = client.get(reverse("pipelines:sla"), {"team": "no such!", "page": "x"})
    assert response.status_code == 200
    form = response.context["form"]
    assert set(form.errors) == {"team", "page"}
    body = response.content.decode()
    for messages in form.errors.values():
        assert escape(messages[0]) in body
    assert response.context["filters"] == {"team": "", "environment": ""}


def test_good_filters_show_no_error(client, world):
    body = client.get(HEALTH[0], {"verdict": "failing", "team": "payments"}).content.decode()
    assert 'class="errorlist' not in body
    assert "/pipelines/orders-daily/" in body


def test_a_huge_page_number_is_the_last_page_on_the_page_and_422_on_the_api(client, world):
    huge = "9" * 20
    page = client.get(HEALTH[0], {"page": huge})
    assert page.status_code == 200
    assert "Page 1 of 1" in page.content.decode()
    api = client.get(HEALTH[1], {"page": huge})
    assert api.status_code == 422
    assert api.json()["errors"] == {"page": ["There are 1 pages."]}


def test_page_last_is_the_last_page_on_page_and_api(client, world):
    assert "Page 1 of 1" in client.get(HEALTH[0], {"page": "last"}).content.decode()
    body = client.get(ALERTS[1], {"page": "last"}).json()
    assert (body["page"], body["pages"]) == (1, 1)
    assert [a["id"] for a in body["results"]] == [world["alert"].id]


def test_health_form_turns_into_the_selectors_filters():
    form = HealthFilterForm(
        {"team": "payments", "verdict": "stale", "sort": "lag", "page": "last", "after": "tok"}
    )
    assert form.is_valid(), form.errors
    filters = form.filters()
    assert (filters.team, filters.verdict, filters.sort) == ("payments", "stale", "lag")
    assert (filters.last, filters.page, filters.after) == (True, 1, "tok")


def test_missing_and_bad_values_fall_back_to_the_defaults():
    assert HealthFilterForm({}).filters().sort == "worst"
    bad = AlertFilterForm({"state": "closed", "kind": "stale", "page": "x"})
    assert not bad.is_valid()
    assert bad.values == {
        "state": "recent",
        "team": "",
        "environment": "",
        "kind": "stale",
        "page": 1,
        "after": "",
        "before": "",
    }
    assert SlaFilterForm({"page": "3"}).values["page"] == 3


def test_a_keyset_token_longer_than_ours_is_ignored_by_the_page(client, world):
    response = client.get(HEALTH[0], {"after": "A" * 2000})
    assert response.status_code == 200
    assert "/pipelines/orders-daily/" in response.content.decode()
    assert response.context["filters"].after == ""
