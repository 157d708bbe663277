"""The Celery app: configured from Django settings (CELERY_* names)."""

from __future__ import annotations

import os

from celery import Celery

from pipelines.apps import TASK_PACKAGES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each area owns its tasks (`pipelines/<area>/tasks.py`); the default discovery would look only
# for `<installed app>.tasks`, which no longer exists.
app.autodiscover_tasks(list(TASK_PACKAGES))


@app.on_after_configure.connect
def _make_broker_folders(sender: Celery, **kwargs: object) -> None:
    """kombu's filesystem transport (the embedded default) needs its folders to exist."""
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = (sender.conf.broker_transport_options or {}).get(key)
        if folder:
            os.makedirs(folder, exist_ok=True)
