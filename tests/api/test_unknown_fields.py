"""Unknown fields are refused, never ignored: every API body and every page form names them."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from pydantic import BaseModel

from pipelines.api.v1 import api
from pipelines.models import Pipeline, RunRequest
from tests.conftest import form_data, pipeline_payload


def post(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def test_create_with_a_misspelled_field_is_422_naming_it(api_client, alice, orders, environments):
    response = post(api_client, "/api/v1/pipelines", pipeline_payload(retires=5))
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["retires"]
    assert "Unknown field" in response.json()["errors"]["retires"][0]
    assert not Pipeline.objects.exists()


def test_every_unknown_field_is_named(api_client, alice, orders, environments):
    response = post(api_client, "/api/v1/pipelines", pipeline_payload(foo=1, bar="x"))
    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"foo", "bar"}


def _body_models() -> list[tuple[str, type[BaseModel]]]:
    api.urls  # noqa: B018 - builds the routers' operations
    found = []
    for _prefix, router in api._routers:
        for path, view in router.path_operations.items():
            for operation in view.operations:
                for model in operation.models:
                    if getattr(model, "__ninja_param_source__", None) != "body":
                        continue
                    for field in model.model_fields.values():
                        for kind in (field.annotation, *getattr(field.annotation, "__args__", ())):
                            if isinstance(kind, type) and issubclass(kind, BaseModel):
                                found.append((f"{operation.methods} {path}", kind))
    return found


def test_every_api_body_forbids_unknown_fields():
    models = _body_models()
    assert len(models) >= 10  # pipelines, deployments, runs, promotions, backfills, decisions…
    lax = [where for where, model in models if model.model_config.get("extra") != "forbid"]
    assert lax == []


def test_run_with_unknown_field_is_422(api_client, alice, orders, environments):
    post(api_client, "/api/v1/pipelines", pipeline_payload())
    response = post(
        api_client,
        "/api/v1/pipelines/orders-daily/runs",
        {"environment": "dev", "partition": "2026-11-10", "accept_smalller": True},
    )
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["accept_smalller"]
    assert not RunRequest.objects.exists()


@pytest.fixture
def logged_in(client, alice, orders, environments):
    client.force_login(alice)
    return client


def test_create_page_refuses_an_unknown_field(logged_in):
    response = logged_in.post(reverse("pipelines:create"), form_data(retires="5"))
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "Unknown field “retires”: this form does not take it (check the spelling)."
    ]
    assert "Unknown field “retires”" in response.content.decode()
    assert not Pipeline.objects.exists()


def test_create_page_accepts_the_csrf_token_field(logged_in):
    data = form_data(csrfmiddlewaretoken="anything")
    response = logged_in.post(reverse("pipelines:create"), data)
    assert response.status_code == 302
    assert Pipeline.objects.count() == 1


def test_run_now_form_refuses_an_unknown_field(logged_in):
    logged_in.post(reverse("pipelines:create"), form_data())
    pipeline = Pipeline.objects.get()
    response = logged_in.post(
        reverse("pipelines:run-create", args=[pipeline.slug]),
        {"environment": "dev", "partition": "2026-11-10", "acept_smaller": "on"},
        HTTP_HX_REQUEST="true",
    )
    assert "Unknown field “acept_smaller”" in response.content.decode()
    assert not RunRequest.objects.exists()


def test_a_misspelled_query_parameter_is_422_naming_it(api_client, alice, orders, environments):
    response = api_client.get("/api/v1/health?verdit=failing")
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["verdit"]
    assert api_client.get("/api/v1/health?verdict=failing").status_code == 200


def test_every_get_endpoint_refuses_an_unknown_query_parameter(
    api_client, alice, orders, environments
):
    post(api_client, "/api/v1/pipelines", pipeline_payload())
    api.urls  # noqa: B018
    checked = 0
    for _prefix, router in api._routers:
        for path, view in router.path_operations.items():
            for operation in view.operations:
                if "GET" not in operation.methods or "docs" in path or "openapi" in path:
                    continue
                url = "/api/v1" + path.format(
                    slug="orders-daily", a=1, b=1, number=1, deployment_id=1, run_id=1,
                    promotion_id=1, backfill_id=1, id=1,
                )  # fmt: skip
                response = api_client.get(url, {"no_such_param": "1"})
                assert response.status_code == 422, (path, response.status_code)
                assert list(response.json()["errors"]) == ["no_such_param"], path
                checked += 1
    assert checked >= 10
