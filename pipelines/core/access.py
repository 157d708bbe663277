"""Who may do what. Rules only: they read the rows they are given."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from pipelines.core.models import Membership


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


# --- four eyes: who may decide a request (promotions, backfills, run-now re-loads) --------------
# The request rows have `pipeline` and `requested_by`; the caller filters those still awaiting a
# decision. The services apply the same rule to one locked row (releases.services._decidable).


def decidable_by(user: object, rows: QuerySet) -> QuerySet:
    """The requests among `rows` that `user` may decide: not their own, and of a team they
    approve for unless they are a platform admin (not evaluated: the badge unions them)."""
    rows = rows.exclude(requested_by=user)
    if not is_platform_admin(user):
        teams = Membership.objects.filter(user=user, role=Membership.Role.APPROVER)
        rows = rows.filter(pipeline__team_id__in=teams.values("team_id"))
    return rows


def may_decide(user: object, request: Any, approver_teams: set[int]) -> bool:
    """Whether `user` may decide `request` (awaiting a decision), with no query:
    `approver_teams` holds the ids of the teams `user` approves for."""
    if request.requested_by_id == getattr(user, "pk", None):
        return False
    return is_platform_admin(user) or request.pipeline.team_id in approver_teams
