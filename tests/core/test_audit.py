"""Audit log: each action writes one event in its own transaction; events are append-only."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.core import tokens
from pipelines.core.audit import audit_record
from pipelines.core.models import AppendOnlyError, AuditEvent
from pipelines.deployments import services as deploy
from pipelines.models import ApiToken, Deployment, Environment, Pipeline, RunRequest
from pipelines.runs import services as runs
from pipelines.runs.services import RunError
from tests.conftest import make_environment, pipeline_payload


def create_pipeline(alice):
    form = PipelineForm(pipeline_payload(), user=alice)
    assert form.is_valid(), form.errors
    return services.pipeline_create(spec=form.spec, by=alice)


def latest_partition(pipeline):
    return runs.partition_range(spec=pipeline.versions.get().spec, now=timezone.now())[1]


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


def test_pipeline_create_writes_one_event_with_the_spec(alice, orders):
    pipeline = create_pipeline(alice)

    [event] = events("pipeline_created")
    assert (event.actor, event.pipeline, event.environment) == (alice, pipeline, None)
    assert event.before is None
    assert event.after["name"] == "orders-daily"
    assert event.after["owner"] == "alice"


def test_pipeline_create_that_fails_in_the_audit_writes_neither(alice, orders, monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("audit table unavailable")

    monkeypatch.setattr(services, "audit_record", broken)
    with pytest.raises(DatabaseError):
        create_pipeline(alice)

    assert not Pipeline.objects.exists()
    assert not AuditEvent.objects.exists()


def test_deployment_request_writes_one_event_and_a_repeat_writes_none(alice, orders, environments):
    pipeline = create_pipeline(alice)
    version = pipeline.versions.get()

    deploy.deployment_request(version=version, environment=environments["dev"], by=alice)
    deploy.deployment_request(version=version, environment=environments["dev"], by=alice)

    [event] = events("deployment_requested")
    assert (event.actor, event.pipeline, event.environment) == (
        alice,
        pipeline,
        environments["dev"],
    )
    assert event.after["version"] == 1


def test_deployment_request_that_fails_writes_no_event(alice, orders, environments, monkeypatch):
    pipeline = create_pipeline(alice)

    def broken(cls, deployment_id):
        raise DatabaseError("outbox unavailable")

    monkeypatch.setattr(Deployment, "enqueue", classmethod(broken))
    with pytest.raises(DatabaseError):
        deploy.deployment_request(
            version=pipeline.versions.get(), environment=environments["dev"], by=alice
        )

    assert not Deployment.objects.exists()
    assert events("deployment_requested") == []


def test_run_request_writes_one_event_only_when_a_request_is_created(
    alice, orders, environments, fake_airflow
):
    pipeline = create_pipeline(alice)
    d = deploy.deployment_request(
        version=pipeline.versions.get(), environment=environments["dev"], by=alice
    )
    deploy.deployment_run(deployment_id=d.id)
    partition = latest_partition(pipeline)

    run, created = runs.run_request(
        pipeline=pipeline, environment=environments["dev"], partition=partition, by=alice
    )
    again, created_again = runs.run_request(
        pipeline=pipeline, environment=environments["dev"], partition=partition, by=alice
    )

    assert (created, created_again, again.id) == (True, False, run.id)
    [event] = events("run_requested")
    assert (event.actor, event.pipeline, event.environment) == (
        alice,
        pipeline,
        environments["dev"],
    )
    assert event.after["partition"] == run.partition


def test_run_request_refused_writes_no_event(alice, orders, environments):
    pipeline = create_pipeline(alice)

    with pytest.raises(RunError):
        runs.run_request(
            pipeline=pipeline,
            environment=environments["prod"],
            partition=latest_partition(pipeline),
            by=alice,
        )

    assert not RunRequest.objects.exists()
    assert events("run_requested") == []


def test_token_create_writes_one_event_without_the_key(alice):
    issued = tokens.token_issue(user=alice, name="ci")

    [event] = events("api_token_created")
    assert event.actor == alice
    after = dict(event.after)
    assert after.pop("expires_at").startswith(issued.token.expires_at.date().isoformat())
    assert after == {
        "id": issued.token.public_id,
        "name": "ci",
        "owner": "alice",
        "scopes": ["read", "write"],
    }
    # No part of the secret: not even 5 characters of it in a row.
    secret, shown = issued.key.removeprefix("pp_"), str(event.after) + event.summary
    assert not [secret[i : i + 5] for i in range(len(secret) - 4) if secret[i : i + 5] in shown]


def test_token_create_that_fails_in_the_audit_keeps_no_token(alice, monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("audit table unavailable")

    monkeypatch.setattr(tokens, "audit_record", broken)
    with pytest.raises(DatabaseError):
        tokens.token_create(user=alice)

    assert not ApiToken.objects.exists()


def test_audit_record_refuses_an_unknown_action(alice):
    with pytest.raises(ValueError, match="not_an_action"):
        audit_record(actor=alice, action="not_an_action")
    assert not AuditEvent.objects.exists()


def test_audit_record_stores_the_system_for_no_or_anonymous_actor(db):
    from django.contrib.auth.models import AnonymousUser

    assert audit_record(actor=None, action="environment_changed").actor is None
    assert audit_record(actor=AnonymousUser(), action="environment_changed").actor is None


# --- Append-only ---------------------------------------------------------------------------------


def test_an_event_cannot_be_saved_again_or_deleted(alice):
    event = audit_record(actor=alice, action="pipeline_created", summary="first")

    event.summary = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(id=event.id).update(summary="rewritten")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(id=event.id).delete()

    assert AuditEvent.objects.get(id=event.id).summary == "first"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE pipelines_auditevent SET summary = 'rewritten' WHERE id = %s",
        "DELETE FROM pipelines_auditevent WHERE id = %s",
    ],
)
def test_the_database_refuses_raw_update_and_delete(alice, sql):
    event = audit_record(actor=alice, action="pipeline_created", summary="first")

    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, [event.id])

    assert AuditEvent.objects.get(id=event.id).summary == "first"


def test_deleting_an_audited_user_is_refused(alice):
    from django.db.models import ProtectedError

    audit_record(actor=alice, action="api_token_created")

    with pytest.raises(ProtectedError):
        get_user_model().objects.filter(id=alice.id).delete()


# --- Admin ---------------------------------------------------------------------------------------


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")


def environment_form(environment: Environment, **changes: object) -> dict[str, object]:
    fields = [
        "slug",
        "name",
        "order",
        "airflow_url",
        "airflow_username_env",
        "airflow_password_env",
        "dags_folder",
        "dag_id_prefix",
        "warehouse_conn_id",
        "warehouse_dialect",
        "target_schema",
        "readiness_success_days",
        "backfill_max_partitions",
    ]
    data: dict[str, object] = {f: getattr(environment, f) for f in fields}
    for flag in ("requires_approval", "pages_oncall"):
        if getattr(environment, flag):
            data[flag] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not False}


@pytest.fixture
def prod(db, tmp_path) -> Environment:
    return make_environment("prod", 2, dags_folder=str(tmp_path / "dags"))


def test_environment_change_in_the_admin_writes_before_and_after(client, admin_user, prod):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:pipelines_environment_change", args=[prod.id]),
        environment_form(prod, target_schema="analytics_prod", requires_approval="on"),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    [event] = events("environment_changed")
    assert (event.actor, event.environment) == (admin_user, prod)
    assert event.before == {"target_schema": "analytics", "requires_approval": False}
    assert event.after == {"target_schema": "analytics_prod", "requires_approval": True}


def test_environment_saved_unchanged_in_the_admin_writes_nothing(client, admin_user, prod):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:pipelines_environment_change", args=[prod.id]), environment_form(prod)
    )

    assert response.status_code == 302
    assert events("environment_changed") == []


def test_admin_shows_events_read_only(client, admin_user, alice):
    event = audit_record(actor=alice, action="pipeline_created", summary="first")
    client.force_login(admin_user)

    listing = client.get(reverse("admin:pipelines_auditevent_changelist"))
    page = client.get(reverse("admin:pipelines_auditevent_change", args=[event.id]))
    add = client.get(reverse("admin:pipelines_auditevent_add"))
    post = client.post(
        reverse("admin:pipelines_auditevent_change", args=[event.id]), {"summary": "rewritten"}
    )
    delete = client.post(
        reverse("admin:pipelines_auditevent_delete", args=[event.id]), {"post": "yes"}
    )

    assert listing.status_code == 200
    assert "first" in listing.content.decode()
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert (add.status_code, post.status_code, delete.status_code) == (403, 403, 403)
    assert AuditEvent.objects.get(id=event.id).summary == "first"
