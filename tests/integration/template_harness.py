"""Run a rendered DAG file's task callables against real databases, in Airflow's virtualenv.

Not a test module: tests/integration/test_template_tasks.py runs it as a subprocess with the
Airflow venv's python (Airflow is not importable from the portal's venv). It reads one JSON
document on stdin: {"dag": <path>, "connections": {conn_id: url}, "steps": [[task, conf]...]}
and prints one JSON line per step: {"ok": true, "result": ...} or {"ok": false, "error": ...}.
Only `connect` is replaced (Airflow's connection lookup needs a metadata database); the task
code itself is exactly the rendered file's, called through its task wrappers.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import types


def connector(connections: dict[str, str]):
    def connect(conn_id: str):
        url = connections[conn_id]
        if url.startswith("sqlite:///"):
            return sqlite3.connect(url.removeprefix("sqlite:///"))
        import psycopg

        return psycopg.connect(url)

    return connect


def main() -> None:
    job = json.load(sys.stdin)
    namespace = {"__name__": "portal_dag_under_test", "__file__": job["dag"]}
    with open(job["dag"]) as handle:
        exec(compile(handle.read(), job["dag"], "exec"), namespace)
    namespace["task"]("connect")  # compiles TASK_CODE, as the first task run would
    namespace["_TASKS"]["connect"] = connector(job["connections"])
    for task, conf in job["steps"]:
        context = {"dag_run": types.SimpleNamespace(conf=conf)}
        try:
            result = namespace[task]() if task == "create_target" else namespace[task](**context)
            print(json.dumps({"ok": True, "result": result}, default=str), flush=True)
        except Exception as exc:  # the task's failure is the result under test
            error = {"ok": False, "type": type(exc).__name__, "error": str(exc)}
            print(json.dumps(error), flush=True)


if __name__ == "__main__":
    main()
