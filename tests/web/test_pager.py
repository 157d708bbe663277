"""Keyset pages: first, next, previous and last links walk the same rows OFFSET would, in order,
NULLs and ties included, and a deep page costs the queries of the first."""

from __future__ import annotations

import base64
import json
import re
from html import unescape

import pytest
from django.urls import reverse

from tests.conftest import make_health, make_pipeline

LINK = re.compile(r'<a href="\?([^"]*)"(?: rel="\w+")? hx-get="\?([^"]*)"[^>]*>([^<]+)</a>')


@pytest.fixture
def many(team, alice, orders, environments):
    """130 rows with ties and NULLs in every sort key (3 pages of 50)."""
    for i in range(65):
        p = make_pipeline(f"p-{i:03d}", team, alice, orders)
        for env in ("dev", "prod"):
            make_health(
                p,
                environments[env],
                verdict=["failing", "stale", "healthy"][i % 3],
                freshness_lag_partitions=None if i % 4 == 0 else i % 5,
                freshness_lag_hours=None if i % 7 == 0 else float(i % 6),
                success_rate_7d=None if i % 5 == 0 else (i % 3) / 2,
            )


def shown(body: str) -> list[str]:
    return re.findall(r'<tr id="health-([^"]+)">', body)


def links(body: str) -> dict[str, str]:
    found = {}
    for href, hx_get, text in LINK.findall(body):
        assert href == hx_get  # every hx-get also has a real href
        found[text.strip("←→«» ")] = unescape(href)
    return found


@pytest.mark.parametrize("sort", ["worst", "name", "lag", "last_run", "success"])
def test_pages_walk_every_row_once_in_order(client, alice, many, sort):
    from pipelines.models import PipelineHealth

    client.force_login(alice)
    url = reverse("pipelines:health")
    # What OFFSET shows for ?page=1..3 (the old links, still served) is the order to follow.
    expected = [
        row
        for n in (1, 2, 3)
        for row in shown(client.get(url, {"sort": sort, "page": n}).content.decode())
    ]
    assert len(set(expected)) == PipelineHealth.objects.count() == 130
    body = client.get(url, {"sort": sort}).content.decode()
    walked = shown(body)
    assert "Page 1 of 3" in body
    while "Next" in links(body):
        body = client.get(f"{url}?{links(body)['Next']}").content.decode()
        walked += shown(body)
    assert walked == expected
    assert "Page 3 of 3" in body
    back = shown(body)
    while "Previous" in links(body):
        body = client.get(f"{url}?{links(body)['Previous']}").content.decode()
        back = shown(body) + back
    assert back == expected
    assert "Page 1 of 3" in body


def test_last_and_first_links(client, alice, many):
    client.force_login(alice)
    url = reverse("pipelines:health")
    first = client.get(url, {"verdict": "healthy"}).content.decode()
    assert "Page 1 of 1" in first
    assert "Last" not in links(first)
    body = client.get(url).content.decode()
    last = client.get(f"{url}?{links(body)['Last']}").content.decode()
    assert "Page 3 of 3" in last
    assert len(shown(last)) == 30  # 130 = 50 + 50 + 30: the pages line up from the first
    assert set(links(last)) == {"First", "Previous"}
    again = client.get(f"{url}?{links(last)['First']}").content.decode()
    assert shown(again) == shown(body)


def test_a_deep_page_costs_what_the_first_does(client, alice, many, django_assert_num_queries):
    client.force_login(alice)
    url = reverse("pipelines:health")
    client.get(url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as first:
        body = client.get(url).content.decode()
    with django_assert_num_queries(len(first.captured_queries)):
        client.get(f"{url}?{links(body)['Next']}")
    with django_assert_num_queries(len(first.captured_queries)):
        client.get(f"{url}?{links(body)['Last']}")
    assert "OFFSET" not in " ".join(q["sql"] for q in first.captured_queries[-4:]).upper()


def b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    ["x", "!!", b64([]), b64([1, 2, 3]), b64({"a": 1}), b64(["a", "b", "c", "d"]),
     b64([[1], 2, "x", 3]), b64([1, None, "p-001", "1e999"]), b64([1, None, "p-001", 10**30]),
     b64([1, 2, "p-\x00", 3]), "WzEsMiwicCIsSW5maW5pdHld", "W05hTiwyLCJwIiwzXQ"],
)  # fmt: skip
def test_a_forged_token_is_ignored(client, alice, many, token):
    client.force_login(alice)
    url = reverse("pipelines:health")
    for param in ("after", "before"):
        response = client.get(url, {param: token, "page": "2"})
        assert response.status_code == 200
        assert shown(response.content.decode())  # a page, not an error


def test_sla_and_alert_pagers_have_first_and_last(client, alice, many):
    client.force_login(alice)
    for name in ("pipelines:sla", "pipelines:alerts"):
        body = client.get(reverse(name), {"page": "last"}).content.decode()
        assert "Page 1 of 1" in body


def test_a_token_past_the_end_shows_an_empty_page_with_a_way_back(client, alice, many):
    client.force_login(alice)
    url = reverse("pipelines:health")
    response = client.get(url, {"after": b64([1e308, -1e308, "p", -(10**30)]), "page": "2"})
    assert response.status_code == 200
    body = response.content.decode()
    assert not shown(body)
    assert "First" in links(body)
