"""The admin: every change that matters to four-eyes, routing or data is audited with before and
after (through the admin's real views, as a superuser); rows only a service writes are read-only."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import DatabaseError
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from pipelines import admin as portal_admin
from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.core.models import AuditEvent
from pipelines.core.outbox import outbox_models
from pipelines.core.tokens import token_create
from pipelines.models import (
    Alert,
    ApiToken,
    Environment,
    Membership,
    Pipeline,
    PipelineVersion,
    Promotion,
    SourceDatabase,
    Team,
)
from tests.conftest import make_environment, make_source, make_user, pipeline_payload

User = get_user_model()


@pytest.fixture
def root(db):
    return User.objects.create_superuser("root", "root@example.com", "pw-root")


@pytest.fixture
def as_root(client, root):
    client.force_login(root)
    return client


def url(model: type, view: str, *args: Any) -> str:
    return reverse(f"admin:pipelines_{model._meta.model_name}_{view}", args=args)


def field_data(form: Any, data: dict[str, Any]) -> None:
    """Put a form's current values into `data` as a browser posts them."""
    for bound in form:
        if bound.field.disabled:
            continue
        value = bound.value()
        if value is None or value is False:
            continue
        if value is True:
            data[bound.html_name] = "on"
        elif isinstance(value, list | tuple):
            data[bound.html_name] = [str(v) for v in value]
        elif isinstance(value, datetime):  # the admin's split date and time widgets
            local = timezone.localtime(value)
            data[f"{bound.html_name}_0"] = local.date().isoformat()
            data[f"{bound.html_name}_1"] = local.time().strftime("%H:%M:%S")
        elif isinstance(value, date):
            data[bound.html_name] = value.isoformat()
        else:
            data[bound.html_name] = str(value)


def posted(client: Any, page_url: str, **changes: Any) -> dict[str, Any]:
    """The change (or add) form as the admin renders it, with `changes` typed in."""
    page = client.get(page_url)
    assert page.status_code == 200
    data: dict[str, Any] = {}
    field_data(page.context["adminform"].form, data)
    for inline in page.context["inline_admin_formsets"]:
        field_data(inline.formset.management_form, data)
        for form in inline.formset.forms:  # the extra forms too: a browser posts their defaults
            field_data(form, data)
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def events() -> list[AuditEvent]:
    return list(AuditEvent.objects.order_by("id"))


def saved(response: Any) -> None:
    assert response.status_code == 302, (
        response.context["adminform"].form.errors,
        [f.formset.errors for f in response.context["inline_admin_formsets"]],
        [f.formset.non_form_errors() for f in response.context["inline_admin_formsets"]],
    )


# --- memberships and roles ---------------------------------------------------------------------


def test_team_alert_routes_changed_in_the_admin_are_audited(as_root, root, team):
    response = as_root.post(
        url(Team, "change", team.id),
        posted(
            as_root,
            url(Team, "change", team.id),
            oncall_email="oncall@example.com",
            quiet_webhook_env="PAYMENTS_QUIET_WEBHOOK",
        ),
    )

    saved(response)
    [event] = events()
    assert (event.action, event.actor) == ("admin_changed", root)
    assert event.before == {"oncall_email": "", "quiet_webhook_env": ""}
    assert event.after == {
        "oncall_email": "oncall@example.com",
        "quiet_webhook_env": "PAYMENTS_QUIET_WEBHOOK",
    }
    assert "team “Payments”" in event.summary


def test_roles_added_changed_and_removed_through_the_team_inline_are_audited(
    as_root, team, alice, bob, mallory
):
    page = url(Team, "change", team.id)
    data = posted(as_root, page)
    rows = {data[f"memberships-{i}-user"]: i for i in range(int(data["memberships-INITIAL_FORMS"]))}
    data[f"memberships-{rows[str(alice.id)]}-role"] = "approver"
    data[f"memberships-{rows[str(bob.id)]}-DELETE"] = "on"
    new = int(data["memberships-INITIAL_FORMS"])
    data |= {f"memberships-{new}-user": str(mallory.id), f"memberships-{new}-role": "editor"}

    saved(as_root.post(page, data))

    by_kind = {
        ("added" if e.before is None else "deleted" if e.after is None else "changed"): e
        for e in events()
    }
    assert set(by_kind) == {"added", "changed", "deleted"}
    assert (by_kind["changed"].before, by_kind["changed"].after) == (
        {"role": "editor"},
        {"role": "approver"},
    )
    assert by_kind["deleted"].before == {"team": "Payments", "user": "bob", "role": "approver"}
    assert by_kind["added"].after == {"team": "Payments", "user": "mallory", "role": "editor"}
    assert all("(on team “Payments”)" in e.summary for e in by_kind.values())
    assert Membership.objects.get(user=alice).role == "approver"
    assert not Membership.objects.filter(user=bob).exists()


def test_a_platform_admin_made_in_the_user_admin_is_audited_without_the_password(as_root, alice):
    page = reverse("admin:auth_user_change", args=[alice.id])
    data = posted(as_root, page, is_superuser="on", is_staff="on")
    data["memberships-0-role"] = "approver"

    saved(as_root.post(page, data))

    user_event, role_event = events()
    assert user_event.before == {"is_staff": False, "is_superuser": False}
    assert user_event.after == {"is_staff": True, "is_superuser": True}
    assert (role_event.before, role_event.after) == ({"role": "editor"}, {"role": "approver"})
    for event in events():
        assert "password" not in (event.before or {}) | (event.after or {})


def test_a_password_changed_in_the_admin_is_audited_without_the_password(as_root, root, alice):
    page = reverse("admin:auth_user_password_change", args=[alice.id])

    response = as_root.post(
        page,
        {
            "password1": "another-Long-phrase-77",
            "password2": "another-Long-phrase-77",
            "usable_password": "true",
        },
    )

    assert response.status_code == 302
    [event] = events()
    assert (event.actor, event.before, event.after) == (root, None, None)
    assert event.summary == "Admin: Changed the password of user “alice”."
    alice.refresh_from_db()
    assert alice.check_password("another-Long-phrase-77")


def test_a_team_deleted_in_the_admin_records_the_memberships_it_took_along(
    as_root, team, bob, orders
):
    response = as_root.post(url(Team, "delete", team.id), {"post": "yes"})

    assert response.status_code == 302
    [event] = events()
    assert event.after is None
    assert event.before["slug"] == "payments"
    assert event.before["memberships"] == ["bob in Payments (approver)"]
    assert event.before["granted_sources"] == ["shop"]
    assert not Membership.objects.exists()


def test_a_user_added_in_the_admin_is_audited_without_the_password(as_root):
    response = as_root.post(
        reverse("admin:auth_user_add"),
        {
            "username": "newcomer",
            "password1": "a-long-Pass-phrase-42",
            "password2": "a-long-Pass-phrase-42",
            "usable_password": "true",
        },
    )

    assert response.status_code == 302
    [event] = events()
    assert event.before is None
    assert event.after["username"] == "newcomer"
    assert "password" not in event.after
    assert "a-long-Pass-phrase-42" not in str(event.after)


# --- sources and their grants ------------------------------------------------------------------


def test_granting_a_source_to_a_team_is_audited(as_root, team, orders):
    growth = Team.objects.create(slug="growth", name="Growth", domain="marketing")
    database = orders.database
    page = url(SourceDatabase, "change", database.id)

    saved(as_root.post(page, posted(as_root, page, teams=[str(team.id), str(growth.id)])))

    [event] = events()
    assert (event.before, event.after) == (
        {"teams": ["Payments"]},
        {"teams": ["Growth", "Payments"]},
    )
    assert set(database.teams.all()) == {team, growth}


def test_a_source_added_and_deleted_in_the_admin_is_audited(as_root, team):
    saved(
        as_root.post(
            url(SourceDatabase, "add"),
            {"name": "crm", "dialect": "postgres", "conn_id": "crm_source", "teams": [team.id]},
        )
    )
    crm = SourceDatabase.objects.get(name="crm")
    response = as_root.post(url(SourceDatabase, "delete", crm.id), {"post": "yes"})

    assert response.status_code == 302
    added, deleted = events()
    assert added.before is None
    assert added.after == {
        "name": "crm",
        "dialect": "postgres",
        "conn_id": "crm_source",
        "description": "",
        "teams": ["Payments"],
    }
    assert deleted.before == added.after
    assert deleted.after is None
    assert not SourceDatabase.objects.exists()


def test_sources_deleted_with_the_bulk_action_are_audited_one_by_one(as_root, team):
    for name in ("crm", "erp"):
        make_source(name, "accounts")

    response = as_root.post(
        url(SourceDatabase, "changelist"),
        {
            "action": "delete_selected",
            "_selected_action": list(SourceDatabase.objects.values_list("id", flat=True)),
            "post": "yes",
        },
    )

    assert response.status_code == 302
    assert sorted(e.before["name"] for e in events()) == ["crm", "erp"]
    assert all(e.after is None for e in events())
    assert not SourceDatabase.objects.exists()


def test_only_a_platform_admin_grants_sources(client, team, orders):
    staff = make_user("sam")
    staff.is_staff = True
    staff.save()
    staff.user_permissions.set(Permission.objects.filter(codename__endswith="sourcedatabase"))
    client.force_login(staff)

    response = client.post(
        url(SourceDatabase, "change", orders.database.id),
        {"name": "shop", "dialect": "sqlite", "conn_id": "demo_source", "teams": []},
    )

    assert response.status_code == 403
    assert list(orders.database.teams.all()) == [team]
    assert events() == []


# --- pipelines and environments ---------------------------------------------------------------


@pytest.fixture
def pipeline(alice, orders):
    form = PipelineForm(pipeline_payload(), user=alice)
    assert form.is_valid(), form.errors
    return services.pipeline_create(spec=form.spec, by=alice)


def test_a_pipelines_team_owner_and_table_changed_in_the_admin_are_audited(
    as_root, root, pipeline, bob, orders
):
    growth = Team.objects.create(slug="growth", name="Growth", domain="marketing")
    Membership.objects.create(team=growth, user=bob)
    orders.database.teams.add(growth)
    page = url(Pipeline, "change", pipeline.id)
    before = AuditEvent.objects.count()

    saved(
        as_root.post(
            page,
            posted(as_root, page, team=str(growth.id), owner=str(bob.id), target_table="orders_v2"),
        )
    )

    [event] = AuditEvent.objects.order_by("id")[before:]
    assert (event.action, event.actor, event.pipeline) == ("admin_changed", root, pipeline)
    assert event.before == {"team": "Payments", "owner": "alice", "target_table": "orders_daily"}
    assert event.after == {"team": "Growth", "owner": "bob", "target_table": "orders_v2"}


def test_a_pipeline_moved_to_a_team_without_the_source_or_the_owner_is_refused(as_root, pipeline):
    growth = Team.objects.create(slug="growth", name="Growth", domain="marketing")
    before = AuditEvent.objects.count()
    page = url(Pipeline, "change", pipeline.id)

    response = as_root.post(page, posted(as_root, page, team=str(growth.id)))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["team"] == ["Source shop is not granted to team Growth; ask a platform admin."]
    assert errors["owner"] == ["alice is not a member of team Growth."]
    pipeline.refresh_from_db()
    assert pipeline.team.slug == "payments"
    assert AuditEvent.objects.count() == before


def test_a_failed_save_in_the_admin_changes_and_records_nothing(as_root, pipeline, team):
    before = AuditEvent.objects.count()
    page = url(Pipeline, "change", pipeline.id)

    response = as_root.post(page, posted(as_root, page, target_table="portal_managed_tables"))
    team_page = url(Team, "change", team.id)
    bad_route = as_root.post(
        team_page, posted(as_root, team_page, oncall_webhook_env="DATABASE_URL")
    )

    assert response.status_code == 200
    assert "register of the tables it manages" in str(
        response.context["adminform"].form.errors["target_table"]
    )
    assert bad_route.status_code == 200
    assert "oncall_webhook_env" in bad_route.context["adminform"].form.errors
    pipeline.refresh_from_db()
    team.refresh_from_db()
    assert (pipeline.target_table, team.oncall_webhook_env) == ("orders_daily", "")
    assert AuditEvent.objects.count() == before


def test_a_change_whose_audit_event_fails_is_not_saved(as_root, team, monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("audit table unavailable")

    monkeypatch.setattr(portal_admin, "audit_record", broken)
    page = url(Team, "change", team.id)
    data = posted(as_root, page, oncall_email="oncall@example.com")

    with pytest.raises(DatabaseError):
        as_root.post(page, data)

    team.refresh_from_db()
    assert team.oncall_email == ""


def test_adoption_allowed_in_the_admin_is_audited(as_root, pipeline):
    page = url(Pipeline, "change", pipeline.id)

    saved(as_root.post(page, posted(as_root, page, adopt_allowed="on")))

    event = AuditEvent.objects.get(action="admin_changed")
    assert (event.before, event.after) == ({"adopt_allowed": False}, {"adopt_allowed": True})
    pipeline.refresh_from_db()
    assert pipeline.adopt_allowed


def test_an_environment_added_and_deleted_in_the_admin_is_audited(as_root, tmp_path):
    env = make_environment("qa", 5, dags_folder=str(tmp_path / "qa"))

    response = as_root.post(url(Environment, "delete", env.id), {"post": "yes"})

    assert response.status_code == 302
    [event] = events()
    assert (event.action, event.environment, event.after) == ("environment_changed", None, None)
    assert event.before["slug"] == "qa"
    assert event.before["target_schema"] == "analytics"
    assert not Environment.objects.exists()


# --- rows only a service writes -----------------------------------------------------------------

READ_ONLY = [*outbox_models(), Promotion, PipelineVersion, Alert, AuditEvent, ApiToken]


@pytest.mark.parametrize("model", READ_ONLY, ids=lambda m: m.__name__)
def test_outbox_and_decision_rows_cannot_be_added_changed_or_deleted(as_root, root, model):
    assert model in site._registry, f"{model.__name__} is not shown in the admin"
    model_admin = site._registry[model]
    request = RequestFactory().get("/admin/")
    request.user = root

    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert "delete_selected" not in model_admin.get_actions(request)
    assert as_root.get(url(model, "add")).status_code == 403
    assert as_root.get(url(model, "changelist")).status_code == 200


def test_every_outbox_model_is_covered():
    names = {m.__name__ for m in outbox_models()}
    assert {"Deployment", "RunRequest", "AlertDelivery", "Backfill"} <= names


def test_a_token_is_shown_without_its_hash_and_cannot_be_deleted(as_root, alice):
    token_create(user=alice)
    token = ApiToken.objects.get()

    page = as_root.get(url(ApiToken, "change", token.id))
    delete = as_root.post(url(ApiToken, "delete", token.id), {"post": "yes"})

    assert page.status_code == 200
    assert token.key_sha256 not in page.content.decode()
    assert delete.status_code == 403
    assert ApiToken.objects.filter(id=token.id).exists()
