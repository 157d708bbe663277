"""The backfill outbox step: chunks one after another, Airflow down keeps the request and submits
it once later, pause/resume/cancel through Airflow, progress from the synced runs; approvals in
environments that require them follow the promotions' rules."""

from __future__ import annotations

import html
import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from pipelines.backfills import services as backfills
from pipelines.backfills.models import Backfill
from pipelines.monitoring.models import RunRecord
from pipelines.releases import services as releases
from pipelines.releases.services import ReleaseError
from tests.backfills.conftest import day, scheduled_run
from tests.backfills.test_backfills import submit
from tests.threads import at_once

State = Backfill.State


def step(backfill: Backfill) -> float | None:
    return backfills.backfill_step(backfill_id=backfill.id)


def fresh(backfill: Backfill) -> Backfill:
    return Backfill.objects.get(id=backfill.id)


def due_now(backfill: Backfill) -> None:
    Backfill.objects.filter(id=backfill.id).update(next_attempt_at=None)


def test_chunks_are_submitted_one_after_another(deployed, alice, fake_airflow, settings):
    settings.BACKFILL_CHUNK_RUNS = 4
    backfill = submit(deployed, alice)

    assert step(backfill) == backfills.FOLLOW_SECONDS
    first = fake_airflow.backfills[1]
    assert (first["dag_id"], first["reprocess_behavior"], first["max_active_runs"]) == (
        "dev__orders_daily",
        "none",
        1,
    )
    assert (first["from_date"].day, first["to_date"].day) == (1, 4)
    assert fresh(backfill).state == State.RUNNING

    due_now(backfill)
    step(backfill)  # Airflow still running it: nothing new
    assert len(fake_airflow.backfills) == 1

    fake_airflow.finish_backfill(1)
    due_now(backfill)
    assert step(backfill) == 0  # next chunk due at once
    assert (fresh(backfill).state, fresh(backfill).chunk_index) == (State.QUEUED, 1)
    step(backfill)
    assert (
        fake_airflow.backfills[2]["from_date"].day,
        fake_airflow.backfills[2]["to_date"].day,
    ) == (
        5,
        7,
    )
    fake_airflow.finish_backfill(2)
    due_now(backfill)
    assert step(backfill) is None
    assert fresh(backfill).state == State.SUCCEEDED


def test_airflow_down_keeps_the_request_and_submits_it_once_later(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice)
    fake_airflow.down = True
    wait = step(backfill)
    assert wait == Backfill.retry_policy().backoff(1)  # the first retry's wait
    down = fresh(backfill)
    assert (down.state, down.attempts) == (State.QUEUED, 1)
    assert "unreachable" in down.last_error
    assert step(backfill) is None  # not before the backoff: a second worker changes nothing
    fake_airflow.down = False
    due_now(backfill)
    step(backfill)
    step(backfill)  # a duplicate delivery of the task
    assert fake_airflow.calls.count("backfill_create") == 2  # the failed try and one success
    assert len(fake_airflow.backfills) == 1


def test_another_backfill_in_airflow_makes_it_wait(deployed, alice, fake_airflow):
    fake_airflow.backfill_create(
        "dev__orders_daily", day(1), day(2), reprocess="none", max_active_runs=1
    )
    backfill = submit(deployed, alice)
    assert step(backfill) == backfills.WAIT_SECONDS
    waiting = fresh(backfill)
    assert waiting.last_error == (
        "Waiting: Airflow's backfill 1 of dev__orders_daily (2026-11-01 → 2026-11-02) has not "
        "completed (Airflow runs one backfill per DAG at a time); chunk 1 of 1 is submitted once "
        "it has."
    )
    assert (waiting.state, waiting.attempts) == (State.QUEUED, 0)


def test_pause_resume_and_cancel_go_through_airflow(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice)
    step(backfill)
    backfills.backfill_pause(backfill_id=backfill.id, by=alice)
    step(backfill)
    assert fresh(backfill).state == State.PAUSED
    assert fake_airflow.backfills[1]["is_paused"]

    backfills.backfill_resume(backfill_id=backfill.id, by=alice)
    step(backfill)
    assert fresh(backfill).state == State.RUNNING
    assert not fake_airflow.backfills[1]["is_paused"]

    backfills.backfill_cancel(backfill_id=backfill.id, by=alice)
    step(backfill)
    assert fresh(backfill).state == State.CANCELLED
    assert fake_airflow.backfills[1]["completed_at"]
    with pytest.raises(backfills.BackfillError) as caught:
        backfills.backfill_resume(backfill_id=backfill.id, by=alice)
    assert caught.value.status == 409
    actions = list(
        backfill.pipeline.audit_events.filter(action__startswith="backfill_")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == [
        "backfill_requested",
        "backfill_paused",
        "backfill_resumed",
        "backfill_cancelled",
    ]


def test_cancel_before_submission_never_reaches_airflow(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice)
    backfills.backfill_cancel(backfill_id=backfill.id, by=alice)
    step(backfill)
    assert fresh(backfill).state == State.CANCELLED
    assert "backfill_create" not in fake_airflow.calls


def test_progress_counts_the_synced_runs(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice, reprocess="all")
    step(backfill)
    submitted = fresh(backfill).submitted_at
    dev = deployed["dev"]
    for n, state in [(1, "success"), (2, "success"), (3, "failed"), (4, "running")]:
        scheduled_run(dev, n, state, run_type="backfill", queued_at=submitted)
    scheduled_run(dev, 5, "success")  # an older run, before the backfill: not its progress
    counts = backfills.progress(fresh(backfill))
    assert {k: counts[k] for k in ("done", "failed", "running", "queued")} == {
        "done": 2,
        "failed": 1,
        "running": 1,
        "queued": 3,
    }
    assert counts["percent"] == 43


# --- approvals -------------------------------------------------------------------------------


def test_an_approver_releases_a_prod_backfill(deployed, alice, bob, fake_airflow):
    backfill = submit(deployed, alice, env="prod")
    assert step(backfill) is None  # awaiting approval: not claimable
    approved = releases.backfill_approve(backfill_id=backfill.id, by=bob, comment="ok")
    assert (approved.state, approved.decided_by) == (State.QUEUED, bob)
    step(backfill)
    assert fake_airflow.backfills[1]["dag_id"] == "prod__orders_daily"


def test_backfill_approval_rules(deployed, alice, bob, team, carol):
    backfill = submit(deployed, alice, env="prod")
    team.memberships.filter(user=alice).update(role="approver")
    with pytest.raises(ReleaseError) as own:
        releases.backfill_approve(backfill_id=backfill.id, by=alice)
    with pytest.raises(ReleaseError) as editor:
        releases.backfill_approve(backfill_id=backfill.id, by=carol)
    assert (own.value.status, editor.value.status) == (403, 403)
    assert "four eyes" in own.value.message
    with pytest.raises(ReleaseError) as no_comment:
        releases.backfill_reject(backfill_id=backfill.id, by=bob, comment="")
    assert no_comment.value.field == "comment"
    rejected = releases.backfill_reject(backfill_id=backfill.id, by=bob, comment="Not today.")
    assert rejected.state == State.REJECTED
    with pytest.raises(ReleaseError) as final:
        releases.backfill_approve(backfill_id=backfill.id, by=bob)
    assert final.value.status == 409


def test_a_backfill_whose_runs_changed_since_filing_is_stale(deployed, alice, bob):
    backfill = submit(deployed, alice, env="prod")
    scheduled_run(deployed["prod"], 2)
    with pytest.raises(ReleaseError) as caught:
        releases.backfill_approve(backfill_id=backfill.id, by=bob)
    assert caught.value.status == 409
    assert "it would now run 6 runs, not the 7 filed" in caught.value.message


# --- the duplicate-submit race -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_identical_submits_at_once_make_one_backfill(deployed, alice, tasks_unsent):
    shown = backfills.backfill_preview(
        pipeline=deployed["dev"].version.pipeline,
        environment=deployed["dev"].environment,
        first=day(1),
        last=day(7),
        reprocess="missing",
        max_active_runs=1,
    )
    barrier = threading.Barrier(2)

    def click():
        barrier.wait()
        return backfills.backfill_request(
            pipeline=shown.pipeline,
            environment=shown.environment,
            first=shown.first,
            last=shown.last,
            reprocess="missing",
            max_active_runs=1,
            reason="double click",
            fingerprint=shown.fingerprint,
            by=alice,
        )

    made, errors = at_once(click, click)
    assert len(made) == 1
    assert all(isinstance(e, backfills.BackfillError) for e in errors)
    assert [e.status for e in errors] == [409]
    assert Backfill.objects.count() == 1


def test_a_finished_backfill_does_not_count_later_runs(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice, reprocess="all")
    step(backfill)
    at = fresh(backfill).submitted_at
    dev = deployed["dev"]
    scheduled_run(dev, 1, run_type="backfill", queued_at=at)
    Backfill.objects.filter(id=backfill.id).update(
        state=State.CANCELLED, finished_at=at + timedelta(minutes=1)
    )
    # Later: a run-now-like scheduled run and another backfill's run in the same range.
    scheduled_run(dev, 2, queued_at=at + timedelta(minutes=5))
    scheduled_run(dev, 3, run_type="backfill", queued_at=at + timedelta(minutes=5))
    counts = backfills.progress(fresh(backfill))
    assert (counts["done"], counts["queued"]) == (1, 6)


# --- the end: decided and counted from Airflow's runs ------------------------------------------


def run_date(n: int) -> datetime:
    """The logical date of the run that loads 2026-11-<n> (its data interval start)."""
    return datetime(2026, 11, n, 2, tzinfo=UTC)


def first_chunk_done(deployed, alice, fake_airflow, settings) -> Backfill:
    """A week in chunks of 4 runs ("Everything"), whose first chunk succeeded in Airflow and
    was followed to its end: the next chunk is due."""
    settings.BACKFILL_CHUNK_RUNS = 4
    backfill = submit(deployed, alice, reprocess="all")
    step(backfill)
    for n in range(1, 5):
        fake_airflow.add_backfill_run(1, run_date(n), "success")
    fake_airflow.finish_backfill(1)
    due_now(backfill)
    step(backfill)
    return backfill


def test_the_end_is_decided_from_airflows_runs_not_the_synced_ones(
    deployed, alice, fake_airflow, settings
):
    backfill = first_chunk_done(deployed, alice, fake_airflow, settings)
    assert fresh(backfill).counted == {"done": 4, "failed": 0, "cancelled": 0, "running": 0}
    step(backfill)  # the second chunk
    for n, state in [(5, "success"), (6, "success"), (7, "failed")]:
        fake_airflow.add_backfill_run(2, run_date(n), state)
    fake_airflow.finish_backfill(2)
    due_now(backfill)
    # Nothing synced yet (no RunRecord at all): the last failed run still fails the backfill.
    step(backfill)
    ended = fresh(backfill)
    assert ended.state == State.FAILED
    assert ended.last_error.startswith("1 run(s) failed")
    assert backfills.progress(ended) == {
        "done": 6,
        "running": 0,
        "failed": 1,
        "cancelled": 0,
        "queued": 0,
        "runs": 7,
        "partitions": 7,
        "percent": 100,
    }


def test_runs_of_an_earlier_backfill_are_not_counted_at_the_end(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice, reprocess="all")
    step(backfill)
    # A run of the range from an earlier backfill, queued long before this one was submitted.
    fake_airflow.add_backfill_run(1, run_date(1), "failed", queued_at="2026-11-09T00:00:00+00:00")
    for n in range(2, 8):
        fake_airflow.add_backfill_run(1, run_date(n), "success")
    fake_airflow.finish_backfill(1)
    due_now(backfill)
    step(backfill)
    assert fresh(backfill).state == State.SUCCEEDED
    assert fresh(backfill).counted["done"] == 6


def test_a_finished_backfill_keeps_its_progress_when_a_later_one_reruns_its_runs(
    deployed, alice, fake_airflow
):
    first = submit(deployed, alice, reprocess="all")
    step(first)
    submitted = fresh(first).submitted_at
    dev = deployed["dev"]
    for n in range(1, 8):
        fake_airflow.add_backfill_run(1, run_date(n), "success")
        scheduled_run(dev, n, run_type="backfill", queued_at=submitted)
    fake_airflow.finish_backfill(1)
    due_now(first)
    step(first)
    assert fresh(first).state == State.SUCCEEDED
    # A later backfill re-runs all seven: their queued_at moves past the first one's end.
    RunRecord.objects.filter(dag_id=first.dag_id, run_type="backfill").update(
        queued_at=submitted + timedelta(hours=1), state="queued"
    )
    counts = backfills.progress(fresh(first))
    assert (counts["done"], counts["queued"], counts["percent"]) == (7, 0, 100)


def test_cancel_counts_unstarted_runs_as_cancelled_not_failed(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice, reprocess="all")
    step(backfill)
    fake_airflow.add_backfill_run(1, run_date(1), "success")
    fake_airflow.add_backfill_run(1, run_date(2), "running")
    for n in range(3, 8):
        fake_airflow.add_backfill_run(1, run_date(n), "queued")
    backfills.backfill_cancel(backfill_id=backfill.id, by=alice)
    step(backfill)
    ended = fresh(backfill)
    assert ended.state == State.CANCELLED
    counts = backfills.progress(ended)
    assert {k: counts[k] for k in ("done", "running", "failed", "cancelled", "queued")} == {
        "done": 1,
        "running": 1,  # Airflow lets a started run finish
        "failed": 0,
        "cancelled": 5,
        "queued": 0,
    }


def test_cancel_between_chunks_counts_the_chunks_never_submitted(
    deployed, alice, fake_airflow, settings
):
    backfill = first_chunk_done(deployed, alice, fake_airflow, settings)
    assert fresh(backfill).state == State.QUEUED
    backfills.backfill_cancel(backfill_id=backfill.id, by=alice)
    step(backfill)
    ended = fresh(backfill)
    assert (ended.state, ended.counted["done"], ended.counted["cancelled"]) == (
        State.CANCELLED,
        4,
        3,
    )
    assert len(fake_airflow.backfills) == 1


def test_cancel_after_airflow_completed_it_still_cancels(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice, reprocess="all")
    step(backfill)
    fake_airflow.finish_backfill(1)  # completed in Airflow, not yet seen by the portal
    backfills.backfill_cancel(backfill_id=backfill.id, by=alice)
    step(backfill)
    assert fresh(backfill).state == State.CANCELLED


def test_progress_of_synced_runs_tells_cancelled_from_failed(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice, reprocess="all")
    step(backfill)
    submitted = fresh(backfill).submitted_at
    dev = deployed["dev"]
    scheduled_run(dev, 1, "failed", run_type="backfill", queued_at=submitted)
    scheduled_run(dev, 2, "failed", run_type="backfill", queued_at=submitted, start_date=None)
    scheduled_run(dev, 3, "queued", run_type="backfill", queued_at=submitted, start_date=None)
    counts = backfills.progress(fresh(backfill))
    assert {k: counts[k] for k in ("failed", "cancelled", "running", "queued")} == {
        "failed": 1,
        "cancelled": 1,
        "running": 0,
        "queued": 5,
    }


# --- never lose track of Airflow: unknown creates, pauses, waits, leases -------------------------


def expire_lease(backfill: Backfill) -> None:
    """As when the worker holding the claim died: its lease runs out."""
    Backfill.objects.filter(id=backfill.id).update(
        lease_until=datetime(2026, 11, 10, 11, 59, tzinfo=UTC), next_attempt_at=None
    )


def test_a_lost_create_reply_is_adopted_never_created_again(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice)
    fake_airflow.lose_create_replies = 1  # Airflow made it; the answer never came back
    assert step(backfill) > 0
    lost = fresh(backfill)
    assert (lost.state, lost.airflow_backfill_id, lost.attempts) == (State.QUEUED, None, 1)
    assert lost.chunk_submitting_at is not None  # written before the create was sent
    assert "unreachable" in lost.last_error
    # Airflow queues the runs when it makes the backfill; the portal looks a minute later.
    sent = lost.chunk_submitting_at.isoformat()
    for n in range(1, 8):
        fake_airflow.add_backfill_run(1, run_date(n), "queued", queued_at=sent)
    due_now(backfill)
    with time_machine.travel(lost.chunk_submitting_at + timedelta(minutes=1), tick=False):
        assert step(backfill) == backfills.FOLLOW_SECONDS
    adopted = fresh(backfill)
    assert (adopted.state, adopted.airflow_backfill_id, adopted.chunk_submitting_at) == (
        State.RUNNING,
        1,
        None,
    )
    assert (adopted.attempts, adopted.last_error) == (0, "")
    # Its runs were queued after the create was sent, not after it was adopted: they count.
    assert adopted.submitted_at == lost.chunk_submitting_at
    assert fake_airflow.calls.count("backfill_create") == 1
    assert len(fake_airflow.backfills) == 1
    for run in fake_airflow.runs.values():
        run["state"] = "success"
    fake_airflow.finish_backfill(1)
    due_now(backfill)
    with time_machine.travel(lost.chunk_submitting_at + timedelta(minutes=5), tick=False):
        step(backfill)
    ended = fresh(backfill)
    assert (ended.state, ended.counted["done"]) == (State.SUCCEEDED, 7)


def test_a_create_that_failed_before_airflow_made_it_is_sent_again_once(
    deployed, alice, fake_airflow
):
    # An older backfill of the same range (an earlier request, long completed) is not ours.
    old = fake_airflow.backfill_create(
        "dev__orders_daily",
        datetime(2026, 11, 1, 2, tzinfo=UTC),
        datetime(2026, 11, 7, 2, tzinfo=UTC),
        reprocess="none",
        max_active_runs=1,
    )
    old.update(created_at="2026-11-09T08:00:00+00:00", completed_at="2026-11-09T09:00:00+00:00")
    # And one a little earlier than the clocks' skew allows for, completed before this one.
    recent = fake_airflow.backfill_create(
        "dev__orders_daily",
        datetime(2026, 11, 1, 2, tzinfo=UTC),
        datetime(2026, 11, 7, 2, tzinfo=UTC),
        reprocess="none",
        max_active_runs=1,
    )
    recent.update(created_at="2026-11-10T11:59:30+00:00", completed_at="2026-11-10T11:59:50+00:00")
    backfill = submit(deployed, alice)
    fake_airflow.down = True
    step(backfill)
    fake_airflow.down = False
    due_now(backfill)
    step(backfill)
    assert fake_airflow.calls.count("backfill_list") == 1  # looked before creating again
    assert len(fake_airflow.backfills) == 3
    assert fresh(backfill).airflow_backfill_id == 3


def test_a_step_that_outlived_its_lease_meets_the_next_one_adopting_its_create(
    deployed, alice, fake_airflow
):
    backfill = submit(deployed, alice)
    seen = {}

    def second_worker() -> None:  # runs while the first is inside its create
        expire_lease(backfill)
        seen["second"] = step(backfill)

    fake_airflow.during_create = second_worker
    assert step(backfill) is None  # the first one's answer came too late: fenced
    assert seen["second"] == backfills.FOLLOW_SECONDS
    row = fresh(backfill)
    assert (row.state, row.airflow_backfill_id, row.lease_token) == (State.RUNNING, 1, None)
    assert len(fake_airflow.backfills) == 1


def test_a_worker_killed_after_sending_the_create_is_adopted_by_the_next_claim(
    deployed, alice, fake_airflow
):
    backfill = submit(deployed, alice)
    # The first worker claimed, marked the chunk, sent the create (Airflow made it), and died.
    assert Backfill.claim(backfill.id) is not None
    Backfill.objects.filter(id=backfill.id).update(chunk_submitting_at=backfills.timezone.now())
    fake_airflow.backfill_create(
        "dev__orders_daily",
        datetime(2026, 11, 1, 2, tzinfo=UTC),
        datetime(2026, 11, 7, 2, tzinfo=UTC),
        reprocess="none",
        max_active_runs=1,
    )
    assert step(backfill) is None  # its lease still runs
    expire_lease(backfill)
    step(backfill)
    row = fresh(backfill)
    assert (row.state, row.airflow_backfill_id) == (State.RUNNING, 1)
    assert fake_airflow.calls.count("backfill_create") == 1  # the dead worker's only


def test_a_pause_while_the_create_is_unknown_pauses_what_airflow_made(
    deployed, alice, fake_airflow
):
    backfill = submit(deployed, alice)
    fake_airflow.lose_create_replies = 1
    step(backfill)
    backfills.backfill_pause(backfill_id=backfill.id, by=alice)
    step(backfill)
    paused = fresh(backfill)
    assert (paused.state, paused.airflow_backfill_id) == (State.PAUSED, 1)
    assert fake_airflow.backfills[1]["is_paused"]
    backfills.backfill_cancel(backfill_id=backfill.id, by=alice)
    step(backfill)
    assert fresh(backfill).state == State.CANCELLED
    assert fake_airflow.backfills[1]["completed_at"]
    assert len(fake_airflow.backfills) == 1


def test_pause_then_resume_before_the_first_chunk_carries_on(deployed, alice, fake_airflow):
    backfill = submit(deployed, alice)
    backfills.backfill_pause(backfill_id=backfill.id, by=alice)
    assert step(backfill) is None
    paused = fresh(backfill)
    assert (paused.state, paused.airflow_backfill_id) == (State.PAUSED, None)
    assert fake_airflow.calls == []  # the portal's state alone
    assert step(backfill) is None  # parked: not due again until resumed
    backfills.backfill_resume(backfill_id=backfill.id, by=alice)
    assert step(backfill) == backfills.FOLLOW_SECONDS
    running = fresh(backfill)
    assert (running.state, running.airflow_backfill_id, running.attempts) == (
        State.RUNNING,
        1,
        0,
    )
    fake_airflow.finish_backfill(1)
    due_now(backfill)
    step(backfill)
    assert fresh(backfill).state == State.SUCCEEDED


def test_a_pause_between_chunks_holds_the_next_chunk_until_resumed(
    deployed, alice, fake_airflow, settings
):
    backfill = first_chunk_done(deployed, alice, fake_airflow, settings)
    assert (fresh(backfill).state, fresh(backfill).airflow_backfill_id) == (State.QUEUED, None)
    backfills.backfill_pause(backfill_id=backfill.id, by=alice)
    step(backfill)
    assert fresh(backfill).state == State.PAUSED
    assert len(fake_airflow.backfills) == 1  # the next chunk is not submitted while paused
    assert "backfill_pause" not in fake_airflow.calls  # chunk 1 had completed: nothing to pause
    backfills.backfill_resume(backfill_id=backfill.id, by=alice)
    step(backfill)
    assert (fresh(backfill).state, fresh(backfill).airflow_backfill_id) == (State.RUNNING, 2)
    for n in (5, 6, 7):
        fake_airflow.add_backfill_run(2, run_date(n), "success")
    fake_airflow.finish_backfill(2)
    due_now(backfill)
    step(backfill)
    ended = fresh(backfill)
    assert (ended.state, ended.counted["done"]) == (State.SUCCEEDED, 7)


def test_a_pause_that_meets_a_chunk_airflow_just_completed_carries_on(
    deployed, alice, fake_airflow, settings
):
    settings.BACKFILL_CHUNK_RUNS = 4
    backfill = submit(deployed, alice, reprocess="all")
    step(backfill)
    for n in range(1, 5):
        fake_airflow.add_backfill_run(1, run_date(n), "success")
    fake_airflow.finish_backfill(1)  # completed in Airflow; the portal has not looked yet
    backfills.backfill_pause(backfill_id=backfill.id, by=alice)
    step(backfill)  # Airflow answers 409 to the pause
    assert fresh(backfill).state == State.PAUSED
    assert fresh(backfill).last_error == ""
    backfills.backfill_resume(backfill_id=backfill.id, by=alice)
    step(backfill)  # unpause: 409 again; followed to its end below
    due_now(backfill)
    step(backfill)
    assert (fresh(backfill).state, fresh(backfill).chunk_index) == (State.QUEUED, 1)
    step(backfill)
    assert (fresh(backfill).state, fresh(backfill).airflow_backfill_id) == (State.RUNNING, 2)
    for n in (5, 6, 7):
        fake_airflow.add_backfill_run(2, run_date(n), "success")
    fake_airflow.finish_backfill(2)
    due_now(backfill)
    step(backfill)
    ended = fresh(backfill)
    assert (ended.state, ended.counted["done"], len(fake_airflow.backfills)) == (
        State.SUCCEEDED,
        7,
        2,
    )


def test_waiting_for_another_backfill_of_the_dag_is_not_an_attempt(
    deployed, alice, fake_airflow, api_client
):
    theirs = fake_airflow.backfill_create(  # started in Airflow's UI
        "dev__orders_daily", day(1), day(2), reprocess="none", max_active_runs=1
    )
    backfill = submit(deployed, alice)
    for _ in range(3 * Backfill.retry_policy().max_attempts):
        due_now(backfill)
        assert step(backfill) == backfills.WAIT_SECONDS
    waiting = fresh(backfill)
    assert (waiting.state, waiting.attempts) == (State.QUEUED, 0)
    assert waiting.last_error.startswith("Waiting: Airflow's backfill 1 of dev__orders_daily")
    shown = api_client.get(f"/api/v1/backfills/{backfill.id}").json()
    assert (shown["state"], shown["error"]) == ("queued", waiting.last_error)
    api_client.force_login(alice)
    page = api_client.get(reverse("pipelines:backfill-detail", args=[backfill.id]))
    assert waiting.last_error in html.unescape(page.content.decode())
    theirs["completed_at"] = "2026-11-10T12:00:00+00:00"
    due_now(backfill)
    step(backfill)
    assert (fresh(backfill).state, fresh(backfill).airflow_backfill_id) == (State.RUNNING, 2)
    assert len(fake_airflow.backfills) == 2


def test_unreadable_credentials_end_the_step_with_that_reason(deployed, alice, monkeypatch):
    backfill = submit(deployed, alice)
    env = deployed["dev"].environment
    monkeypatch.delenv(env.airflow_password_env, raising=False)
    monkeypatch.setenv(env.airflow_username_env, "portal")
    assert step(backfill) is None
    ended = fresh(backfill)
    assert ended.state == State.FAILED
    assert ended.last_error == (
        f"The credentials of Dev's Airflow cannot be read: {env.airflow_password_env} is not "
        "set in the portal's environment. Nothing of this chunk was sent to Airflow."
    )
    assert ended.attempts == 1
    assert step(backfill) is None  # ended: no loop


def test_a_credential_variable_outside_the_prefix_ends_the_step_too(deployed, alice, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://portal:s3cret@db/portal")
    backfill = submit(deployed, alice)
    env = deployed["dev"].environment
    type(env).objects.filter(id=env.id).update(airflow_password_env="DATABASE_URL")
    assert step(backfill) is None
    ended = fresh(backfill)
    assert ended.state == State.FAILED
    assert ended.last_error.startswith(
        "The credentials of Dev's Airflow cannot be read: “DATABASE_URL”"
    )
    assert "s3cret" not in ended.last_error
