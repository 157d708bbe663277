from __future__ import annotations

from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the Celery tasks in every process, not only in workers (Celery's autodiscovery
        # runs when a worker starts): services enqueue by task name (core.outbox), and the web
        # process must know those names to send them.
        from pipelines import tasks  # noqa: F401
