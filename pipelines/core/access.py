"""Who may do what. Rules only: they read the rows they are given."""

from __future__ import annotations

from typing import Any


def can_edit(user: object, pipeline: Any) -> bool:
    """Only members of the pipeline's team may change it."""
    return bool(
        getattr(user, "is_authenticated", False)
        and pipeline.team.memberships.filter(user=user).exists()
    )
