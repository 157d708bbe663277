"""Hostile text in every page's path and query string: a clear 4xx, never a 500 (PostgreSQL).

The pages are found by walking the URL patterns of portal/urls.py and pipelines/urls.py, so a
new page is covered without editing this file. The API has its own fuzz test
(tests/api/test_api_fuzz.py); here it gets the JSON cases the fuzzer's generator does not reach.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from pipelines.authoring.forms import PipelineForm
from pipelines.authoring.services import pipeline_create
from pipelines.deployments import services as deploy
from pipelines.models import Deployment, Environment, Pipeline
from pipelines.web.middleware import UnstorableTextMiddleware, unstorable
from tests.conftest import form_data

NUL = "%00"
# A lone surrogate written as UTF-8 would be these bytes; they are not UTF-8, so Django decodes
# them as U+FFFD (query) or keeps them percent-encoded (path). Either way no surrogate gets in.
SURROGATE = "%ED%A0%80"
# Every name a page reads from the query string (views.py, selectors.HealthFilters), and one
# that no page reads.
QUERY_NAMES = [
    "team",
    "environment",
    "owner",
    "verdict",
    "sort",
    "page",
    "state",
    "kind",
    "schedule",
    "timezone",
    "partition_grain",
    "source",
    "next",
    "anything",
]
KNOWN = {
    "slug": "orders-daily",
    "number": "1",
    "a": "1",
    "b": "1",
    "promotion_id": "1",
    "backfill_id": "1",
    "run_id": "1",
    "public_id": "tok_000000000000",
}
SKIPPED_NAMESPACES = {"admin", "api"}  # Django's own admin; the API is fuzzed separately
PARAM = re.compile(r"<(?:(?P<converter>[a-z]+):)?(?P<name>\w+)>")


def routes(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[str]:
    """Yield the route of every page, e.g. "pipelines/<slug:slug>/"."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace not in SKIPPED_NAMESPACES:
                yield from routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


ROUTES = sorted(set(routes()))


def url(route: str, **values: str) -> str:
    """Fill the route's parameters: `values` where given, else a row that exists."""
    return "/" + PARAM.sub(lambda m: values.get(m["name"], KNOWN[m["name"]]), route)


def path_variants(route: str, hostile: str) -> list[str]:
    """The route with `hostile` in each parameter in turn, or as a last segment if it has none."""
    names = [m["name"] for m in PARAM.finditer(route)]
    if not names:
        base = url(route)
        return [base + ("" if base.endswith("/") else "/") + hostile]
    return [url(route, **{name: f"x{hostile}"}) for name in names]


@pytest.fixture
def world(client, alice, orders, environments, fake_airflow) -> Pipeline:
    """alice logged in; orders-daily deployed to dev."""
    form = PipelineForm(form_data(), user=alice)
    assert form.is_valid(), form.errors
    pipeline = pipeline_create(spec=form.spec, by=alice)
    deployment = deploy.deployment_request(
        version=pipeline.versions.get(), environment=environments["dev"], by=alice
    )
    Deployment.objects.filter(id=deployment.id).update(
        state=Deployment.State.DEPLOYED, registered_at=timezone.now()
    )
    client.force_login(alice)
    return pipeline


def test_the_walk_finds_the_pages():
    assert "pipelines/<slug:slug>/" in ROUTES
    assert "pipelines/<slug:slug>/versions/<int:number>/dag" in ROUTES
    assert "metrics" in ROUTES
    assert not any(route.startswith(("admin/", "api/")) for route in ROUTES)


@pytest.mark.parametrize("route", ROUTES)
def test_nul_in_a_path_segment_is_a_400_with_a_reason(client, world, route):
    for target in path_variants(route, NUL):
        for method in (client.get, client.post):
            response = method(target)
            assert response.status_code == 400, (target, response.status_code)
            assert "NUL character" in response.content.decode()
            assert response["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("route", ROUTES)
def test_surrogate_bytes_in_a_path_segment_are_not_a_server_error(client, world, route):
    for target in path_variants(route, SURROGATE):
        response = client.get(target)
        assert response.status_code < 500, (target, response.status_code)


@pytest.mark.parametrize("route", ROUTES)
def test_nul_in_any_query_parameter_is_a_400(client, world, route):
    for name in QUERY_NAMES:
        response = client.get(f"{url(route)}?{name}=dev{NUL}")
        assert response.status_code == 400, (route, name, response.status_code)
        assert "query string" in response.content.decode()
    assert client.get(f"{url(route)}?{NUL}=1").status_code == 400  # in a name, too


@pytest.mark.parametrize("route", ROUTES)
def test_odd_query_values_are_not_a_server_error(client, world, route):
    odd = [SURROGATE, "x" * 5000, "99999999999999999999", "-1", "0", "1e9", "%FF", "'", "{{ ds }}"]
    for value in odd:
        query = "&".join(f"{name}={value}" for name in QUERY_NAMES)
        response = client.get(f"{url(route)}?{query}")
        assert response.status_code < 500, (route, value, response.status_code)


@pytest.mark.parametrize("number", ["0", "99999999999999999999", "9223372036854775808"])
def test_out_of_range_version_number_in_the_path_is_a_404(client, world, number):
    response = client.get(url("pipelines/<slug:slug>/versions/<int:number>/dag", number=number))
    assert response.status_code == 404


def test_nul_in_a_form_field_is_shown_next_to_the_field(client, world):
    """Forms keep their own message for NUL; the middleware leaves form bodies to them."""
    for field in ("name", "owner", "target_table", "schedule", "timezone", "partition_column"):
        overrides = {"name": "orders-two", "target_table": "orders_two", field: "a\0b"}
        response = client.post("/pipelines/new/", form_data(**overrides))
        assert response.status_code == 200, field
        assert "Null characters are not allowed." in response.context["form"].errors[field]
    assert Pipeline.objects.count() == 1


def test_nul_in_the_run_now_form_is_a_field_error(client, world):
    response = client.post(
        "/pipelines/orders-daily/runs/",
        {"environment": "dev", "partition": "2026-01-01\0"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert "Null characters are not allowed." in response.content.decode()


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        # The environment is looked up as text: PostgreSQL refuses the NUL, the exception hook
        # answers with the sentence.
        ({"environment": "dev\0", "version": "1"}, 400, "holds a NUL character"),
        # The version is read as a number first: not one, so no such version.
        ({"environment": "dev", "version": "1\0"}, 404, "Not Found"),
    ],
)
def test_nul_in_a_raw_post_value_is_a_400_not_a_500(client, world, body, status, says):
    response = client.post("/pipelines/orders-daily/deployments/", body)
    assert response.status_code == status
    assert says in response.content.decode()
    assert not Deployment.objects.exclude(environment__slug="dev").exists()


def test_bad_version_in_the_deploy_form_is_a_404(client, world):
    for version in ("abc", "99999999999999999999", ""):
        response = client.post(
            "/pipelines/orders-daily/deployments/", {"environment": "dev", "version": version}
        )
        assert response.status_code == 404, version


@pytest.mark.parametrize("text", ["\x00", "a\x00b", "\ud800", "x\udfff"])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/pipelines", {"name": "{}", "team": "payments"}),
        ("/api/v1/pipelines/orders-daily/deployments", {"environment": "{}", "version": 1}),
        ("/api/v1/pipelines/orders-daily/runs", {"environment": "dev", "partition": "{}"}),
    ],
)
def test_api_json_with_unstorable_text_is_a_400_with_detail(api_client, world, path, body, text):
    filled = {k: v.format(text) if isinstance(v, str) else v for k, v in body.items()}
    response = api_client.post(path, json.dumps(filled), content_type="application/json")
    assert response.status_code == 400
    assert "JSON body" in response.json()["detail"]
    assert Pipeline.objects.count() == 1
    assert Deployment.objects.count() == 1


def test_unstorable_text_in_a_json_key_or_nested_list_is_refused(api_client, world):
    for body in ({"tags": ["ok", "\ud800"]}, {"na\x00me": "x"}):
        response = api_client.post(
            "/api/v1/pipelines", json.dumps(body), content_type="application/json"
        )
        assert response.status_code == 400


def test_api_path_and_query_with_nul_are_400_json(api_client, world):
    for target in ("/api/v1/pipelines/orders%00", "/api/v1/health?team=%00"):
        response = api_client.get(target)
        assert response.status_code == 400
        assert "cannot store" in response.json()["detail"]


def test_middleware_refuses_a_surrogate_a_server_hands_over(rf):
    """A server may decode the path itself (ASGI); a surrogate that gets through is refused."""
    request = rf.get("/pipelines/x/")
    request.path_info = request.path = "/pipelines/\ud800/"
    response = UnstorableTextMiddleware(lambda r: pytest.fail("view reached"))(request)
    assert response.status_code == 400


def test_unstorable_matches_exactly_nul_and_lone_surrogates():
    assert unstorable("\x00")
    assert unstorable("ok\ud800")
    assert unstorable("\udfff")
    assert not unstorable("Zürich 😀 \ufffd \x01 \\u0000")


def test_database_refusal_is_a_400_as_a_last_resort(client, world, caplog):
    """A view that sends a raw value to the database gets a 400 and a logged warning."""
    response = client.post(
        "/pipelines/orders-daily/deployments/", {"environment": "\0", "version": "1"}
    )
    assert response.status_code == 400
    assert "unstorable text reached the database" in caplog.text
    assert Environment.objects.count() == 3
