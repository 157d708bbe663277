"""Celery tasks of the deployments area (registered names keep `pipelines.tasks.`: the beat
schedule, `Outbox.OUTBOX_TASK` and messages already queued name them so)."""

from __future__ import annotations

from celery import shared_task

from pipelines.deployments import services as deploy
from pipelines.deployments.models import Deployment


@shared_task(name="pipelines.tasks.deployment_run", acks_late=True)
def deployment_run(deployment_id: int) -> None:
    """Take one deploy step; the next (a registration check, a retry) is enqueued, not awaited."""
    again = deploy.deployment_run(deployment_id=deployment_id)
    if again is not None:
        Deployment.enqueue(deployment_id, countdown=again)
