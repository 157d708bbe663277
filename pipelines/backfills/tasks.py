"""Celery tasks of the backfills area (registered as `pipelines.tasks.<name>`, like the others)."""

from __future__ import annotations

from celery import shared_task

from pipelines.backfills import services as backfills
from pipelines.backfills.models import Backfill


@shared_task(name="pipelines.tasks.backfill_step", acks_late=True)
def backfill_step(backfill_id: int) -> None:
    """One step of one backfill; the next is enqueued with its countdown, never awaited."""
    again = backfills.backfill_step(backfill_id=backfill_id)
    if again is not None:
        Backfill.enqueue(backfill_id, countdown=again)
