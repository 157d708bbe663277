"""The outbox base's guarantees: claim, fenced finish, waits that are not attempts, backoff, the
attempt cap, robust enqueueing and the one sweep. First on Deployment, then on every subclass
(Deployment, RunRequest, AlertDelivery) where what the user sees differs: the retry policy, the
failed state and the error text the attempt cap leaves."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.core import outbox
from pipelines.core import tasks as core_tasks
from pipelines.core.outbox import Outbox, RetryPolicy
from pipelines.deployments import tasks as deploy_tasks
from pipelines.models import Alert, AlertDelivery, Backfill, Deployment, RunRequest
from tests.conftest import pipeline_payload

NOW = timezone.now()


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
    assert (done.state, done.error, done.lease_token) == ("deployed", "", None)
    assert done.last_error == outbox.LEASE_EXPIRED  # why it was claimed a second time


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


# --- Every subclass ----------------------------------------------------------------------------


def make_run_request(deployment: Deployment, partition: str = "2026-11-20") -> RunRequest:
    return RunRequest.objects.create(
        pipeline=deployment.version.pipeline,
        environment=deployment.environment,
        partition=partition,
        dag_id=deployment.dag_id,
        dag_run_id=f"portal__{partition}__0123456789ab",
        logical_date=NOW,
        requested_by=deployment.requested_by,
    )


def make_backfill(deployment: Deployment) -> Backfill:
    return Backfill.objects.create(
        pipeline=deployment.version.pipeline,
        environment=deployment.environment,
        dag_id=deployment.dag_id,
        first_partition="2026-11-01",
        last_partition="2026-11-07",
        from_date=NOW,
        to_date=NOW,
        reprocess="missing",
        reason="test",
        fingerprint="0" * 64,
        partitions=7,
        runs=7,
        chunks=[[NOW.isoformat(), NOW.isoformat()]],
        requested_by=deployment.requested_by,
    )


def make_alert_delivery(deployment: Deployment) -> AlertDelivery:
    pipeline = deployment.version.pipeline
    alert, _ = Alert.objects.get_or_create(
        key=Alert.key_for(pipeline.id, deployment.environment_id, "run_failed"),
        pipeline=pipeline,
        environment=deployment.environment,
        team=pipeline.team,
        kind="run_failed",
        severity="page",
        summary="Last run failed after all retries.",
        portal_url="http://127.0.0.1:8000/pipelines/orders-daily/",
        opened_at=NOW,
        last_seen_at=NOW,
    )
    return AlertDelivery.objects.create(
        alert=alert, event="opened", channel="email", target="oncall@example.com"
    )


@pytest.fixture
def rows(row) -> dict[type[Outbox], Outbox]:
    """One pending row of each outbox model (nothing enqueued)."""
    return {
        Deployment: row,
        RunRequest: make_run_request(row),
        AlertDelivery: make_alert_delivery(row),
        Backfill: make_backfill(row),
    }


MODELS = [Deployment, RunRequest, AlertDelivery, Backfill]


@pytest.fixture
def swept(monkeypatch) -> list[tuple[str, int]]:
    """What the sweep sends, (task, id), instead of the broker."""
    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(outbox, "_send", lambda task, pk, countdown: sent.append((task, pk)))
    return sent


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_outbox_finish_is_fenced_by_the_lease_token(rows, model):
    pk = rows[model].pk
    stale = model.claim(pk)
    model.objects.filter(pk=pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    current = model.claim(pk)
    assert model.finish(pk, current, state=model.OUTBOX_FAILED, last_error="rejected")
    assert not model.finish(pk, stale, state="pending", last_error="late")
    assert model.release(pk, stale, error="late") is None
    done = model.objects.get(pk=pk)
    assert (done.state, done.last_error, done.lease_token) == (
        model.OUTBOX_FAILED,
        "rejected",
        None,
    )
    assert model.claim(pk) is None


@pytest.mark.parametrize(
    ("model", "waits"),
    [
        (Deployment, [2, 4, 8, 16, 32, 64, 128]),  # DEPLOY_BACKOFF_FIRST/MAX_SECONDS
        (RunRequest, [1, 2, 4, 8, 16, 32, 64]),  # as Celery's retry_backoff did
        (AlertDelivery, [30, 60, 120, 240, 480, 600, 600]),
        (Backfill, [5, 10, 20, 40, 80, 160, 320]),
    ],
    ids=lambda p: p.__name__ if isinstance(p, type) else "",
)
def test_every_outbox_backs_off_exponentially_between_attempts(rows, model, waits, settings):
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = settings.DEPLOY_MAX_ATTEMPTS = 20
    pk, got = rows[model].pk, []
    for _ in waits:
        model.objects.filter(pk=pk).update(next_attempt_at=timezone.now())
        got.append(model.release(pk, model.claim(pk), error="unreachable"))
    assert got == waits
    retrying = model.objects.get(pk=pk)
    assert (retrying.state, retrying.last_error, retrying.attempts) == (
        model.OUTBOX_CLAIMABLE[0],
        "unreachable",
        len(waits),
    )
    assert model.claim(pk) is None  # not before the backoff ends
    with time_machine.travel(timezone.now() + timedelta(seconds=waits[-1] + 1), tick=False):
        assert model.claim(pk) is not None


@pytest.mark.parametrize(
    ("model", "cap", "shown"),
    [
        (Deployment, 10, "Gave up after 10 attempts. Last error: unreachable (10)"),
        (RunRequest, 11, "Gave up after 11 attempts. Last error: unreachable (11)"),
        (AlertDelivery, 8, "Gave up: unreachable (8)"),
        (Backfill, 12, "Gave up after 12 attempts. Last error: unreachable (12)"),
    ],
    ids=lambda p: p.__name__ if isinstance(p, type) else "",
)
def test_every_outbox_attempt_cap_ends_the_row_failed_with_the_last_error(rows, model, cap, shown):
    pk = rows[model].pk
    assert model.retry_policy().max_attempts == cap  # the defaults (settings, constants)
    for attempt in range(1, cap + 1):
        model.objects.filter(pk=pk).update(next_attempt_at=timezone.now())
        left = model.release(pk, model.claim(pk), error=f"unreachable ({attempt})")
        assert (left is None) == (attempt == cap)
    failed = model.objects.get(pk=pk)
    assert (failed.state, failed.attempts, failed.lease_token) == ("failed", cap, None)
    assert failed.error == shown  # what the page, the API and the admin show
    assert model.claim(pk) is None
    model.objects.filter(pk=pk).update(next_attempt_at=timezone.now())
    assert outbox.sweep(now=timezone.now() + timedelta(hours=1))[model._meta.label] == 0


def test_sweep_covers_every_outbox_model_and_only_overdue_unleased_rows(rows, swept):
    assert set(outbox.outbox_models()) == {Deployment, RunRequest, AlertDelivery, Backfill}
    assert all(issubclass(m, Outbox) for m in outbox.outbox_models())
    none = {
        "pipelines.Deployment": 0,
        "pipelines.RunRequest": 0,
        "pipelines.AlertDelivery": 0,
        "pipelines.Backfill": 0,
    }
    assert outbox.sweep() == none  # too fresh: their own enqueue goes first
    later = timezone.now() + outbox.SWEEP_GRACE + timedelta(seconds=1)
    assert outbox.sweep(now=later) == dict.fromkeys(none, 1)
    assert sorted(swept) == [
        ("pipelines.tasks.alert_deliver", rows[AlertDelivery].pk),
        ("pipelines.tasks.backfill_step", rows[Backfill].pk),
        ("pipelines.tasks.deployment_run", rows[Deployment].pk),
        ("pipelines.tasks.run_submit", rows[RunRequest].pk),
    ]
    for model in MODELS:
        model.claim(rows[model].pk)  # a worker holds each: the sweep leaves them alone …
    assert outbox.sweep(now=later) == none
    longest = max(model.lease_seconds() for model in MODELS)
    expired = timezone.now() + timedelta(seconds=longest + 1) + outbox.SWEEP_GRACE
    assert outbox.sweep(now=expired) == dict.fromkeys(none, 1)  # … until their leases end
    for model, state in [
        (Deployment, "deployed"),
        (RunRequest, "submitted"),
        (AlertDelivery, "sent"),
        (Backfill, "succeeded"),
    ]:
        model.objects.filter(pk=rows[model].pk).update(
            state=state, lease_token=None, lease_until=None, next_attempt_at=None
        )
    assert outbox.sweep(now=expired) == none  # finished rows are never sent again


def test_the_beat_task_runs_the_sweep(row, monkeypatch):
    swept = []
    monkeypatch.setattr(outbox, "sweep", lambda **kw: swept.append(kw) or {})
    core_tasks.outbox_sweep()
    assert swept == [{}]


def test_enqueue_sends_on_commit_and_survives_a_broker_outage(
    row, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    from kombu.exceptions import OperationalError

    sent = []
    monkeypatch.setattr(
        deploy_tasks.deployment_run,
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

    monkeypatch.setattr(deploy_tasks.deployment_run, "apply_async", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        Deployment.enqueue(row.id)  # nothing raised
    assert "the outbox sweep will" in caplog.text


# --- The migration onto the base (0010) ---------------------------------------------------------

BEFORE = [("pipelines", "0009_deploy_outbox")]
AFTER = [("pipelines", "0010_runs_alerts_outbox")]


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_what_old_run_requests_and_deliveries_meant(row, swept):
    created = timezone.now() - timedelta(minutes=5)
    retry_at = timezone.now() + timedelta(seconds=90)
    waiting, failed, sent = (make_alert_delivery(row) for _ in range(3))
    retrying = make_alert_delivery(row)
    submitting, following = make_run_request(row), make_run_request(row, "2026-11-21")
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    old_deliveries = old.get_model("pipelines", "AlertDelivery").objects
    old_runs = old.get_model("pipelines", "RunRequest").objects
    old_deliveries.update(created_at=created)
    old_deliveries.filter(id=retrying.id).update(  # old style: the lease was the backoff
        attempts=2, lease_until=retry_at, error="OSError: refused"
    )
    old_deliveries.filter(id=failed.id).update(
        state="failed", attempts=8, error="Gave up: OSError: refused"
    )
    old_deliveries.filter(id=sent.id).update(state="sent", attempts=1, sent_at=created)
    old_runs.filter(id=submitting.id).update(  # a worker holds it, Airflow was down before
        attempts=3, lease_until=retry_at, error="Airflow unreachable"
    )
    old_runs.filter(id=following.id).update(
        state="submitted", run_state="failed", attempts=1, error="load_partition failed"
    )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    def outbox_columns(model, pk):
        return model.objects.values_list(
            "state", "attempts", "lease_token", "lease_until", "next_attempt_at", "last_error"
        ).get(pk=pk)

    assert outbox_columns(AlertDelivery, waiting.id) == ("pending", 0, None, None, created, "")
    assert outbox_columns(AlertDelivery, retrying.id) == (
        "pending",
        2,
        None,
        None,
        retry_at,
        "OSError: refused",
    )
    assert outbox_columns(AlertDelivery, failed.id) == (
        "failed",
        8,
        None,
        None,
        None,
        "Gave up: OSError: refused",
    )
    assert outbox_columns(AlertDelivery, sent.id) == ("sent", 1, None, None, None, "")
    assert outbox_columns(RunRequest, submitting.id) == (
        "pending",
        3,
        None,
        None,
        retry_at,
        "Airflow unreachable",
    )
    assert outbox_columns(RunRequest, following.id) == (
        "submitted",
        1,
        None,
        None,
        None,
        "load_partition failed",
    )
    assert RunRequest.objects.get(id=following.id).error == "load_partition failed"
    # Due as before: the waiting delivery now, the others not before their old lease ended.
    assert AlertDelivery.claim(waiting.id) is not None
    assert AlertDelivery.claim(retrying.id) is None
    assert RunRequest.claim(submitting.id) is None
    with time_machine.travel(retry_at + timedelta(seconds=1), tick=False):
        assert AlertDelivery.claim(retrying.id) is not None
        assert RunRequest.claim(submitting.id) is not None
    due = outbox.sweep(now=retry_at + timedelta(hours=1))  # the leases taken above ran out
    assert (due["pipelines.AlertDelivery"], due["pipelines.RunRequest"]) == (2, 1)
    assert ("pipelines.tasks.alert_deliver", failed.id) not in swept


# --- the lease outlasts the task; a step that never came back counts ----------------------------


@pytest.mark.parametrize("hard_limit", [300, 900, 30])
def test_every_outbox_lease_outlasts_celerys_hard_time_limit(rows, settings, hard_limit):
    settings.CELERY_TASK_TIME_LIMIT = hard_limit
    assert settings.OUTBOX_LEASE_MARGIN_SECONDS >= 30
    floor = hard_limit + settings.OUTBOX_LEASE_MARGIN_SECONDS
    assert set(outbox.outbox_models()) == set(MODELS)  # a new outbox model is checked too
    for model in outbox.outbox_models():
        assert model.lease_seconds() >= floor, model
        pk = rows[model].pk
        before = timezone.now()
        token = model.claim(pk)
        assert token is not None
        held = model.objects.get(pk=pk).lease_until - before
        assert held >= timedelta(seconds=floor), model


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_step_that_never_released_its_claim_counts_and_ends_failed_at_the_cap(rows, model):
    """A worker killed mid-step (or a step that raised before its try) leaves the claim to
    expire: each such claim is an attempt, and the claim past the cap ends the row failed,
    saying why, instead of taking it for ever."""
    pk, cap = rows[model].pk, model.retry_policy().max_attempts
    for attempt in range(1, cap + 1):
        assert model.claim(pk) is not None, attempt
        assert model.objects.get(pk=pk).attempts == attempt
        model.objects.filter(pk=pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert model.claim(pk) is None  # the one past the cap
    failed = model.objects.get(pk=pk)
    assert (failed.state, failed.attempts, failed.lease_token) == ("failed", cap, None)
    assert outbox.LEASE_EXPIRED in failed.error
    assert model.claim(pk) is None
    assert outbox.sweep(now=timezone.now() + timedelta(days=1))[model._meta.label] == 0
