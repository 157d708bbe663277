"""A fake AirflowClient for unit tests: the only boundary unit tests fake."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipelines.airflow import AirflowConflict, AirflowNotFound, AirflowUnavailable, ImportError_


class FakeAirflow:
    """Registers every written DAG at once, unless told to be down or to reject a file."""

    def __init__(self) -> None:
        self.down = False
        self.reject: dict[str, str] = {}  # filename -> stack trace
        self.dags: dict[str, dict[str, Any]] = {}
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise AirflowUnavailable("Airflow at http://airflow.invalid is unreachable: refused")

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        self._call("get_dag")
        if any(f.startswith(dag_id) for f in self.reject):
            return None
        # Airflow parses the file "now": any moment after it was written.
        dag = self.dags.setdefault(dag_id, {"dag_id": dag_id, "is_paused": True})
        dag.update(last_parsed_time=datetime.now(UTC).isoformat(), file_token=f"tok-{dag_id}")
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
