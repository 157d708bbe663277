"""Reads for the audit log page and GET /api/v1/audit."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from pipelines.core.models import AuditEvent
from pipelines.core.tokens import audit_visible
from pipelines.dashboards.selectors import keyset_page

AUDIT_ORDER = ["-at", "-id"]


def audit_queryset(
    *,
    viewer: Any,
    pipeline: str = "",
    actor: str = "",
    action: str = "",
    environment: str = "",
) -> QuerySet[AuditEvent]:
    """Audit events `viewer` may see matching every given filter, newest first (rows naming an
    API token only for its owner and platform admins)."""
    rows = AuditEvent.objects.filter(audit_visible(viewer))
    rows = rows.select_related("actor", "pipeline", "environment")
    if pipeline:
        rows = rows.filter(pipeline__slug=pipeline)
    if actor:
        rows = rows.filter(actor__username=actor)
    if action:
        rows = rows.filter(action=action)
    if environment:
        rows = rows.filter(environment__slug=environment)
    return rows.order_by(*AUDIT_ORDER)


def audit_page(
    *,
    viewer: Any,
    pipeline: str,
    actor: str,
    action: str,
    environment: str,
    page: int | str,
    after: str = "",
    before: str = "",
) -> dict[str, Any]:
    """What /audit/ shows: one keyset page of events and the filters it was asked for."""
    filters = {"pipeline": pipeline, "actor": actor, "action": action, "environment": environment}
    rows = audit_queryset(viewer=viewer, **filters)
    return {
        "events": keyset_page(
            rows, AUDIT_ORDER, query=filters, page=str(page), after=after, before=before
        ),
        "filters": filters,
        "actions": AuditEvent.Action.choices,
    }
