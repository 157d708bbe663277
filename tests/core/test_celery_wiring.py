"""The Celery wiring every process needs, checked in a fresh interpreter (as runserver starts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Every name something sends: outbox rows (OUTBOX_TASK), services by name (core.outbox.send),
# the beat schedule. Names stay `pipelines.tasks.*` although each task lives in its area's
# tasks module: messages already queued and the schedule name them so.
_NAMES = (
    "from django.apps import apps\n"
    "from django.conf import settings\n"
    "from pipelines.core.outbox import Outbox\n"
    "names = {m.OUTBOX_TASK for m in apps.get_models() if issubclass(m, Outbox)}\n"
    "names |= {'pipelines.tasks.run_submit', 'pipelines.tasks.run_refresh',\n"
    "          'pipelines.tasks.alert_deliver', 'pipelines.tasks.environment_sync'}\n"
    "names |= {e['task'] for e in settings.CELERY_BEAT_SCHEDULE.values()}\n"
)


def _missing_in_fresh_interpreter(code: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings_test"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_web_process_knows_every_task_the_services_send_by_name():
    """Services enqueue by task name; a web process that has not imported every area's tasks
    module would drop every enqueue to the sweep (a deploy taking a minute instead of two
    seconds)."""
    code = (
        "import django; django.setup()\n"
        "from celery import current_app\n"
        + _NAMES
        + "missing = sorted(n for n in names if n not in current_app.tasks)\n"
        "print(missing)\n"
    )
    assert _missing_in_fresh_interpreter(code) == "[]"


def test_a_worker_registers_every_task_of_every_area():
    """A worker (`celery -A portal worker`) loads the app and imports its default modules, which
    autodiscovers `<area>/tasks.py`: each name sent must have a task to run it."""
    code = (
        "from portal.celery import app\n"
        "app.loader.import_default_modules()\n"
        + _NAMES
        + "missing = sorted(n for n in names if n not in app.tasks)\n"
        "print(missing)\n"
    )
    assert _missing_in_fresh_interpreter(code) == "[]"
