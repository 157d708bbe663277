"""Revoke a user's API tokens when their password changes or they are deactivated.

Signals, because every path saves the user (the admin, `changepassword`, a password reset,
`set_password` in a shell). `QuerySet.update()` bypasses them: token_authenticate also refuses an
inactive user, so a bulk deactivation still stops the tokens, only without the audit row.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save, pre_save

from pipelines.core.tokens import tokens_revoke_all

REASON_ATTR = "_portal_token_revoke_reason"


def _reason(user: Any, update_fields: Any) -> str:
    """Why saving `user` revokes their tokens, or ""."""
    fields = set(update_fields) if update_fields is not None else {"password", "is_active"}
    if user.pk is None or not fields & {"password", "is_active"}:
        return ""  # a new user, or a save of other fields (the last login)
    old = type(user)._default_manager.filter(pk=user.pk).values("password", "is_active").first()
    if old is None:
        return ""
    if "is_active" in fields and old["is_active"] and not user.is_active:
        return "user deactivated"
    # set_password() leaves the raw password in `_password` until save(); a hash upgrade on
    # login (a new hasher or more iterations) clears it first, and is not a password change.
    changed = "password" in fields and old["password"] != user.password
    if changed and (getattr(user, "_password", None) is not None or not user.has_usable_password()):
        return "password changed"
    return ""


def note_token_revocation(sender: Any, instance: Any, update_fields: Any = None, **_: Any) -> None:
    setattr(instance, REASON_ATTR, _reason(instance, update_fields))


def revoke_tokens(sender: Any, instance: Any, created: bool, **_: Any) -> None:
    reason = getattr(instance, REASON_ATTR, "")
    if reason:
        setattr(instance, REASON_ATTR, "")
        # The system acts: a signal does not know who changed the user (the admin's own audit
        # row of the change names them).
        tokens_revoke_all(user=instance, by=None, reason=reason)


def connect() -> None:
    pre_save.connect(note_token_revocation, sender=settings.AUTH_USER_MODEL, weak=False)
    post_save.connect(revoke_tokens, sender=settings.AUTH_USER_MODEL, weak=False)
