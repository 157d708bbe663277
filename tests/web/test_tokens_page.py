"""The API tokens page: create (the secret once), list, revoke; admins see everyone's."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.urls import reverse

from pipelines.core.models import ApiToken
from pipelines.core.tokens import token_issue

HTMX = {"HTTP_HX_REQUEST": "true"}


def test_creating_shows_the_secret_once(client, alice):
    client.force_login(alice)
    response = client.post(
        reverse("pipelines:token-create"),
        {"name": "ci", "expires_in_days": "30", "scopes": ["read", "write"]},
        **HTMX,
    )
    assert response.status_code == 200
    token = ApiToken.objects.get()
    html = response.content.decode()
    assert html.startswith('<div id="tokens">')  # the fragment, not the page
    assert 'id="token-secret"' in html
    assert token.public_id in html

    page = client.get(reverse("pipelines:tokens")).content.decode()
    assert f'id="token-{token.public_id}"' in page
    assert "read, write" in page
    assert 'id="token-secret"' not in page
    assert token.key_sha256 not in page


def test_a_plain_post_answers_the_page_with_the_secret(client, alice):
    client.force_login(alice)
    response = client.post(
        reverse("pipelines:token-create"),
        {"name": "ci", "expires_in_days": "30", "scopes": ["read"]},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>API tokens</h1>" in html
    assert 'id="token-secret"' in html


def test_a_lifetime_over_the_maximum_is_an_error_next_to_the_field(client, alice):
    client.force_login(alice)
    response = client.post(
        reverse("pipelines:token-create"),
        {"name": "ci", "expires_in_days": "366", "scopes": ["read"]},
        **HTMX,
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="id_expires_in_days_error"' in html
    assert "Choose between 1 and 365 days" in html
    assert not ApiToken.objects.exists()


def test_users_see_their_own_tokens_and_admins_everyones(client, alice, mallory):
    mine = token_issue(user=alice, name="alice-ci").token
    theirs = token_issue(user=mallory, name="mallory-ci").token
    client.force_login(alice)
    html = client.get(reverse("pipelines:tokens")).content.decode()
    assert mine.public_id in html
    assert theirs.public_id not in html

    admin = get_user_model().objects.create_superuser("root", "root@example.com", "x-long-pw-1")
    client.force_login(admin)
    html = client.get(reverse("pipelines:tokens")).content.decode()
    assert mine.public_id in html
    assert theirs.public_id in html
    assert "<th>Owner</th>" in html


def test_revoking_from_the_page(client, alice, mallory):
    mine = token_issue(user=alice, name="alice-ci").token
    theirs = token_issue(user=mallory, name="mallory-ci").token
    client.force_login(alice)

    response = client.post(reverse("pipelines:token-revoke", args=[mine.public_id]), **HTMX)
    assert response.status_code == 200
    assert "answers 401 from now on" in response.content.decode()
    mine.refresh_from_db()
    assert mine.revoked_at is not None

    other = client.post(reverse("pipelines:token-revoke", args=[theirs.public_id]), **HTMX)
    assert other.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_the_audit_page_hides_token_rows_from_other_users(client, alice, mallory):
    token = token_issue(user=alice, name="alice-ci").token
    client.force_login(mallory)
    assert token.public_id not in client.get(reverse("pipelines:audit")).content.decode()
    client.force_login(alice)
    assert token.public_id in client.get(reverse("pipelines:audit")).content.decode()
