"""Template context every page gets: the approvals badge in the nav."""

from __future__ import annotations

from functools import cached_property

from django.http import HttpRequest

from pipelines.releases.selectors import promotion_pending_count


class ApprovalsBadge:
    """How many pending promotions the viewer may decide; counted (one query) only when a
    template shows it, so pages without the nav, and visitors, pay nothing."""

    def __init__(self, user: object) -> None:
        self.user = user

    @cached_property
    def count(self) -> int:
        return promotion_pending_count(user=self.user)


def approvals(request: HttpRequest) -> dict[str, ApprovalsBadge]:
    return {"approvals_badge": ApprovalsBadge(getattr(request, "user", None))}
