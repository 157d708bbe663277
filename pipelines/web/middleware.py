"""Answer 400, not 500, to text PostgreSQL cannot store: NUL characters and lone surrogates.

psycopg refuses NUL in a text value (DataError) and cannot encode a lone surrogate as UTF-8
(UnicodeEncodeError); either one, typed into a URL or a JSON string, used to reach the database
from whatever view read it and surface as a 500. The path, the query string and JSON bodies are
checked before any view runs. HTML form bodies are left to the forms, whose CharFields already
refuse NUL with an error next to the field; the exception hook is the net under any view that
reads a raw value itself.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from django.db import DataError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
API_PREFIX = "/api/"
MESSAGE = (
    "The {where} holds a NUL character or a lone surrogate (\\u0000, \\ud800–\\udfff): "
    "text the portal cannot store. Remove it and send the request again."
)


def unstorable(text: str) -> bool:
    """Return whether PostgreSQL would refuse `text` in a text column."""
    return UNSTORABLE.search(text) is not None


def json_strings(value: Any) -> Iterator[str]:
    """Yield every string in a decoded JSON document, object keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_strings(item)


def unstorable_part(request: HttpRequest) -> str | None:
    """Name the part of the request holding unstorable text (path, query string, JSON body)."""
    if unstorable(request.path_info):
        return "URL path"
    if any(unstorable(key) or any(map(unstorable, values)) for key, values in request.GET.lists()):
        return "query string"
    if request.content_type == "application/json" and request.body:
        try:
            document = json.loads(request.body)
        except ValueError:
            return None  # not JSON at all: the view's own parser answers 4xx
        if any(map(unstorable, json_strings(document))):
            return "JSON body"
    return None


def refusal(request: HttpRequest, where: str) -> HttpResponse:
    message = MESSAGE.format(where=where)
    if request.path_info.startswith(API_PREFIX):
        return JsonResponse({"detail": message}, status=400)
    return HttpResponse(message + "\n", status=400, content_type="text/plain; charset=utf-8")


def is_unstorable_error(exc: Exception) -> bool:
    if isinstance(exc, DataError):
        return "NUL" in str(exc)
    return isinstance(exc, UnicodeEncodeError) and unstorable(exc.object[exc.start : exc.end])


class UnstorableTextMiddleware:
    """Refuse requests whose path, query string or JSON body holds unstorable text."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        where = unstorable_part(request)
        if where is not None:
            return refusal(request, where)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not is_unstorable_error(exc):
            return None
        # A view passed a raw request value to the database: answer 400, but log it, because
        # the view should have validated the value itself.
        logger.warning("unstorable text reached the database from %s: %s", request.path, exc)
        return refusal(request, "request")
