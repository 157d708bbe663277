"""Data belongs to teams: a source database is granted to teams, and a pipeline of a team reads
only its granted sources (the page offers only those; the page and the API refuse the others)."""

from __future__ import annotations

import importlib
import json
import sqlite3

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.urls import reverse

from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.models import Membership, Pipeline, PipelineVersion, SourceDatabase, Team
from tests.conftest import form_data, make_source, pipeline_payload

REFUSAL = "Source crm is not granted to team Payments; ask a platform admin."


@pytest.fixture
def growth(db) -> Team:
    return Team.objects.create(slug="growth", name="Growth", domain="marketing")


@pytest.fixture
def crm(growth):
    """crm.customers, granted to team growth only."""
    return make_source("crm", "customers", teams=("growth",))


def test_the_form_offers_only_the_sources_of_the_users_teams(client, alice, orders, crm):
    client.force_login(alice)

    html = client.get(reverse("pipelines:create")).content.decode()

    assert '<option value="shop.orders"' in html
    assert "crm.customers" not in html


def test_the_page_refuses_a_source_not_granted_to_the_team(client, alice, orders, crm):
    client.force_login(alice)

    response = client.post(reverse("pipelines:create"), form_data(source="crm.customers"))

    assert response.status_code == 200
    assert response.context["form"].errors["source"] == [REFUSAL]
    assert REFUSAL in response.content.decode()
    assert not Pipeline.objects.exists()


@pytest.mark.parametrize("source", ["crm.customers", "customers"])
def test_the_api_refuses_a_source_not_granted_to_the_team(api_client, orders, crm, source):
    response = api_client.post(
        "/api/v1/pipelines",
        json.dumps(pipeline_payload(source=source)),
        content_type="application/json",
    )

    assert response.status_code == 422
    assert response.json()["errors"]["source"] == [REFUSAL]
    assert not Pipeline.objects.exists()


def test_a_source_granted_to_another_team_of_the_user_is_not_enough(alice, orders, crm, growth):
    Membership.objects.create(team=growth, user=alice)  # alice may read crm for growth only
    for_payments = PipelineForm(pipeline_payload(source="crm.customers"), user=alice)
    for_growth = PipelineForm(
        pipeline_payload(source="crm.customers", team="growth", primary_key=["order_id"]),
        user=alice,
    )

    assert "crm.customers" in dict(for_payments.fields["source"].widget.choices)
    assert not for_payments.is_valid()
    assert for_payments.errors["source"] == [REFUSAL]
    assert for_growth.is_valid(), for_growth.errors


def test_a_platform_admin_is_refused_too_until_the_source_is_granted(alice, orders, crm, team):
    alice.is_superuser = True  # platform admins grant; they do not bypass the grant
    alice.save()
    refused = PipelineForm(pipeline_payload(source="crm.customers"), user=alice)
    assert not refused.is_valid()
    assert refused.errors["source"] == [REFUSAL]

    crm.database.teams.add(team)
    granted = PipelineForm(pipeline_payload(source="crm.customers"), user=alice)
    assert granted.is_valid(), granted.errors


def test_a_granted_source_is_accepted_by_its_bare_table_name(api_client, orders, crm, team):
    make_source("crm", "orders", teams=("growth",))  # two "orders": only one is payments'

    response = api_client.post(
        "/api/v1/pipelines",
        json.dumps(pipeline_payload(source="orders")),
        content_type="application/json",
    )

    assert response.status_code == 201, response.content
    assert Pipeline.objects.get().source_table == orders


def test_the_column_helper_shows_only_granted_sources(client, alice, orders, crm):
    client.force_login(alice)
    helper = reverse("pipelines:source-columns")

    granted = client.get(helper, {"source": "shop.orders"}).content.decode()
    other = client.get(helper, {"source": "crm.customers"}).content.decode()

    assert "order_date" in granted
    assert "order_id" not in other  # crm.customers has the orders columns too: none shown


def test_an_edit_is_refused_once_the_grant_is_revoked(api_client, alice, orders, team):
    form = PipelineForm(pipeline_payload(), user=alice)
    assert form.is_valid(), form.errors
    services.pipeline_create(spec=form.spec, by=alice)
    orders.database.teams.remove(team)

    response = api_client.put(
        "/api/v1/pipelines/orders-daily",
        json.dumps(pipeline_payload(retries=5, change_note="More retries.")),
        content_type="application/json",
    )

    assert response.status_code == 422
    assert response.json()["errors"]["source"] == [
        "Source shop is not granted to team Payments; ask a platform admin."
    ]
    assert PipelineVersion.objects.count() == 1


# --- granting -----------------------------------------------------------------------------------


def test_register_source_grants_the_named_teams(tmp_path, team, growth):
    path = tmp_path / "erp.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id integer, issued date)")

    url = f"sqlite:///{path}"
    call_command("register_source", "erp", url, "--conn-id", "erp", "--team", "payments")
    call_command("register_source", "erp", url, "--conn-id", "erp", "--team", "growth")
    with pytest.raises(CommandError, match="No team nope"):
        call_command("register_source", "erp", url, "--conn-id", "erp", "--team", "nope")

    assert set(SourceDatabase.objects.get(name="erp").teams.all()) == {team, growth}


def test_the_migration_grants_every_existing_source_to_every_existing_team(
    alice, orders, crm, team, growth
):
    migration = importlib.import_module("pipelines.migrations.0020_source_grants")
    alice.is_superuser = True
    alice.save()
    form = PipelineForm(pipeline_payload(adopt_existing_table=True), user=alice)
    assert form.is_valid(), form.errors
    pipeline = services.pipeline_create(spec=form.spec, by=alice)
    Pipeline.objects.update(adopt_allowed=False)  # as before the migration
    SourceDatabase.teams.through.objects.all().delete()

    migration.grant_existing(apps, None)

    for database in SourceDatabase.objects.all():
        assert set(database.teams.all()) == {team, growth}
    pipeline.refresh_from_db()
    assert pipeline.adopt_allowed  # its newest version adopts: it keeps doing so


def test_the_catalog_page_lists_the_users_sources_and_everything_to_a_platform_admin(
    client, alice, mallory, orders, crm
):
    client.force_login(alice)
    mine = client.get(reverse("pipelines:catalog")).content.decode()
    client.force_login(mallory)
    nobody = client.get(reverse("pipelines:catalog")).content.decode()
    mallory.is_superuser = True
    mallory.save()
    admin = client.get(reverse("pipelines:catalog")).content.decode()

    assert "shop.orders" in mine
    assert "Granted to Payments." in mine
    assert "crm.customers" not in mine
    assert "No source is granted to your teams yet" in nobody
    assert "shop.orders" in admin
    assert "crm.customers" in admin
