"""Promotions with four-eyes approval, and rollback.

Into an environment with `requires_approval` a version goes only through here:

- `promotion_request`: the requester (a member of the team) files a request with a reason; the
  readiness checklist is evaluated and snapshotted, and a failing blocking item refuses it.
- `promotion_approve` / `promotion_reject`: an approver of the team or a platform admin who is
  not the requester decides. The request row is locked (select_for_update), so two approvers
  clicking at once make one decision and one deployment; a decided request is final; a stale one
  (something was deployed there since, or a blocking check fails now) is refused with the reason.
  Approval requests the deployment, in the same transaction, through the deploy outbox.
- `rollback`: back to a version that ran in the environment before (or was approved there),
  without a new approval; any other version goes through a promotion.

Every action is audited in its own transaction and announced through the alert channels.
"""

from __future__ import annotations

from typing import TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from pipelines.alerts.services import notice_send
from pipelines.authoring import services as authoring
from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.backfills import services as backfills
from pipelines.backfills.models import Backfill
from pipelines.core import access
from pipelines.core.audit import audit_record
from pipelines.deployments import services as deploy
from pipelines.deployments.models import Deployment, Environment
from pipelines.releases import checklist as readiness
from pipelines.releases.models import Promotion
from pipelines.runs.models import RunRequest

State = Promotion.State
# A request the four-eyes rule decides (_decidable).
Decidable = TypeVar("Decidable", Promotion, Backfill, RunRequest)


class ReleaseError(Exception):
    """Refused; `message` is the user-facing sentence, `status` the API's answer, `field` the
    form field it belongs next to, `checklist` the evaluated items when they are the reason."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 422,
        field: str | None = None,
        checklist: list[readiness.Item] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.field = message, status, field
        self.checklist = checklist or []


def _forbidden(message: str) -> ReleaseError:
    return ReleaseError(message, status=403)


def _conflict(message: str, items: list[readiness.Item] | None = None) -> ReleaseError:
    return ReleaseError(message, status=409, checklist=items or [])


def _who(user: object) -> str:
    return user.get_username() if user is not None else "the system"


def _portal(pipeline: Pipeline) -> str:
    return settings.PORTAL_BASE_URL.rstrip("/") + pipeline.get_absolute_url()


def current_deployment(pipeline: Pipeline, environment: Environment) -> Deployment | None:
    """What runs in `environment` now (the newest deployed request), if anything."""
    return Deployment.objects.running(pipeline, environment)


def _refuse_unless_member(user: object, pipeline: Pipeline) -> None:
    if not access.can_edit(user, pipeline):
        raise _forbidden(f"Only members of team {pipeline.team.name} may do this.")


# --- request ---------------------------------------------------------------------------------


def promotion_request(
    *, version: PipelineVersion, environment: Environment, by: object, reason: str
) -> Promotion:
    """File a promotion of `version` into `environment`; raise ReleaseError when refused.

    Refused (422) when the environment takes deploys directly, when the version already runs
    there, or when a blocking check fails (the items ride on the error); 409 when another
    request for the pipeline and environment is pending.
    """
    pipeline = version.pipeline
    _refuse_unless_member(by, pipeline)
    if not environment.requires_approval:
        raise ReleaseError(
            f"{environment.name} takes deployments directly: use Deploy there.",
            field="environment",
        )
    reason = reason.strip()
    if not reason:
        raise ReleaseError("Say why this version should go there.", field="reason")
    current = current_deployment(pipeline, environment)
    if current is not None and current.version_id == version.id:
        raise ReleaseError(
            f"Version {version.number} already runs in {environment.name}.", field="version"
        )
    items = readiness.checklist(version, environment)
    if failing := readiness.blocking_failures(items):
        names = "; ".join(f"{i.label}: {i.reason}" for i in failing)
        raise ReleaseError(
            f"Not ready for {environment.name}: {names}", field="version", checklist=items
        )
    try:
        with transaction.atomic():
            promotion = Promotion.objects.create(
                pipeline=pipeline,
                version=version,
                environment=environment,
                source_environment=readiness.source_environment(environment),
                reason=reason,
                checklist=[i.as_json() for i in items],
                requested_by=by,
            )
            audit_record(
                actor=by,
                action="promotion_requested",
                pipeline=pipeline,
                environment=environment,
                after={"promotion": promotion.id, "version": version.number, "reason": reason},
                summary=f"Promote v{version.number} to {environment.name}: {reason}",
            )
            advisory = [i for i in items if not i.ok]
            notice_send(
                team=pipeline.team,
                environment=environment,
                subject=f"[APPROVAL NEEDED] {pipeline.slug} v{version.number} → {environment.name}",
                text="\n".join(
                    [
                        f"{_who(by)} asks to promote {pipeline.slug} version {version.number} "
                        f"to {environment.name}.",
                        f"Reason: {reason}",
                        *(f"Advisory: {i.label}: {i.reason}" for i in advisory),
                        "An approver of the team other than the requester decides in the "
                        "portal's approvals queue.",
                        f"Portal: {_portal(pipeline)}",
                    ]
                ),
            )
    except IntegrityError:
        pending = Promotion.objects.filter(
            pipeline=pipeline, environment=environment, state=State.PENDING
        ).first()
        what = f" (#{pending.id}, version {pending.version.number})" if pending else ""
        raise _conflict(
            f"A promotion of {pipeline.slug} to {environment.name} is already pending{what}: "
            "it must be decided or withdrawn first."
        ) from None
    promotion.items = items  # the evaluated checklist, for the caller's answer
    return promotion


# --- decide ----------------------------------------------------------------------------------


def staleness(promotion: Promotion) -> str | None:
    """Why `promotion` can no longer be approved as filed, or None."""
    newer = (
        Deployment.objects.filter(
            environment=promotion.environment_id,
            version__pipeline_id=promotion.pipeline_id,
            requested_at__gt=promotion.requested_at,
        )
        .exclude(state=Deployment.State.FAILED)
        .select_related("version")
        .order_by("-requested_at")
        .first()
    )
    if newer is not None:
        return (
            f"Stale: version {newer.version.number} was deployed to "
            f"{promotion.environment.name} at {newer.requested_at:%Y-%m-%d %H:%M} UTC, after "
            "this request was filed. Request a new promotion if it is still wanted."
        )
    return None


def _decidable(
    rows: QuerySet[Decidable], row_id: int, by: object, *, pending: str, noun: str, yours: str
) -> Decidable:
    """Lock the request and apply the four-eyes rule, the same for promotions and backfills;
    raise ReleaseError otherwise.

    No request `row_id`: 404. `by` not an approver of the pipeline's team nor a platform admin,
    or the requester: 403. No longer in its `pending` state: 409, a decided request is final.
    `noun` names the request in the messages, `yours` what its requester may do instead.
    """
    row = (
        rows.select_for_update(of=("self",))
        .select_related("pipeline__team", "requested_by", "decided_by")
        .filter(id=row_id)
        .first()
    )
    if row is None:
        raise ReleaseError(f"No such {noun}.", status=404)
    pipeline = row.pipeline
    if not access.can_approve(by, pipeline):
        raise _forbidden(
            f"Only approvers of team {pipeline.team.name} or a platform admin may decide "
            f"{noun}s of this pipeline."
        )
    if row.requested_by_id == getattr(by, "pk", None):
        raise _forbidden(
            f"You requested this {noun}: someone else must approve or reject it (four eyes). "
            f"You may {yours} it."
        )
    if row.state != pending:
        decided = (
            f" by {_who(row.decided_by)} at {row.decided_at:%Y-%m-%d %H:%M} UTC"
            if row.decided_at
            else ""
        )
        raise _conflict(
            f"This {noun} is already {row.get_state_display().lower()}{decided}: a decided "
            "request is final."
        )
    return row


def _decidable_promotion(promotion_id: int, by: object) -> Promotion:
    return _decidable(
        Promotion.objects.select_related("version", "environment"),
        promotion_id,
        by,
        pending=State.PENDING,
        noun="promotion",
        yours="withdraw",
    )


def _decided(promotion: Promotion, by: object, state: str, comment: str, **fields: object) -> None:
    now = timezone.now()
    changed = Promotion.objects.filter(id=promotion.id, state=State.PENDING).update(
        state=state, decided_by=by, decided_at=now, decision_comment=comment, **fields
    )
    if changed != 1:  # the row lock makes this unreachable; the condition is the second line
        raise _conflict("This request was decided meanwhile; a decided request is final.")
    promotion.refresh_from_db()


@transaction.atomic
def promotion_approve(*, promotion_id: int, by: object, comment: str = "") -> Promotion:
    """Approve and deploy; two approvers at once: the second waits on the lock, then sees a
    decided request (409)."""
    promotion = _decidable_promotion(promotion_id, by)
    if stale := staleness(promotion):
        raise _conflict(stale)
    items = readiness.checklist(promotion.version, promotion.environment)
    if failing := readiness.blocking_failures(items):
        names = "; ".join(f"{i.label}: {i.reason}" for i in failing)
        raise _conflict(f"Stale: a blocking check fails now: {names}", items)
    try:
        deployment = deploy.deployment_request(
            version=promotion.version, environment=promotion.environment, by=by, approved=True
        )
    except deploy.DeployError as exc:
        raise _conflict(str(exc), items) from None
    comment = comment.strip()
    _decided(
        promotion,
        by,
        State.APPROVED,
        comment,
        decision_checklist=[i.as_json() for i in items],
        deployment=deployment,
    )
    pipeline, env, number = promotion.pipeline, promotion.environment, promotion.version.number
    audit_record(
        actor=by,
        action="promotion_approved",
        pipeline=pipeline,
        environment=env,
        before={"state": State.PENDING},
        after={"promotion": promotion.id, "version": number, "deployment": deployment.id},
        summary=f"Approved v{number} → {env.name}" + (f": {comment}" if comment else ""),
    )
    notice_send(
        team=pipeline.team,
        environment=env,
        subject=f"[APPROVED] {pipeline.slug} v{number} → {env.name}",
        text=f"{_who(by)} approved {_who(promotion.requested_by)}'s promotion of "
        f"{pipeline.slug} version {number} to {env.name}; it is being deployed."
        + (f"\nComment: {comment}" if comment else "")
        + f"\nPortal: {_portal(pipeline)}",
        emails=[promotion.requested_by.email],
    )
    return promotion


@transaction.atomic
def promotion_reject(*, promotion_id: int, by: object, comment: str) -> Promotion:
    comment = comment.strip()
    if not comment:
        raise ReleaseError("Say why it is rejected: the requester reads it.", field="comment")
    promotion = _decidable_promotion(promotion_id, by)
    _decided(promotion, by, State.REJECTED, comment)
    pipeline, env, number = promotion.pipeline, promotion.environment, promotion.version.number
    audit_record(
        actor=by,
        action="promotion_rejected",
        pipeline=pipeline,
        environment=env,
        before={"state": State.PENDING},
        after={"promotion": promotion.id, "version": number, "comment": comment},
        summary=f"Rejected v{number} → {env.name}: {comment}",
    )
    notice_send(
        team=pipeline.team,
        environment=env,
        subject=f"[REJECTED] {pipeline.slug} v{number} → {env.name}",
        text=f"{_who(by)} rejected the promotion of {pipeline.slug} version {number} to "
        f"{env.name}.\nComment: {comment}\nPortal: {_portal(pipeline)}",
        emails=[promotion.requested_by.email],
    )
    return promotion


@transaction.atomic
def promotion_withdraw(*, promotion_id: int, by: object) -> Promotion:
    """The requester (or a platform admin) takes a pending request back."""
    promotion = (
        Promotion.objects.select_for_update(of=("self",))
        .select_related("pipeline", "version", "environment")
        .filter(id=promotion_id)
        .first()
    )
    if promotion is None:
        raise ReleaseError("No such promotion.", status=404)
    if promotion.requested_by_id != getattr(by, "pk", None) and not access.is_platform_admin(by):
        raise _forbidden("Only the requester may withdraw a promotion.")
    if not promotion.is_pending:
        raise _conflict(f"This request is {promotion.get_state_display().lower()} already.")
    _decided(promotion, by, State.WITHDRAWN, "")
    audit_record(
        actor=by,
        action="promotion_withdrawn",
        pipeline=promotion.pipeline,
        environment=promotion.environment,
        before={"state": State.PENDING},
        after={"promotion": promotion.id, "state": State.WITHDRAWN},
        summary=f"Withdrew v{promotion.version.number} → {promotion.environment.name}",
    )
    return promotion


# --- backfills into environments that require approval ---------------------------------------


def _decidable_backfill(backfill_id: int, by: object) -> Backfill:
    return _decidable(
        Backfill.objects.select_related("environment"),
        backfill_id,
        by,
        pending=Backfill.State.AWAITING_APPROVAL,
        noun="backfill",
        yours="cancel",
    )


def _backfill_decided(backfill: Backfill, by: object, comment: str, action: str) -> None:
    now = timezone.now()
    Backfill.objects.filter(id=backfill.id).update(
        decided_by=by, decided_at=now, decision_comment=comment, updated_at=now
    )
    pipeline, env = backfill.pipeline, backfill.environment
    what = f"{backfill.first_partition} → {backfill.last_partition}"
    audit_record(
        actor=by,
        action=f"backfill_{action}",
        pipeline=pipeline,
        environment=env,
        before={"state": Backfill.State.AWAITING_APPROVAL},
        after={"backfill": backfill.id, "comment": comment},
        summary=f"{action.capitalize()} backfill #{backfill.id} ({what})"
        + (f": {comment}" if comment else ""),
    )
    notice_send(
        team=pipeline.team,
        environment=env,
        subject=f"[{action.upper()}] backfill of {pipeline.slug} in {env.name} ({what})",
        text=f"{_who(by)} {action} {_who(backfill.requested_by)}'s backfill of {pipeline.slug} "
        f"in {env.name}, {what}."
        + (f"\nComment: {comment}" if comment else "")
        + f"\nPortal: {_portal(pipeline)}",
        emails=[backfill.requested_by.email],
    )


@transaction.atomic
def backfill_approve(*, backfill_id: int, by: object, comment: str = "") -> Backfill:
    """Approve and queue: re-checked as at submit (the same runs, no scheduled run racing)."""
    backfill = _decidable_backfill(backfill_id, by)
    try:
        backfills.backfill_release(backfill)
    except backfills.BackfillError as exc:
        raise _conflict(str(exc)) from None
    _backfill_decided(backfill, by, comment.strip(), "approved")
    backfill.refresh_from_db()
    return backfill


@transaction.atomic
def backfill_reject(*, backfill_id: int, by: object, comment: str) -> Backfill:
    comment = comment.strip()
    if not comment:
        raise ReleaseError("Say why it is rejected: the requester reads it.", field="comment")
    backfill = _decidable_backfill(backfill_id, by)
    now = timezone.now()
    Backfill.objects.filter(id=backfill.id).update(state=Backfill.State.REJECTED, finished_at=now)
    _backfill_decided(backfill, by, comment, "rejected")
    backfill.refresh_from_db()
    return backfill


# --- rollback --------------------------------------------------------------------------------


def rollback_targets(pipeline: Pipeline, environment: Environment) -> list[PipelineVersion]:
    """Versions `environment` may return to without a new approval, newest first: those that
    ran there (registered by Airflow) or were approved there, except what runs there now."""
    current = current_deployment(pipeline, environment)
    ran = Deployment.objects.filter(
        environment=environment, version__pipeline=pipeline, registered_at__isnull=False
    ).values("version_id")
    approved = Promotion.objects.filter(
        pipeline=pipeline, environment=environment, state=State.APPROVED
    ).values("version_id")
    versions = PipelineVersion.objects.filter(pipeline=pipeline).filter(
        Q(id__in=ran) | Q(id__in=approved)
    )
    if current is not None:
        versions = versions.exclude(id=current.version_id)
    return list(versions.order_by("-number"))


@transaction.atomic
def rollback(
    *, pipeline: Pipeline, environment: Environment, version: PipelineVersion, by: object
) -> Deployment:
    """Return `environment` to `version`; raise ReleaseError when it needs a promotion."""
    _refuse_unless_member(by, pipeline)
    authoring.pipeline_lock(pipeline_id=pipeline.pk)  # one at a time
    current = current_deployment(pipeline, environment)
    if current is not None and current.version_id == version.id:
        raise ReleaseError(
            f"Version {version.number} already runs in {environment.name}.", field="version"
        )
    allowed = {v.id for v in rollback_targets(pipeline, environment)}
    if environment.requires_approval and version.id not in allowed:
        raise _forbidden(
            f"Version {version.number} never ran in {environment.name} and was never approved "
            "there: request a promotion instead."
        )
    try:
        deployment = deploy.deployment_request(
            version=version, environment=environment, by=by, approved=True
        )
    except deploy.DeployError as exc:
        raise ReleaseError(str(exc), status=409) from None
    before = current.version.number if current else None
    audit_record(
        actor=by,
        action="rollback",
        pipeline=pipeline,
        environment=environment,
        before={"version": before},
        after={"version": version.number, "deployment": deployment.id},
        summary=f"Rolled {environment.name} back from v{before} to v{version.number}",
    )
    notice_send(
        team=pipeline.team,
        environment=environment,
        subject=f"[ROLLBACK] {pipeline.slug} in {environment.name}: v{before} → v{version.number}",
        text=f"{_who(by)} rolled {pipeline.slug} in {environment.name} back from version "
        f"{before} to version {version.number}, which ran there before (no new approval "
        f"needed).\nPortal: {_portal(pipeline)}",
    )
    return deployment
