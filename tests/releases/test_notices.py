"""Promotion notices go out through the alert outbox: once each, with their own words."""

from __future__ import annotations

import json
import re

import responses

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


HOOK = "https://hooks.example.com/services/T0/B0/quiet-secret"


@responses.activate
def test_chat_notices_quote_typed_text_without_mentions_broadcasts_or_links(
    ready, envs, alice, monkeypatch
):
    team = ready.pipeline.team
    team.quiet_webhook_env = "PAYMENTS_QUIET_WEBHOOK"
    team.save()
    monkeypatch.setenv("PAYMENTS_QUIET_WEBHOOK", HOOK)
    hook = responses.post(HOOK, body="ok")
    reason = "<!channel> ping <@U123> @here @Everyone <!here|x> see <http://evil.example|docs> & go"
    releases.promotion_request(version=ready, environment=envs["stage"], by=alice, reason=reason)
    (notice,) = AlertDelivery.objects.filter(event=AlertDelivery.Event.NOTICE, channel="webhook")
    alerts.delivery_send(delivery_id=notice.id)

    assert hook.call_count == 1
    text = json.loads(responses.calls[0].request.body)["text"]
    assert "<" not in text
    assert ">" not in text
    assert (
        "&lt;!channel&gt; ping &lt;@U123&gt; @\u200bhere @\u200bEveryone &lt;!here|x&gt; see "
        "&lt;http://evil.example|docs&gt; &amp; go"
    ) in text
    assert not re.search(r"@(here|channel|everyone)\b", text, re.IGNORECASE)


def test_slack_text_escapes_only_what_slack_reads_as_markup():
    assert alerts.slack_text("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"
    assert alerts.slack_text("mail@channel.example.com") == "mail@\u200bchannel.example.com"
    assert (
        alerts.slack_text("orders-daily v2 → Prod: 5 % done") == "orders-daily v2 → Prod: 5 % done"
    )
