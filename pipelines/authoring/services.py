"""Authoring services: create a pipeline from a validated spec."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from pipelines.authoring import codegen
from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.authoring.spec import PipelineSpec
from pipelines.catalog.models import SourceTable
from pipelines.core.audit import audit_record
from pipelines.core.models import Team


class CreateError(Exception):
    """The pipeline cannot be created; `message` belongs next to the form field `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def pipeline_lock(*, pipeline_id: int) -> None:
    """Hold the pipeline's row until the caller's transaction ends.

    The one lock that serialises what must not interleave on a pipeline: a run-now and a
    backfill of the same partition, their approvals, and rollbacks (each checks, then writes).
    A no-op on SQLite, which serialises writers anyway.
    """
    Pipeline.objects.select_for_update().filter(pk=pipeline_id).first()


def name_taken_message(name: str) -> str:
    return f"A pipeline named “{name}” already exists."


def table_taken_message(slug: str, table: str) -> str:
    return (
        f"Pipeline “{slug}” already writes to table “{table}”: two pipelines writing one table "
        "would overwrite each other's partitions."
    )


def _taken(spec: PipelineSpec) -> CreateError:
    """Why the insert hit a unique constraint: the name or the table another create took
    between the form's check and this insert (two identical creates at once)."""
    if Pipeline.objects.filter(slug=spec.name).exists():
        return CreateError("name", name_taken_message(spec.name))
    other = Pipeline.objects.filter(target_table=spec.target_table).values_list("slug", flat=True)
    if other:
        return CreateError("target_table", table_taken_message(other[0], spec.target_table))
    return CreateError("name", name_taken_message(spec.name))


@transaction.atomic
def pipeline_create(*, spec: PipelineSpec, by: object) -> Pipeline:
    """Create the pipeline and its immutable version 1, in one transaction.

    Raises CreateError when another request created the same name or table first.
    """
    from django.contrib.auth import get_user_model

    team = Team.objects.get(slug=spec.team)
    owner = get_user_model().objects.get(username=spec.owner)
    table = SourceTable.objects.get(
        database__name=spec.source_database, schema=spec.source_schema, name=spec.source_table
    )
    try:
        # The form checked both, but two identical creates at once pass that check together:
        # the unique constraints decide, in a savepoint so the reason can still be read.
        with transaction.atomic():
            pipeline = Pipeline.objects.create(
                slug=spec.name,
                team=team,
                owner=owner,
                source_table=table,
                target_table=spec.target_table,
                # PipelineForm lets only a platform admin ask to adopt (core.access): the ask
                # is the allowance.
                adopt_allowed=spec.adopt_existing_table,
                sla_minutes=spec.sla_minutes,
                runbook_url=spec.runbook_url,
                created_by=by,
            )
    except IntegrityError:
        raise _taken(spec) from None
    PipelineVersion.objects.create(
        pipeline=pipeline,
        number=1,
        spec_json=spec.to_json(),
        spec_sha256=spec.sha256(),
        created_by=by,
    )
    audit_record(actor=by, action="pipeline_created", pipeline=pipeline, after=spec.to_json())
    return pipeline


class EditError(Exception):
    """The edit cannot be saved; str() is the user-facing message."""


@transaction.atomic
def pipeline_edit(
    *, pipeline: Pipeline, spec: PipelineSpec, by: object, change_note: str
) -> PipelineVersion | None:
    """Save `spec` as the pipeline's next immutable version; None when nothing changed.

    The pipeline row is locked, so two edits saved at once get consecutive numbers, and the
    comparison is with the version that is newest at that moment.
    """
    from django.contrib.auth import get_user_model

    locked = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
    latest = locked.versions.order_by("-number").first()
    if latest is not None and latest.spec_sha256 == spec.sha256():
        return None
    if spec.name != locked.slug or spec.target_table != locked.target_table:
        raise EditError("A pipeline's name and target table cannot change: create a new one.")
    owner = get_user_model().objects.get(username=spec.owner)
    version = PipelineVersion.objects.create(
        pipeline=locked,
        number=(latest.number if latest else 0) + 1,
        spec_json=spec.to_json(),
        spec_sha256=spec.sha256(),
        created_by=by,
        change_note=change_note,
    )
    Pipeline.objects.filter(pk=locked.pk).update(
        owner=owner,
        sla_minutes=spec.sla_minutes,
        runbook_url=spec.runbook_url,
        adopt_allowed=locked.adopt_allowed or spec.adopt_existing_table,
    )
    audit_record(
        actor=by,
        action="pipeline_edited",
        pipeline=locked,
        before=latest.spec_json if latest else None,
        after=version.spec_json,
        summary=f"v{version.number}: {change_note}",
    )
    return version


@transaction.atomic
def pipeline_upgrade(*, pipeline: Pipeline, by: object) -> PipelineVersion | None:
    """Make the next version with the newest version's spec on the current template; None
    when the newest version is on it already. The new version then goes through the usual
    flow (deploy to dev, promote)."""
    locked = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
    latest = locked.versions.order_by("-number").first()
    if latest is None or latest.template_is_current:
        return None
    release, _ = codegen.current_template()
    version = PipelineVersion.objects.create(
        pipeline=locked,
        number=latest.number + 1,
        spec_json=latest.spec_json,
        spec_sha256=latest.spec_sha256,
        created_by=by,
        change_note=f"Upgrade template {latest.template_version} → {release}",
    )
    audit_record(
        actor=by,
        action="pipeline_upgraded",
        pipeline=locked,
        before={"version": latest.number, "template": latest.template_label},
        after={"version": version.number, "template": version.template_label},
        summary=f"v{version.number}: {version.change_note}",
    )
    return version
