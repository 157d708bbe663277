"""Targets the portal may not write: the register of managed tables and another pipeline's table;
adopting an existing warehouse table needs a platform admin (page and API)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from pipelines.authoring import services
from pipelines.authoring.forms import ADOPT_REFUSAL, PipelineForm
from pipelines.models import Pipeline, PipelineVersion
from tests.conftest import form_data, pipeline_payload


def create(api_client, **overrides):
    return api_client.post(
        "/api/v1/pipelines",
        json.dumps(pipeline_payload(**overrides)),
        content_type="application/json",
    )


def edit(api_client, **overrides):
    return api_client.put(
        "/api/v1/pipelines/orders-daily",
        json.dumps(pipeline_payload(change_note="Adopt the old table.", **overrides)),
        content_type="application/json",
    )


# --- targets ------------------------------------------------------------------------------------


def test_the_register_table_is_refused_as_a_target(client, api_client, alice, orders):
    client.force_login(alice)

    page = client.post(reverse("pipelines:create"), form_data(target_table="portal_managed_tables"))
    api = create(api_client, target_table="portal_managed_tables")

    message = (
        "“portal_managed_tables” is the portal's register of the tables it manages; "
        "choose another name."
    )
    assert page.status_code == 200
    assert page.context["form"].errors["target_table"] == [message]
    assert api.status_code == 422
    assert api.json()["errors"]["target_table"] == [message]
    assert not Pipeline.objects.exists()


def test_a_table_another_pipeline_writes_is_refused_as_a_target(api_client, orders):
    assert create(api_client).status_code == 201

    response = create(api_client, name="orders-again")

    assert response.status_code == 422
    assert response.json()["errors"]["target_table"] == [
        "Pipeline “orders-daily” already writes to table “orders_daily”: two pipelines "
        "writing one table would overwrite each other's partitions."
    ]
    assert Pipeline.objects.count() == 1


# --- adopting an existing table -----------------------------------------------------------------


def test_an_editor_may_not_adopt_an_existing_table(client, api_client, alice, orders):
    client.force_login(alice)

    page = client.post(reverse("pipelines:create"), form_data(adopt_existing_table="on"))
    api = create(api_client, adopt_existing_table=True)

    assert page.status_code == 200
    assert page.context["form"].errors["adopt_existing_table"] == [ADOPT_REFUSAL]
    assert ADOPT_REFUSAL.split(":")[0] in page.content.decode()
    assert api.status_code == 422
    assert api.json()["errors"] == {"adopt_existing_table": [ADOPT_REFUSAL]}
    assert not Pipeline.objects.exists()


def test_a_platform_admin_may_adopt_and_the_pipeline_keeps_the_allowance(api_client, alice, orders):
    alice.is_superuser = True
    alice.save()

    response = create(api_client, adopt_existing_table=True)

    assert response.status_code == 201, response.content
    pipeline = Pipeline.objects.get()
    assert pipeline.adopt_allowed
    assert pipeline.versions.get().spec.adopt_existing_table


@pytest.fixture
def pipeline(alice, orders):
    form = PipelineForm(pipeline_payload(), user=alice)
    assert form.is_valid(), form.errors
    return services.pipeline_create(spec=form.spec, by=alice)


def test_an_editor_adopts_only_after_a_platform_admin_allowed_it(api_client, pipeline):
    refused = edit(api_client, adopt_existing_table=True)
    assert refused.status_code == 422
    assert refused.json()["errors"] == {"adopt_existing_table": [ADOPT_REFUSAL]}
    assert PipelineVersion.objects.count() == 1

    Pipeline.objects.filter(pk=pipeline.pk).update(adopt_allowed=True)  # the admin's switch
    allowed = edit(api_client, adopt_existing_table=True)

    assert allowed.status_code == 200, allowed.content
    assert pipeline.versions.order_by("-number").first().spec.adopt_existing_table


def test_a_platform_admins_edit_that_adopts_allows_it_for_the_team(api_client, alice, pipeline):
    alice.is_superuser = True
    alice.save()
    assert edit(api_client, adopt_existing_table=True).status_code == 200

    alice.is_superuser = False
    alice.save()
    again = edit(api_client, adopt_existing_table=True, retries=5)

    assert again.status_code == 200, again.content
    pipeline.refresh_from_db()
    assert pipeline.adopt_allowed
