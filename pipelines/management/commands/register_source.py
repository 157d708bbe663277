from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from pipelines.catalog.services import CatalogError, source_register


class Command(BaseCommand):
    help = "Introspect a source database (postgresql:// or sqlite:// URL) into the catalog."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Catalog name of the source database, e.g. shop")
        parser.add_argument("url", help="Database URL to introspect (not stored)")
        parser.add_argument("--conn-id", required=True, help="Airflow connection id for it")
        parser.add_argument("--schema", default="", help="PostgreSQL schema (default public)")
        parser.add_argument("--table", action="append", dest="tables", help="Only this table")
        parser.add_argument(
            "--team",
            action="append",
            dest="teams",
            help="Grant the source to this team (slug; repeat for more). Platform admins can "
            "grant more later in the admin.",
        )

    def handle(self, *args, **opts):
        try:
            tables = source_register(
                name=opts["name"],
                url=opts["url"],
                conn_id=opts["conn_id"],
                schema=opts["schema"],
                tables=opts["tables"],
                teams=opts["teams"],
            )
        except CatalogError as exc:
            raise CommandError(str(exc)) from exc
        for table in tables:
            cols = ", ".join(f"{c.name}:{c.kind}" for c in table.columns.all())
            self.stdout.write(f"{opts['name']}.{table.qualified_name}: {cols}")
