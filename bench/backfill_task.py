"""Time one rendered DAG's load_partition the way the template harness runs it, in Airflow's venv.

Not run by hand: bench/backfill.py starts it with `.airflow/venv/bin/python` (the task code
imports `airflow.sdk` when it runs, so it cannot run in the portal's venv). It reads one JSON
document on stdin, {"dag": <path>, "connections": {conn_id: url}, "steps": [[task, conf]...]},
like tests/integration/template_harness.py, whose `connector` replaces the rendered file's
`connect` exactly as in the tests. Each step prints one JSON line: the harness's fields plus
"seconds" (the task call only: the module, Airflow's import and the compile of TASK_CODE come
before the clock starts) and "split" (seconds inside the task code's own can_copy /
copy_rows / merge_rows / insert_rows / counts / guard functions, found by wrapping them in the
compiled namespace; merge_rows's time includes the copy_rows it calls).
"""

from __future__ import annotations

import json
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from template_harness import connector  # noqa: E402 - found through the path set just above

TIMED = ("can_copy", "copy_rows", "merge_rows", "insert_rows", "counts", "guard")


def timed(split: dict[str, float], name: str, func):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            split[name] += time.perf_counter() - started

    return wrapper


def main() -> None:
    job = json.load(sys.stdin)
    namespace = {"__name__": "portal_dag_under_bench", "__file__": job["dag"]}
    with open(job["dag"]) as handle:
        exec(compile(handle.read(), job["dag"], "exec"), namespace)
    namespace["task"]("connect")  # compiles TASK_CODE, as the first task run would
    tasks = namespace["_TASKS"]
    tasks["connect"] = connector(job["connections"])
    split: dict[str, float] = defaultdict(float)
    for name in TIMED:
        if name in tasks:  # an older template has not all of them
            tasks[name] = timed(split, name, tasks[name])
    # What the task code and the connector import on first use, imported before the clock runs.
    import psycopg  # noqa: F401
    from airflow.sdk.exceptions import AirflowFailException  # noqa: F401

    for task, conf in job["steps"]:
        split.clear()
        context = {"dag_run": types.SimpleNamespace(conf=conf)}
        started = time.perf_counter()
        try:
            result = namespace[task]() if task == "create_target" else namespace[task](**context)
            line = {"ok": True, "result": result}
        except Exception as exc:  # a failed step is reported, the bench decides
            line = {"ok": False, "type": type(exc).__name__, "error": str(exc)}
        line["seconds"] = time.perf_counter() - started
        line["split"] = dict(split)
        print(json.dumps(line, default=str), flush=True)


if __name__ == "__main__":
    main()
