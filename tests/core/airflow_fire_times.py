"""Compare the portal's fire times and run intervals with Airflow's own, around DST changes.

Test-only tool, not collected by pytest (Airflow is not in the portal venv). Run from the repo:

    .venv/bin/python tests/core/airflow_fire_times.py

It asks Airflow 3.3 (.airflow/venv, AIRFLOW_HOME in a scratch dir) to schedule each cron ×
zone around every offset change of 2026–2027 — CronDataIntervalTimetable.next_dagrun_info
with catchup=False and the clock at each run's end, retrying while it stalls, as the
scheduler does — and checks that pipelines.schedule.airflow_runs and next_fire_times agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = ROOT / ".airflow" / "venv" / "bin" / "python"
CRONS = [
    "0 2 * * *",
    "30 2 * * *",
    "30 1 * * *",
    "0 3 * * 1",
    "0 * * * *",
    "30 * * * *",
    "15 2,3 * * *",
    "0 */2 * * *",
    "45 * * * 1-5",
    "0,30 1,2 * * *",
]
ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Sydney",
    "Europe/London",
    "Australia/Lord_Howe",
    "Antarctica/Troll",
    "America/Santiago",
    "UTC",
]

AIRFLOW_SIDE = r"""
import json, sys
import pendulum
import airflow.timetables.interval as interval
from airflow.timetables.base import DataInterval, TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable

out = []
for cron, tz, first_end, until in json.load(sys.stdin):
    tt = CronDataIntervalTimetable(cron, timezone=tz)
    end = pendulum.parse(first_end)
    last = DataInterval(tt._get_prev(end), end)
    restriction = TimeRestriction(
        earliest=pendulum.datetime(2020, 1, 1), latest=None, catchup=False
    )
    runs = []
    while True:
        now = last.end.add(seconds=1)
        for _ in range(6 * 60):
            interval.utcnow = lambda: now
            try:
                info = tt.next_dagrun_info(
                    last_automated_data_interval=last, restriction=restriction
                )
                break
            except (ValueError, AssertionError):
                now = now.add(minutes=1)
        else:
            runs.append("stuck")
            break
        last = info.data_interval
        if last.end > pendulum.parse(until):
            break
        runs.append([last.start.isoformat(), last.end.isoformat()])
    out.append(runs)
print(json.dumps(out))
"""


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from pipelines.core import schedule

    cases = []
    for tz in ZONES:
        changes = schedule.transitions(
            tz, datetime(2026, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
        ) or [schedule.Transition(datetime(2026, 6, 1, tzinfo=UTC), timedelta(0), timedelta(0))]
        for change in changes:
            for cron in CRONS:
                after, until = change.at - timedelta(hours=6), change.at + timedelta(hours=30)
                end = schedule.previous_fire_time(cron, tz, before=after)
                cases.append((cron, tz, end, after, until))
    payload = [[c, tz, end.isoformat(), until.isoformat()] for c, tz, end, _, until in cases]
    with tempfile.TemporaryDirectory() as home:
        done = subprocess.run(
            [str(AIRFLOW_PYTHON), "-c", AIRFLOW_SIDE],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            env={**os.environ, "AIRFLOW_HOME": home},
            check=True,
        )
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    differ = runs_total = 0
    for (cron, tz, end, after, until), expected in zip(cases, theirs, strict=True):
        try:
            ours = [
                [r.start.isoformat(), r.end.isoformat()]
                for r in schedule.airflow_runs(cron, tz, after=after, until=until)
            ]
        except schedule.ScheduleError:
            ours = ["stuck"]
        expected_utc = [
            e
            if e == "stuck"
            else [datetime.fromisoformat(x).astimezone(UTC).isoformat() for x in e]
            for e in expected
        ]
        ours_utc = [
            o
            if o == "stuck"
            else [datetime.fromisoformat(x).astimezone(UTC).isoformat() for x in o]
            for o in ours
        ]
        fires = [
            f.astimezone(UTC).isoformat()
            for f in schedule.next_fire_times(cron, tz, len(expected_utc), after=end)
        ]
        airflow_fires = [e[1] for e in expected_utc if e != "stuck"]
        runs_total += len(expected_utc)
        if ours_utc != expected_utc or fires[: len(airflow_fires)] != airflow_fires:
            differ += 1
            print(f"DIFFER {cron!r} {tz} {after:%Y-%m-%d}")
            print("  airflow:", expected_utc[:8])
            print("  portal: ", ours_utc[:8])
            print("  fires:  ", fires[:8])
    print(
        f"{len(cases)} cron × zone × DST-change cases, {runs_total} Airflow runs: {differ} differ"
    )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
