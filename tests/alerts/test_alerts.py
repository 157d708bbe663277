"""Alerts from health: routed by severity and environment, deduplicated, resolved, delivered.

orders-daily (daily 02:00 UTC, SLA 60 min) runs in dev and prod; team payments has on-call
targets (email + a webhook named by an env variable) and a quiet email; prod pages on-call.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import requests
import responses
import time_machine
from django.db import IntegrityError, transaction
from django.utils import timezone

from pipelines.alerts import services as alerts
from pipelines.alerts import tasks
from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.core.airflow import AirflowUnavailable
from pipelines.deployments import services as deploy
from pipelines.models import Alert, AlertDelivery, Environment, PipelineHealth, Team
from pipelines.monitoring import monitor, sync
from tests.conftest import pipeline_payload
from tests.fakes import FakeSyncAirflow, scheduled, utc
from tests.threads import at_once

ONCALL_WEBHOOK = "https://hooks.example.com/services/T0/B0/oncall-secret"


@pytest.fixture
def pipeline(alice, orders, environments, fake_airflow):
    """orders-daily deployed to dev and prod on 2026-11-09 at 12:00 UTC; prod pages on-call."""
    Team.objects.filter(slug="payments").update(
        oncall_email="oncall@example.com",
        oncall_webhook_env="PAYMENTS_ONCALL_WEBHOOK",
        quiet_email="payments-alerts@example.com",
    )
    Environment.objects.filter(slug="prod").update(pages_oncall=True)
    with time_machine.travel(utc(2026, 11, 9, 12), tick=False):
        form = PipelineForm(pipeline_payload(sla_minutes=60), user=alice)
        assert form.is_valid(), form.errors
        pipeline = services.pipeline_create(spec=form.spec, by=alice)
        for slug in ("dev", "prod"):
            d = deploy.deployment_request(
                version=pipeline.versions.get(), environment=environments[slug], by=alice
            )
            deploy.deployment_run(deployment_id=d.id)
    return pipeline


@pytest.fixture
def airflow():
    return FakeSyncAirflow()


def env(slug: str) -> Environment:
    return Environment.objects.get(slug=slug)


def evaluate(airflow, when, slug: str = "dev") -> alerts.EvaluateResult:
    """What the beat does: sync the environment, then evaluate its alerts, at `when`."""
    with time_machine.travel(when, tick=False):
        sync.environment_sync(environment_id=env(slug).id, client=airflow)
        return alerts.alerts_evaluate(environment=env(slug))


def open_alerts(**filters):
    return list(Alert.objects.filter(state="open", **filters))


def targets(alert: Alert, event: str | None = None) -> set[tuple[str, str, str]]:
    rows = alert.deliveries.all()
    if event:
        rows = rows.filter(event=event)
    return {(d.event, d.channel, d.target) for d in rows}


def due(delivery: AlertDelivery) -> bool:
    """Whether a worker (the deliver task, or one the sweep sends) may claim it now."""
    return AlertDelivery.objects.filter(
        AlertDelivery.claimable(timezone.now()), id=delivery.id
    ).exists()


def send_all(when=None) -> None:
    with time_machine.travel(when or utc(2026, 11, 20), tick=False):
        for delivery_id in AlertDelivery.objects.filter(state="pending").values_list(
            "id", flat=True
        ):
            alerts.delivery_send(delivery_id=delivery_id)


# --- Conditions, routing, dedup -----------------------------------------------------------------


def test_failed_run_pages_on_call_in_prod_and_the_quiet_channel_in_dev(pipeline, airflow):
    scheduled(airflow, 10, "failed")
    dev = evaluate(airflow, utc(2026, 11, 10, 3), "dev")
    prod = evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    assert (dev.opened, prod.opened) == (1, 1)
    (dev_alert,) = open_alerts(environment__slug="dev")
    (prod_alert,) = open_alerts(environment__slug="prod")
    for alert in (dev_alert, prod_alert):
        assert (alert.kind, alert.severity) == ("run_failed", "page")
        assert alert.key == f"{pipeline.id}:{alert.environment_id}:run_failed"
        assert alert.summary == "Last run failed after all retries."
        assert alert.runbook_url == "https://wiki.example.com/runbooks/orders"
        assert alert.portal_url == "http://127.0.0.1:8000/pipelines/orders-daily/"
    assert targets(prod_alert) == {
        ("opened", "email", "oncall@example.com"),
        ("opened", "webhook", "PAYMENTS_ONCALL_WEBHOOK"),
    }
    assert targets(dev_alert) == {("opened", "email", "payments-alerts@example.com")}


def test_evaluating_again_neither_duplicates_nor_renotifies(pipeline, airflow):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    again = evaluate(airflow, utc(2026, 11, 10, 3, 1), "prod")
    with time_machine.travel(utc(2026, 11, 10, 3, 2), tick=False):
        alerts.alerts_evaluate(environment=env("prod"))
    assert (again.opened, again.reminded, again.delivery_ids) == (0, 0, [])
    (alert,) = Alert.objects.all()
    assert alert.last_seen_at == utc(2026, 11, 10, 3, 2)
    assert alert.notify_count == 1
    assert AlertDelivery.objects.count() == 2


def test_retrying_is_a_warning_routed_quietly_even_in_prod(pipeline, airflow):
    scheduled(airflow, 10)
    evaluate(airflow, utc(2026, 11, 10, 12), "prod")
    airflow.retrying.add("orders_daily")
    evaluate(airflow, utc(2026, 11, 11, 2, 10), "prod")
    (alert,) = open_alerts()
    assert (alert.kind, alert.severity) == ("retrying", "warning")
    assert targets(alert) == {("opened", "email", "payments-alerts@example.com")}
    airflow.retrying.clear()
    scheduled(airflow, 11, "failed", finished=utc(2026, 11, 11, 2, 40))
    evaluate(airflow, utc(2026, 11, 11, 2, 45), "prod")  # failed after its last retry: a page
    alert.refresh_from_db()
    assert alert.state == "resolved"
    (failed,) = open_alerts()
    assert (failed.kind, failed.severity) == ("run_failed", "page")
    assert ("opened", "email", "oncall@example.com") in targets(failed)


def test_sla_miss_before_any_run_pages_with_fire_time_and_deadline(pipeline, airflow, mailoutbox):
    evaluate(airflow, utc(2026, 11, 10, 2, 30), "prod")
    with time_machine.travel(utc(2026, 11, 10, 3, 1), tick=False):
        monitor.sla_evaluate(env("prod"))
        alerts.alerts_evaluate(environment=env("prod"))
    (alert,) = open_alerts()
    assert (alert.kind, alert.severity) == ("sla_missed", "page")
    assert alert.summary == "Partition 2026-11-09 missed its SLA deadline."
    assert "Scheduled 2026-11-10 02:00 UTC, due by 2026-11-10 03:00 UTC" in alert.detail
    send_all()
    (mail,) = [m for m in mailoutbox if m.to == ["oncall@example.com"]]
    assert mail.subject == "[PAGE] SLA missed: orders-daily in Prod"
    assert "due by 2026-11-10 03:00 UTC, not loaded yet" in mail.body


def test_alert_resolves_when_a_later_run_succeeds(pipeline, airflow, mailoutbox):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    scheduled(airflow, 11)
    result = evaluate(airflow, utc(2026, 11, 11, 3), "prod")  # outside the dedup window
    assert result.resolved == 1
    (alert,) = Alert.objects.filter(kind="run_failed")
    assert (alert.state, alert.resolved_at) == ("resolved", utc(2026, 11, 11, 3))
    assert targets(alert, "resolved") == {
        ("resolved", "email", "oncall@example.com"),
        ("resolved", "webhook", "PAYMENTS_ONCALL_WEBHOOK"),
    }
    AlertDelivery.objects.filter(channel="webhook").delete()
    send_all()
    resolved = [m for m in mailoutbox if m.subject.startswith("[RESOLVED]")]
    assert [m.subject for m in resolved] == ["[RESOLVED] Run failed: orders-daily in Prod"]
    assert "Cleared at 2026-11-11 03:00 UTC" in resolved[0].body


def test_an_open_alert_reminds_once_per_window(pipeline, airflow, settings):
    settings.ALERT_DEDUP_MINUTES = 60
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "dev")
    with time_machine.travel(utc(2026, 11, 10, 3, 59), tick=False):
        assert alerts.alerts_evaluate(environment=env("dev")).reminded == 0
    with time_machine.travel(utc(2026, 11, 10, 4), tick=False):
        assert alerts.alerts_evaluate(environment=env("dev")).reminded == 1
    with time_machine.travel(utc(2026, 11, 10, 4, 30), tick=False):
        assert alerts.alerts_evaluate(environment=env("dev")).reminded == 0
    (alert,) = Alert.objects.all()
    assert (alert.notify_count, alert.last_notified_at) == (2, utc(2026, 11, 10, 4))
    assert [d.event for d in alert.deliveries.all()] == ["opened", "reminder"]


def test_a_flapping_failure_inside_the_window_does_not_page_again(pipeline, airflow):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    airflow.add_run(
        "orders_daily",
        "manual__ok",
        "success",
        queued_at=utc(2026, 11, 10, 3, 10).isoformat(),
        end_date=utc(2026, 11, 10, 3, 12).isoformat(),
    )
    assert evaluate(airflow, utc(2026, 11, 10, 3, 15), "prod").resolved == 1
    airflow.add_run(
        "orders_daily",
        "manual__again",
        "failed",
        queued_at=utc(2026, 11, 10, 3, 20).isoformat(),
        start_date=utc(2026, 11, 10, 3, 20).isoformat(),
        end_date=utc(2026, 11, 10, 3, 22).isoformat(),
    )
    back = evaluate(airflow, utc(2026, 11, 10, 3, 25), "prod")
    assert (back.opened, back.reopened, back.delivery_ids) == (0, 1, [])
    (alert,) = Alert.objects.all()  # the same alert, open again
    assert (alert.state, alert.resolved_at) == ("open", None)
    with time_machine.travel(utc(2026, 11, 10, 4), tick=False):  # the window has passed
        assert alerts.alerts_evaluate(environment=env("prod")).reminded == 1
    assert [d.event for d in alert.deliveries.filter(channel="email")] == [
        "opened",
        "resolved",
        "reminder",
    ]


def test_a_failure_back_after_the_window_opens_a_new_alert(pipeline, airflow):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "dev")
    scheduled(airflow, 11)
    evaluate(airflow, utc(2026, 11, 11, 3), "dev")
    scheduled(airflow, 12, "failed")
    assert evaluate(airflow, utc(2026, 11, 12, 3), "dev").opened == 1
    assert Alert.objects.filter(kind="run_failed").count() == 2
    assert len(open_alerts(kind="run_failed")) == 1


def test_stale_data_warns_then_pages_from_two_partitions_behind(pipeline, airflow):
    scheduled(airflow, 10)
    evaluate(airflow, utc(2026, 11, 10, 12), "prod")
    assert not Alert.objects.exists()
    prod = env("prod")
    with time_machine.travel(utc(2026, 11, 11, 12), tick=False):
        monitor.health_recompute(prod)
        alerts.alerts_evaluate(environment=prod)
    (alert,) = open_alerts()
    assert (alert.kind, alert.severity) == ("stale", "warning")
    assert alert.summary == "Data is 1 partition behind (24.0 h)."
    assert alert.detail == "Newest loaded partition 2026-11-09; expected 2026-11-10 by now."
    assert targets(alert) == {("opened", "email", "payments-alerts@example.com")}
    with time_machine.travel(utc(2026, 11, 11, 12, 30), tick=False):
        alerts.alerts_evaluate(environment=prod)  # still one behind: not escalated, not due
    with time_machine.travel(utc(2026, 11, 12, 12), tick=False):
        monitor.health_recompute(prod)
        assert alerts.alerts_evaluate(environment=prod).escalated == 1
    alert.refresh_from_db()
    assert (alert.severity, alert.state) == ("page", "open")
    assert targets(alert, "escalated") == {
        ("escalated", "email", "oncall@example.com"),
        ("escalated", "webhook", "PAYMENTS_ONCALL_WEBHOOK"),
    }


def test_a_failing_pipeline_pages_for_the_failure_not_for_stale_data(pipeline, airflow):
    scheduled(airflow, 10)
    scheduled(airflow, 11, "failed")
    scheduled(airflow, 12, "failed")
    evaluate(airflow, utc(2026, 11, 12, 4), "prod")
    assert PipelineHealth.objects.get(environment__slug="prod").freshness_lag_partitions == 2
    assert [a.kind for a in open_alerts()] == ["run_failed"]


def test_paused_pipeline_is_not_stale(pipeline, airflow):
    scheduled(airflow, 10)
    airflow.paused.add("orders_daily")
    evaluate(airflow, utc(2026, 11, 12, 12), "prod")
    assert PipelineHealth.objects.get(environment__slug="prod").freshness_lag_partitions == 2
    assert not Alert.objects.exists()


def test_import_error_pages(pipeline, airflow):
    airflow.import_errors.add("prod/orders_daily.py")
    evaluate(airflow, utc(2026, 11, 10, 1), "prod")
    (alert,) = open_alerts()
    assert (alert.kind, alert.severity) == ("import_error", "page")


def test_unreachable_orchestrator_freezes_run_alerts(pipeline, airflow):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "dev")
    airflow.down = True
    scheduled(airflow, 11)  # Airflow has a success the portal cannot see
    with pytest.raises(AirflowUnavailable):
        evaluate(airflow, utc(2026, 11, 11, 3), "dev")
    PipelineHealth.objects.update(failing_streak=0)  # whatever the row says, it is not fresh
    with time_machine.travel(utc(2026, 11, 11, 3), tick=False):
        result = alerts.alerts_evaluate(environment=env("dev"))
    assert result.resolved == 0
    assert [a.kind for a in open_alerts()] == ["run_failed"]


def test_no_targets_falls_back_to_the_setting_or_nowhere(pipeline, airflow, settings):
    Team.objects.update(quiet_email="")
    scheduled(airflow, 10, "failed")
    settings.ALERT_FALLBACK_EMAIL = ""
    evaluate(airflow, utc(2026, 11, 10, 3), "dev")
    (alert,) = open_alerts()
    assert not alert.deliveries.exists()  # the row still exists and shows in the portal
    settings.ALERT_FALLBACK_EMAIL = "data-platform@example.com"
    Alert.objects.all().delete()
    evaluate(airflow, utc(2026, 11, 10, 3, 5), "dev")
    (alert,) = open_alerts()
    assert targets(alert) == {("opened", "email", "data-platform@example.com")}


def test_evaluation_reads_in_a_fixed_number_of_queries(
    pipeline, airflow, alice, environments, django_assert_num_queries
):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "dev")

    def steady() -> None:
        with time_machine.travel(utc(2026, 11, 10, 3, 5), tick=False):
            alerts.alerts_evaluate(environment=env("dev"))

    # The environment, 5 reads, savepoint + release, 1 bulk update of last_seen_at.
    with django_assert_num_queries(9):
        steady()
    with time_machine.travel(utc(2026, 11, 9, 12), tick=False):
        for n in range(3):
            form = PipelineForm(
                pipeline_payload(name=f"orders-{n}", target_table=f"orders_{n}"), user=alice
            )
            assert form.is_valid(), form.errors
            version = services.pipeline_create(spec=form.spec, by=alice).versions.get()
            d = deploy.deployment_request(
                version=version, environment=environments["dev"], by=alice
            )
            deploy.deployment_run(deployment_id=d.id)
    for n in range(3):
        airflow.add_run(
            f"orders_{n}",
            "manual__1",
            "failed",
            queued_at=utc(2026, 11, 10, 2).isoformat(),
            start_date=utc(2026, 11, 10, 2).isoformat(),
            end_date=utc(2026, 11, 10, 2, 5).isoformat(),
        )
    evaluate(airflow, utc(2026, 11, 10, 3, 1), "dev")
    assert len(open_alerts()) == 4
    with django_assert_num_queries(9):
        steady()


# --- Race safety --------------------------------------------------------------------------------


def test_only_one_open_alert_per_key(pipeline, airflow):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "dev")
    (alert,) = Alert.objects.all()
    alert.pk = None
    with pytest.raises(IntegrityError), transaction.atomic():
        alert.save()
    alert.state = "resolved"
    alert.save()  # any number of resolved ones


def test_an_evaluation_that_read_before_another_committed_opens_nothing(
    pipeline, airflow, monkeypatch
):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "dev")
    # Replay the second evaluation's view: it read no open alert (the first had not committed).
    real_filter = Alert.objects.filter

    def stale_read(*args, **kwargs):
        queryset = real_filter(*args, **kwargs)
        return queryset.none() if kwargs.get("state") == "open" else queryset

    monkeypatch.setattr(Alert.objects, "filter", stale_read)
    with time_machine.travel(utc(2026, 11, 10, 3, 1), tick=False):
        result = alerts.alerts_evaluate(environment=env("dev"))
    monkeypatch.undo()
    assert (result.opened, result.delivery_ids) == (0, [])
    assert Alert.objects.count() == 1
    assert AlertDelivery.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_evaluations_at_once_open_one_alert(pipeline, airflow, monkeypatch, tasks_unsent):
    scheduled(airflow, 10, "failed")
    with time_machine.travel(utc(2026, 11, 10, 3), tick=False):
        sync.environment_sync(environment_id=env("dev").id, client=airflow)
    dev = env("dev")
    # Both evaluations finish reading before either writes: the race the constraint is for.
    barrier = threading.Barrier(2, timeout=10)
    real_deployed = alerts.monitor.deployed_pipelines

    def deployed_then_wait(*args, **kwargs):
        found = real_deployed(*args, **kwargs)
        barrier.wait()
        return found

    monkeypatch.setattr(alerts.monitor, "deployed_pipelines", deployed_then_wait)
    monkeypatch.setattr(tasks.alert_deliver, "delay", lambda *args: None)  # no broker here

    def run():
        return alerts.alerts_evaluate(environment=dev, now=utc(2026, 11, 10, 3, 1))

    results, errors = at_once(run, run)
    assert errors == []
    assert sorted(r.opened for r in results) == [0, 1]
    assert Alert.objects.filter(state="open").count() == 1
    assert AlertDelivery.objects.filter(event="opened").count() == 1


# --- Delivery -----------------------------------------------------------------------------------


def test_email_has_what_where_runbook_and_portal_link(pipeline, airflow, mailoutbox):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "dev")
    send_all()
    (mail,) = mailoutbox
    assert mail.to == ["payments-alerts@example.com"]
    assert mail.subject == "[PAGE] Run failed: orders-daily in Dev"
    assert "What's wrong: Last run failed after all retries." in mail.body
    assert "Severity: Page · Kind: Run failed · Pipeline: orders-daily · Environment: Dev" in (
        mail.body
    )
    assert "Runbook: https://wiki.example.com/runbooks/orders" in mail.body
    assert "Portal: http://127.0.0.1:8000/pipelines/orders-daily/" in mail.body
    delivery = AlertDelivery.objects.get()
    assert (delivery.state, delivery.attempts) == ("sent", 1)
    send_all()  # sent once: a second task for the same row does nothing
    assert len(mailoutbox) == 1


def test_message_without_runbook_says_to_add_one(pipeline, airflow, mailoutbox):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "dev")
    Alert.objects.update(runbook_url="")
    send_all()
    assert "Runbook: none — add one to the pipeline in the portal" in mailoutbox[0].body


@responses.activate
def test_webhook_posts_slack_json_to_the_url_named_by_the_env_variable(
    pipeline, airflow, monkeypatch
):
    monkeypatch.setenv("PAYMENTS_ONCALL_WEBHOOK", ONCALL_WEBHOOK)
    hook = responses.post(ONCALL_WEBHOOK, body="ok")
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    AlertDelivery.objects.filter(channel="email").delete()
    send_all()
    assert hook.call_count == 1
    text = json.loads(responses.calls[0].request.body)["text"]
    assert text.startswith("[PAGE] Run failed: orders-daily in Prod\n")
    assert "https://wiki.example.com/runbooks/orders" in text
    assert AlertDelivery.objects.get().state == "sent"


@responses.activate
def test_webhook_network_errors_retry_with_backoff_then_fail(
    pipeline, airflow, settings, monkeypatch
):
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 3
    monkeypatch.setenv("PAYMENTS_ONCALL_WEBHOOK", ONCALL_WEBHOOK)
    responses.post(ONCALL_WEBHOOK, body=requests.ConnectionError("refused " + ONCALL_WEBHOOK))
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    delivery = AlertDelivery.objects.get(channel="webhook")
    start = utc(2026, 11, 10, 3, 1)
    with time_machine.travel(start, tick=False), pytest.raises(alerts.DeliveryRetry) as first:
        alerts.delivery_send(delivery_id=delivery.id)
    assert first.value.seconds == 30
    with time_machine.travel(start + timedelta(seconds=10), tick=False):
        alerts.delivery_send(delivery_id=delivery.id)  # not due yet: the backoff
        assert not due(delivery)
    with time_machine.travel(start + timedelta(seconds=31), tick=False):
        assert due(delivery)
        with pytest.raises(alerts.DeliveryRetry) as second:
            alerts.delivery_send(delivery_id=delivery.id)
    assert second.value.seconds == 60
    with time_machine.travel(start + timedelta(seconds=100), tick=False):
        alerts.delivery_send(delivery_id=delivery.id)  # the last attempt: no more retries
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("failed", 3)
    assert delivery.error == (
        "Gave up: Could not deliver to the webhook in $PAYMENTS_ONCALL_WEBHOOK: the connection "
        "failed or the server refused it."
    )
    assert "oncall-secret" not in delivery.error


@responses.activate
def test_webhook_rejection_and_missing_variable_fail_at_once(pipeline, airflow, monkeypatch):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    delivery = AlertDelivery.objects.get(channel="webhook")
    monkeypatch.delenv("PAYMENTS_ONCALL_WEBHOOK", raising=False)
    alerts.delivery_send(delivery_id=delivery.id)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.error) == (
        "failed",
        "Environment variable PAYMENTS_ONCALL_WEBHOOK is not set.",
    )
    AlertDelivery.objects.filter(id=delivery.id).update(state="pending")
    monkeypatch.setenv("PAYMENTS_ONCALL_WEBHOOK", ONCALL_WEBHOOK)
    responses.post(ONCALL_WEBHOOK, status=404, body="no_service")
    alerts.delivery_send(delivery_id=delivery.id)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.error) == ("failed", "Webhook answered 404: no_service")


@responses.activate
def test_webhook_5xx_is_retried(pipeline, airflow, monkeypatch):
    monkeypatch.setenv("PAYMENTS_ONCALL_WEBHOOK", ONCALL_WEBHOOK)
    responses.post(ONCALL_WEBHOOK, status=503)
    responses.post(ONCALL_WEBHOOK, body="ok")
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    delivery = AlertDelivery.objects.get(channel="webhook")
    with pytest.raises(alerts.DeliveryRetry):
        alerts.delivery_send(delivery_id=delivery.id)
    AlertDelivery.objects.filter(id=delivery.id).update(next_attempt_at=None)  # due now
    alerts.delivery_send(delivery_id=delivery.id)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("sent", 2)


def test_a_delivery_whose_lease_ran_out_changes_nothing(pipeline, airflow, monkeypatch):
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "dev")
    delivery = AlertDelivery.objects.get()
    second = []

    def slow_send(*args, **kwargs):
        # The mail server answers after the lease ran out, and a second worker claimed the row.
        AlertDelivery.objects.filter(id=delivery.id).update(
            lease_until=timezone.now() - timedelta(seconds=1)
        )
        second.append(AlertDelivery.claim(delivery.id))

    monkeypatch.setattr(alerts, "send_mail", slow_send)
    alerts.delivery_send(delivery_id=delivery.id)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.sent_at, delivery.lease_token) == ("pending", None, second[0])


@responses.activate
def test_the_deliver_task_enqueues_its_retry_after_the_backoff(
    pipeline, airflow, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setenv("PAYMENTS_ONCALL_WEBHOOK", ONCALL_WEBHOOK)
    responses.post(ONCALL_WEBHOOK, status=503)
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    delivery = AlertDelivery.objects.get(channel="webhook")
    sent = []
    monkeypatch.setattr(
        tasks.alert_deliver,
        "apply_async",
        lambda args, countdown=None: sent.append((args, countdown)),
    )
    with django_capture_on_commit_callbacks(execute=True):
        tasks.alert_deliver(delivery.id)  # nothing raised: the outbox retries, not Celery
    assert sent == [([delivery.id], 30)]
    delivery.refresh_from_db()
    assert (delivery.state, delivery.error) == ("pending", "The webhook answered 503.")


# --- Wiring -------------------------------------------------------------------------------------


def test_deliveries_are_enqueued_on_commit(
    pipeline, airflow, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(tasks.alert_deliver, "delay", sent.append)
    scheduled(airflow, 10, "failed")
    with django_capture_on_commit_callbacks(execute=True):
        result = evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    assert len(result.delivery_ids) == 2
    assert sorted(sent) == sorted(result.delivery_ids)


def test_sync_task_evaluates_alerts(pipeline, airflow, monkeypatch):
    from pipelines.core.airflow import AirflowClient

    monkeypatch.setattr(AirflowClient, "for_environment", classmethod(lambda cls, e: airflow))
    scheduled(airflow, 10, "failed")
    with time_machine.travel(utc(2026, 11, 10, 3), tick=False):
        tasks.environment_sync(env("dev").id)
    assert [a.kind for a in open_alerts()] == ["run_failed"]


def test_sla_task_evaluates_alerts(pipeline, airflow):
    evaluate(airflow, utc(2026, 11, 10, 2, 30), "dev")
    with time_machine.travel(utc(2026, 11, 10, 3, 1), tick=False):
        tasks.sla_evaluate_all()
    assert {a.kind for a in open_alerts()} == {"sla_missed"}


@responses.activate
def test_webhook_redirect_is_not_followed(pipeline, airflow, monkeypatch):
    monkeypatch.setenv("PAYMENTS_ONCALL_WEBHOOK", ONCALL_WEBHOOK)
    responses.post(ONCALL_WEBHOOK, status=307, headers={"Location": "https://evil.test/hook"})
    elsewhere = responses.post("https://evil.test/hook", body="ok")
    scheduled(airflow, 10, "failed")
    evaluate(airflow, utc(2026, 11, 10, 3), "prod")
    delivery = AlertDelivery.objects.get(channel="webhook")
    alerts.delivery_send(delivery_id=delivery.id)
    delivery.refresh_from_db()
    assert delivery.state == "failed"
    assert delivery.error.startswith("Webhook answered 307, a redirect, which is not followed")
    assert elsewhere.call_count == 0
