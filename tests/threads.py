"""Callers at the same moment, each in its own thread with its own database connection: the
races that row locks and unique constraints must decide (tests with transaction=True)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def at_once(*calls: Callable[[], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run every call in a thread of its own, all started together; return what they returned
    and what they raised (each in finishing order). A call that must wait for the others at a
    point of its own holds a threading.Barrier there."""
    returned: list[Any] = []
    raised: list[BaseException] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            returned.append(call())
        except BaseException as exc:  # reported to the test, in its thread
            raised.append(exc)
        finally:
            connection.close()  # the thread's own connection, or the test database stays busy

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return returned, raised
