from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from pipelines.demo import DEMO_PASSWORD, seed_demo


class Command(BaseCommand):
    help = (
        "Create the demo teams, users, environments and source catalog (idempotent). Its logins "
        "have a published password: with DEBUG off it refuses unless --with-demo-logins."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--with-demo-logins",
            action="store_true",
            help="Create the demo logins (published password, one an admin) even with DEBUG "
            "off. Only on a machine nobody else can reach.",
        )

    def handle(self, *args, **opts):
        if not settings.DEBUG and not opts["with_demo_logins"]:
            raise CommandError(
                "seed_demo creates logins whose password is published in the README (demo is "
                "an admin), and DEBUG is off: this looks like a real deployment. Run it with "
                "DEBUG=1 (make run does), or pass --with-demo-logins if you really mean it."
            )
        url = f"http://127.0.0.1:{settings.LOCAL_AIRFLOW_PORT}"
        seed_demo(
            today=timezone.localdate(),
            airflow_url=url,
            dags_root=settings.LOCAL_AIRFLOW_HOME / "dags",
        )
        self.stdout.write(f"Demo ready: log in as demo / {DEMO_PASSWORD} (Airflow at {url}).")
