"""Celery tasks of the core area: the one outbox sweep (its name keeps `pipelines.tasks.`)."""

from __future__ import annotations

from celery import shared_task

from pipelines.core import outbox


@shared_task(name="pipelines.tasks.outbox_sweep")
def outbox_sweep() -> None:
    """Beat: enqueue again every outbox row left due while the broker or a worker was down."""
    outbox.sweep()
