"""Compare the portal's fire times and run intervals with Airflow's own, around DST changes.

Test-only tool, not collected by pytest (Airflow is not in the portal venv). Run from the repo:

    .venv/bin/python tests/core/airflow_fire_times.py

(tests/integration/test_same_as_airflow.py runs it in `make test`, and checks AIRFLOW_FIRES, the
table tests/core/test_schedule.py holds the portal to, against Airflow.)

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

# Fire times Airflow 3.3.2's CronDataIntervalTimetable gives (read from Airflow itself with
# airflow_fires below; tests/core/test_schedule.py holds the portal to them): a skipped time
# keeps the offset from before the change, a repeated one runs once at its second occurrence,
# an hour-"*" cron steps by real hours.
AIRFLOW_FIRES = [
    (
        "30 2 * * *",
        "America/New_York",
        datetime(2026, 3, 7, 12, tzinfo=UTC),
        ["2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00"],
    ),
    (
        "30 1 * * *",
        "America/New_York",
        datetime(2026, 10, 31, 12, tzinfo=UTC),
        ["2026-11-01T01:30:00-05:00", "2026-11-02T01:30:00-05:00"],
    ),
    (
        "0 2 * * *",
        "Europe/Berlin",
        datetime(2026, 10, 24, 12, tzinfo=UTC),
        ["2026-10-25T02:00:00+01:00", "2026-10-26T02:00:00+01:00"],
    ),
    (
        "0 2 * * *",
        "Europe/Berlin",
        datetime(2026, 3, 28, 12, tzinfo=UTC),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"],
    ),
    (
        "15 2 * * *",
        "Australia/Lord_Howe",
        datetime(2026, 10, 3, 12, tzinfo=UTC),
        ["2026-10-04T02:45:00+11:00", "2026-10-05T02:15:00+11:00"],
    ),
    (
        "0 * * * *",
        "America/New_York",
        datetime(2026, 11, 1, 4, 30, tzinfo=UTC),
        ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"],
    ),
    (
        "0 * * * *",
        "Australia/Lord_Howe",
        datetime(2026, 4, 4, 13, 30, tzinfo=UTC),
        ["2026-04-05T01:00:00+11:00", "2026-04-05T01:30:00+10:30", "2026-04-05T02:00:00+10:30"],
    ),
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


def ask_airflow(payload: list[list[str]]) -> list[list]:
    """Run AIRFLOW_SIDE in Airflow's venv for [cron, tz, first run end, until] cases; return
    each case's run intervals ([start, end], or "stuck")."""
    with tempfile.TemporaryDirectory() as home:
        done = subprocess.run(
            [str(AIRFLOW_PYTHON), "-c", AIRFLOW_SIDE],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            env={**os.environ, "AIRFLOW_HOME": home},
            check=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def airflow_fires(
    table: list[tuple[str, str, datetime, list[str]]],
) -> list[list[str]]:
    """For each (cron, zone, after, expected) of a table like AIRFLOW_FIRES, the fire times
    Airflow's scheduler gives after `after` (as many as expected, ISO in the zone)."""
    sys.path.insert(0, str(ROOT))
    from pipelines.core import schedule

    payload = []
    for cron, tz, after, _ in table:
        end = schedule.previous_fire_time(cron, tz, before=after)
        payload.append([cron, tz, end.isoformat(), (after + timedelta(days=4)).isoformat()])
    fires = []
    for (_, tz, after, expected), runs in zip(table, ask_airflow(payload), strict=True):
        ends = [datetime.fromisoformat(run[1]) for run in runs if run != "stuck"]
        zone = schedule.ZoneInfo(tz)
        fires.append([e.astimezone(zone).isoformat() for e in ends if e > after][: len(expected)])
    return fires


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
    theirs = ask_airflow(payload)
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
