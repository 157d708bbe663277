"""No test depends on today's date: the whole unit suite (`-m "not integration"`) passes with the
machine's clock moved (libfaketime, `make faketime`) to the days that broke it before —

- 2027-01-02, the day a test that took 2027-01-01 for "the future" fails, started at 01:59:30
  UTC so that the run crosses 02:00 UTC, the default schedule's daily fire;
- New York's spring forward (2027-03-14 07:00 UTC) and fall back (2027-11-07 06:00 UTC), each
  started 30 s before the change: a test reading "02:30 EST" from the real clock is red from
  March to November.

Each run takes the unit suite's time (about 1.5 minutes): the whole unit suite rather than a
choice of modules, so that a new date-dependent test anywhere shows. The clock ticks from the
given moment (the monotonic clock moves with it: left real, libfaketime makes time.sleep fail
with EINVAL). Only the test processes' clock moves: PostgreSQL's now() does not, and no test
compares the two (the portal reads time from Python only). The integration tests stay on the
real clock: the real Airflow's scheduler cannot be moved with them; they compute their dates
from now (tests/integration/conftest.py's TODAY).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from orchestrator.local import REPO

pytestmark = pytest.mark.integration

CLOCKS = {
    "new year, across 02:00 UTC": "2027-01-02 01:59:30",
    "New York spring forward": "2027-03-14 06:59:30",
    "New York fall back": "2027-11-07 05:59:30",
}


def clock_database_url() -> str:
    """This session's DATABASE_URL with `_clock` after the database name (pytest-django then
    creates test_<name>_clock beside this session's test database)."""
    url = urlsplit(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/portal"))
    return urlunsplit(url._replace(path=url.path.rstrip("/") + "_clock"))


def faked(moment: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    faketime = shutil.which("faketime")
    assert faketime, "libfaketime is missing: run `make faketime` (apt-get install faketime)"
    env = {
        **os.environ,
        "TZ": "UTC",  # the moment is UTC; the portal sets its own zone from settings
        # Its own test database and an in-memory broker: nothing shared with this session.
        "DATABASE_URL": clock_database_url(),
        "CELERY_BROKER_URL": "memory://",
    }
    return subprocess.run(
        [faketime, moment, *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )


@pytest.mark.parametrize("moment", CLOCKS.values(), ids=CLOCKS.keys())
def test_the_unit_suite_passes_with_the_clock_moved(moment):
    probe = faked(
        moment,
        [sys.executable, "-c", "import datetime; print(datetime.datetime.now(datetime.UTC))"],
    )
    assert probe.stdout.startswith(moment[:16]), probe  # the clock did move, to the minute

    python = Path(sys.executable)
    done = faked(
        moment,
        [str(python), "-m", "pytest", "-m", "not integration", "-q", "--maxfail=20"],
        timeout=1800,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"at {moment}:\n{done.stdout[-20000:]}\n{done.stderr[-5000:]}"
    assert re.search(r"\d+ passed", summary), summary
    assert "failed" not in summary, summary
    assert "error" not in summary, summary
