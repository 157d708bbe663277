"""A fake AirflowClient for unit tests: the only boundary unit tests fake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.core.airflow import (
    AirflowConflict,
    AirflowNotFound,
    AirflowUnavailable,
    ImportError_,
)


class FakeAirflow:
    """Registers every written DAG at once, unless told to be down or to reject a file."""

    def __init__(self) -> None:
        self.down = False
        self.reject: dict[str, str] = {}  # filename -> stack trace
        self.dags: dict[str, dict[str, Any]] = {}
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.backfills: dict[int, dict[str, Any]] = {}
        self.calls: list[str] = []
        # Faults of the backfill endpoints: creates whose answer is lost after Airflow made
        # them (a read timeout, a dropped connection, a 5xx from a proxy); a hook run in the
        # middle of a create, once Airflow has made it (another worker, say).
        self.lose_create_replies = 0
        self.during_create: Any = None

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise AirflowUnavailable("Airflow at http://airflow.invalid is unreachable: refused")

    # Airflow's clock, as its Date header gives it (to the second); `skew` moves it away from
    # the portal's.
    skew = timedelta(0)

    @property
    def server_time(self) -> datetime:
        return (datetime.now(UTC) + self.skew).replace(microsecond=0)

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        self._call("get_dag")
        if any(f.startswith(dag_id) for f in self.reject):
            return None
        # Airflow parses the file "now" (by its clock): any moment after it was written, and
        # each parse after the last one (also under a frozen clock).
        dag = self.dags.setdefault(dag_id, {"dag_id": dag_id, "is_paused": True})
        parsed = datetime.now(UTC) + self.skew
        if dag.get("last_parsed_time"):
            previous = datetime.fromisoformat(dag["last_parsed_time"])
            parsed = max(parsed, previous + timedelta(microseconds=1))
        dag.update(last_parsed_time=parsed.isoformat(), file_token=f"tok-{dag_id}")
        return dag

    def import_errors(self, *, filename_pattern: str | None = None) -> list[ImportError_]:
        self._call("import_errors")
        now = datetime.now(UTC).isoformat()
        # Like Airflow: names relative to the bundle, matched as a substring.
        return [
            ImportError_(f"dev/{f}", trace, now)
            for f, trace in self.reject.items()
            if filename_pattern is None or filename_pattern in f
        ]

    def reparse_file(self, file_token: str) -> None:
        self._call("reparse_file")

    def set_paused(self, dag_id: str, *, paused: bool) -> dict[str, Any]:
        self._call("set_paused")
        self.dags[dag_id]["is_paused"] = paused
        return self.dags[dag_id]

    def trigger_run(self, dag_id: str, *, dag_run_id: str, logical_date, conf, note="") -> dict:
        self._call("trigger_run")
        if (dag_id, dag_run_id) in self.runs:
            raise AirflowConflict("Airflow answered 409: exists", status=409)
        run = {"dag_run_id": dag_run_id, "state": "queued", "conf": conf}
        self.runs[(dag_id, dag_run_id)] = run
        return run

    def get_run(self, dag_id: str, dag_run_id: str) -> dict[str, Any]:
        self._call("get_run")
        if (dag_id, dag_run_id) not in self.runs:
            raise AirflowNotFound("Airflow answered 404", status=404)
        return self.runs[(dag_id, dag_run_id)]

    def failure_reason(self, dag_id: str, dag_run_id: str) -> str:
        self._call("failure_reason")
        return self.runs[(dag_id, dag_run_id)].get("reason", "")

    # Backfills: one running per DAG (a second is a 409, like Airflow's); tests finish them.
    def backfill_create(
        self, dag_id, from_date, to_date, *, reprocess, max_active_runs, dag_run_conf=None
    ) -> dict[str, Any]:
        self._call("backfill_create")
        if any(b["dag_id"] == dag_id and not b["completed_at"] for b in self.backfills.values()):
            raise AirflowConflict(
                "Airflow answered 409: There is already a running backfill for this DAG",
                status=409,
            )
        backfill = {
            "id": len(self.backfills) + 1,
            "dag_id": dag_id,
            "from_date": from_date,
            "to_date": to_date,
            "reprocess_behavior": reprocess,
            "max_active_runs": max_active_runs,
            "is_paused": False,
            "created_at": datetime.now(UTC).isoformat(),
            "completed_at": None,
        }
        self.backfills[backfill["id"]] = backfill
        if self.during_create is not None:
            hook, self.during_create = self.during_create, None
            hook()
        if self.lose_create_replies:
            self.lose_create_replies -= 1
            raise AirflowUnavailable("Airflow at http://airflow.invalid is unreachable: reset")
        return backfill

    def backfill_list(self, dag_id: str) -> list[dict[str, Any]]:
        """Like GET /api/v2/backfills?dag_id=: oldest first, dates as ISO strings."""
        self._call("backfill_list")
        return [
            {
                **b,
                "from_date": b["from_date"].isoformat(),
                "to_date": b["to_date"].isoformat(),
            }
            for b in sorted(self.backfills.values(), key=lambda b: b["id"])
            if b["dag_id"] == dag_id
        ]

    def backfill_get(self, backfill_id: int) -> dict[str, Any]:
        self._call("backfill_get")
        return self.backfills[backfill_id]

    def _not_completed(self, backfill_id: int) -> None:
        if self.backfills[backfill_id]["completed_at"]:  # like Airflow's pause and unpause
            raise AirflowConflict(
                "Airflow answered 409: Backfill is already completed.", status=409
            )

    def backfill_pause(self, backfill_id: int) -> dict[str, Any]:
        self._call("backfill_pause")
        self._not_completed(backfill_id)
        self.backfills[backfill_id]["is_paused"] = True
        return self.backfills[backfill_id]

    def backfill_unpause(self, backfill_id: int) -> dict[str, Any]:
        self._call("backfill_unpause")
        self._not_completed(backfill_id)
        self.backfills[backfill_id]["is_paused"] = False
        return self.backfills[backfill_id]

    def backfill_cancel(self, backfill_id: int) -> dict[str, Any]:
        """Like Airflow: 409 once completed; else its queued runs fail without starting."""
        self._call("backfill_cancel")
        if self.backfills[backfill_id]["completed_at"]:
            raise AirflowConflict("Airflow answered 409: Backfill is completed.", status=409)
        for run in self.runs.values():
            if run.get("backfill_id") == backfill_id and run["state"] == "queued":
                run["state"] = "failed"
        self.backfills[backfill_id]["completed_at"] = datetime.now(UTC).isoformat()
        return self.backfills[backfill_id]

    def add_backfill_run(
        self, backfill_id: int, logical_date: datetime, state: str, **fields: Any
    ) -> dict[str, Any]:
        """A run of backfill `backfill_id`, queued now; started unless it is queued."""
        now = datetime.now(UTC).isoformat()
        run = {
            "dag_id": self.backfills[backfill_id]["dag_id"],
            "dag_run_id": f"backfill__{logical_date.isoformat()}",
            "run_type": "backfill",
            "logical_date": logical_date.isoformat(),
            "state": state,
            "queued_at": now,
            "start_date": None if state == "queued" else now,
            "backfill_id": backfill_id,
            **fields,
        }
        self.runs[(run["dag_id"], run["dag_run_id"])] = run
        return run

    def backfill_runs(self, dag_id: str, from_date: datetime, to_date: datetime) -> list[dict]:
        self._call("backfill_runs")
        return [
            run
            for (dag, _), run in self.runs.items()
            if dag == dag_id
            and run.get("run_type") == "backfill"
            and from_date <= datetime.fromisoformat(run["logical_date"]) <= to_date
        ]

    def finish_backfill(self, backfill_id: int) -> None:
        self.backfills[backfill_id]["completed_at"] = datetime.now(UTC).isoformat()


class FakeSyncAirflow:
    """The list endpoints the sync reads, serving runs the test puts in."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.paused: set[str] = set()
        self.retrying: set[str] = set()
        self.import_errors: set[str] = set()
        self.down = False
        self.since_seen: list[datetime] = []
        self.failures: dict[tuple[str, str], str] = {}  # (dag_id, run_id) -> reason
        self.failures_asked: list[tuple[str, str]] = []

    def add_run(self, dag_id: str, run_id: str, state: str, **fields: Any) -> None:
        self.runs[(dag_id, run_id)] = {
            "dag_id": dag_id, "dag_run_id": run_id, "state": state, "run_type": "scheduled",
            "conf": {}, "logical_date": None, "data_interval_start": None,
            "data_interval_end": None, "queued_at": None, "start_date": None, "end_date": None,
            "duration": None, **fields,
        }  # fmt: skip

    def _check(self) -> None:
        if self.down:
            raise AirflowUnavailable("Airflow at http://airflow.invalid is unreachable: refused")

    def runs_updated_since(self, since: datetime, *, dag_id_prefix: str = ""):
        self._check()
        self.since_seen.append(since)
        return [r for (d, _), r in self.runs.items() if d.startswith(dag_id_prefix)]

    def paused_dag_ids(self, *, dag_id_prefix: str = "") -> set[str]:
        self._check()
        return set(self.paused)

    def retrying_dag_ids(self, *, dag_id_prefix: str = "") -> set[str]:
        self._check()
        return set(self.retrying)

    def import_error_files(self) -> set[str]:
        self._check()
        return set(self.import_errors)

    def failure_reason(self, dag_id: str, dag_run_id: str) -> str:
        self._check()
        self.failures_asked.append((dag_id, dag_run_id))
        if (dag_id, dag_run_id) not in self.failures:
            raise AirflowNotFound("Airflow answered 404: no such run", status=404)
        return self.failures[(dag_id, dag_run_id)]


# --- Runs of the reference pipeline orders-daily (daily 02:00 UTC), for sync tests -------------


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def scheduled(airflow, day: int, state: str = "success", *, finished: datetime | None = None):
    """The scheduled run that fires on 11-`day` 02:00 and loads 11-(`day`-1)."""
    fire = utc(2026, 11, day, 2)
    airflow.add_run(
        "orders_daily",
        f"scheduled__{fire.isoformat()}",
        state,
        data_interval_start=utc(2026, 11, day - 1, 2).isoformat(),
        data_interval_end=fire.isoformat(),
        queued_at=fire.isoformat(),
        start_date=fire.isoformat(),
        end_date=(finished or utc(2026, 11, day, 2, 5)).isoformat()
        if state in ("success", "failed")
        else None,
        duration=300.0 if state in ("success", "failed") else None,
    )
