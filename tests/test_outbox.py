"""The outbox base's guarantees, on its first concrete model (Deployment): claim, fenced finish,
waits that are not attempts, backoff, the attempt cap, robust enqueueing and the one sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from pipelines import tasks
from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.core import outbox
from pipelines.core.outbox import Outbox, RetryPolicy
from pipelines.models import Deployment
from tests.conftest import pipeline_payload


@pytest.fixture
def row(alice, orders, environments) -> Deployment:
    """A pending deployment row, made without enqueueing anything."""
    form = PipelineForm(pipeline_payload(), user=alice)
    assert form.is_valid(), form.errors
    pipeline = services.pipeline_create(spec=form.spec, by=alice)
    return Deployment.objects.create(
        version=pipeline.versions.get(),
        environment=environments["dev"],
        dag_id="orders_daily",
        code="",
        code_sha256="",
        requested_by=alice,
    )


def fresh(row: Deployment) -> Deployment:
    row.refresh_from_db()
    return row


def test_claim_lets_one_worker_in(row):
    token = Deployment.claim(row.id)
    assert token is not None
    assert Deployment.claim(row.id) is None  # the lease is live
    claimed = fresh(row)
    assert (claimed.lease_token, claimed.attempts) == (token, 1)
    assert claimed.lease_until > timezone.now()


def test_an_expired_lease_can_be_claimed_again(row):
    first = Deployment.claim(row.id)
    Deployment.objects.filter(id=row.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    second = Deployment.claim(row.id)
    assert second not in (None, first)
    assert fresh(row).attempts == 2


def test_finish_is_fenced_by_the_lease_token(row):
    stale = Deployment.claim(row.id)
    Deployment.objects.filter(id=row.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    current = Deployment.claim(row.id)
    assert Deployment.finish(row.id, current, state="deployed")
    assert not Deployment.finish(row.id, stale, state="failed", error="late")
    assert Deployment.release(row.id, stale, error="late") is None
    assert Deployment.release(row.id, stale, delay=1) is None
    done = fresh(row)
    assert (done.state, done.error, done.last_error, done.lease_token) == ("deployed", "", "", None)


def test_finished_rows_are_not_claimed(row):
    Deployment.finish(row.id, Deployment.claim(row.id), state="deployed")
    assert Deployment.claim(row.id) is None


def test_a_wait_is_not_an_attempt_and_is_not_claimable_before_it_is_due(row):
    token = Deployment.claim(row.id)
    assert Deployment.release(row.id, token, delay=5) == 5
    waiting = fresh(row)
    assert (waiting.attempts, waiting.lease_token, waiting.last_error) == (0, None, "")
    assert Deployment.claim(row.id) is None
    with time_machine.travel(timezone.now() + timedelta(seconds=6), tick=False):
        assert Deployment.claim(row.id) is not None


def test_transient_errors_back_off_exponentially_up_to_a_cap(row, settings):
    settings.DEPLOY_MAX_ATTEMPTS = 20
    settings.DEPLOY_BACKOFF_FIRST_SECONDS = 2
    settings.DEPLOY_BACKOFF_MAX_SECONDS = 30
    waits = []
    for _ in range(6):
        Deployment.objects.filter(id=row.id).update(next_attempt_at=timezone.now())
        token = Deployment.claim(row.id)
        waits.append(Deployment.release(row.id, token, error="Airflow unreachable"))
    assert waits == [2, 4, 8, 16, 30, 30]
    retrying = fresh(row)
    assert (retrying.state, retrying.last_error) == ("pending", "Airflow unreachable")
    assert retrying.next_attempt_at > timezone.now() + timedelta(seconds=29)


def test_the_attempt_cap_ends_the_row_failed_with_the_last_error(row, settings):
    settings.DEPLOY_MAX_ATTEMPTS = 3
    for attempt in range(1, 4):
        Deployment.objects.filter(id=row.id).update(next_attempt_at=timezone.now())
        token = Deployment.claim(row.id)
        Deployment.release(row.id, token, error=f"OSError: disk full ({attempt})")
    failed = fresh(row)
    assert failed.state == "failed"
    assert failed.error == "Gave up after 3 attempts. Last error: OSError: disk full (3)"
    assert failed.finished_at is not None
    assert Deployment.claim(row.id) is None


def test_policy_backoff():
    policy = RetryPolicy(backoff_first_s=1, backoff_max_s=10)
    assert [policy.backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_sweep_covers_every_outbox_model_and_only_overdue_unleased_rows(row, monkeypatch):
    assert Deployment in outbox.outbox_models()
    assert all(issubclass(m, Outbox) for m in outbox.outbox_models())
    sent = []
    monkeypatch.setattr(outbox, "_send", lambda task, pk, countdown: sent.append((task, pk)))
    assert outbox.sweep() == {"pipelines.Deployment": 0}  # too fresh: its own enqueue goes first
    later = timezone.now() + outbox.SWEEP_GRACE + timedelta(seconds=1)
    assert outbox.sweep(now=later) == {"pipelines.Deployment": 1}
    assert sent == [("pipelines.tasks.deployment_run", row.id)]
    Deployment.claim(row.id)  # a worker holds it: the sweep leaves it alone …
    assert outbox.sweep(now=later) == {"pipelines.Deployment": 0}
    expired = timezone.now() + timedelta(seconds=Deployment.retry_policy().lease_s + 30)
    assert outbox.sweep(now=expired) == {"pipelines.Deployment": 1}  # … until its lease ends


def test_the_beat_task_runs_the_sweep(row, monkeypatch):
    swept = []
    monkeypatch.setattr(outbox, "sweep", lambda **kw: swept.append(kw) or {})
    tasks.outbox_sweep()
    assert swept == [{}]


def test_enqueue_sends_on_commit_and_survives_a_broker_outage(
    row, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    from kombu.exceptions import OperationalError

    sent = []
    monkeypatch.setattr(
        tasks.deployment_run,
        "apply_async",
        lambda args, countdown=None: sent.append((args, countdown)),
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        Deployment.enqueue(row.id, countdown=1.5)
    assert sent == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert sent == [([row.id], 1.5)]

    def refuse(*args, **kwargs):
        raise OperationalError("Connection refused")

    monkeypatch.setattr(tasks.deployment_run, "apply_async", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        Deployment.enqueue(row.id)  # nothing raised
    assert "the outbox sweep will" in caplog.text
