"""Who may do what. Rules only: they read the rows they are given."""

from __future__ import annotations

from typing import Any


def can_edit(user: object, pipeline: Any) -> bool:
    """Only members of the pipeline's team may change it."""
    return bool(
        getattr(user, "is_authenticated", False)
        and pipeline.team.memberships.filter(user=user).exists()
    )


def can_backfill(user: object, pipeline: Any) -> bool:
    """Members of the pipeline's team, and platform admins (on call for every team's data, and
    the only ones who may let a backfill over an environment's cap), may backfill it."""
    return can_edit(user, pipeline) or is_platform_admin(user)


def is_platform_admin(user: object) -> bool:
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_superuser", False))


def can_approve(user: object, pipeline: Any) -> bool:
    """Approvers of the pipeline's team, and platform admins, may approve its promotions.

    Whether this user may approve *this* request (not their own) is the releases service's
    rule; this one is only about the role.
    """
    if not getattr(user, "is_authenticated", False):
        return False
    if is_platform_admin(user):
        return True
    return pipeline.team.memberships.filter(user=user, role="approver").exists()
