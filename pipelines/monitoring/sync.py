"""Sync one environment's runs from Airflow into RunRecord, then refresh what changed.

Incremental: one paged stream of "runs changed since the watermark" across all DAGs
(`/dags/~/dagRuns?updated_at_gte=`), not one call per DAG. The watermark is the start time of
the last successful sync minus an overlap, so a run updated while a sync was reading is read again
next time; upserts make that harmless. Safe to run twice at once: a lease on SyncState lets one
sync per environment work, the other returns at once. When Airflow is unreachable nothing is
reset: the health rows keep their values and say since when the orchestrator is unreachable.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from pipelines.core import schedule
from pipelines.core.airflow import (
    AirflowClient,
    AirflowError,
    AirflowUnavailable,
    DagRunState,
    run_failure_text,
)
from pipelines.core.errors import user_error
from pipelines.deployments.models import Environment
from pipelines.monitoring import health, monitor
from pipelines.monitoring.models import NEVER_STARTED, PipelineHealth, RunRecord, SyncState
from pipelines.runs.models import RunRequest

logger = logging.getLogger(__name__)
OVERLAP = timedelta(seconds=60)
FIRST_SYNC_LOOKBACK = timedelta(days=30)
LEASE = timedelta(minutes=5)
FAILURES_PER_SYNC = 20
RUN_FIELDS = [
    "pipeline", "run_type", "state", "logical_date", "data_interval_start", "data_interval_end",
    "queued_at", "start_date", "end_date", "duration_s", "partition_start", "partition_end",
    "synced_at",
]  # fmt: skip


@dataclass(frozen=True)
class SyncResult:
    runs_seen: int = 0
    runs_written: int = 0
    pipelines_recomputed: int = 0
    skipped: bool = False


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _parse_stored(value: str | None) -> datetime | None:
    """`_parse` for a stored column: a time without an offset is UTC (as PostgreSQL reads it)."""
    parsed = _parse(value)
    return parsed.replace(tzinfo=UTC) if parsed and parsed.tzinfo is None else parsed


def run_partitions(run: dict[str, Any], spec: Any) -> tuple[datetime | None, datetime | None]:
    """Return the [start, end) partitions a DagRun loads, by the DAG template's own rule."""
    step = schedule.GRAINS[spec.partition_grain]
    requested = (run.get("conf") or {}).get("partition")
    if requested:
        try:
            start = schedule.parse_partition(str(requested), spec.partition_grain)
        except schedule.ScheduleError:
            return None, None
        return start, start + step
    start, end = _parse(run.get("data_interval_start")), _parse(run.get("data_interval_end"))
    if start is None or end is None:
        return None, None
    # Cached: the runs of one sync share a few thousand interval ends across every pipeline.
    lo = _floor_to_grain(start, spec.partition_grain, spec.timezone)
    hi = _floor_to_grain(end, spec.partition_grain, spec.timezone)
    return (lo, hi) if lo < hi else (None, None)


_floor_to_grain = functools.lru_cache(maxsize=65536)(schedule.floor_to_grain)


def to_record(
    run: dict[str, Any], *, environment: Environment, pipeline_id: int, spec: Any, now: datetime
) -> RunRecord:
    start, end = run_partitions(run, spec)
    queued = _parse_stored(run.get("queued_at")) or _parse_stored(run.get("run_after")) or now
    duration = run.get("duration")
    if duration is not None and not isinstance(duration, int | float):
        raise ValueError(f"duration {duration!r} is not a number")
    dag_id, dag_run_id = run["dag_id"], run["dag_run_id"]
    run_type, state = run.get("run_type") or "", run.get("state") or ""
    for name, value in (
        ("dag_id", dag_id), ("dag_run_id", dag_run_id), ("run_type", run_type), ("state", state)
    ):  # fmt: skip
        # Checked here, per run: one value the column cannot hold would fail the whole upsert.
        if len(value) > _MAX_LENGTH[name]:
            raise ValueError(f"{name} is longer than the portal stores")
    # Positional, in the model's field order: Model.__init__ with keywords (and a related
    # instance to set) cost ~30 µs a run, most of a large sync's to_record.
    record = RunRecord(
        None,  # id
        environment.id,
        pipeline_id,
        dag_id,
        dag_run_id,
        run_type,
        state,
        _parse_stored(run.get("logical_date")),
        _parse_stored(run.get("data_interval_start")),
        _parse_stored(run.get("data_interval_end")),
        queued,
        _parse_stored(run.get("start_date")),
        _parse_stored(run.get("end_date")),
        duration,
        start and health.as_stored(start),
        end and health.as_stored(end),
        now,
    )
    _ENVIRONMENT.set_cached_value(record, environment)
    return record


_MAX_LENGTH = {
    name: RunRecord._meta.get_field(name).max_length
    for name in ("dag_id", "dag_run_id", "run_type", "state")
}
_ENVIRONMENT = RunRecord._meta.get_field("environment")
# to_record passes its values in this order; a new or moved field must be added there too.
assert [f.attname for f in RunRecord._meta.concrete_fields][:17] == [
    "id", "environment_id", "pipeline_id", "dag_id", "dag_run_id", "run_type", "state",
    "logical_date", "data_interval_start", "data_interval_end", "queued_at", "start_date",
    "end_date", "duration_s", "partition_start", "partition_end", "synced_at",
], "RunRecord's fields moved: update sync.to_record"  # fmt: skip


def _claim(environment: Environment, now: datetime) -> SyncState | None:
    state, _ = SyncState.objects.get_or_create(environment=environment)
    claimed = SyncState.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lte=now), id=state.id
    ).update(lease_until=now + LEASE, last_started_at=now)
    if not claimed:
        return None
    state.refresh_from_db()
    return state


def environment_sync(*, environment_id: int, client: AirflowClient | None = None) -> SyncResult:
    """Pull runs changed since the watermark, upsert them, recompute the pipelines they touch.

    One pipeline's bad run or spec is logged, shown on its health row and in SyncState's
    last_error, and skipped; the others are synced. The lease is released however this ends.
    """
    environment = Environment.objects.get(id=environment_id)
    started = timezone.now()
    state = _claim(environment, started)
    if state is None:
        return SyncResult(skipped=True)
    try:
        with _collector_paused():
            return _sync(environment, state, started, client)
    except Exception as exc:
        if not isinstance(exc, AirflowError):  # those wrote their own last_error
            error = f"Sync failed: {user_error(exc, doing=f'syncing {environment.slug}')}."
            SyncState.objects.filter(id=state.id).update(last_error=error)
        raise
    finally:
        # Fenced by our own lease: a sync that outlived it must not free a newer one's claim.
        SyncState.objects.filter(id=state.id, lease_until=state.lease_until).update(
            lease_until=None
        )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one sync; it runs as usual afterwards.

    A large sync holds tens of thousands of fresh objects (Airflow's runs, the records), and
    every full collection walks them all again: a third of the time reading 50,000 runs took.
    Memory is still freed by reference counting; nothing here needs a cycle freed meanwhile.
    """
    if not gc.isenabled():  # paused by someone else: theirs to resume
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _sync(
    environment: Environment, state: SyncState, started: datetime, client: AirflowClient | None
) -> SyncResult:
    if client is None:
        try:
            client = AirflowClient.for_environment(environment)
        except AirflowError as exc:  # unreadable credentials, or a URL refused by a rule newer
            # than the row: no request could succeed, so say why where Airflow's errors go
            SyncState.objects.filter(id=state.id).update(last_error=exc.message)
            raise
    # Runs' updated_at is Airflow's clock: ask from Airflow's time at the last sync's start, so
    # an Airflow clock behind the portal's does not skip runs (a row synced before it was kept:
    # the portal's).
    last = state.airflow_watermark or state.watermark
    since = last - OVERLAP if last else started - FIRST_SYNC_LOOKBACK
    airflow_started: datetime | None = None
    unreadable: dict[int, monitor.Unreadable] = {}
    deployed = monitor.deployed_pipelines(environment, unreadable=unreadable)
    # Their health rows say so (recomputed below); the sync reads everyone else's runs.
    errors: dict[int, str] = {pid: u.error for pid, u in unreadable.items()}
    by_dag = {}
    for d in deployed.values():
        try:
            by_dag[environment.dag_id_for(d.spec.name)] = d
        except Exception as exc:
            error = f"Its DAG id cannot be made: {user_error(exc)}."
            _failed(environment, d.pipeline_id, errors, error)
    prefix = environment.dag_id_prefix
    try:
        records, seen = [], 0
        for run in client.runs_updated_since(since, dag_id_prefix=prefix):
            if airflow_started is None:  # the first page's Date: before any later update
                airflow_started = getattr(client, "server_time", None)
            seen += 1
            d = by_dag.get(run.get("dag_id"))
            if d is not None:
                try:
                    record = to_record(
                        run,
                        environment=environment,
                        pipeline_id=d.pipeline_id,
                        spec=d.spec,
                        now=started,
                    )
                except Exception as exc:  # one odd run must not stop the environment's sync
                    error = (
                        f"The sync could not read run {run.get('dag_run_id')!r}: {user_error(exc)}."
                    )
                    _failed(environment, d.pipeline_id, errors, error)
                    continue
                records.append(record)
        ids = {dag_id: d.pipeline_id for dag_id, d in by_dag.items()}
        import_errors = {PurePosixPath(f).stem for f in client.import_error_files()}
        flags = {
            "is_paused": _ours(client.paused_dag_ids(dag_id_prefix=prefix), ids),
            "retrying": _ours(client.retrying_dag_ids(dag_id_prefix=prefix), ids),
            "has_import_error": _ours(import_errors, ids),
        }
    except AirflowUnavailable as exc:
        _mark_unreachable(environment, state, started, str(exc))
        raise
    except AirflowError as exc:
        SyncState.objects.filter(id=state.id).update(lease_until=None, last_error=exc.message)
        raise
    # A run updated while we paged is listed twice; one statement must not upsert a key twice.
    records = list({(r.dag_id, r.dag_run_id): r for r in records}.values())
    _upsert(records)
    explain_failures(environment, client)
    changed = {r.pipeline_id for r in records} | _flags_changed(environment, set(deployed), flags)
    changed |= set(errors)
    recomputed = (
        monitor.health_recompute(environment, changed, now=started, flags=flags, errors=errors)
        if changed
        else 0
    )
    PipelineHealth.objects.filter(
        environment=environment, orchestrator_unreachable_since__isnull=False
    ).update(orchestrator_unreachable_since=None)
    if airflow_started is None:  # no run changed: the one page's answer
        airflow_started = getattr(client, "server_time", None)
    SyncState.objects.filter(id=state.id).update(
        watermark=started,
        airflow_watermark=airflow_started,
        lease_until=None,
        last_finished_at=timezone.now(),
        last_runs_seen=seen,
        last_error="; ".join(f"pipeline {pid}: {error}" for pid, error in sorted(errors.items())),
        unreachable_since=None,
    )
    return SyncResult(runs_seen=seen, runs_written=len(records), pipelines_recomputed=recomputed)


UNIQUE_RUN = ["environment", "dag_id", "dag_run_id"]


def _upsert(records: list[RunRecord]) -> None:
    """Insert or update `records` by (environment, dag_id, dag_run_id).

    On PostgreSQL: COPY into a temporary table, then one INSERT … ON CONFLICT. bulk_create
    spends ~100 µs a row preparing values, which made it most of a large sync.
    """
    if connection.vendor != "postgresql":
        RunRecord.objects.bulk_create(
            records,
            batch_size=1000,
            update_conflicts=True,
            unique_fields=UNIQUE_RUN,
            update_fields=RUN_FIELDS,
        )
        return
    if not records:
        return
    meta = RunRecord._meta
    fields = [meta.get_field(name) for name in UNIQUE_RUN + RUN_FIELDS]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    updates = ", ".join(
        f"{name} = EXCLUDED.{name}"
        for name in (connection.ops.quote_name(meta.get_field(f).column) for f in RUN_FIELDS)
    )
    table = connection.ops.quote_name(meta.db_table)
    key = ", ".join(connection.ops.quote_name(meta.get_field(f).column) for f in UNIQUE_RUN)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE sync_runs ON COMMIT DROP AS "
            f"SELECT {columns} FROM {table} WITH NO DATA"
        )
        # Binary: psycopg then dumps datetimes and floats in C instead of formatting text.
        sql = f"COPY sync_runs ({columns}) FROM STDIN (FORMAT BINARY)"
        attnames = [f.attname for f in fields]
        with cursor.cursor.copy(sql) as copy:
            copy.set_types([f.db_type(connection).split("(")[0] for f in fields])
            for record in records:
                values = record.__dict__
                copy.write_row([values[name] for name in attnames])
        # In key order: the unique index is then walked once, not probed at random.
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM sync_runs ORDER BY {key} "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )
        cursor.execute("DROP TABLE sync_runs")  # now, not at commit: we may be in an outer atomic


def explain_failures(environment: Environment, client: AirflowClient) -> int:
    """Record why failed runs failed (task and message, from Airflow); return how many.

    At most FAILURES_PER_SYNC runs a sync, newest first, so a burst of failures never makes one
    sync slow; the rest are read by the next syncs (a partial index finds them).
    """
    unexplained = list(
        RunRecord.objects.filter(environment=environment, state=DagRunState.FAILED, error="")
        .exclude(NEVER_STARTED)  # nothing ran: no task to read a reason from
        .order_by("-queued_at")
        .values_list("id", "dag_id", "dag_run_id")[:FAILURES_PER_SYNC]
    )
    for record_id, dag_id, dag_run_id in unexplained:
        try:
            reason = run_failure_text(client, dag_id, dag_run_id)
        except Exception as exc:  # an answer we cannot read must not stop the sync
            reason = (
                "The portal could not read why this run failed: "
                f"{user_error(exc, doing=f'reading why {dag_id} {dag_run_id} failed')}."
            )
        if reason is None:
            break  # Airflow unreachable: the next sync asks again
        RunRecord.objects.filter(id=record_id).update(error=reason)
        # A run started from the portal shows the same reason on its request.
        RunRequest.objects.filter(dag_id=dag_id, dag_run_id=dag_run_id, last_error="").update(
            last_error=reason
        )
    return len(unexplained)


def _failed(environment: Environment, pipeline_id: int, errors: dict[int, str], error: str) -> None:
    logger.exception("sync of pipeline %s in %s: %s", pipeline_id, environment.slug, error)
    errors.setdefault(pipeline_id, error)


def _ours(dag_ids: set[str], ids: dict[str, int]) -> set[int]:
    return {ids[dag_id] for dag_id in dag_ids if dag_id in ids}


def _flags_changed(
    environment: Environment, deployed: set[int], flags: dict[str, set[int]]
) -> set[int]:
    """Return the pipelines with no health row yet or whose paused/retrying/import flags moved."""
    current = {
        pid: dict(zip(monitor.FLAGS, values, strict=True))
        for pid, *values in PipelineHealth.objects.filter(environment=environment).values_list(
            "pipeline_id", *monitor.FLAGS
        )
    }
    return {
        pid
        for pid in deployed
        if pid not in current
        or any(current[pid][flag] != (pid in flags[flag]) for flag in monitor.FLAGS)
    }


def _mark_unreachable(
    environment: Environment, state: SyncState, now: datetime, error: str
) -> None:
    since = state.unreachable_since or now
    SyncState.objects.filter(id=state.id).update(
        lease_until=None, unreachable_since=since, last_error=error
    )
    PipelineHealth.objects.filter(
        environment=environment, orchestrator_unreachable_since__isnull=True
    ).update(orchestrator_unreachable_since=since)
