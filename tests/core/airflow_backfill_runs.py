"""Compare the portal's backfill plans with the runs Airflow's own backfill code walks.

Test-only tool, not collected by pytest (Airflow is not in the portal venv). Run from the repo:

    .venv/bin/python tests/core/airflow_backfill_runs.py

For each cron × zone × DST change of 2025–2027 it plans a backfill of the partitions from one
or two days before the change to two days after (pipelines.core.backfill.plan), then asks
Airflow 3.3 (.airflow/venv, AIRFLOW_HOME in a scratch dir) which runs a backfill for that
plan's from_date/to_date creates: the loop of SerializedDAG.iter_dagrun_infos_between
(TimeRestriction(from, to, catchup=True) through CronDataIntervalTimetable.next_dagrun_info_v2,
stopping at the first exception) and _get_info_list's `data_interval.end < now` filter. The
logical dates and intervals must be the plan's. It also checks backfill_runs (the exact path)
for from/to dates off the fires, and for a from_date right on the first logical date (which a
DST gap can make Airflow skip).
"""

from __future__ import annotations

import itertools
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
    ("0 2 * * *", "day"),
    ("0 0 * * *", "day"),
    ("30 1 * * *", "day"),
    ("0 3 * * 1", "day"),
    ("0 * * * *", "hour"),
    ("30 * * * *", "hour"),
    ("0 2 * * *", "hour"),
    ("15 */2 * * *", "hour"),
    ("0 0 1 * *", "day"),
]
ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney", "Australia/Lord_Howe"]
NOW = datetime(2027, 6, 1, tzinfo=UTC)

AIRFLOW_SIDE = r"""
import json, sys
import pendulum
from airflow.timetables.base import TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable

out = []
for cron, tz, start, end, now in json.load(sys.stdin):
    tt = CronDataIntervalTimetable(cron, timezone=tz)
    restriction = TimeRestriction(pendulum.parse(start), pendulum.parse(end), catchup=True)
    infos, info = [], None
    try:
        while True:
            info = tt.next_dagrun_info_v2(last_dagrun_info=info, restriction=restriction)
            if not info:
                break
            infos.append(info)
    except Exception:  # iter_dagrun_infos_between logs it and stops
        pass
    now = pendulum.parse(now)
    out.append(
        [
            [i.logical_date.isoformat(), i.data_interval.end.isoformat()]
            for i in infos
            if i.data_interval.end < now
        ]
    )
print(json.dumps(out))
"""


def utc(value: str) -> str:
    return datetime.fromisoformat(value).astimezone(UTC).isoformat()


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from pipelines.core import backfill, schedule

    cases, expected = [], []
    for tz in ZONES:
        changes = schedule.transitions(
            tz, datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 5, 1, tzinfo=UTC)
        ) or [schedule.Transition(datetime(2026, 6, 1, tzinfo=UTC), timedelta(0), timedelta(0))]
        for change in changes:
            local = change.at.astimezone(schedule.ZoneInfo(tz)).replace(tzinfo=None)
            for (cron, grain), before in itertools.product(CRONS, (1, 2)):
                size = schedule.GRAINS[grain]
                first = (local - timedelta(days=before)).replace(minute=0)
                last = (local + timedelta(days=2)).replace(minute=0)
                if grain == "day":
                    first, last = first.replace(hour=0), last.replace(hour=0)
                plan = backfill.plan(cron, tz, grain, first, last - size, now=NOW)
                ours = [[r.logical_date.isoformat(), r.end.isoformat()] for r in plan.runs]
                cases.append((cron, tz, plan.from_date, plan.to_date, NOW, "plan"))
                expected.append(ours)
                # Other bounds: the exact path against Airflow itself.
                for start, end, kind in [
                    (
                        plan.from_date - timedelta(minutes=7),
                        plan.to_date + timedelta(minutes=11),
                        "off",
                    ),
                    (plan.runs[0].logical_date, plan.to_date, "on the first logical date"),
                ]:
                    exact = backfill.backfill_runs(cron, tz, start, end)
                    cases.append((cron, tz, start, end, NOW, kind))
                    expected.append([[r.start.isoformat(), r.end.isoformat()] for r in exact])
    payload = [[c, tz, a.isoformat(), b.isoformat(), n.isoformat()] for c, tz, a, b, n, _ in cases]
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
    differ = runs = 0
    for (cron, tz, start, _end, _now, kind), ours, airflow in zip(
        cases, expected, theirs, strict=True
    ):
        ours_utc = [[utc(a), utc(b)] for a, b in ours]
        airflow_utc = [[utc(a), utc(b)] for a, b in airflow]
        runs += len(airflow_utc)
        if ours_utc != airflow_utc:
            differ += 1
            print(f"DIFFER ({kind}) {cron!r} {tz} from {start.isoformat()}")
            print("  airflow:", airflow_utc[:6])
            print("  portal: ", ours_utc[:6])
    print(
        f"{len(cases)} backfills (cron × zone × DST change), {runs} Airflow runs, {differ} differ"
    )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
