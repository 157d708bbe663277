"""Migration 0019: tokens made before it keep working, with read + write, for 90 days."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

MIGRATION = ("pipelines", "0019_api_token_scopes_expiry")


@pytest.mark.django_db(transaction=True)
def test_existing_tokens_keep_working_with_read_and_write(alice, client):
    executor = MigrationExecutor(connection)
    before = executor.loader.get_migration(*MIGRATION).dependencies
    executor.migrate(before)
    old = MigrationExecutor(connection).loader.project_state(before).apps
    key = "pp_" + "k" * 43
    old.get_model("pipelines", "ApiToken").objects.create(
        user_id=alice.id,
        name="old",
        prefix=key[:10],
        key_sha256=hashlib.sha256(key.encode()).hexdigest(),
    )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    from pipelines.core.models import ApiToken

    token = ApiToken.objects.get()
    assert token.scopes == ["read", "write"]
    assert token.public_id.startswith("tok_")
    assert key[3:] not in token.public_id
    expected = timezone.now() + timedelta(days=90)
    assert abs(token.expires_at - expected) < timedelta(minutes=5)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    assert client.get("/api/v1/pipelines/none", **auth).status_code == 404
    denied = client.post(
        "/api/v1/promotions/1/approve", "{}", content_type="application/json", **auth
    )
    assert denied.status_code == 403
