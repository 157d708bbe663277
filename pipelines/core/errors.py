"""What a user reads when something unexpected failed: a sentence, never the exception's text.

An unexpected exception's text ("TypeError: int() argument must be…", a driver's message with
a host name, a repr with memory addresses) says nothing to a user and may say too much to
anyone. `user_error` logs it with its traceback and returns a sentence with a short reference
that finds the log line. Expected, domain errors (AirflowError.message, ScheduleError, a form's
ValidationError) keep their own sentences: they are written for users.
"""

from __future__ import annotations

import logging
import secrets

logger = logging.getLogger("pipelines.errors")


def user_error(exc: BaseException, *, doing: str = "") -> str:
    """Log `exc` (with its traceback) and return the sentence to show or store instead."""
    reference = secrets.token_hex(4)
    logger.error(
        "unexpected error%s [ref %s]: %s: %s",
        f" while {doing}" if doing else "",
        reference,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return (
        f"an internal error (reference {reference}; the detail is in the portal's log for "
        "the platform team)"
    )
