"""API tokens: expiry, revocation (owner, password change, deactivation), last use, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model

from pipelines.core import tokens
from pipelines.core.models import ApiToken, AuditEvent

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def answers(client, key: str) -> int:
    """The status a read with `key` gets (404: the token was let in, the pipeline is not there)."""
    return client.get("/api/v1/pipelines/none", HTTP_AUTHORIZATION=f"Bearer {key}").status_code


def revoked_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="api_token_revoked").order_by("id"))


def test_a_token_expires_after_the_default_90_days(alice, client):
    with time_machine.travel(NOW, tick=False):
        issued = tokens.token_issue(user=alice, name="ci")
    assert issued.token.expires_at == NOW + timedelta(days=90)
    assert issued.token.public_id.startswith("tok_")
    assert issued.token.public_id[4:] not in issued.key

    with time_machine.travel(NOW + timedelta(days=90) - timedelta(seconds=1), tick=False):
        assert answers(client, issued.key) == 404
    with time_machine.travel(NOW + timedelta(days=90), tick=False):
        assert answers(client, issued.key) == 401


def test_a_lifetime_over_the_maximum_is_refused_naming_the_field(alice, settings):
    settings.API_TOKEN_MAX_DAYS = 30
    with pytest.raises(tokens.TokenError) as refused:
        tokens.token_issue(user=alice, name="ci", expires_in_days=31)
    assert refused.value.field == "expires_in_days"
    assert "between 1 and 30 days" in refused.value.message
    assert not ApiToken.objects.exists()
    assert tokens.token_issue(user=alice, name="ci", expires_in_days=30).token.expires_at


def test_revoking_answers_401_from_then_on_and_is_audited(alice, client):
    issued = tokens.token_issue(user=alice, name="ci")
    assert answers(client, issued.key) == 404

    tokens.token_revoke(public_id=issued.token.public_id, by=alice)

    assert answers(client, issued.key) == 401
    [event] = revoked_events()
    assert event.actor == alice
    assert event.before["id"] == issued.token.public_id
    assert event.before["revoked_at"] is None
    assert event.after["owner"] == "alice"
    assert event.after["reason"] == "by its owner"
    assert issued.key[3:13] not in str(event.before) + str(event.after) + event.summary
    with pytest.raises(tokens.TokenError) as again:
        tokens.token_revoke(public_id=issued.token.public_id, by=alice)
    assert again.value.status == 409
    assert len(revoked_events()) == 1


def test_another_users_token_is_not_found_but_a_platform_admin_may_revoke_it(alice, mallory):
    issued = tokens.token_issue(user=alice, name="ci")
    with pytest.raises(tokens.TokenError) as refused:
        tokens.token_revoke(public_id=issued.token.public_id, by=mallory)
    assert refused.value.status == 404
    assert ApiToken.objects.get().revoked_at is None

    admin = get_user_model().objects.create_superuser("root", "root@example.com", "x-long-pw-1")
    tokens.token_revoke(public_id=issued.token.public_id, by=admin)
    assert ApiToken.objects.get().revoked_at is not None
    [event] = revoked_events()
    assert (event.actor, event.after["reason"]) == (admin, "by root")


def test_a_password_change_revokes_every_token_of_the_user(alice, bob, client):
    first = tokens.token_issue(user=alice, name="ci").key
    second = tokens.token_issue(user=alice, name="laptop").key
    bobs = tokens.token_issue(user=bob, name="ci").key

    alice.set_password("a-new-long-password-7")
    alice.save()

    assert answers(client, first) == answers(client, second) == 401
    assert answers(client, bobs) == 404
    events = revoked_events()
    assert [(e.actor, e.after["reason"]) for e in events] == [(None, "password changed")] * 2


def test_saving_the_user_without_a_new_password_revokes_nothing(alice, client):
    key = tokens.token_issue(user=alice, name="ci").key
    alice.first_name = "Alice"
    alice.save()
    alice.save(update_fields=["last_login"])
    # A hash upgrade on login (a new hasher, more iterations) changes the hash, not the password.
    alice.password = alice.password + "x"
    alice.save(update_fields=["password"])

    assert answers(client, key) == 404
    assert revoked_events() == []


def test_deactivating_the_user_revokes_their_tokens(alice, client):
    key = tokens.token_issue(user=alice, name="ci").key
    alice.is_active = False
    alice.save()

    assert answers(client, key) == 401
    [event] = revoked_events()
    assert (event.actor, event.after["reason"]) == (None, "user deactivated")
    # Reactivating does not bring the token back.
    alice.is_active = True
    alice.save()
    assert answers(client, key) == 401


def test_a_bulk_deactivation_still_stops_the_token(alice, client):
    """QuerySet.update() sends no signal: the lookup refuses an inactive user regardless."""
    key = tokens.token_issue(user=alice, name="ci").key
    get_user_model().objects.filter(id=alice.id).update(is_active=False)
    assert answers(client, key) == 401


def test_last_used_is_written_at_most_once_a_minute(alice):
    issued = tokens.token_issue(user=alice, name="ci")
    assert issued.token.last_used_at is None
    with time_machine.travel(NOW, tick=False):
        assert tokens.token_authenticate(issued.key) is not None
    issued.token.refresh_from_db()
    assert issued.token.last_used_at == NOW

    with time_machine.travel(NOW + timedelta(seconds=59), tick=False):
        tokens.token_authenticate(issued.key)
    issued.token.refresh_from_db()
    assert issued.token.last_used_at == NOW

    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        tokens.token_authenticate(issued.key)
    issued.token.refresh_from_db()
    assert issued.token.last_used_at == NOW + timedelta(seconds=61)


def test_unknown_and_malformed_keys_are_refused(alice):
    assert tokens.token_authenticate("pp_" + "x" * 43) is None
    assert tokens.token_authenticate("not-a-token") is None
    assert tokens.token_authenticate("pp_" + "x" * 300) is None
