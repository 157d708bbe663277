"""POST/GET/DELETE /api/v1/tokens and the scopes every other endpoint asks for."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from pipelines.core.models import ApiToken, AuditEvent
from pipelines.core.tokens import token_create, token_issue


def bearer(key: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def post(client: Client, url: str, body: dict | None = None):
    return client.post(url, json.dumps(body or {}), content_type="application/json")


def test_create_answers_the_secret_once_and_the_list_never(api_client, alice):
    response = post(
        api_client,
        "/api/v1/tokens",
        {"name": "ci-deploys", "expires_in_days": 30, "scopes": ["write", "read"]},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "name", "token", "expires_at", "scopes"}
    assert body["id"].startswith("tok_")
    assert (body["name"], body["scopes"]) == ("ci-deploys", ["read", "write"])
    secret = body["token"]
    assert bearer(secret).get("/api/v1/tokens").status_code == 200

    listed = api_client.get("/api/v1/tokens")
    assert listed.status_code == 200
    row = next(t for t in listed.json() if t["id"] == body["id"])
    assert (row["name"], row["owner"], row["state"]) == ("ci-deploys", "alice", "active")
    assert "token" not in row
    assert secret[3:13] not in listed.content.decode()
    assert secret[3:13] not in str(list(AuditEvent.objects.values_list("after", "summary")))


def test_create_defaults_to_read_only_for_the_default_lifetime(api_client):
    with time_machine.travel(datetime(2026, 6, 1, 12, tzinfo=UTC), tick=False):
        body = post(api_client, "/api/v1/tokens", {"name": "dashboards"}).json()
    assert body["scopes"] == ["read"]
    assert body["expires_at"] == "2026-08-30T12:00:00Z"


@pytest.mark.parametrize(
    ("payload", "field", "sentence"),
    [
        ({"name": "ci", "expires_in_days": 400}, "expires_in_days", "between 1 and 365 days"),
        ({"name": "ci", "expires_in_days": 0}, "expires_in_days", "between 1 and 365 days"),
        ({"name": "ci", "scopes": ["admin"]}, "scopes", "Unknown scope admin"),
        ({"name": "ci", "scopes": []}, "scopes", "Choose at least one scope."),
        ({"name": "  "}, "name", "Name the token"),
        ({"name": "x" * 101}, "name", "100 characters or fewer"),
    ],
)
def test_create_refuses_bad_input_naming_the_field(api_client, payload, field, sentence):
    response = post(api_client, "/api/v1/tokens", payload)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert list(errors) == [field]
    assert sentence in errors[field][0]
    assert ApiToken.objects.count() == 1  # the client's own


def test_delete_revokes_and_the_token_answers_401(api_client, alice):
    issued = token_issue(user=alice, name="laptop")
    client = bearer(issued.key)
    assert client.get("/api/v1/tokens").status_code == 200

    response = api_client.delete(f"/api/v1/tokens/{issued.token.public_id}")

    assert response.status_code == 204
    assert response.content == b""
    assert client.get("/api/v1/tokens").status_code == 401
    again = api_client.delete(f"/api/v1/tokens/{issued.token.public_id}")
    assert again.status_code == 409
    assert "revoked already" in again.json()["detail"]


def test_other_users_tokens_are_neither_listed_nor_revocable(api_client, mallory):
    theirs = token_issue(user=mallory, name="mallory-ci")
    listed = api_client.get("/api/v1/tokens").json()
    assert theirs.token.public_id not in [t["id"] for t in listed]
    response = api_client.delete(f"/api/v1/tokens/{theirs.token.public_id}")
    assert response.status_code == 404
    assert ApiToken.objects.get(id=theirs.token.id).revoked_at is None


def test_a_read_token_may_not_write(alice):
    client = bearer(token_create(user=alice, scopes=["read"]))
    assert client.get("/api/v1/tokens").status_code == 200
    response = post(client, "/api/v1/tokens", {"name": "more"})
    assert response.status_code == 403
    assert "“write” scope" in response.json()["detail"]
    assert client.delete("/api/v1/tokens/tok_x").status_code == 403


def test_a_write_token_may_not_read(alice):
    client = bearer(token_create(user=alice, scopes=["write"]))
    response = client.get("/api/v1/tokens")
    assert response.status_code == 403
    assert "“read” scope" in response.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/promotions/999999/approve",
        "/api/v1/promotions/999999/reject",
        "/api/v1/backfills/999999/approve",
        "/api/v1/backfills/999999/reject",
        "/api/v1/runs/999999/approve",
        "/api/v1/runs/999999/reject",
    ],
)
def test_approving_or_rejecting_needs_the_approve_scope(alice, url):
    without = bearer(token_create(user=alice, scopes=["read", "write"]))
    response = post(without, url, {"comment": "No."})
    assert response.status_code == 403
    assert "“approve” scope" in response.json()["detail"]

    # With the scope the request reaches the rules of the request itself: there is none.
    with_scope = bearer(token_create(user=alice, scopes=["read", "write", "approve"]))
    assert post(with_scope, url, {"comment": "No."}).status_code == 404


def test_the_audit_api_hides_token_rows_from_other_users(alice, mallory):
    issued = token_issue(user=alice, name="ci")
    mine = bearer(token_create(user=alice, scopes=["read"])).get("/api/v1/audit").json()
    theirs = bearer(token_create(user=mallory, scopes=["read"])).get("/api/v1/audit").json()

    assert issued.token.public_id in json.dumps(mine["results"])
    assert issued.token.public_id not in json.dumps(theirs["results"])
    assert {r["actor"] for r in theirs["results"]} == {"mallory"}
