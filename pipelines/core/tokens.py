"""Personal API tokens: shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

from django.db import transaction
from django.utils import timezone

from pipelines.core.audit import audit_record
from pipelines.core.models import ApiToken

PREFIX = "pp_"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@transaction.atomic
def token_create(*, user: object, name: str = "default") -> str:
    """Create a token for `user` and return the key; only its digest is kept."""
    key = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=key[:10], key_sha256=_digest(key))
    audit_record(
        actor=user, action="api_token_created", after={"name": name, "prefix": token.prefix}
    )
    return key


def token_user(key: str) -> object | None:
    """Return the active user a key belongs to, or None."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    token = ApiToken.objects.select_related("user").filter(key_sha256=_digest(key)).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(id=token.id).update(last_used_at=timezone.now())
    return token.user
