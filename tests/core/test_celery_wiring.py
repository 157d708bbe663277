"""The Celery wiring every process needs, checked in a fresh interpreter (as runserver starts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_web_process_knows_every_task_the_services_send_by_name():
    """Services enqueue by task name; a web process that has not imported pipelines.tasks would
    drop every enqueue to the sweep (a deploy taking a minute instead of two seconds)."""
    code = (
        "import django; django.setup()\n"
        "from celery import current_app\n"
        "from django.apps import apps\n"
        "from pipelines.core.outbox import Outbox\n"
        "names = {m.OUTBOX_TASK for m in apps.get_models() if issubclass(m, Outbox)}\n"
        "names |= {'pipelines.tasks.run_submit', 'pipelines.tasks.run_refresh',\n"
        "          'pipelines.tasks.alert_deliver'}\n"
        "missing = sorted(n for n in names if n not in current_app.tasks)\n"
        "print(missing)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings_test"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
