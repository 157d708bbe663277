"""Sessions that end when idle, and the client address that login lockouts count by.

A session lives SESSION_COOKIE_AGE (= SESSION_IDLE_SECONDS) from its last save. A page load or a
form post renews it, at most once a minute (one session write, not one per request); htmx's
background GETs (polls, fragments) do not, so a dashboard left open still ends its session.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

SEEN_KEY = "portal_seen"
RENEW_EVERY_SECONDS = 60


def mark_seen(request: HttpRequest) -> bool:
    """Renew the session if it was last renewed a minute ago or more; return whether it was."""
    now = int(time.time())
    if now - request.session.get(SEEN_KEY, 0) < RENEW_EVERY_SECONDS:
        return False
    # Modifying the session makes SessionMiddleware save it with a fresh expiry and send the
    # cookie again.
    request.session[SEEN_KEY] = now
    return True


def on_login(sender: object, request: HttpRequest | None, user: object, **_: object) -> None:
    """A login is activity: the session it starts counts from now (and the next page in the
    minute writes nothing)."""
    if request is not None and hasattr(request, "session"):
        mark_seen(request)


class SessionIdleMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        background = request.headers.get("HX-Request") == "true" and request.method == "GET"
        if user is not None and user.is_authenticated and not background:
            mark_seen(request)  # inside SessionMiddleware: its response step saves the change
        return response


def client_ip(request: HttpRequest) -> str | None:
    """The address a login comes from (django-axes counts failures per address): REMOTE_ADDR,
    or the header LOGIN_CLIENT_IP_HEADER names when a proxy sets it."""
    header = settings.LOGIN_CLIENT_IP_HEADER
    if header and request.META.get(header):
        # X-Forwarded-For may list several: the proxy appends the address it saw last.
        return request.META[header].split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR")
