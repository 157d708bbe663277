"""Fuzz every operation of /api/v1/openapi.json on PostgreSQL: no input answers a server error.

schemathesis generates requests from the OpenAPI document (valid ones and ones that break it),
and sends them through the real WSGI stack, middleware included, as alice with her token.
Half of the cases name rows that exist, so the views get past their 404s. Each case runs in a
savepoint that is rolled back: a failed query cannot poison the next case, and a created
pipeline does not make the next valid payload a duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from pipelines.authoring.forms import PipelineForm
from pipelines.authoring.services import pipeline_create
from pipelines.core.tokens import token_create
from pipelines.deployments import services as deploy
from pipelines.models import Alert, Backfill, Deployment, Pipeline, Promotion, RunRequest
from tests.conftest import form_data, make_health, pipeline_payload

MAX_EXAMPLES = 30  # per operation: about 12 s for the whole API
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,  # the same cases on every run, so CI is reproducible
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def wsgi_app() -> Iterator[Any]:
    """The project's WSGI app, minus the per-request connection recycling.

    Django closes a connection whose autocommit differs from the settings at the end of each
    request; inside the test's transaction that would end it. Django's test client disconnects
    the same receiver for the same reason.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def known(alice, team, orders, environments, fake_airflow) -> dict[str, Any]:
    """A deployed pipeline with a run, a health row, an open alert, a pending promotion and a
    queued backfill: things to find."""
    form = PipelineForm(form_data(), user=alice)
    assert form.is_valid(), form.errors
    pipeline: Pipeline = pipeline_create(spec=form.spec, by=alice)
    version = pipeline.versions.get()
    deployment = deploy.deployment_request(
        version=version, environment=environments["dev"], by=alice
    )
    # Registered, as if Airflow had parsed it: the deploy flow has tests of its own.
    Deployment.objects.filter(id=deployment.id).update(
        state=Deployment.State.DEPLOYED, registered_at=timezone.now()
    )
    run = RunRequest.objects.create(
        pipeline=pipeline,
        environment=environments["dev"],
        partition=(timezone.now() - timedelta(days=2)).date().isoformat(),
        dag_id=deployment.dag_id,
        dag_run_id="portal__fuzz",
        logical_date=timezone.now(),
        requested_by=alice,
    )
    make_health(pipeline, environments["dev"], verdict="failing", reason="Last run failed.")
    now = timezone.now()
    Alert.objects.create(
        key=Alert.key_for(pipeline.id, environments["dev"].id, "run_failed"),
        pipeline=pipeline,
        environment=environments["dev"],
        team=team,
        kind="run_failed",
        severity="page",
        state="open",
        summary="Run failed",
        portal_url="http://portal.test/pipelines/orders-daily/",
        opened_at=now,
        last_seen_at=now,
    )
    promotion = Promotion.objects.create(
        pipeline=pipeline,
        version=version,
        environment=environments["stage"],
        reason="Fuzz.",
        checklist=[],
        requested_by=alice,
    )
    backfill = Backfill.objects.create(
        pipeline=pipeline,
        environment=environments["dev"],
        dag_id=deployment.dag_id,
        first_partition="2026-01-01",
        last_partition="2026-01-02",
        from_date=now,
        to_date=now,
        reprocess="missing",
        reason="Fuzz.",
        fingerprint="0" * 64,
        partitions=2,
        runs=2,
        chunks=[[now.isoformat(), now.isoformat()]],
        requested_by=alice,
    )
    return {
        "slug": pipeline.slug,
        "number": version.number,
        "deployment_id": deployment.id,
        "run_id": run.id,
        "promotion_id": promotion.id,
        "backfill_id": backfill.id,
    }


# Text PostgreSQL cannot store. schemathesis draws NUL only now and then, and never a lone
# surrogate (it generates valid UTF-8), so a third of the cases get one of these on purpose.
# Path values are sent percent-encoded; a surrogate there arrives as bytes that are not UTF-8.
HOSTILE_PATH = ["%00", "orders-daily%00", "%ED%A0%80"]
HOSTILE_QUERY = ["\x00", "dev\x00"]
HOSTILE_BODY = ["\x00", "orders\x00daily", "\ud800", "x\udfff"]


@st.composite
def with_hostile_text(draw: st.DrawFn, cases: st.SearchStrategy[Any], operation: Any) -> Any:
    """A generated case, and sometimes one path, query or JSON field replaced by hostile text."""
    case = draw(cases)
    spots = [("path", p.name) for p in operation.path_parameters]
    spots += [("query", p.name) for p in operation.query]
    if isinstance(case.body, dict):
        spots += [("body", name) for name in case.body]
    if not spots or draw(st.integers(0, 2)) > 0:
        return case
    where, name = draw(st.sampled_from(spots))
    if where == "path":
        case.path_parameters[name] = draw(st.sampled_from(HOSTILE_PATH))
    elif where == "query":
        case.query = {**(case.query or {}), name: draw(st.sampled_from(HOSTILE_QUERY))}
    else:
        text = draw(st.sampled_from(HOSTILE_BODY))
        case.body[name] = [text] if isinstance(case.body[name], list) else text
    return case


def operation_cases(operation: Any, known: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Cases in both generation modes, half of them with path parameters that exist."""
    names = {p.name for p in operation.path_parameters}
    existing = {name: value for name, value in known.items() if name in names}
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(operation.as_strategy(mode))
        if existing:
            strategies.append(operation.as_strategy(mode, path_parameters=existing))
    return with_hostile_text(st.one_of(strategies), operation)


def fuzz(operation: Any, cases: st.SearchStrategy[Any], headers: dict[str, str]) -> list[str]:
    """Send the operation's cases; return up to three of its server errors, reproducible."""
    label = f"{operation.method.upper()} {operation.path}"
    failures: list[str] = []
    sent = 0

    @FUZZ_SETTINGS
    @given(case=cases)
    def send(case: Any) -> None:
        nonlocal sent
        savepoint = transaction.savepoint()
        try:
            response = case.call(headers=headers)
        finally:
            transaction.savepoint_rollback(savepoint)
        sent += 1
        if response.status_code >= 500 and len(failures) < 3:
            failures.append(
                f"{label} answered {response.status_code}: "
                f"{case.as_curl_command(headers=headers)}\n  {response.text[:300]}"
            )

    send()
    assert sent >= MAX_EXAMPLES, f"{label}: only {sent} cases sent"
    return failures


def test_no_generated_request_gets_a_server_error(alice, known, wsgi_app, caplog, settings):
    settings.DEBUG = True  # the document without a login (tests/api/test_api.py tests the login)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", wsgi_app)
    settings.DEBUG = False
    headers = {"Authorization": f"Bearer {token_create(user=alice)}"}
    # .ok() raises if schemathesis found an operation it cannot read: all are fuzzed.
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/v1/pipelines", "/api/v1/runs/{run_id}"}

    with caplog.at_level(logging.WARNING, logger="pipelines.web.middleware"):
        failures = [
            line
            for operation in operations
            for line in fuzz(operation, operation_cases(operation, known), headers)
        ]

    assert failures == [], "\n".join(failures)
    # The middleware's last-resort hook was never needed: every NUL was refused up front.
    assert "unstorable text reached the database" not in caplog.text


def test_openapi_describes_the_new_pipeline_fields(client, alice):
    """The document the fuzzer reads: real types, the form's defaults and help texts."""
    client.force_login(alice)
    doc = client.get("/api/v1/openapi.json").json()
    fields = doc["components"]["schemas"]["PipelineIn"]["properties"]
    required = set(doc["components"]["schemas"]["PipelineIn"]["required"])
    assert fields["name"]["type"] == "string"
    assert fields["name"]["description"] == PipelineForm.base_fields["name"].help_text
    assert fields["primary_key"] == {**fields["primary_key"], "type": "array", "minItems": 1}
    assert fields["primary_key"]["items"] == {"type": "string"}
    assert fields["sla_minutes"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert (fields["retries"]["type"], fields["retries"]["default"]) == ("integer", 3)
    assert fields["partition_grain"]["enum"] == ["day", "hour"]
    assert fields["allow_empty"] == {**fields["allow_empty"], "type": "boolean", "default": False}
    guard = fields["shrink_guard_percent"]
    assert (guard["type"], guard["default"], guard["minimum"], guard["maximum"]) == (
        "integer",
        50,
        0,
        100,
    )
    assert guard["description"] == PipelineForm.base_fields["shrink_guard_percent"].help_text
    adopt = fields["adopt_existing_table"]
    assert (adopt["type"], adopt["default"]) == ("boolean", False)
    assert "not created by the portal" in adopt["description"]
    assert {"name", "team", "owner", "source", "primary_key"} <= required
    assert not {"retries", "tags", "allow_empty", "shrink_guard_percent"} & required
    assert not [name for name, field in fields.items() if field == {"title": field.get("title")}]


def test_wrong_json_types_and_missing_fields_are_422_by_field(api_client, orders, environments):
    body = {
        "name": 7,
        "team": "payments",
        "source": "orders",
        "primary_key": ["order_id", 3],
        "retries": "many",
        "allow_empty": "perhaps",
        "shrink_guard_percent": "half",
    }
    response = api_client.post("/api/v1/pipelines", body, content_type="application/json")
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert set(errors) >= {"name", "primary_key", "retries", "allow_empty", "shrink_guard_percent"}
    assert errors["primary_key"] == ["1: Input should be a valid string"]
    assert errors["owner"] == ["This field is required."]  # the form's words
    assert not Pipeline.objects.exists()


def test_typed_payload_with_the_new_fields_creates_the_pipeline(api_client, orders, environments):
    body = pipeline_payload(shrink_guard_percent=80, adopt_existing_table=True)
    response = api_client.post("/api/v1/pipelines", body, content_type="application/json")
    assert response.status_code == 201, response.content
    spec = Pipeline.objects.get().versions.get().spec
    assert (spec.shrink_guard_percent, spec.adopt_existing_table) == (80, True)
