"""Deploy a PipelineVersion to an Environment: write the DAG file, have Airflow parse it, record.

The Deployment row is the outbox (core/outbox.py). `deployment_request` creates it in the
caller's transaction and enqueues the task on commit. `deployment_run` takes one short step and
returns when the next one is due, so no worker sleeps while Airflow parses:

1. PENDING: claim; re-check the stored code (hash, `check_source`, equal to a fresh render) and
   the environment (folder, prefix, credential names); write the file; ask Airflow to reparse it;
   release as DEPLOYING, due again in DEPLOY_CHECK_FIRST_SECONDS.
2. DEPLOYING: claim; one or two API calls (import errors, the DAG); then DEPLOYED, FAILED, or
   released to be checked again a little later, until DEPLOY_REGISTRATION_TIMEOUT_SECONDS.

Two workers, a retry and the outbox sweep can all call it: the claim lets one in, and a worker
whose lease ran out and whose row was claimed again changes nothing (fenced by the lease token).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from pipelines.authoring import codegen
from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.authoring.services import pipeline_create
from pipelines.authoring.spec import PipelineSpec
from pipelines.core.airflow import AirflowClient, AirflowError, AirflowUnavailable
from pipelines.core.audit import audit_record
from pipelines.core.dagfiles import DagPathError, dag_file_path
from pipelines.core.errors import user_error
from pipelines.deployments.models import REQUEST_ORDER, Deployment, Environment

logger = logging.getLogger(__name__)
DAG_FILE_MODE = 0o644  # Airflow often runs as another user: it must be able to read the file.


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


class ApprovalRequired(DeployError):
    """The environment takes only approved promotions and allowed rollbacks (403)."""


def approval_required_message(environment: Environment) -> str:
    return (
        f"{environment.name} requires an approved promotion: request one on the pipeline's "
        "page (or POST /api/v1/pipelines/{slug}/promotions), and someone else on your team "
        "with the approver role approves it."
    )


def template_problem(version: PipelineVersion) -> str | None:
    """Why `version` cannot be rendered any more, or None (it is on the current template)."""
    if version.template_is_current:
        return None
    return (
        f"Version {version.number} was made with template {version.template_label}; the portal "
        f"now renders {codegen.template_label(codegen.TEMPLATE_VERSION)}. Upgrade the pipeline "
        "(a new version with the same spec on the new template) and deploy that."
    )


@transaction.atomic
def deployment_request(
    *, version: PipelineVersion, environment: Environment, by: object, approved: bool = False
) -> Deployment:
    """Ask for `version` in `environment`; the newest request wins (see `_write`).

    Asking again for what is pending, deploying, or deployed and not replaced is a no-op; a
    failed deployment is retried; a superseded one is asked for again (a rollback), with the
    code it was first rendered with, which must still be what the portal renders.

    Into an environment with `requires_approval` only with `approved=True`: releases passes it
    for an approved promotion or an allowed rollback, and nothing else may.
    """
    if environment.requires_approval and not approved:
        raise ApprovalRequired(approval_required_message(environment))
    if problem := template_problem(version):
        raise DeployError(problem)
    # Two requests at once (a double click): the version's row lock makes the second wait and
    # find the first one's row, instead of both inserting and one hitting the unique constraint.
    PipelineVersion.objects.select_for_update().filter(pk=version.pk).first()
    deployment = (
        Deployment.objects.select_for_update()
        .filter(version=version, environment=environment)
        .first()
    )
    if deployment is not None:
        if deployment.is_active or (
            deployment.state == Deployment.State.DEPLOYED
            and not Deployment.objects.requested_after(deployment).exists()
        ):
            return deployment
        if deployment.state != Deployment.State.FAILED:  # asked for again: a rollback
            fresh = render_for(version, environment)
            if fresh.source != deployment.code:
                raise DeployError(
                    f"Version {version.number} no longer renders to the file it deployed to "
                    f"{environment.name} (the portal's address or template changed since). "
                    "Upgrade the pipeline and deploy the new version."
                )
        # A fresh start: a new attempt budget, and no lease (a late worker of the failed try
        # is fenced out); the new request time makes it the newest request.
        now = timezone.now()
        Deployment.objects.filter(id=deployment.id).update(
            state=Deployment.State.PENDING,
            error="",
            last_error="",
            attempts=0,
            lease_token=None,
            lease_until=None,
            next_attempt_at=now,
            requested_at=now,
            requested_by=by,
            written_at=None,
            airflow_written_at=None,
            parsed_before=None,
            finished_at=None,  # registered_at stays: the version ran here (rollback rule)
        )
        deployment.refresh_from_db()
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
    audit_record(
        actor=by,
        action="deployment_requested",
        pipeline=version.pipeline,
        environment=environment,
        after={"version": version.number, "dag_id": deployment.dag_id},
        summary=f"Deploy version {version.number} to {environment.name}",
    )
    Deployment.enqueue(deployment.id)
    return deployment


def deployment_run(*, deployment_id: int) -> float | None:
    """Take one step of one deployment; return seconds until the next is due, None when none.

    Never sleeps and never raises for Airflow or the file system: a transient error (Airflow
    unreachable, an unwritable folder) releases the row for a retry with backoff, up to
    DEPLOY_MAX_ATTEMPTS; a permanent one (an import error, a rejected request, tampered code)
    ends it failed with the message.
    """
    token = Deployment.claim(deployment_id)
    if token is None:
        return None
    deployment = Deployment.objects.select_related("version__pipeline", "environment").get(
        id=deployment_id
    )
    step = _write if deployment.state == Deployment.State.PENDING else _check
    try:
        return step(deployment, token)
    except AirflowUnavailable as exc:
        return Deployment.release(deployment.id, token, error=str(exc))
    except AirflowError as exc:
        _fail(deployment, token, exc.message)
    except OSError as exc:  # an unwritable folder, a full disk: retried, then capped
        logger.warning("deploy step of %s failed: %r", deployment.dag_id, exc)
        folder = deployment.environment.dags_folder
        why = exc.strerror or "the file system refused it"  # the OS's words, not a traceback
        error = f"The DAG file could not be written to {folder}: {why}."
        return Deployment.release(deployment.id, token, error=error)
    except Exception as exc:  # a bug: retried, then capped
        error = user_error(exc, doing=f"the deploy step of {deployment.dag_id}")
        return Deployment.release(deployment.id, token, error=f"The step failed: {error}.")
    return None


def deployment_run_until_done(
    *, deployment_id: int, sleep: Callable[[float], object] = time.sleep
) -> None:
    """Run every step of one deployment in this process (benchmarks, the shell; not a worker)."""
    while (again := deployment_run(deployment_id=deployment_id)) is not None:
        sleep(again)


# --- step 1: write ---------------------------------------------------------------------------


def _write(deployment: Deployment, token: uuid.UUID) -> float | None:
    environment = deployment.environment
    problem = _environment_problem(environment) or _code_problem(deployment)
    if problem is not None:
        _fail(deployment, token, problem)
        return None
    if _newer_exists(deployment):
        Deployment.finish(
            deployment.id, token, state=Deployment.State.SUPERSEDED, finished_at=timezone.now()
        )
        return None
    try:
        path = dag_file_path(environment.dags_folder, deployment.dag_id)
    except DagPathError as exc:
        _fail(deployment, token, f"{exc} Nothing was written.")
        return None
    client = AirflowClient.for_environment(environment)
    known = client.get_dag(deployment.dag_id)
    # Airflow's clock just before the write, and the parse it knew of: registration is judged
    # by Airflow's times alone, so a skewed portal clock neither hides nor fakes a parse.
    clock = {
        "airflow_written_at": client.server_time or timezone.now(),
        "parsed_before": parse_time(known),
    }
    with transaction.atomic():
        # Writers of one pipeline in one environment take turns on its rows: an older request
        # never overwrites a newer one (a rollback is a newer request for an older version),
        # and a worker that lost its lease writes nothing.
        rows = (
            Deployment.objects.select_for_update(of=("self",))
            .filter(environment=environment, version__pipeline_id=deployment.version.pipeline_id)
            .values_list("id", "lease_token", "state", *REQUEST_ORDER)
        )
        rows = list(rows)
        mine = next(
            ((at, pk) for pk, lease, _, at, _ in rows if pk == deployment.id and lease == token),
            None,
        )
        if mine is None:
            return None
        if any(
            (at, pk) > mine and state != Deployment.State.FAILED for pk, _, state, at, _ in rows
        ):
            Deployment.finish(
                deployment.id, token, state=Deployment.State.SUPERSEDED, finished_at=timezone.now()
            )
            return None
        written_at = timezone.now()
        write_atomically(path, deployment.code)
        Deployment.objects.filter(id=deployment.id, lease_token=token).update(
            state=Deployment.State.DEPLOYING, written_at=written_at, **clock
        )
    if known and known.get("file_token"):
        # A known file can be reparsed at once instead of at the next folder scan; a new one
        # waits for the scan. Only a hint: the checks find the file either way.
        with contextlib.suppress(AirflowError):
            client.reparse_file(known["file_token"])
    deployment.state, deployment.written_at = Deployment.State.DEPLOYING, written_at
    deployment.airflow_written_at, deployment.parsed_before = clock.values()
    # The first check in the same claim: two quick calls, no waiting (an Airflow that parses
    # at once is done now; otherwise the row is released and checked again shortly).
    return _check(deployment, token, client=client)


def _environment_problem(environment: Environment) -> str | None:
    """Check the environment's own rules again: it may have been saved before they existed."""
    try:
        environment.clean_fields()
    except ValidationError as exc:
        details = "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
        )
        return f"Environment “{environment.slug}” is misconfigured; nothing was written. {details}"
    return None


def _code_problem(deployment: Deployment) -> str | None:
    """Return why the stored code may not be written, or None: it must be exactly what the
    portal renders for this version and environment, checked again at every write."""
    code = deployment.code
    nothing = "Nothing was written."
    if hashlib.sha256(code.encode()).hexdigest() != deployment.code_sha256:
        return f"The stored code does not match its SHA-256: it changed after rendering. {nothing}"
    try:
        codegen.check_source(code)
        fresh = render_for(deployment.version, deployment.environment)
    except codegen.CodegenError as exc:
        return f"The stored code fails the template check: {exc} {nothing}"
    if fresh.source != code or fresh.dag_id != deployment.dag_id:
        return (
            f"The stored code is not what version {deployment.version.number} renders for "
            f"{deployment.environment.slug} now (the template or PORTAL_BASE_URL changed since "
            f"the request). {nothing} Save the pipeline again to deploy a new version."
        )
    return None


def _newer_exists(deployment: Deployment) -> bool:
    return (
        Deployment.objects.requested_after(deployment)
        .exclude(state=Deployment.State.FAILED)
        .exists()
    )


def write_atomically(path: Path, content: str) -> Path:
    """Write `content` to `path` so that a reader sees the old file or the new, never half.

    The temporary name starts with a dot and does not end in .py, so Airflow never parses it;
    the file is made readable by all (mkstemp creates it 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, DAG_FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- step 2: check registration --------------------------------------------------------------


def _check(
    deployment: Deployment, token: uuid.UUID, *, client: AirflowClient | None = None
) -> float | None:
    written_at = deployment.written_at or deployment.requested_at
    # Airflow's times against Airflow's clock (a row written before it was kept: the portal's).
    since = deployment.airflow_written_at or written_at
    client = client or AirflowClient.for_environment(deployment.environment)
    error = _import_error(client, f"{deployment.dag_id}.py", since)
    if error is not None:
        _fail(deployment, token, error)
        return None
    dag = client.get_dag(deployment.dag_id)
    if (
        dag is not None
        and _parsed_after(dag, since, deployment.parsed_before)
        and not dag.get("has_import_errors")
    ):
        client.set_paused(deployment.dag_id, paused=False)
        _registered(deployment, token)
        return None
    elapsed = (timezone.now() - written_at).total_seconds()
    timeout = settings.DEPLOY_REGISTRATION_TIMEOUT_SECONDS
    if elapsed >= timeout:
        _fail(deployment, token, _timeout_message(deployment, timeout))
        return None
    return Deployment.release(deployment.id, token, delay=_check_delay(elapsed, timeout))


def _check_delay(elapsed: float, timeout: float) -> float:
    """Check often at first (a reparse of a known file takes about a second), then every few
    seconds (a new file waits for the folder scan)."""
    first, most = settings.DEPLOY_CHECK_FIRST_SECONDS, settings.DEPLOY_CHECK_MAX_SECONDS
    return max(min(max(elapsed / 4, first), most, timeout - elapsed), 0.0)


def _import_error(client: AirflowClient, filename: str, written_at: datetime) -> str | None:
    errors = [
        e
        for e in client.import_errors(filename_pattern=filename)
        if (e.filename == filename or e.filename.endswith(f"/{filename}"))
        and e.timestamp
        and datetime.fromisoformat(e.timestamp) >= written_at
    ]
    if not errors:
        return None
    return errors[0].stack_trace or "Airflow reported an import error with no text."


def parse_time(dag: dict | None) -> datetime | None:
    """When Airflow last parsed the DAG, by Airflow's clock; None when never (or unknown)."""
    parsed = (dag or {}).get("last_parsed_time")
    try:
        return datetime.fromisoformat(parsed) if parsed else None
    except (TypeError, ValueError):
        return None


def _parsed_after(dag: dict, moment: datetime, before: datetime | None) -> bool:
    """Parsed at or after `moment` (Airflow's Date before the write, to the second) and, the
    same second holding parses from before the write, newer than the parse seen then."""
    parsed = parse_time(dag)
    return parsed is not None and parsed >= moment and (before is None or parsed > before)


def _timeout_message(deployment: Deployment, timeout: float) -> str:
    environment = deployment.environment
    return (
        f"Airflow did not register {deployment.dag_id} within {timeout:.0f} s of the file being "
        f"written to {environment.dags_folder}. Check that Airflow's DAG processor is running, "
        f"that it reads this folder (its DAG bundle path), that it can read the file, and that "
        f"its folder refresh ([dag_processor] refresh_interval, 300 s by default) is shorter "
        f"than DEPLOY_REGISTRATION_TIMEOUT_SECONDS. Then deploy again."
    )


def _registered(deployment: Deployment, token: uuid.UUID) -> None:
    now = timezone.now()
    written_later = Deployment.objects.requested_after(deployment).filter(
        state__in=(Deployment.State.DEPLOYING, Deployment.State.DEPLOYED)
    )
    with transaction.atomic():
        if written_later.exists():  # a newer request's file replaced this one's already
            Deployment.finish(
                deployment.id, token, state=Deployment.State.SUPERSEDED, finished_at=now
            )
            return
        if not Deployment.finish(
            deployment.id,
            token,
            state=Deployment.State.DEPLOYED,
            registered_at=now,
            finished_at=now,
            last_error="",
        ):
            return
        # What an older request (whichever its version: a rollback is a newer request for an
        # older one) deployed here is replaced.
        newer = Deployment.objects.requested_after(deployment).values("id")
        Deployment.objects.filter(
            environment=deployment.environment_id,
            version__pipeline_id=deployment.version.pipeline_id,
            state=Deployment.State.DEPLOYED,
        ).exclude(id=deployment.id).exclude(id__in=newer).update(state=Deployment.State.SUPERSEDED)
    logger.info("deployed %s to %s", deployment.dag_id, deployment.environment.slug)


def _fail(deployment: Deployment, token: uuid.UUID, message: str) -> None:
    Deployment.finish(
        deployment.id,
        token,
        state=Deployment.State.FAILED,
        error=message,
        finished_at=timezone.now(),
    )


@transaction.atomic
def pipeline_create_and_deploy(
    *, spec: PipelineSpec, by: object, environment: Environment | None
) -> Pipeline:
    """Create the pipeline (version 1) and request its deployment to `environment`.

    One transaction: a failure leaves no pipeline, no version and no outbox row, and no task is
    enqueued (enqueueing happens on commit).
    """
    pipeline = pipeline_create(spec=spec, by=by)
    if environment is not None:
        deployment_request(version=pipeline.versions.get(), environment=environment, by=by)
    return pipeline
