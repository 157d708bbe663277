"""Deploy a PipelineVersion to an Environment: write the DAG file, have Airflow parse it, record.

The Deployment row is the outbox. `deployment_request` creates it in the caller's transaction and
enqueues the task on commit; `deployment_run` claims it with a conditional UPDATE and a lease (a
dead worker's claim expires), so two workers, a retry and the outbox sweep can all call it and the
file is written by one of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import codegen
from .airflow import AirflowClient, AirflowError, AirflowNotFound, AirflowUnavailable
from .models import Deployment, Environment, PipelineVersion

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.25
# The outbox sweep leaves a pending row alone this long after it was requested: the on-commit
# enqueue normally runs first.
SWEEP_GRACE = timedelta(seconds=20)


class DeployError(Exception):
    """The deployment cannot be requested; str() is the user-facing message."""


def portal_url_for(pipeline_slug: str) -> str:
    return f"{settings.PORTAL_BASE_URL.rstrip('/')}/pipelines/{pipeline_slug}/"


def render_for(version: PipelineVersion, environment: Environment) -> codegen.RenderedDag:
    return codegen.render_dag(
        version.spec,
        environment,
        version=version.number,
        portal_url=portal_url_for(version.pipeline.slug),
    )


@transaction.atomic
def deployment_request(
    *, version: PipelineVersion, environment: Environment, by: object
) -> Deployment:
    """Ask for `version` in `environment`. The same version twice is a no-op; failed retries."""
    from . import tasks

    deployment = (
        Deployment.objects.select_for_update()
        .filter(version=version, environment=environment)
        .first()
    )
    if deployment is not None:
        if deployment.state != Deployment.State.FAILED:
            return deployment
        deployment.state = Deployment.State.PENDING
        deployment.error = ""
        deployment.lease_until = None
        deployment.save(update_fields=["state", "error", "lease_until"])
    else:
        rendered = render_for(version, environment)
        deployment = Deployment.objects.create(
            version=version,
            environment=environment,
            dag_id=rendered.dag_id,
            code=rendered.source,
            code_sha256=rendered.sha256,
            requested_by=by,
        )
    tasks.enqueue_on_commit(tasks.deployment_run, deployment.id)
    return deployment


def _claim(deployment_id: int) -> bool:
    now = timezone.now()
    claimable = Q(state=Deployment.State.PENDING) | Q(
        state=Deployment.State.DEPLOYING, lease_until__lte=now
    )
    return (
        Deployment.objects.filter(claimable, id=deployment_id).update(
            state=Deployment.State.DEPLOYING,
            lease_until=now + timedelta(seconds=settings.DEPLOY_LEASE_SECONDS),
            attempts=F("attempts") + 1,
        )
        == 1
    )


def _finish(deployment: Deployment, state: str, **fields: object) -> None:
    fields.update(state=state, lease_until=None, finished_at=timezone.now())
    Deployment.objects.filter(id=deployment.id).update(**fields)


def write_atomically(folder: Path, filename: str, content: str) -> Path:
    """Write `content` to folder/filename so that a reader sees the old file or the new, never half.

    The temporary name starts with a dot and does not end in .py, so Airflow never parses it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _parsed_after(dag: dict, moment: datetime) -> bool:
    parsed = dag.get("last_parsed_time")
    return bool(parsed) and datetime.fromisoformat(parsed) >= moment


def wait_for_registration(
    client: AirflowClient, *, dag_id: str, filename: str, written_at: datetime, timeout: float
) -> str | None:
    """Poll Airflow until the new file is parsed; return None when registered, else the error."""
    deadline = time.monotonic() + timeout
    while True:
        errors = [
            e
            for e in client.import_errors(filename_pattern=filename)
            if (e.filename == filename or e.filename.endswith(f"/{filename}"))
            and e.timestamp
            and datetime.fromisoformat(e.timestamp) >= written_at
        ]
        if errors:
            return errors[0].stack_trace or "Airflow reported an import error with no text."
        dag = client.get_dag(dag_id)
        if dag is not None and _parsed_after(dag, written_at) and not dag.get("has_import_errors"):
            return None
        if time.monotonic() > deadline:
            return (
                f"Airflow did not register {dag_id} within {timeout:.0f} s of the file being "
                f"written. Check that Airflow reads this environment's DAGs folder."
            )
        time.sleep(POLL_SECONDS)


def deployment_run(*, deployment_id: int) -> None:
    """Deploy one row. Safe to call twice; raises AirflowUnavailable to be retried later."""
    if not _claim(deployment_id):
        return
    deployment = Deployment.objects.select_related("version__pipeline", "environment").get(
        id=deployment_id
    )
    environment = deployment.environment
    pipeline = deployment.version.pipeline
    newer = (
        Deployment.objects.filter(
            environment=environment,
            version__pipeline=pipeline,
            version__number__gt=deployment.version.number,
        )
        .exclude(state=Deployment.State.FAILED)
        .exists()
    )
    if newer:
        _finish(deployment, Deployment.State.SUPERSEDED)
        return
    client = AirflowClient.for_environment(environment)
    filename = f"{deployment.dag_id}.py"
    try:
        known = client.get_dag(deployment.dag_id)
        written_at = timezone.now()
        path = write_atomically(Path(environment.dags_folder), filename, deployment.code)
        Deployment.objects.filter(id=deployment.id).update(written_at=written_at)
        if known and known.get("file_token"):
            # A known file can be reparsed at once instead of at the next folder scan.
            with contextlib.suppress(AirflowNotFound):
                client.reparse_file(known["file_token"])
        error = wait_for_registration(
            client,
            dag_id=deployment.dag_id,
            filename=path.name,
            written_at=written_at,
            timeout=settings.DEPLOY_REGISTRATION_TIMEOUT_SECONDS,
        )
        if error is not None:
            _finish(deployment, Deployment.State.FAILED, error=error)
            return
        registered_at = timezone.now()
        client.set_paused(deployment.dag_id, paused=False)
    except AirflowUnavailable as exc:
        Deployment.objects.filter(id=deployment.id).update(
            state=Deployment.State.PENDING, lease_until=None, last_attempt_error=str(exc)
        )
        raise
    except AirflowError as exc:
        _finish(deployment, Deployment.State.FAILED, error=exc.message)
        return
    with transaction.atomic():
        _finish(
            deployment,
            Deployment.State.DEPLOYED,
            registered_at=registered_at,
            last_attempt_error="",
        )
        Deployment.objects.filter(
            environment=environment,
            version__pipeline=pipeline,
            state=Deployment.State.DEPLOYED,
            version__number__lt=deployment.version.number,
        ).update(state=Deployment.State.SUPERSEDED)
    logger.info("deployed %s to %s", deployment.dag_id, environment.slug)


def deployments_due() -> list[int]:
    """Return ids of rows the outbox sweep should enqueue again (pending, lease over)."""
    now = timezone.now()
    return list(
        Deployment.objects.filter(
            Q(state=Deployment.State.PENDING, requested_at__lte=now - SWEEP_GRACE)
            | Q(state=Deployment.State.DEPLOYING, lease_until__lte=now)
        ).values_list("id", flat=True)[:500]
    )
