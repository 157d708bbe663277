from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand

from orchestrator.local import LocalAirflow, ensure_venv
from pipelines.demo import demo_connections


def local_airflow() -> LocalAirflow:
    """The demo Airflow: fixed users, fast DAG-folder refresh, the demo connections."""
    return LocalAirflow(
        home=settings.LOCAL_AIRFLOW_HOME,
        port=settings.LOCAL_AIRFLOW_PORT,
        connections=demo_connections(),
    )


class Command(BaseCommand):
    help = "Manage the local Airflow 3.3 (its own virtualenv under .airflow/)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["install", "start", "stop", "status", "foreground"])

    def handle(self, *args, **opts):
        action = opts["action"]
        if action == "install":
            self.stdout.write(f"Airflow ready at {ensure_venv()}")
            return
        airflow = local_airflow()
        if action == "start":
            airflow.start()
            self.stdout.write(f"Airflow running at {airflow.url}")
        elif action == "stop":
            airflow.stop()
            self.stdout.write("Airflow stopped.")
        elif action == "status":
            self.stdout.write(json.dumps(airflow.status(), indent=2, default=str))
        else:
            airflow.run_foreground()
