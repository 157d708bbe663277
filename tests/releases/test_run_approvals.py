"""Run now under four eyes: in an environment that requires approval, a run that can replace
loaded data waits for an approver who did not ask; a run with nothing loaded at risk runs at once;
a run and a backfill of one partition refuse each other, naming the other."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from pipelines.backfills import services as backfills
from pipelines.core.models import AuditEvent
from pipelines.core.tokens import token_create
from pipelines.models import AlertDelivery, Backfill, RunRecord, RunRequest
from pipelines.releases import runs as run_approvals
from pipelines.releases.services import ReleaseError
from pipelines.runs import services as runs
from tests.conftest import make_user
from tests.releases.conftest import mark_deployed
from tests.threads import at_once

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
DAY9 = datetime(2026, 11, 9)  # noqa: DTZ001 (partitions are wall-clock, naive)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield NOW


@pytest.fixture
def deployed(pipeline, envs, alice, frozen):
    version = pipeline.versions.get()
    return {slug: mark_deployed(version, envs[slug], alice) for slug in ("dev", "prod")}


def partition_run(deployment, state: str = "success", *, n: int = 9, started: bool = True):
    """A synced run that loaded partition 2026-11-<n> of `deployment`'s DAG."""
    start = datetime(2026, 11, n, 2, tzinfo=UTC)
    return RunRecord.objects.create(
        environment=deployment.environment,
        pipeline=deployment.version.pipeline,
        dag_id=deployment.dag_id,
        dag_run_id=f"scheduled__{start.isoformat()}__{state}__{RunRecord.objects.count()}",
        run_type="scheduled",
        state=state,
        logical_date=start,
        data_interval_start=start,
        data_interval_end=start + timedelta(days=1),
        queued_at=start + timedelta(days=1),
        start_date=start + timedelta(days=1) if started else None,
        partition_start=datetime(2026, 11, n, tzinfo=UTC),
        partition_end=datetime(2026, 11, n + 1, tzinfo=UTC),
        synced_at=timezone.now(),
    )


def ask(pipeline, env, by, *, accept_smaller=False, partition=DAY9):
    return run_approvals.run_now(
        pipeline=pipeline,
        environment=env,
        partition=partition,
        by=by,
        accept_smaller=accept_smaller,
    )


def sent_runs(tasks_unsent) -> list[int]:
    return [args[0] for name, args in tasks_unsent if name == RunRequest.OUTBOX_TASK]


# --- which case applies ---------------------------------------------------------------------


def test_never_loaded_partition_in_prod_runs_at_once_audited_and_announced(
    pipeline, envs, alice, deployed, django_capture_on_commit_callbacks, tasks_unsent
):
    with django_capture_on_commit_callbacks(execute=True):
        run, created = ask(pipeline, envs["prod"], alice)
    assert created
    assert run.state == RunRequest.State.PENDING
    assert sent_runs(tasks_unsent) == [run.id]
    event = AuditEvent.objects.get(action="run_requested")
    assert event.environment == envs["prod"]
    assert event.after["state"] == "pending"
    notice = AlertDelivery.objects.get(target="payments-alerts@example.com")
    assert "[REQUESTED] run of" in notice.subject
    assert "2026-11-09" in notice.text


def test_a_partition_whose_runs_all_failed_runs_at_once(
    pipeline, envs, alice, deployed, tasks_unsent
):
    partition_run(deployed["prod"], "failed")
    partition_run(deployed["prod"], "failed", started=False)  # cancelled by a backfill
    case = run_approvals.run_case(
        pipeline=pipeline, environment=envs["prod"], partition=DAY9, accept_smaller=False
    )
    assert not case.needs_approval
    assert case.message.startswith("No loaded data at risk (2026-11-09 was never loaded in")


@pytest.mark.parametrize(
    ("state", "accept_smaller", "says"),
    [
        ("success", False, "2026-11-09 is loaded in Prod: a run replaces its rows"),
        ("running", False, "A run is loading 2026-11-09 in Prod now"),
        ("queued", False, "A run is loading 2026-11-09 in Prod now"),
        (None, True, "Accepting a smaller partition lets an emptied source shrink it"),
        ("success", True, "replaces its rows; accepting a smaller partition lets"),
    ],
)
def test_a_run_that_can_replace_loaded_data_in_prod_waits_for_an_approver(
    pipeline, envs, alice, deployed, django_capture_on_commit_callbacks, tasks_unsent,
    state, accept_smaller, says,
):  # fmt: skip
    if state:
        partition_run(deployed["prod"], state)
    with django_capture_on_commit_callbacks(execute=True):
        run, created = ask(pipeline, envs["prod"], alice, accept_smaller=accept_smaller)
    assert created
    assert run.state == RunRequest.State.AWAITING_APPROVAL
    assert says in run.approval_reason
    assert "waits until an approver of team Payments other than you approves it" in (
        run.approval_reason
    )
    assert sent_runs(tasks_unsent) == []  # nothing reaches Airflow
    assert AuditEvent.objects.get(action="run_requested").after["state"] == "awaiting_approval"
    notice = AlertDelivery.objects.get(target="payments-alerts@example.com")
    assert notice.subject.startswith("[APPROVAL NEEDED] run of")


def test_a_partition_loaded_by_a_run_the_sync_has_not_read_yet_waits(
    pipeline, envs, alice, deployed
):
    first, _ = ask(pipeline, envs["prod"], alice)  # never loaded: at once
    RunRequest.objects.filter(id=first.id).update(state="submitted", run_state="success")
    again, created = ask(pipeline, envs["prod"], alice)
    assert created
    assert again.state == RunRequest.State.AWAITING_APPROVAL
    assert again.approval_reason.startswith(
        f"2026-11-09 may be loaded in Prod: run now #{first.id} ran over it, and the portal has "
        "not read its runs from Airflow yet."
    )


def test_a_partition_a_backfill_ran_over_after_the_last_sync_waits(pipeline, envs, alice, deployed):
    from pipelines.models import SyncState

    backfill = make_backfill(deployed["prod"], alice, state="succeeded")
    Backfill.objects.filter(id=backfill.id).update(submitted_at=NOW, finished_at=NOW)
    SyncState.objects.create(environment=envs["prod"], watermark=NOW - timedelta(minutes=1))
    case = run_approvals.run_case(
        pipeline=pipeline, environment=envs["prod"], partition=DAY9, accept_smaller=False
    )
    assert case.needs_approval
    assert f"backfill #{backfill.id} ran over it" in case.message
    synced_since = NOW + timedelta(seconds=30)
    SyncState.objects.filter(environment=envs["prod"]).update(watermark=synced_since)
    case = run_approvals.run_case(
        pipeline=pipeline, environment=envs["prod"], partition=DAY9, accept_smaller=False
    )
    assert not case.needs_approval


def test_loaded_partition_in_an_environment_without_approval_runs_at_once(
    pipeline, envs, alice, deployed, tasks_unsent
):
    partition_run(deployed["dev"], "success")
    run, _ = ask(pipeline, envs["dev"], alice, accept_smaller=True)
    assert run.state == RunRequest.State.PENDING
    assert not AlertDelivery.objects.exists()  # dev's runs are not announced


def test_asking_again_returns_the_request_awaiting_approval(pipeline, envs, alice, deployed):
    partition_run(deployed["prod"], "success")
    first, _ = ask(pipeline, envs["prod"], alice)
    again, created = ask(pipeline, envs["prod"], alice)
    assert (again.id, created) == (first.id, False)


# --- the decision ----------------------------------------------------------------------------


@pytest.fixture
def waiting(pipeline, envs, alice, deployed):
    partition_run(deployed["prod"], "success")
    run, _ = ask(pipeline, envs["prod"], alice)
    AlertDelivery.objects.all().delete()
    return run


def test_an_approver_who_did_not_ask_approves_and_the_run_goes_to_airflow(
    waiting, bob, django_capture_on_commit_callbacks, tasks_unsent
):
    with django_capture_on_commit_callbacks(execute=True):
        run = run_approvals.run_approve(run_id=waiting.id, by=bob, comment="go")
    assert run.state == RunRequest.State.PENDING
    assert (run.decided_by, run.decision_comment) == (bob, "go")
    assert sent_runs(tasks_unsent) == [run.id]
    event = AuditEvent.objects.get(action="run_approved")
    assert (event.actor, event.after["comment"]) == (bob, "go")
    to_requester = AlertDelivery.objects.get(target="alice@example.com")
    assert to_requester.subject.startswith("[APPROVED] run of")


@pytest.mark.parametrize(
    ("who", "message"),
    [
        ("alice", "Only approvers of team Payments or a platform admin may decide runs of this"),
        ("carol", "Only approvers of team Payments or a platform admin may decide runs of this"),
        ("mallory", "Only approvers of team Payments or a platform admin may decide runs of this"),
    ],
)
def test_only_an_approver_who_did_not_ask_decides(waiting, request, who, message, tasks_unsent):
    user = request.getfixturevalue(who)
    with pytest.raises(ReleaseError) as refused:
        run_approvals.run_approve(run_id=waiting.id, by=user)
    assert (refused.value.status, message in refused.value.message) == (403, True)
    waiting.refresh_from_db()
    assert waiting.state == RunRequest.State.AWAITING_APPROVAL
    assert sent_runs(tasks_unsent) == []


def test_an_approver_may_not_approve_her_own_request(pipeline, envs, bob, deployed):
    partition_run(deployed["prod"], "success")
    run, _ = ask(pipeline, envs["prod"], bob)
    with pytest.raises(ReleaseError) as refused:
        run_approvals.run_approve(run_id=run.id, by=bob)
    assert refused.value.status == 403
    assert refused.value.message == (
        "You requested this run: someone else must approve or reject it (four eyes). "
        "You may withdraw it."
    )


def test_a_platform_admin_outside_the_team_may_approve(waiting, db):
    admin = make_user("root")
    admin.is_superuser = True
    admin.save()
    assert run_approvals.run_approve(run_id=waiting.id, by=admin).state == "pending"


def test_a_stale_request_is_refused_and_nothing_runs(waiting, bob, deployed, tasks_unsent):
    partition_run(deployed["prod"], "running")  # the partition changed since the request
    with pytest.raises(ReleaseError) as refused:
        run_approvals.run_approve(run_id=waiting.id, by=bob)
    assert refused.value.status == 409
    assert refused.value.message.startswith("This run request is stale: Partition 2026-11-09")
    waiting.refresh_from_db()
    assert waiting.state == RunRequest.State.AWAITING_APPROVAL
    assert sent_runs(tasks_unsent) == []


def test_a_request_is_stale_once_another_version_is_deployed(waiting, bob, alice, pipeline, envs):
    from tests.releases.conftest import edit

    mark_deployed(edit(pipeline, alice, sla_minutes="90"), envs["prod"], alice)
    with pytest.raises(ReleaseError) as refused:
        run_approvals.run_approve(run_id=waiting.id, by=bob)
    assert refused.value.status == 409


def test_reject_needs_a_comment_and_is_final(waiting, bob):
    with pytest.raises(ReleaseError) as missing:
        run_approvals.run_reject(run_id=waiting.id, by=bob, comment="  ")
    assert (missing.value.status, missing.value.field) == (422, "comment")
    run = run_approvals.run_reject(run_id=waiting.id, by=bob, comment="not during close")
    assert run.state == RunRequest.State.REJECTED
    assert AuditEvent.objects.filter(action="run_rejected").count() == 1
    with pytest.raises(ReleaseError) as again:
        run_approvals.run_approve(run_id=waiting.id, by=bob)
    assert again.value.status == 409
    assert "already rejected by bob" in again.value.message


def test_the_requester_withdraws_a_waiting_request(waiting, alice, bob):
    with pytest.raises(ReleaseError) as not_hers:
        run_approvals.run_withdraw(run_id=waiting.id, by=bob)
    assert not_hers.value.status == 403
    run = run_approvals.run_withdraw(run_id=waiting.id, by=alice)
    assert run.state == RunRequest.State.WITHDRAWN
    assert AuditEvent.objects.filter(action="run_withdrawn").count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_approvers_at_once_release_the_run_once(
    pipeline, envs, alice, bob, deployed, tasks_unsent
):
    partition_run(deployed["prod"], "success")
    run, _ = ask(pipeline, envs["prod"], alice)
    dana = make_user("dana", pipeline.team, role="approver")
    barrier = threading.Barrier(2)

    def decide(user):
        barrier.wait(timeout=10)
        with time_machine.travel(NOW, tick=False):
            return run_approvals.run_approve(run_id=run.id, by=user)

    approved, errors = at_once(lambda: decide(bob), lambda: decide(dana))
    assert len(approved) == 1
    assert [(type(e), e.status) for e in errors] == [(ReleaseError, 409)]
    assert AuditEvent.objects.filter(action="run_approved").count() == 1
    assert sent_runs(tasks_unsent) == [run.id]


# --- a run and a backfill of one partition ---------------------------------------------------


def make_backfill(deployment, by, first="2026-11-05", last="2026-11-09", state="running"):
    return Backfill.objects.create(
        pipeline=deployment.version.pipeline,
        environment=deployment.environment,
        dag_id=deployment.dag_id,
        first_partition=first,
        last_partition=last,
        from_date=NOW,
        to_date=NOW,
        reprocess="all",
        reason="reload",
        fingerprint="x",
        partitions=5,
        runs=5,
        state=state,
        requested_by=by,
    )


def test_run_now_is_refused_naming_the_backfill_covering_the_partition(
    pipeline, envs, alice, deployed
):
    backfill = make_backfill(deployed["dev"], alice)
    with pytest.raises(runs.RunError) as refused:
        ask(pipeline, envs["dev"], alice)
    assert refused.value.field == "partition"
    assert refused.value.message.startswith(
        f"Backfill #{backfill.id} (2026-11-05 → 2026-11-09, running, requested by alice) "
        "covers 2026-11-09 in Dev"
    )
    assert not RunRequest.objects.exists()


def test_a_backfill_elsewhere_does_not_refuse_run_now(pipeline, envs, alice, deployed):
    make_backfill(deployed["prod"], alice)  # prod's, not dev's
    make_backfill(deployed["dev"], alice, "2026-11-01", "2026-11-08", state="succeeded")
    run, created = ask(pipeline, envs["dev"], alice)
    assert created


def test_backfill_is_refused_naming_the_run_now_of_a_partition_in_range(
    pipeline, envs, alice, deployed
):
    run, _ = ask(pipeline, envs["dev"], alice)
    with pytest.raises(backfills.BackfillError) as refused:
        backfills.backfill_preview(
            pipeline=pipeline,
            environment=envs["dev"],
            first=datetime(2026, 11, 5),  # noqa: DTZ001
            last=DAY9,
            reprocess="all",
            max_active_runs=1,
        )
    assert refused.value.status == 409
    assert refused.value.errors["start"].startswith(
        f"Run now #{run.id} of 2026-11-09 in Dev (pending, requested by alice) is in this range"
    )


def test_approving_a_run_is_stale_once_a_backfill_covers_it(waiting, bob, deployed, alice):
    make_backfill(deployed["prod"], alice, state="queued")
    with pytest.raises(ReleaseError) as refused:
        run_approvals.run_approve(run_id=waiting.id, by=bob)
    assert refused.value.status == 409
    assert "Backfill #" in refused.value.message


# --- pages and API ---------------------------------------------------------------------------


def test_api_files_an_awaiting_request_and_nothing_reaches_airflow(
    client, pipeline, envs, alice, bob, deployed, tasks_unsent
):
    partition_run(deployed["prod"], "success")
    alice_key = token_create(user=alice, scopes=["read", "write", "approve"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {alice_key}"}
    body = {"environment": "prod", "partition": "2026-11-09"}
    url = f"/api/v1/pipelines/{pipeline.slug}/runs"
    preview = client.post(url + "/preview", body, content_type="application/json", **auth)
    assert preview.status_code == 200
    assert preview.json()["needs_approval"] is True
    assert preview.json()["message"].startswith("2026-11-09 is loaded in Prod")
    assert not RunRequest.objects.exists()  # a preview files nothing

    filed = client.post(url, body, content_type="application/json", **auth)
    assert filed.status_code == 202
    assert filed.json()["state"] == "awaiting_approval"
    run_id = filed.json()["id"]
    own = client.post(f"/api/v1/runs/{run_id}/approve", {}, content_type="application/json", **auth)
    assert own.status_code == 403

    bob_key = token_create(user=bob, scopes=["read", "write", "approve"])
    bob_auth = {"HTTP_AUTHORIZATION": f"Bearer {bob_key}"}
    no_comment = client.post(
        f"/api/v1/runs/{run_id}/reject", {}, content_type="application/json", **bob_auth
    )
    assert no_comment.status_code == 422
    assert no_comment.json() == {
        "errors": {"comment": ["Say why it is rejected: the requester reads it."]}
    }
    approved = client.post(
        f"/api/v1/runs/{run_id}/approve",
        {"comment": "ok"},
        content_type="application/json",
        **bob_auth,
    )
    assert approved.status_code == 200
    assert (approved.json()["state"], approved.json()["decided_by"]) == ("pending", "bob")


def test_run_case_fragment_says_the_case_before_submitting(client, pipeline, alice, deployed):
    partition_run(deployed["prod"], "success")
    client.force_login(alice)
    url = f"/pipelines/{pipeline.slug}/runs/case"
    waits = client.get(url, {"environment": "prod", "partition": "2026-11-09"})
    assert waits.status_code == 200
    assert 'data-case="approval"' in waits.text
    assert "2026-11-09 is loaded in Prod: a run replaces its rows" in waits.text
    at_once = client.get(url, {"environment": "prod", "partition": "2026-11-08"})
    assert 'data-case="at-once"' in at_once.text
    bad = client.get(url, {"environment": "prod", "partition": "2026-13-01"})
    assert "data-case" not in bad.text


def test_approvals_page_lists_the_run_and_an_approver_approves_it(
    client, waiting, alice, bob, tasks_unsent
):
    client.force_login(alice)
    page = client.get("/approvals/")
    assert f'id="approval-run-{waiting.id}"' in page.text
    assert "Yours: waiting for another approver" in page.text
    client.force_login(bob)
    badge = client.get("/approvals/badge")
    assert ">1<" in badge.text.replace(" ", "")
    page = client.get("/approvals/")
    assert f'action="/runs/{waiting.id}/approve"' in page.text
    answer = client.post(f"/runs/{waiting.id}/approve", {"comment": ""})
    assert answer.status_code == 302
    waiting.refresh_from_db()
    assert waiting.state == RunRequest.State.PENDING
    refused = client.post(f"/runs/{waiting.id}/approve", {"comment": ""})
    assert refused.status_code == 409
    assert "This run is already" in refused.text
