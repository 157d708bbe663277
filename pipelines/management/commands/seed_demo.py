from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from pipelines.demo import DEMO_PASSWORD, seed_demo


class Command(BaseCommand):
    help = "Create the demo teams, users, environments and source catalog (idempotent)."

    def handle(self, *args, **opts):
        url = f"http://127.0.0.1:{settings.LOCAL_AIRFLOW_PORT}"
        seed_demo(
            today=timezone.localdate(),
            airflow_url=url,
            dags_root=settings.LOCAL_AIRFLOW_HOME / "dags",
        )
        self.stdout.write(f"Demo ready: log in as demo / {DEMO_PASSWORD} (Airflow at {url}).")
