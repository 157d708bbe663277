from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from pipelines.core.tokens import SCOPES, TokenError, token_issue


class Command(BaseCommand):
    help = (
        "Create a personal API token for a user and print it (it is shown only once). "
        "Scopes read and write unless --scope is given; expiry API_TOKEN_DEFAULT_DAYS."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="default")
        parser.add_argument("--days", type=int, default=None, help="Days until it expires.")
        parser.add_argument(
            "--scope",
            action="append",
            choices=SCOPES,
            dest="scopes",
            help="Repeat for several (default: read and write).",
        )

    def handle(self, *args, **opts):
        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"No user {opts['username']!r}.")
        try:
            issued = token_issue(
                user=user,
                name=opts["name"],
                expires_in_days=opts["days"],
                scopes=opts["scopes"] or ["read", "write"],
            )
        except TokenError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(issued.key)
