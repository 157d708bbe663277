"""The one outbox: a row that stands for work to be done once, outside the request.

A subclass adds its own columns and states; the base gives it a lease and a retry policy:

- `claim` takes the row with one conditional UPDATE (a claimable state, no live lease, due) and
  hands back a fresh lease token; a dead worker's lease runs out and the row can be claimed again.
  Every claim counts as an attempt until the step says otherwise, so a step that killed its
  worker (or never got to release its claim) counts too: the claim past the cap ends the row
  failed, saying so, instead of taking it for ever.
- The lease outlasts the task: never shorter than Celery's hard time limit plus a margin
  (`lease_seconds`), so a row is claimed again only once the worker that held it is gone.
- `finish` and `release` are fenced by that token: a worker whose lease expired and whose row was
  claimed again changes nothing (they return False).
- `release` either waits (`delay`: the work is in progress, e.g. Airflow still parsing; the claim
  does not count as an attempt) or retries a transient error with exponential backoff, until the
  attempt cap ends the row *failed* with the last error.
- `sweep` enqueues again every overdue row of every subclass: a row whose on-commit enqueue was
  lost (broker down) or whose worker died is never forgotten.

`attempts` counts tries that failed plus the one in progress (or the one that succeeded).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, ClassVar

from celery import current_app
from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

logger = logging.getLogger(__name__)

# The sweep leaves a due row alone this long: the on-commit or countdown enqueue normally runs
# first, and two workers racing for a row only waste a query (the claim lets one win).
SWEEP_GRACE = timedelta(seconds=20)
SWEEP_BATCH = 500
# What the last attempt says when its lease ran out before it finished or released the row.
LEASE_EXPIRED = (
    "The previous attempt did not finish within its lease: its worker was stopped or killed."
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a subclass retries transient errors."""

    max_attempts: int = 10
    backoff_first_s: float = 2.0
    backoff_max_s: float = 600.0
    # A longer lease than the rule's (`Outbox.lease_seconds`); 0: the rule's.
    lease_s: float = 0.0

    def backoff(self, attempts: int) -> float:
        """Return the wait before the next attempt, after `attempts` failed ones (1, 2, …)."""
        return min(self.backoff_first_s * 2 ** max(attempts - 1, 0), self.backoff_max_s)


class Outbox(models.Model):
    """Abstract base of every outbox row: deployments, run-now requests, alert deliveries."""

    # What a subclass sets: the Celery task (by name, so that a service never imports the task
    # module above it) that takes the row id, the states a worker may claim, the terminal
    # failure state.
    OUTBOX_TASK: ClassVar[str] = ""
    OUTBOX_CLAIMABLE: ClassVar[tuple[str, ...]] = ("pending",)
    OUTBOX_FAILED: ClassVar[str] = "failed"

    state = models.CharField(max_length=20, default="pending")
    attempts = models.PositiveIntegerField(default=0)
    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_until = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, default=timezone.now, help_text="Not claimed before this time."
    )
    last_error = models.TextField(
        blank=True, help_text="Why the last attempt did not finish (Airflow unreachable, …)."
    )

    class Meta:
        abstract = True

    # --- what a subclass may override ------------------------------------------------------------
    @classmethod
    def retry_policy(cls) -> RetryPolicy:
        return RetryPolicy()

    @classmethod
    def gave_up_message(cls, error: str, attempts: int) -> str:
        """The text that says the attempt cap ended the row, passed to `gave_up_fields`."""
        return f"Gave up after {attempts} attempts. Last error: {error}"

    @classmethod
    def gave_up_fields(cls, message: str) -> dict[str, Any]:
        """Extra columns set when the attempt cap ends a row (e.g. its user-facing error).

        May set `last_error` itself (to `message`) where that is the row's user-facing error.
        """
        return {}

    # --- the lease -------------------------------------------------------------------------------
    @classmethod
    def lease_seconds(cls) -> float:
        """How long a claim holds the row: at least Celery's hard time limit plus a margin.

        A shorter lease lets a second worker claim the row while the first is still in its
        step (a slow Airflow, a long file write), and both act on the outside world. The hard
        limit kills the first one before the lease ends, so at most one step of a row runs.
        """
        floor = settings.CELERY_TASK_TIME_LIMIT + settings.OUTBOX_LEASE_MARGIN_SECONDS
        return max(float(cls.retry_policy().lease_s), float(floor))

    @classmethod
    def claimable(cls, now: Any) -> Q:
        return (
            Q(state__in=cls.OUTBOX_CLAIMABLE)
            & (Q(lease_until__isnull=True) | Q(lease_until__lte=now))
            & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        )

    @classmethod
    def claim(cls, pk: int) -> uuid.UUID | None:
        """Take row `pk` for one attempt; return the lease token, or None if it is not ours.

        A row whose lease ran out (its worker died, or a step raised past its own handling)
        says so in `last_error`, and that attempt stays counted: the claim that would go past
        the attempt cap ends the row failed instead (None).
        """
        now = timezone.now()
        token = uuid.uuid4()
        taken = cls._default_manager.filter(cls.claimable(now), pk=pk).update(
            lease_token=token,
            lease_until=now + timedelta(seconds=cls.lease_seconds()),
            attempts=F("attempts") + 1,
            last_error=Case(
                When(lease_until__isnull=False, then=Value(LEASE_EXPIRED)),
                default=F("last_error"),
                output_field=models.TextField(),
            ),
        )
        if taken != 1:
            return None
        attempts, error = (
            cls._default_manager.filter(pk=pk, lease_token=token)
            .values_list("attempts", "last_error")
            .get()
        )
        if attempts > cls.retry_policy().max_attempts:
            message = cls.gave_up_message(error or LEASE_EXPIRED, attempts - 1)
            ended = {"last_error": error, **cls.gave_up_fields(message)}
            cls.finish(pk, token, state=cls.OUTBOX_FAILED, attempts=attempts - 1, **ended)
            return None
        return token

    @classmethod
    def finish(cls, pk: int, token: uuid.UUID, *, state: str, **fields: Any) -> bool:
        """End the attempt in `state`; False (nothing changed) when the lease is no longer ours."""
        return (
            cls._default_manager.filter(pk=pk, lease_token=token).update(
                state=state, lease_token=None, lease_until=None, next_attempt_at=None, **fields
            )
            == 1
        )

    @classmethod
    def release(
        cls,
        pk: int,
        token: uuid.UUID,
        *,
        error: str | None = None,
        delay: float | None = None,
        **fields: Any,
    ) -> float | None:
        """Give the row back to be claimed again; return seconds until it is due, None if not.

        Without `error` the work is in progress (check again in `delay` seconds) and the claim
        is not counted as an attempt. With `error`, a transient failure: the row is due again
        after an exponential backoff, or, at the attempt cap, ends failed with the error.
        Fenced like `finish`: None, nothing changed, when the lease is no longer ours.
        """
        now = timezone.now()
        rows = cls._default_manager.filter(pk=pk, lease_token=token)
        if error is None:
            wait = max(delay or 0.0, 0.0)
            changed = rows.update(
                lease_token=None,
                lease_until=None,
                next_attempt_at=now + timedelta(seconds=wait),
                attempts=F("attempts") - 1,
                **fields,
            )
            return wait if changed == 1 else None
        attempts = rows.values_list("attempts", flat=True).first()
        if attempts is None:
            return None
        policy = cls.retry_policy()
        if attempts >= policy.max_attempts:
            message = cls.gave_up_message(error, attempts)
            ended = {"last_error": error, **cls.gave_up_fields(message)}
            cls.finish(pk, token, state=cls.OUTBOX_FAILED, **ended)
            return None
        wait = delay if delay is not None else policy.backoff(attempts)
        changed = rows.update(
            lease_token=None,
            lease_until=None,
            next_attempt_at=now + timedelta(seconds=wait),
            last_error=error,
            **fields,
        )
        return wait if changed == 1 else None

    # --- enqueueing ------------------------------------------------------------------------------
    @classmethod
    def enqueue(cls, pk: int, *, countdown: float | None = None) -> None:
        """Send the row's task when the current transaction commits (at once outside one).

        The row is already saved, so a broker outage must not fail the caller: the error is
        logged and the sweep sends the row later. `robust=True` is the second line: Django logs
        and swallows whatever still escapes, and the other on-commit callbacks still run.
        """
        transaction.on_commit(partial(_send, cls.OUTBOX_TASK, pk, countdown), robust=True)

    @classmethod
    def due_ids(cls, *, now: Any = None, limit: int = SWEEP_BATCH) -> list[int]:
        """Return ids of rows overdue by more than the sweep's grace."""
        now = now or timezone.now()
        return list(
            cls._default_manager.filter(cls.claimable(now - SWEEP_GRACE))
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )


def _send(task_name: str, pk: int, countdown: float | None) -> None:
    send(task_name, pk, countdown=countdown)


def send(task_name: str, *args: Any, countdown: float | None = None) -> None:
    """Send a task by its name now; a broker outage is logged, never raised.

    By name, so that a service never imports a tasks module (an import-linter contract says so):
    a tasks module imports its area's services. The caller's row is already saved: the outbox
    sweep sends it later.
    """
    try:
        task = current_app.tasks[task_name]
        if countdown is None:
            task.delay(*args)
        else:
            task.apply_async(args=list(args), countdown=countdown)
    except Exception:  # broker down: kombu's OperationalError, socket errors, …
        logger.warning("could not enqueue %s%r; the outbox sweep will", task_name, args)


def send_on_commit(task_name: str, *args: Any) -> None:
    """Send a task by name when the current transaction commits (Django's robust on_commit)."""
    transaction.on_commit(partial(send, task_name, *args), robust=True)


def outbox_models() -> list[type[Outbox]]:
    """Every concrete outbox model (the app registry is the registry)."""
    return [m for m in apps.get_models() if issubclass(m, Outbox) and m.OUTBOX_TASK]


def sweep(*, now: Any = None) -> dict[str, int]:
    """Enqueue every overdue row of every outbox model; return how many per model."""
    sent: dict[str, int] = {}
    for model in outbox_models():
        ids = model.due_ids(now=now)
        for pk in ids:
            _send(model.OUTBOX_TASK, pk, None)
        sent[model._meta.label] = len(ids)
    return sent
