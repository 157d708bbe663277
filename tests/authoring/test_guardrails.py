"""Every guardrail of the new-pipeline form: its message next to the field, nothing saved.

Each case runs through the web form and through the API, which share one validation.
"""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from pipelines.models import Deployment, Pipeline, PipelineVersion
from tests.conftest import form_data, make_source, make_user, pipeline_payload

CASES = {
    "cron_invalid": ({"schedule": "61 * * * *"}, "schedule", "Not a valid cron expression"),
    "cron_never_fires": ({"schedule": "0 0 30 2 *"}, "schedule", "never fires"),
    "cron_fields": ({"schedule": "0 2 * *"}, "schedule", "Use five cron fields"),
    "timezone_unknown": ({"timezone": "Mars/Olympus"}, "timezone", "is not an IANA time zone"),
    "key_not_in_source": (
        {"primary_key": ["order_idd"]},
        "primary_key",
        "“order_idd” is not in the source table",
    ),
    "key_twice": ({"primary_key": ["order_id", "order_id"]}, "primary_key", "listed twice"),
    "key_missing": ({"primary_key": []}, "primary_key", "This field is required"),
    "partition_not_temporal": (
        {"partition_column": "amount"},
        "partition_column",
        "must be a date or timestamp",
    ),
    "partition_unknown": (
        {"partition_column": "shipped_on"},
        "partition_column",
        "“shipped_on” is not in the source table",
    ),
    "hourly_on_date_column": (
        {"partition_grain": "hour", "schedule": "0 * * * *"},
        "partition_grain",
        "cannot hold hourly partitions",
    ),
    "schedule_finer_than_grain": (
        {"schedule": "0 * * * *"},
        "schedule",
        "writes one partition per day",
    ),
    "twice_a_day_on_daily_grain": ({"schedule": "0 2,14 * * *"}, "schedule", "12 hours apart"),
    "owner_not_in_team": (
        {"owner": "mallory"},
        "owner",
        "mallory is not a member of team Payments",
    ),
    "owner_unknown": ({"owner": "nobody"}, "owner", "No active user “nobody”"),
    "runbook_not_http": (
        {"runbook_url": "javascript:alert(1)"},
        "runbook_url",
        "http:// or https://",
    ),
    "runbook_ftp": (
        {"runbook_url": "ftp://example.com/runbook"},
        "runbook_url",
        "http:// or https://",
    ),
    "retries_too_many": ({"retries": 50}, "retries", "between 0 and 10"),
    "retries_negative": ({"retries": -1}, "retries", "between 0 and 10"),
    "timeout_too_long": (
        {"execution_timeout_minutes": 100000},
        "execution_timeout_minutes",
        "between 1 and 1440",
    ),
    "retry_delay_zero": ({"retry_delay_minutes": 0}, "retry_delay_minutes", "between 1 and 120"),
    "sla_too_long": ({"sla_minutes": 999999}, "sla_minutes", "between 1 and 10080"),
    "shrink_guard_negative": (
        {"shrink_guard_percent": -1},
        "shrink_guard_percent",
        "between 0 and 100",
    ),
    "shrink_guard_over_100": (
        {"shrink_guard_percent": 101},
        "shrink_guard_percent",
        "between 0 and 100",
    ),
    "name_not_identifier": (
        {"name": "Orders Daily!"},
        "name",
        "lower-case letters, digits and hyphens",
    ),
    "name_code": ({"name": "x'); import os; ('"}, "name", "lower-case letters, digits and hyphens"),
    "target_not_identifier": (
        {"target_table": "orders-daily"},
        "target_table",
        "plain SQL identifier",
    ),
    "target_injection": (
        {"target_table": 'x"; DROP TABLE orders; --'},
        "target_table",
        "plain SQL identifier",
    ),
    "target_reserved": ({"target_table": "select"}, "target_table", "reserved SQL word"),
    "tag_bad": ({"tags": ["ok", "{{ dag_run.conf }}"]}, "tags", "is not allowed"),
    "source_unknown": ({"source": "nope"}, "source", "Select a valid choice"),
}


@pytest.fixture
def world(alice, mallory, orders, environments):
    """alice in payments; mallory exists but is in no team; the orders source; environments."""
    return alice


@pytest.mark.parametrize("case", sorted(CASES))
def test_form_shows_message_next_to_field_and_saves_nothing(client, world, case):
    overrides, field, message = CASES[case]
    client.force_login(world)
    response = client.post(reverse("pipelines:create"), form_data(**overrides))
    assert response.status_code == 200
    form = response.context["form"]
    assert field in form.errors, form.errors
    assert any(message in e for e in form.errors[field]), form.errors[field]
    assert message.split("“")[0] in response.content.decode().replace("&#x27;", "'")
    assert not Pipeline.objects.exists()
    assert not PipelineVersion.objects.exists()
    assert not Deployment.objects.exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_api_gives_the_same_message_and_saves_nothing(api_client, world, case):
    overrides, field, message = CASES[case]
    response = api_client.post(
        "/api/v1/pipelines",
        json.dumps(pipeline_payload(**overrides)),
        content_type="application/json",
    )
    assert response.status_code == 422, response.content
    errors = response.json()["errors"]
    assert any(message in e for e in errors[field]), errors
    assert not Pipeline.objects.exists()


def test_duplicate_name_and_target_table(api_client, world):
    first = api_client.post(
        "/api/v1/pipelines", json.dumps(pipeline_payload()), content_type="application/json"
    )
    assert first.status_code == 201, first.content
    again = api_client.post(
        "/api/v1/pipelines", json.dumps(pipeline_payload()), content_type="application/json"
    )
    errors = again.json()["errors"]
    assert "A pipeline named “orders-daily” already exists." in errors["name"]
    assert any("already writes to table “orders_daily”" in e for e in errors["target_table"])
    assert Pipeline.objects.count() == 1
    assert PipelineVersion.objects.count() == 1


def test_team_the_user_is_not_in_is_refused(client, world, mallory):
    make_user("carol")
    client.force_login(mallory)
    response = client.post(reverse("pipelines:create"), form_data(owner="mallory"))
    assert "team" in response.context["form"].errors
    assert not Pipeline.objects.exists()


def test_source_with_same_table_name_in_two_databases_must_be_qualified(api_client, world):
    make_source(name="crm", table="orders")
    response = api_client.post(
        "/api/v1/pipelines", json.dumps(pipeline_payload()), content_type="application/json"
    )
    assert response.status_code == 422
    assert "source" in response.json()["errors"]
    ok = api_client.post(
        "/api/v1/pipelines",
        json.dumps(pipeline_payload(source="shop.orders")),
        content_type="application/json",
    )
    assert ok.status_code == 201, ok.content


def test_api_rejects_wrong_types_with_field_errors(api_client, world):
    response = api_client.post(
        "/api/v1/pipelines",
        json.dumps(pipeline_payload(primary_key=[1, 2], retries="many", tags="a,b")),
        content_type="application/json",
    )
    errors = response.json()["errors"]
    assert response.status_code == 422
    assert "primary_key" in errors
    assert "retries" in errors
    assert not Pipeline.objects.exists()


def test_the_guard_settings_are_recorded_on_the_version(api_client, world):
    world.is_superuser = True  # only a platform admin may adopt an existing table
    world.save()
    payload = pipeline_payload(shrink_guard_percent=0, adopt_existing_table=True)
    response = api_client.post(
        "/api/v1/pipelines", json.dumps(payload), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    spec = PipelineVersion.objects.get().spec
    assert (spec.shrink_guard_percent, spec.adopt_existing_table) == (0, True)


def test_the_form_defaults_to_a_50_percent_guard_and_no_adoption(client, world):
    client.force_login(world)
    response = client.post(reverse("pipelines:create"), form_data())
    assert response.status_code == 302, response.context["form"].errors
    spec = PipelineVersion.objects.get().spec
    assert (spec.shrink_guard_percent, spec.adopt_existing_table) == (50, False)
