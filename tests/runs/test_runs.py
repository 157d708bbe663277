"""Run now: allowed partitions, one active request per partition, refresh throttle, lost runs."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import IntegrityError, transaction
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st

from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.core import schedule
from pipelines.deployments import services as deploy
from pipelines.models import Deployment, RunRequest
from pipelines.runs import services as runs
from pipelines.runs import tasks
from tests.conftest import pipeline_payload
from tests.threads import at_once

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)  # 2026-11-24 01:00 in Auckland
RUNS = "/api/v1/pipelines/orders-daily/runs"


def naive(*args):
    return datetime(*args)  # noqa: DTZ001 - partitions are wall-clock times


def post(client, body):
    return client.post(RUNS, json.dumps(body), content_type="application/json")


def deployed_pipeline(alice, environments, **payload):
    form = PipelineForm(pipeline_payload(**payload), user=alice)
    assert form.is_valid(), form.errors
    pipeline = services.pipeline_create(spec=form.spec, by=alice)
    d = deploy.deployment_request(
        version=pipeline.versions.get(), environment=environments["dev"], by=alice
    )
    deploy.deployment_run(deployment_id=d.id)
    assert Deployment.objects.get(id=d.id).state == "deployed"
    return pipeline


@pytest.fixture
def pipeline(alice, orders, environments, fake_airflow):
    return deployed_pipeline(alice, environments)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def enqueued(monkeypatch):
    """The refresh tasks the web process would send to the broker."""
    sent: list[int] = []
    monkeypatch.setattr(tasks.run_refresh, "delay", lambda run_id: sent.append(run_id))
    return sent


# --- Which partitions may run ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("partition", "message"),
    [
        ("0001-01-01", "0001-01-01 is before the pipeline's start date"),
        ("2019-12-31", "2019-12-31 is before the pipeline's start date"),
        ("2026-11-23", "2026-11-23 is not complete yet in UTC"),
        ("2999-01-01", "2999-01-01 is not complete yet in UTC"),
    ],
)
def test_run_now_refuses_partitions_outside_start_date_to_latest_complete(
    api_client, pipeline, frozen, partition, message
):
    response = post(api_client, {"environment": "dev", "partition": partition})
    assert response.status_code == 422
    (error,) = response.json()["errors"]["partition"]
    assert message in error
    assert "choose one from 2020-01-01 to 2026-11-22" in error
    assert not RunRequest.objects.exists()


@pytest.mark.parametrize("partition", ["2020-01-01", "2026-11-22"])
def test_run_now_accepts_the_first_and_the_latest_complete_partition(
    api_client, pipeline, frozen, partition
):
    response = post(api_client, {"environment": "dev", "partition": partition})
    assert response.status_code == 202, response.content
    assert RunRequest.objects.get().partition == partition


def test_latest_complete_partition_is_read_in_the_pipeline_zone(
    alice, orders, environments, fake_airflow, frozen
):
    # At 12:00 UTC on the 23rd it is already the 24th in Auckland: the 23rd is complete there.
    pipeline = deployed_pipeline(alice, environments, timezone="Pacific/Auckland")
    run, created = runs.run_request(
        pipeline=pipeline,
        environment=environments["dev"],
        partition=naive(2026, 11, 23),
        by=alice,
    )
    assert created
    assert run.partition == "2026-11-23"
    with pytest.raises(runs.RunError, match=r"2026-11-24 is not complete yet in Pacific/Auckland"):
        runs.run_request(
            pipeline=pipeline,
            environment=environments["dev"],
            partition=naive(2026, 11, 24),
            by=alice,
        )


def test_page_shows_the_allowed_range_next_to_the_partition_field(client, alice, pipeline, frozen):
    client.force_login(alice)
    response = client.post(
        reverse("pipelines:run-create", args=[pipeline.slug]),
        {"environment": "dev", "partition": "0001-01-01"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "0001-01-01 is before the pipeline&#x27;s start date" in html
    assert "2020-01-01 to 2026-11-22" in html
    assert not RunRequest.objects.exists()


@given(
    moment=st.datetimes(min_value=naive(1, 1, 1), max_value=naive(9999, 12, 31, 23)),
    grain=st.sampled_from(["day", "hour"]),
)
def test_partitions_are_written_as_zero_padded_iso_and_read_back(moment, grain):
    start = moment.replace(minute=0, second=0, microsecond=0)
    if grain == "day":
        start = start.replace(hour=0)
    text = schedule.format_partition(start, grain)
    assert len(text) == (16 if grain == "hour" else 10)
    assert text[:10] == start.date().isoformat()
    assert schedule.parse_partition(text, grain) == start


# --- One active request per partition --------------------------------------------------------


def test_run_now_twice_answers_the_active_request(api_client, pipeline, fake_airflow, frozen):
    body = {"environment": "dev", "partition": "2026-11-20"}
    first = post(api_client, body)
    second = post(api_client, body)
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert RunRequest.objects.count() == 1

    run = RunRequest.objects.get()
    runs.run_submit(run_request_id=run.id)
    assert post(api_client, body).json()["id"] == run.id  # still running in Airflow
    (key,) = fake_airflow.runs
    fake_airflow.runs[key]["state"] = "success"
    runs.run_refresh(run_request_id=run.id)
    again = post(api_client, body)  # the run finished: asking again is a new run
    assert again.status_code == 202
    assert again.json()["id"] != run.id
    assert RunRequest.objects.count() == 2


def test_other_partitions_and_environments_are_separate_requests(
    alice, pipeline, environments, fake_airflow, frozen
):
    deploy.deployment_run(
        deployment_id=deploy.deployment_request(
            version=pipeline.versions.get(), environment=environments["stage"], by=alice
        ).id
    )
    made = [
        runs.run_request(pipeline=pipeline, environment=environments[env], partition=day, by=alice)
        for env, day in [
            ("dev", naive(2026, 11, 20)),
            ("dev", naive(2026, 11, 21)),
            ("stage", naive(2026, 11, 20)),
        ]
    ]
    assert all(created for _, created in made)
    assert RunRequest.objects.count() == 3


def test_one_active_request_per_partition_is_enforced_by_the_database(
    alice, pipeline, environments, frozen
):
    run, _ = runs.run_request(
        pipeline=pipeline,
        environment=environments["dev"],
        partition=naive(2026, 11, 20),
        by=alice,
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        RunRequest.objects.create(
            pipeline=pipeline,
            environment=run.environment,
            partition=run.partition,
            dag_id=run.dag_id,
            dag_run_id="portal__another",
            logical_date=NOW,
            requested_by=alice,
        )
    RunRequest.objects.filter(id=run.id).update(state=RunRequest.State.FAILED)
    again, created = runs.run_request(
        pipeline=pipeline,
        environment=environments["dev"],
        partition=naive(2026, 11, 20),
        by=alice,
    )
    assert created  # a request that failed to submit is not active: a new one may start


@pytest.mark.django_db(transaction=True)
def test_two_requests_at_once_make_one_run(alice, orders, environments, fake_airflow, tasks_unsent):
    pipeline = deployed_pipeline(alice, environments)
    barrier = threading.Barrier(2)

    def click():
        barrier.wait()
        return runs.run_request(
            pipeline=pipeline,
            environment=environments["dev"],
            partition=naive(2026, 11, 20),
            by=alice,
        )

    results, errors = at_once(click, click)
    assert not errors
    assert sorted(created for _, created in results) == [False, True]
    assert len({run.id for run, _ in results}) == 1
    assert RunRequest.objects.count() == 1


def test_page_double_click_shows_the_one_run(client, alice, pipeline, fake_airflow, frozen):
    client.force_login(alice)
    url = reverse("pipelines:run-create", args=[pipeline.slug])
    for _ in range(2):
        response = client.post(
            url, {"environment": "dev", "partition": "2026-11-20"}, HTTP_HX_REQUEST="true"
        )
        assert response.status_code == 200
    run = RunRequest.objects.get()
    assert response.content.decode().count(f'id="run-{run.id}"') == 1


# --- Following the run -----------------------------------------------------------------------


def submitted(alice, pipeline, environments) -> RunRequest:
    run, _ = runs.run_request(
        pipeline=pipeline,
        environment=environments["dev"],
        partition=naive(2026, 11, 20),
        by=alice,
    )
    runs.run_submit(run_request_id=run.id)
    run.refresh_from_db()
    assert run.state == RunRequest.State.SUBMITTED
    return run


def test_polls_within_the_refresh_window_enqueue_one_refresh(
    api_client, alice, pipeline, environments, frozen, enqueued
):
    run = submitted(alice, pipeline, environments)
    for _ in range(10):
        assert api_client.get(f"/api/v1/runs/{run.id}").status_code == 200
    assert enqueued == [run.id]
    frozen.shift(runs.REFRESH_AFTER)
    for _ in range(10):
        api_client.get(f"/api/v1/runs/{run.id}")
    assert enqueued == [run.id, run.id]


def test_page_polls_enqueue_one_refresh_per_window(
    client, alice, pipeline, environments, frozen, enqueued
):
    run = submitted(alice, pipeline, environments)
    client.force_login(alice)
    for _ in range(5):
        html = client.get(reverse("pipelines:runs", args=[pipeline.slug])).content.decode()
    assert enqueued == [run.id]
    assert "every 2s" in html  # still running: the table keeps polling


def test_the_polled_runs_table_reads_only_the_runs(
    client, alice, pipeline, environments, frozen, enqueued, django_assert_num_queries
):
    run = submitted(alice, pipeline, environments)
    client.force_login(alice)
    url = reverse("pipelines:runs", args=[pipeline.slug])
    client.get(url)  # claims this window's refresh

    # Session, user, the pipeline, its newest runs, the active run's refresh claim (taken).
    with django_assert_num_queries(5):
        html = client.get(url).content.decode()

    assert f'id="run-{run.id}"' in html
    assert "every 2s" in html
    assert enqueued == [run.id]
    assert client.get(reverse("pipelines:runs", args=["no-such-pipeline"])).status_code == 404


def test_a_run_airflow_no_longer_knows_ends_and_is_not_polled(
    client, alice, pipeline, environments, fake_airflow, frozen, enqueued
):
    run = submitted(alice, pipeline, environments)
    fake_airflow.runs.clear()  # Airflow's database was reset
    runs.run_refresh(run_request_id=run.id)
    run.refresh_from_db()
    assert run.state == RunRequest.State.UNTRACKED
    assert "Airflow no longer knows this run" in run.error
    assert not run.is_active
    assert runs.runs_refresh_active() == 0  # the beat does not follow it either
    frozen.shift(timedelta(minutes=1))
    runs.refresh_if_stale(run)
    assert enqueued == []
    client.force_login(alice)
    html = client.get(reverse("pipelines:runs", args=[pipeline.slug])).content.decode()
    assert "every 2s" not in html
    assert "no longer followed" in html
    again, created = runs.run_request(  # the partition may be asked for again
        pipeline=pipeline,
        environment=environments["dev"],
        partition=naive(2026, 11, 20),
        by=alice,
    )
    assert created


def test_updates_bump_updated_at(alice, pipeline, environments, fake_airflow, frozen):
    run = submitted(alice, pipeline, environments)
    frozen.shift(timedelta(seconds=30))
    runs.run_refresh(run_request_id=run.id)
    run.refresh_from_db()
    assert run.updated_at == NOW + timedelta(seconds=30)


def test_an_unexpected_error_in_submit_releases_the_claim(
    alice, pipeline, environments, fake_airflow, frozen, monkeypatch
):
    run, _ = runs.run_request(
        pipeline=pipeline,
        environment=environments["dev"],
        partition=naive(2026, 11, 20),
        by=alice,
    )

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(fake_airflow, "trigger_run", broken)
    with pytest.raises(RuntimeError):
        runs.run_submit(run_request_id=run.id)
    run.refresh_from_db()
    assert run.lease_until is None
    assert run.state == RunRequest.State.PENDING
    assert "an internal error (reference" in run.error
    assert "a bug" not in run.error


# --- The request is an outbox row (core/outbox.py) -------------------------------------------


def pending(alice, pipeline, environments) -> RunRequest:
    run, _ = runs.run_request(
        pipeline=pipeline,
        environment=environments["dev"],
        partition=naive(2026, 11, 20),
        by=alice,
    )
    return run


def test_submit_retries_an_unreachable_airflow_with_backoff_then_fails_the_request(
    api_client, alice, pipeline, environments, fake_airflow, frozen
):
    run = pending(alice, pipeline, environments)
    fake_airflow.down = True
    waits = []
    while (wait := runs.run_submit(run_request_id=run.id)) is not None:
        waits.append(wait)
        assert runs.run_submit(run_request_id=run.id) is None  # not due before the backoff
        frozen.shift(timedelta(seconds=wait))
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert fake_airflow.calls.count("trigger_run") == 11
    got = api_client.get(f"/api/v1/runs/{run.id}").json()
    assert got["state"] == "failed"
    assert got["error"] == (
        "Gave up after 11 attempts. Last error: "
        "Airflow at http://airflow.invalid is unreachable: refused"
    )
    fake_airflow.down = False
    again, created = runs.run_request(  # a request that failed to submit is not active
        pipeline=pipeline, environment=environments["dev"], partition=naive(2026, 11, 20), by=alice
    )
    assert created


def test_an_unreachable_airflow_shows_on_the_pending_request_until_it_submits(
    alice, pipeline, environments, fake_airflow, frozen
):
    run = pending(alice, pipeline, environments)
    fake_airflow.down = True
    assert runs.run_submit(run_request_id=run.id) == 1
    run.refresh_from_db()
    assert (run.state, run.error) == (
        "pending",
        "Airflow at http://airflow.invalid is unreachable: refused",
    )
    fake_airflow.down = False
    frozen.shift(timedelta(seconds=1))
    assert runs.run_submit(run_request_id=run.id) is None
    run.refresh_from_db()
    assert (run.state, run.run_state, run.error, run.attempts) == ("submitted", "queued", "", 2)


def test_the_submit_task_enqueues_its_retry_after_the_backoff(
    alice,
    pipeline,
    environments,
    fake_airflow,
    frozen,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    run = pending(alice, pipeline, environments)
    fake_airflow.down = True
    sent = []
    monkeypatch.setattr(
        tasks.run_submit, "apply_async", lambda args, countdown=None: sent.append((args, countdown))
    )
    with django_capture_on_commit_callbacks(execute=True):
        tasks.run_submit(run.id)  # nothing raised: the outbox retries, not Celery
    assert sent == [([run.id], 1)]


def test_a_submit_whose_lease_ran_out_changes_nothing(
    alice, pipeline, environments, fake_airflow, frozen, monkeypatch
):
    run = pending(alice, pipeline, environments)
    real_trigger = fake_airflow.trigger_run
    second = []

    def slow_trigger(*args, **kwargs):
        # Airflow answers after the lease ran out, and a second worker claimed the request.
        RunRequest.objects.filter(id=run.id).update(lease_until=NOW - timedelta(seconds=1))
        second.append(RunRequest.claim(run.id))
        return real_trigger(*args, **kwargs)

    monkeypatch.setattr(fake_airflow, "trigger_run", slow_trigger)
    assert runs.run_submit(run_request_id=run.id) is None
    run.refresh_from_db()
    assert (run.state, run.run_state, run.lease_token) == ("pending", "", second[0])
    assert RunRequest.finish(run.id, second[0], state="submitted", run_state="queued")


def test_following_a_run_never_touches_the_outbox_lease(
    alice, pipeline, environments, fake_airflow, frozen, enqueued
):
    run = submitted(alice, pipeline, environments)
    outbox_fields = ("attempts", "lease_token", "lease_until", "next_attempt_at")
    before = RunRequest.objects.values(*outbox_fields).get(id=run.id)
    assert before == {
        "attempts": 1,
        "lease_token": None,
        "lease_until": None,
        "next_attempt_at": None,
    }
    assert runs.refresh_if_stale(run)
    assert not runs.refresh_if_stale(run)  # the throttle is refreshed_at …
    assert RunRequest.objects.get(id=run.id).refreshed_at == NOW
    (key,) = fake_airflow.runs
    fake_airflow.runs[key]["state"] = "running"
    runs.run_refresh(run_request_id=run.id)
    assert RunRequest.objects.get(id=run.id).run_state == "running"
    assert RunRequest.objects.values(*outbox_fields).get(id=run.id) == before  # … not the lease


def test_the_beat_follows_every_active_run_once_per_window(
    alice, pipeline, environments, fake_airflow, frozen, enqueued
):
    running = submitted(alice, pipeline, environments)
    waiting, _ = runs.run_request(  # not submitted yet: the outbox's, not followed
        pipeline=pipeline, environment=environments["dev"], partition=naive(2026, 11, 21), by=alice
    )
    tasks.runs_refresh_active()
    tasks.runs_refresh_active()
    assert enqueued == [running.id]
    (key,) = fake_airflow.runs
    fake_airflow.runs[key]["state"] = "success"
    runs.run_refresh(run_request_id=running.id)
    frozen.shift(runs.REFRESH_AFTER)
    assert runs.runs_refresh_active() == 0  # finished: no longer followed
    assert enqueued == [running.id]
