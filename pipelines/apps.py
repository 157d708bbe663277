from __future__ import annotations

from importlib import import_module

from django.apps import AppConfig

# The areas that own Celery tasks, each in `<area>/tasks.py`. portal/celery.py autodiscovers the
# same list in workers and beat; a new area with tasks is added here, once.
TASK_PACKAGES = (
    "pipelines.core",
    "pipelines.deployments",
    "pipelines.runs",
    "pipelines.alerts",
    "pipelines.backfills",
)


class PipelinesConfig(AppConfig):
    name = "pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the Celery tasks in every process, not only in workers (Celery's autodiscovery
        # runs when a worker starts): services enqueue by task name (core.outbox), and the web
        # process must know those names to send them. Imported here because a tasks module
        # imports models, which Django allows only once the app registry is ready.
        for package in TASK_PACKAGES:
            import_module(f"{package}.tasks")
        from django.contrib.auth.signals import user_logged_in

        from pipelines.core import signals
        from pipelines.web.sessions import on_login

        signals.connect()
        user_logged_in.connect(on_login, weak=False)
