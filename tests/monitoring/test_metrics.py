"""/metrics: who may scrape it. It names every pipeline, owner and team."""

from __future__ import annotations

import pytest

from tests.conftest import make_health, make_pipeline


@pytest.fixture
def health(team, alice, orders, environments):
    pipeline = make_pipeline("orders-daily", team, alice, orders)
    return make_health(pipeline, environments["prod"], verdict="failing")


def test_anonymous_scrape_is_refused_when_debug_is_off_and_no_token_is_set(
    client, health, settings
):
    settings.DEBUG, settings.METRICS_TOKEN = False, ""
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "set METRICS_TOKEN" in response.content.decode()
    assert "orders-daily" not in response.content.decode()


def test_a_logged_in_user_may_read_metrics_without_a_token(client, health, alice, settings):
    settings.DEBUG, settings.METRICS_TOKEN = False, ""
    client.force_login(alice)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert 'pipeline="orders-daily"' in response.content.decode()


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ("Bearer s3cret-metrics-token", 200),
        ("Bearer wrong", 401),
        ("s3cret-metrics-token", 200),  # a bare token, as some scrapers send it
        ("Bearer ", 401),
        ("", 401),
    ],
)
def test_the_token_opens_metrics(client, health, settings, authorization, status):
    settings.DEBUG, settings.METRICS_TOKEN = False, "s3cret-metrics-token"
    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == status
    assert ('pipeline="orders-daily"' in response.content.decode()) == (status == 200)


def test_with_a_token_set_a_logged_in_user_still_may_read(client, health, alice, settings):
    settings.DEBUG, settings.METRICS_TOKEN = False, "s3cret-metrics-token"
    client.force_login(alice)
    assert client.get("/metrics").status_code == 200


def test_metrics_are_open_only_while_debug_is_on_and_no_token_is_set(client, health, settings):
    settings.DEBUG, settings.METRICS_TOKEN = True, ""
    assert client.get("/metrics").status_code == 200
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    assert client.get("/metrics").status_code == 401
