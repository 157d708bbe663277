"""The audit log: one append-only row per action, written in the action's own transaction."""

from __future__ import annotations

from typing import Any

from pipelines.core.models import AuditEvent


def audit_record(
    *,
    actor: Any,
    action: str,
    pipeline: Any = None,
    environment: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    summary: str = "",
) -> AuditEvent:
    """Record one action; call it inside the caller's transaction, so both commit or neither.

    `actor` None is the system. `before`/`after` hold only what changed (JSON-able values).
    """
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        action=AuditEvent.Action(action),  # an unknown action is a ValueError, not a row
        pipeline=pipeline,
        environment=environment,
        before=before,
        after=after,
        summary=summary,
    )
