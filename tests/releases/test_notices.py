"""Promotion notices go out through the alert outbox: once each, with their own words."""

from __future__ import annotations

from pipelines.alerts import services as alerts
from pipelines.models import AlertDelivery
from pipelines.releases import services as releases


def test_notices_are_sent_once_with_their_own_subject_and_text(
    ready, envs, alice, bob, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        promotion = releases.promotion_request(
            version=ready, environment=envs["stage"], by=alice, reason="Quarter close."
        )
    assert len(callbacks) == 1  # enqueued on commit, like every outbox row
    (notice,) = AlertDelivery.objects.filter(event=AlertDelivery.Event.NOTICE)
    alerts.delivery_send(delivery_id=notice.id)
    alerts.delivery_send(delivery_id=notice.id)  # a second worker: nothing more

    (mail,) = mailoutbox
    assert mail.subject == "[APPROVAL NEEDED] orders-daily v1 → Stage"
    assert mail.to == ["payments-alerts@example.com"]
    assert "alice asks to promote orders-daily version 1 to Stage." in mail.body
    assert "Reason: Quarter close." in mail.body
    assert "/pipelines/orders-daily/" in mail.body
    assert AlertDelivery.objects.get(id=notice.id).state == AlertDelivery.State.SENT

    releases.promotion_approve(promotion_id=promotion.id, by=bob, comment="Go.")
    targets = set(
        AlertDelivery.objects.filter(subject__startswith="[APPROVED]").values_list(
            "target", flat=True
        )
    )
    assert targets == {"payments-alerts@example.com", "alice@example.com"}
