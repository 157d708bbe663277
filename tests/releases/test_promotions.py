"""Promotion rules (issue 8): four eyes, approvers only, stale requests, one decision, one
deployment, rollback without a new approval only where the version ran or was approved."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from pipelines.core.models import AuditEvent
from pipelines.deployments import services as deploy
from pipelines.models import AlertDelivery, Deployment, Promotion
from pipelines.releases import services as releases
from pipelines.releases.services import ReleaseError
from tests.conftest import make_user
from tests.releases.conftest import edit, make_ready, mark_deployed
from tests.threads import at_once

State = Promotion.State


def file(version, env, by, reason="Ready for stage: ran clean in dev."):
    return releases.promotion_request(version=version, environment=env, by=by, reason=reason)


def refused(fn, status: int, **kwargs) -> ReleaseError:
    with pytest.raises(ReleaseError) as caught:
        fn(**kwargs)
    assert caught.value.status == status, caught.value.message
    return caught.value


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


# --- filing ----------------------------------------------------------------------------------


def test_filing_snapshots_the_checklist_audits_and_notifies(ready, envs, alice):
    promotion = file(ready, envs["stage"], alice)

    assert promotion.state == State.PENDING
    assert promotion.source_environment == envs["dev"]
    snapshot = {item["check"]: item for item in promotion.checklist}
    assert snapshot["owner"]["ok"]
    assert snapshot["successful_run"]["ok"]
    assert all(item["ok"] for item in promotion.checklist if item["blocking"])
    assert actions()[-1] == "promotion_requested"
    notice = AlertDelivery.objects.get(event=AlertDelivery.Event.NOTICE)
    assert notice.alert is None
    assert notice.target == "payments-alerts@example.com"
    assert notice.subject == "[APPROVAL NEEDED] orders-daily v1 → Stage"


def test_a_failing_blocking_check_files_nothing(pipeline, envs, alice):
    version = pipeline.versions.get()  # never deployed to dev
    error = refused(file, 422, version=version, env=envs["stage"], by=alice)
    assert error.field == "version"
    failing = {i.check for i in error.checklist if not i.ok and i.blocking}
    assert failing == {"parsed", "successful_run", "fresh"}
    assert "was never deployed to Dev" in error.message
    assert not Promotion.objects.exists()


def test_an_advisory_failure_is_shown_but_does_not_block(ready, envs, alice, pipeline):
    stage = envs["stage"]
    mark_deployed(ready, envs["dev"], alice)  # nothing changes: still ready
    version2 = edit(pipeline, alice, schedule="30 2 * * *", timezone="America/New_York")
    make_ready(version2, envs["dev"], alice)
    promotion = file(version2, stage, alice)
    dst = next(i for i in promotion.items if i.check == "dst")
    assert (dst.ok, dst.blocking) == (False, False)
    assert "does not exist in America/New_York" in dst.reason


def test_only_environments_that_need_approval_take_promotions(ready, envs, alice):
    error = refused(file, 422, version=ready, env=envs["dev"], by=alice)
    assert (error.field, error.message) == (
        "environment",
        "Dev takes deployments directly: use Deploy there.",
    )


def test_an_outsider_cannot_file(ready, envs, mallory):
    refused(file, 403, version=ready, env=envs["stage"], by=mallory)


def test_one_pending_request_per_pipeline_and_environment(ready, envs, alice, carol):
    first = file(ready, envs["stage"], alice)
    error = refused(file, 409, version=ready, env=envs["stage"], by=carol)
    assert f"already pending (#{first.id}, version 1)" in error.message


def test_the_version_that_runs_there_already_is_refused(ready, envs, alice, bob):
    mark_deployed(ready, envs["stage"], alice)
    error = refused(file, 422, version=ready, env=envs["stage"], by=alice)
    assert error.message == "Version 1 already runs in Stage."


# --- deciding --------------------------------------------------------------------------------


def test_an_approver_approves_and_that_version_deploys_to_the_target(ready, envs, alice, bob):
    promotion = file(ready, envs["stage"], alice)
    approved = releases.promotion_approve(promotion_id=promotion.id, by=bob, comment="LGTM")

    assert (approved.state, approved.decided_by, approved.decision_comment) == (
        State.APPROVED,
        bob,
        "LGTM",
    )
    deployment = approved.deployment
    assert (deployment.version, deployment.environment) == (ready, envs["stage"])
    assert deployment.state == Deployment.State.PENDING
    # Stage's file: stage's connection and schema, the same version.
    assert "'target_conn_id': 'warehouse_stage'" in deployment.code
    assert '"analytics_stage"."orders_daily"' in deployment.code
    assert actions()[-2:] == ["deployment_requested", "promotion_approved"]
    subjects = set(AlertDelivery.objects.values_list("subject", flat=True))
    assert "[APPROVED] orders-daily v1 → Stage" in subjects
    assert AlertDelivery.objects.filter(
        subject__startswith="[APPROVED]", target="alice@example.com"
    ).exists()


def test_self_approval_is_refused(ready, envs, team, alice):
    team.memberships.filter(user=alice).update(role="approver")  # an approver, but the requester
    promotion = file(ready, envs["stage"], alice)
    error = refused(releases.promotion_approve, 403, promotion_id=promotion.id, by=alice)
    assert "four eyes" in error.message
    promotion.refresh_from_db()
    assert promotion.state == State.PENDING
    assert not Deployment.objects.filter(environment=envs["stage"]).exists()


def test_an_editor_or_an_outsider_cannot_approve_but_a_platform_admin_can(
    ready, envs, alice, carol, mallory
):
    promotion = file(ready, envs["stage"], alice)
    refused(releases.promotion_approve, 403, promotion_id=promotion.id, by=carol)
    refused(releases.promotion_approve, 403, promotion_id=promotion.id, by=mallory)
    admin = make_user("root")
    admin.is_superuser = True
    admin.save()
    assert releases.promotion_approve(promotion_id=promotion.id, by=admin).state == State.APPROVED


def test_a_decided_request_is_final(ready, envs, alice, bob, team):
    dave = make_user("dave", team, role="approver")
    promotion = file(ready, envs["stage"], alice)
    releases.promotion_approve(promotion_id=promotion.id, by=bob)
    error = refused(releases.promotion_approve, 409, promotion_id=promotion.id, by=dave)
    assert "already approved by bob" in error.message
    refused(releases.promotion_reject, 409, promotion_id=promotion.id, by=dave, comment="no")
    refused(releases.promotion_withdraw, 409, promotion_id=promotion.id, by=alice)
    assert Deployment.objects.filter(environment=envs["stage"]).count() == 1


def test_a_request_overtaken_by_a_newer_deployment_is_stale(ready, envs, alice, bob, pipeline):
    promotion = file(ready, envs["stage"], alice)
    version2 = edit(pipeline, alice, description="Second version.")
    later = mark_deployed(version2, envs["stage"], bob)
    Deployment.objects.filter(id=later.id).update(
        requested_at=timezone.now() + timedelta(seconds=1)
    )
    error = refused(releases.promotion_approve, 409, promotion_id=promotion.id, by=bob)
    assert error.message.startswith("Stale: version 2 was deployed to Stage")
    assert Promotion.objects.get(id=promotion.id).state == State.PENDING


def test_a_request_whose_blocking_check_fails_now_is_stale(ready, envs, alice, bob, pipeline):
    promotion = file(ready, envs["stage"], alice)
    pipeline.owner.is_active = False
    pipeline.owner.save()
    error = refused(releases.promotion_approve, 409, promotion_id=promotion.id, by=bob)
    assert "Stale: a blocking check fails now: Owner set" in error.message
    assert not Deployment.objects.filter(environment=envs["stage"]).exists()


def test_reject_needs_a_comment_and_tells_the_requester(ready, envs, alice, bob):
    promotion = file(ready, envs["stage"], alice)
    error = refused(releases.promotion_reject, 422, promotion_id=promotion.id, by=bob, comment=" ")
    assert error.field == "comment"
    rejected = releases.promotion_reject(promotion_id=promotion.id, by=bob, comment="Wait for Q4.")
    assert rejected.state == State.REJECTED
    assert rejected.deployment is None
    assert AlertDelivery.objects.filter(
        subject__startswith="[REJECTED]", target="alice@example.com"
    ).exists()
    assert actions()[-1] == "promotion_rejected"


def test_only_the_requester_withdraws(ready, envs, alice, bob, carol):
    promotion = file(ready, envs["stage"], alice)
    refused(releases.promotion_withdraw, 403, promotion_id=promotion.id, by=carol)
    assert releases.promotion_withdraw(promotion_id=promotion.id, by=alice).state == State.WITHDRAWN
    file(ready, envs["stage"], carol)  # the slot is free again


@pytest.mark.django_db(transaction=True)
def test_two_approvers_at_once_make_one_deployment(
    ready, envs, alice, bob, team, monkeypatch, tasks_unsent
):
    """PostgreSQL's row lock: the second approver waits, then sees a decided request."""
    dave = make_user("dave", team, role="approver")
    promotion = file(ready, envs["stage"], alice)
    real = deploy.deployment_request

    def slow(**kwargs):  # widen the window between reading the request and deciding it
        time.sleep(0.3)
        return real(**kwargs)

    monkeypatch.setattr(deploy, "deployment_request", slow)
    barrier, done, errors = threading.Barrier(2), [], []

    def click(user) -> None:
        try:
            barrier.wait()
            done.append(releases.promotion_approve(promotion_id=promotion.id, by=user))
        except ReleaseError as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(u,)) for u in (bob, dave)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 1
    assert [e.status for e in errors] == [409]
    assert Deployment.objects.filter(environment=envs["stage"]).count() == 1
    assert AuditEvent.objects.filter(action="promotion_approved").count() == 1
    assert [name for name, _ in tasks_unsent].count("pipelines.tasks.deployment_run") == 1


# --- direct deploys and rollback -------------------------------------------------------------


def test_a_direct_deploy_into_an_approval_environment_is_refused(ready, envs, alice):
    with pytest.raises(deploy.ApprovalRequired, match="Stage requires an approved promotion"):
        deploy.deployment_request(version=ready, environment=envs["stage"], by=alice)
    assert not Deployment.objects.filter(environment=envs["stage"]).exists()


def test_rollback_to_a_version_that_ran_there_needs_no_approval(ready, envs, alice, pipeline):
    stage = envs["stage"]
    mark_deployed(ready, stage, alice, ago=5)
    version2 = edit(pipeline, alice, description="Second version.")
    mark_deployed(version2, stage, alice, ago=1)
    assert releases.rollback_targets(pipeline, stage) == [ready]

    deployment = releases.rollback(pipeline=pipeline, environment=stage, version=ready, by=alice)

    assert (deployment.version, deployment.state) == (ready, Deployment.State.PENDING)
    event = AuditEvent.objects.filter(action="rollback").get()
    assert (event.actor, event.before, event.after["version"]) == (alice, {"version": 2}, 1)
    assert AlertDelivery.objects.filter(subject__startswith="[ROLLBACK]").exists()


def test_rollback_to_a_version_never_approved_there_is_refused(ready, envs, alice, pipeline):
    stage = envs["stage"]
    version2 = edit(pipeline, alice, description="Second version.")
    mark_deployed(version2, stage, alice)
    error = refused(
        releases.rollback, 403, pipeline=pipeline, environment=stage, version=ready, by=alice
    )
    assert "request a promotion instead" in error.message
    assert not AuditEvent.objects.filter(action="rollback").exists()


def test_an_approved_version_is_a_rollback_target_even_if_its_deploy_failed(
    ready, envs, alice, bob, pipeline
):
    stage = envs["stage"]
    promotion = file(ready, stage, alice)
    approved = releases.promotion_approve(promotion_id=promotion.id, by=bob)
    Deployment.objects.filter(id=approved.deployment_id).update(state=Deployment.State.FAILED)
    assert releases.rollback_targets(pipeline, stage) == [ready]


def test_the_admin_shows_promotions_read_only(ready, envs, alice, admin_client):
    promotion = file(ready, envs["stage"], alice)
    url = f"/admin/pipelines/promotion/{promotion.id}/change/"
    assert admin_client.get("/admin/pipelines/promotion/").status_code == 200
    assert admin_client.get(url).status_code == 200
    admin_client.post(url, {"state": "approved"})
    assert Promotion.objects.get(id=promotion.id).state == State.PENDING
    delete = admin_client.post(f"/admin/pipelines/promotion/{promotion.id}/delete/")
    assert delete.status_code == 403


@pytest.mark.django_db(transaction=True)
def test_two_identical_promotion_requests_at_once_make_one_and_a_409(
    ready, envs, alice, monkeypatch, tasks_unsent
):
    """Both pass the checks before either inserts: the partial unique constraint decides."""
    barrier = threading.Barrier(2, timeout=10)
    real = releases.readiness.blocking_failures

    def held(items):
        barrier.wait()
        return real(items)

    monkeypatch.setattr(releases.readiness, "blocking_failures", held)

    def ask():
        return file(ready, envs["stage"], alice)

    done, errors = at_once(ask, ask)
    assert len(done) == 1
    assert [(type(e), e.status) for e in errors] == [(ReleaseError, 409)]
    assert "is already pending" in errors[0].message
    assert Promotion.objects.count() == 1
