"""Personal API tokens: shown once, stored as SHA-256, named by a public id, scoped, expiring.

A token answers only while it is not revoked, not expired and its user is active. Its owner (or
a platform admin) revokes it; changing the user's password or deactivating the user revokes all
of theirs (core/signals.py). Creation and revocation are audited with the public id, never with
any character of the secret.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from pipelines.core import access
from pipelines.core.audit import audit_record
from pipelines.core.models import ApiToken, AuditEvent

PREFIX = "pp_"
PUBLIC_PREFIX = "tok_"
SCOPES = [choice.value for choice in ApiToken.Scope]
# What each scope allows, for the sentence a refusal answers with.
SCOPE_NEEDED_FOR = {
    "read": "reading (GET)",
    "write": "any change (POST, PUT, DELETE)",
    "approve": "approving or rejecting a request",
}
# A token's last use is written at most this often (one conditional UPDATE), not on every call.
LAST_USED_EVERY = timedelta(seconds=60)
# Actions whose rows name a token: shown only to the token's owner and platform admins.
TOKEN_ACTIONS = (AuditEvent.Action.API_TOKEN_CREATED, AuditEvent.Action.API_TOKEN_REVOKED)


class TokenError(ValueError):
    """A token that cannot be made or revoked as asked; `field` is where the page shows it."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Issued:
    """A new token and its secret, which exists only here: the database keeps its digest."""

    token: ApiToken
    key: str


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_describe(token: ApiToken) -> dict[str, Any]:
    """What lists and audit rows show of a token: never the secret or its digest."""
    return {
        "id": token.public_id,
        "name": token.name,
        "owner": token.user.get_username(),
        "scopes": list(token.scopes),
        "expires_at": token.expires_at,
    }


def check_days(days: int) -> None:
    """Refuse a lifetime outside 1 … API_TOKEN_MAX_DAYS (the form and the API say it once)."""
    if days < 1 or days > settings.API_TOKEN_MAX_DAYS:
        raise TokenError(
            "expires_in_days",
            f"Choose between 1 and {settings.API_TOKEN_MAX_DAYS} days "
            "(API_TOKEN_MAX_DAYS is the longest a token may live).",
        )


def check_scopes(scopes: list[str]) -> list[str]:
    """Return the scopes in their canonical order; refuse unknown ones and an empty list."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise TokenError(
            "scopes", f"Unknown scope {', '.join(unknown)}: choose from {', '.join(SCOPES)}."
        )
    if not scopes:
        raise TokenError("scopes", "Choose at least one scope.")
    return [scope for scope in SCOPES if scope in scopes]


@transaction.atomic
def token_issue(
    *,
    user: Any,
    name: str,
    expires_in_days: int | None = None,
    scopes: list[str] | tuple[str, ...] = ("read", "write"),
) -> Issued:
    """Create a token for `user`; return it with its secret, which is never stored or shown
    again. The lifetime defaults to API_TOKEN_DEFAULT_DAYS."""
    days = settings.API_TOKEN_DEFAULT_DAYS if expires_in_days is None else expires_in_days
    check_days(days)
    scopes = check_scopes(list(scopes))
    name = name.strip()
    if not name:
        raise TokenError("name", "Name the token (what or who uses it).")
    key = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        public_id=PUBLIC_PREFIX + secrets.token_hex(6),
        name=name,
        key_sha256=_digest(key),
        scopes=scopes,
        expires_at=timezone.now() + timedelta(days=days),
    )
    audit_record(
        actor=user,
        action=AuditEvent.Action.API_TOKEN_CREATED,
        after=token_describe(token),
        summary=f"API token {token.public_id} “{name}” created",
    )
    return Issued(token=token, key=key)


def token_create(*, user: Any, name: str = "default", **options: Any) -> str:
    """Create a token (token_issue) and return only its secret: for scripts and the command."""
    return token_issue(user=user, name=name, **options).key


def _revoke(token: ApiToken, *, by: Any, reason: str) -> bool:
    """Revoke `token` if it is not revoked yet (one conditional UPDATE) and audit it."""
    now = timezone.now()
    changed = ApiToken.objects.filter(id=token.id, revoked_at__isnull=True).update(
        revoked_at=now, revoked_reason=reason
    )
    if not changed:
        return False
    audit_record(
        actor=by,
        action=AuditEvent.Action.API_TOKEN_REVOKED,
        before={**token_describe(token), "revoked_at": None},
        after={"owner": token.user.get_username(), "revoked_at": now, "reason": reason},
        summary=f"API token {token.public_id} “{token.name}” revoked: {reason}",
    )
    token.revoked_at, token.revoked_reason = now, reason
    return True


def token_list(*, viewer: Any) -> QuerySet[ApiToken]:
    """The viewer's tokens, or every user's for a platform admin; newest first."""
    rows = ApiToken.objects.select_related("user").order_by("-created_at", "-id")
    return rows if access.is_platform_admin(viewer) else rows.filter(user=viewer)


@transaction.atomic
def token_revoke(*, public_id: str, by: Any) -> ApiToken:
    """Revoke one token of `by` (any user's for a platform admin). An unknown id, or another
    user's token, is 404 alike: ids of others' tokens are not confirmed."""
    token = token_list(viewer=by).filter(public_id=public_id).first()
    if token is None:
        raise TokenError("id", f"You have no token {public_id}.", status=404)
    if token.revoked_at is not None:
        raise TokenError("id", f"Token {public_id} was revoked already.", status=409)
    reason = "by its owner" if token.user_id == by.id else f"by {by.get_username()}"
    _revoke(token, by=by, reason=reason)
    return token


@transaction.atomic
def tokens_revoke_all(*, user: Any, by: Any, reason: str) -> int:
    """Revoke every live token of `user` (password changed, user deactivated); audit each."""
    tokens = ApiToken.objects.select_related("user").filter(user=user, revoked_at__isnull=True)
    return sum(_revoke(token, by=by, reason=reason) for token in tokens)


def token_authenticate(key: str) -> ApiToken | None:
    """Return the live token `key` is the secret of, or None (unknown, revoked, expired, or its
    user inactive). Marks it used, at most once per LAST_USED_EVERY."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    now = timezone.now()
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_sha256=_digest(key), revoked_at__isnull=True, expires_at__gt=now)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    # Conditional: concurrent calls within the minute write once, and most calls write nothing.
    ApiToken.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_EVERY), id=token.id
    ).update(last_used_at=now)
    return token


def token_user(key: str) -> Any | None:
    """Return the active user a live key belongs to, or None."""
    token = token_authenticate(key)
    return None if token is None else token.user


def missing_scope(token: ApiToken, scope: str) -> str:
    """The refusal sentence when `token` lacks `scope`, or "" when it has it."""
    if scope in token.scopes:
        return ""
    return (
        f"This token lacks the “{scope}” scope, which {SCOPE_NEEDED_FOR[scope]} needs. "
        f"Create a token with the {scope} scope."
    )


def audit_visible(viewer: Any) -> Q:
    """Audit rows the viewer may see: every row, except that a row naming a token is shown only
    to its owner (and whoever acted) and to platform admins."""
    others = ~Q(action__in=TOKEN_ACTIONS)
    if access.is_platform_admin(viewer):
        return Q()
    if not getattr(viewer, "is_authenticated", False):
        return others
    return others | Q(actor_id=viewer.id) | Q(after__owner=viewer.get_username())
