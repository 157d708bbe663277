"""The Django admin: the platform admins' tools.

Every change that matters to four-eyes (memberships, roles, platform admins), to routing (team
alert routes, environments) or to data (pipelines' team, owner and table, source databases and
their team grants) goes through AuditedAdmin, which writes an AuditEvent with the row before and
after in the admin's own transaction. Rows that only a service writes (outbox rows, decisions,
versions, audit events, tokens) are read-only here: ReadOnlyAdmin.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group
from django.db import models as db_models
from django.db import router, transaction
from django.forms import ModelForm
from django.http import HttpRequest

from pipelines import models
from pipelines.authoring.forms import source_refusal
from pipelines.core import access
from pipelines.core.audit import audit_record
from pipelines.core.models import AuditEvent

# Never copied into an audit event, whatever the model: hashes of secrets are secrets too.
SECRET_FIELDS = frozenset({"password", "key_sha256", "lease_token"})


def snapshot(obj: db_models.Model) -> dict[str, Any]:
    """The row's audited values: fields by name (a relation by its str()), many-to-many as a
    sorted list; never a secret."""
    values: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        if field.primary_key or field.name in SECRET_FIELDS:
            continue
        if field.is_relation:
            related = getattr(obj, field.name)
            values[field.name] = None if related is None else str(related)
        else:
            value = field.value_from_object(obj)
            # To the second, as the admin's date and time widgets show and post it: a save that
            # keeps what the page showed is not a change of date_joined.
            values[field.name] = (
                value.replace(microsecond=0) if isinstance(value, datetime) else value
            )
    if obj.pk is not None:
        for field in obj._meta.many_to_many:
            if field.name not in SECRET_FIELDS:
                values[field.name] = sorted(str(o) for o in getattr(obj, field.name).all())
    return values


def stored(obj: db_models.Model) -> dict[str, Any] | None:
    """The snapshot of the row as the database holds it now (the admin's form has already
    written the posted values into `obj`), locked: a second admin saving the same row at once
    waits, so each event's "before" is the row that event's change overwrote."""
    if obj.pk is None:
        return None
    row = type(obj)._default_manager.select_for_update().filter(pk=obj.pk).first()
    return None if row is None else snapshot(row)


def audit_admin_change(
    request: HttpRequest,
    *,
    action: str,
    obj: db_models.Model,
    label: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    parent: db_models.Model | None = None,
) -> None:
    """Record an add (before None), a change (only the fields that differ) or a delete (after
    None) made in the admin; a change that changes nothing records nothing."""
    if before is not None and after is not None:
        fields = [name for name in after if before.get(name) != after[name]]
        if not fields:
            return
        before = {name: before.get(name) for name in fields}
        after = {name: after[name] for name in fields}
        verb = f"Changed {', '.join(fields)} of"
    else:
        verb = "Added" if before is None else "Deleted"
    links: dict[str, Any] = {}
    if after is not None:  # a deleted row cannot be referenced (and PROTECT would refuse it)
        if isinstance(obj, models.Environment):
            links["environment"] = obj
        elif isinstance(obj, models.Pipeline):
            links["pipeline"] = obj
    where = f" (on {parent._meta.verbose_name} “{parent}”)" if parent is not None else ""
    audit_record(
        actor=request.user,
        action=action,
        before=before,
        after=after,
        summary=f"Admin: {verb} {obj._meta.verbose_name} “{label}”{where}.",
        **links,
    )


class AuditedAdmin(admin.ModelAdmin):
    """Write an AuditEvent for every add, change and delete of the row and of its inlines.

    The admin's add, change and delete views run in one transaction, so the change and its event
    commit together; a form that does not validate saves nothing and records nothing.
    """

    audit_action = AuditEvent.Action.ADMIN_CHANGED

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        obj._audit_before = stored(obj) if change else None
        super().save_model(request, obj, form, change)

    def save_related(
        self, request: HttpRequest, form: ModelForm, formsets: list[Any], change: bool
    ) -> None:
        # Django's save_related, with the row's event between its many-to-many and its inlines
        # (the many-to-many, e.g. a source's teams, is part of the row's before and after).
        form.save_m2m()
        obj = form.instance
        audit_admin_change(
            request,
            action=self.audit_action,
            obj=obj,
            label=str(obj),
            before=getattr(obj, "_audit_before", None),
            after=snapshot(obj),
        )
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def save_formset(
        self, request: HttpRequest, form: ModelForm, formset: Any, change: bool
    ) -> None:
        befores = {
            id(f.instance): stored(f.instance) for f in formset.initial_forms if f.instance.pk
        }
        labels = {id(f.instance): str(f.instance) for f in formset.initial_forms}
        super().save_formset(request, form, formset, change)
        parent = form.instance
        for obj in formset.new_objects:
            audit_admin_change(
                request, action=self.audit_action, obj=obj, label=str(obj),
                before=None, after=snapshot(obj), parent=parent,
            )  # fmt: skip
        for obj, _fields in formset.changed_objects:
            audit_admin_change(
                request, action=self.audit_action, obj=obj, label=str(obj),
                before=befores.get(id(obj)), after=snapshot(obj), parent=parent,
            )  # fmt: skip
        for obj in formset.deleted_objects:
            audit_admin_change(
                request, action=self.audit_action, obj=obj, label=labels[id(obj)],
                before=befores.get(id(obj)), after=None, parent=parent,
            )  # fmt: skip

    def deleted_snapshot(self, obj: Any) -> dict[str, Any]:
        """The row before a delete, with what the delete takes along (see TeamAdmin)."""
        return snapshot(obj)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        before, label = self.deleted_snapshot(obj), str(obj)
        super().delete_model(request, obj)
        audit_admin_change(
            request, action=self.audit_action, obj=obj, label=label, before=before, after=None
        )

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        # The changelist's "delete selected" action is not wrapped in a transaction by Django.
        with transaction.atomic(using=queryset.db):
            rows = [(obj, self.deleted_snapshot(obj), str(obj)) for obj in queryset]
            super().delete_queryset(request, queryset)
            for obj, before, label in rows:
                audit_admin_change(
                    request, action=self.audit_action, obj=obj, label=label,
                    before=before, after=None,
                )  # fmt: skip


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only a service writes (its checks, its outbox, its audit event, its four-eyes
    decision): shown, never added, changed or deleted here (no delete action either)."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 1


class WithMemberships:
    """Deleting a team or a user deletes its memberships (who approves): the event lists them."""

    def deleted_snapshot(self, obj: Any) -> dict[str, Any]:
        roles = sorted(str(m) for m in obj.memberships.select_related("team", "user"))
        return super().deleted_snapshot(obj) | {"memberships": roles}  # type: ignore[misc]


User = get_user_model()


@admin.register(models.Team)
class TeamAdmin(WithMemberships, AuditedAdmin):
    """Members and their roles (approvers decide four-eyes requests), alert routes."""

    list_display = ["slug", "name", "domain"]
    inlines = [MembershipInline]

    def deleted_snapshot(self, obj: Any) -> dict[str, Any]:
        sources = sorted(str(s) for s in obj.granted_sources.all())
        return super().deleted_snapshot(obj) | {"granted_sources": sources}


admin.site.unregister(User)


@admin.register(User)
class UserAdmin(WithMemberships, AuditedAdmin, BaseUserAdmin):
    """Django's user admin, audited (a superuser is a platform admin), with the memberships."""

    inlines = [MembershipInline]

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> Any:
        # Django's password form saves outside the admin's change transaction: record the change
        # (never the password) with it, in one transaction.
        with transaction.atomic(using=router.db_for_write(self.model)):
            response = super().user_change_password(request, id, form_url)
            if request.method == "POST" and response.status_code == 302:
                user = self.get_object(request, id)
                audit_record(
                    actor=request.user,
                    action=self.audit_action,
                    summary=f"Admin: Changed the password of user “{user}”.",
                )
        return response

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        # The add form is Django's two-step one (username and password first).
        return super().get_inline_instances(request, obj) if obj is not None else []


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(AuditedAdmin, BaseGroupAdmin):
    """Groups carry admin permissions: audited like the users who hold them."""


class SourceColumnInline(admin.TabularInline):
    model = models.SourceColumn
    extra = 0


@admin.register(models.SourceTable)
class SourceTableAdmin(AuditedAdmin):
    list_display = ["__str__", "database", "introspected_at"]
    list_filter = ["database"]
    inlines = [SourceColumnInline]


@admin.register(models.SourceDatabase)
class SourceDatabaseAdmin(AuditedAdmin):
    """A source and the teams it is granted to: only platform admins grant (core.access)."""

    list_display = ["name", "dialect", "conn_id"]
    filter_horizontal = ["teams"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return access.is_platform_admin(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.is_platform_admin(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.is_platform_admin(request.user)


@admin.register(models.Environment)
class EnvironmentAdmin(AuditedAdmin):
    audit_action = AuditEvent.Action.ENVIRONMENT_CHANGED
    list_display = [
        "slug",
        "name",
        "order",
        "airflow_url",
        "warehouse_conn_id",
        "requires_approval",
    ]


class PipelineAdminForm(ModelForm):
    """The rules of PipelineForm that a team, owner or table change here could break."""

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        team, owner = data.get("team"), data.get("owner")
        table = data.get("source_table")
        if team is not None and table is not None:
            refusal = source_refusal(table, team)
            if refusal:
                self.add_error("team", refusal)
        if team and owner and not team.memberships.filter(user=owner).exists():
            self.add_error("owner", f"{owner} is not a member of team {team.name}.")
        return data


@admin.register(models.Pipeline)
class PipelineAdmin(AuditedAdmin):
    form = PipelineAdminForm
    list_display = ["slug", "team", "owner", "target_table", "adopt_allowed", "created_at"]
    list_filter = ["team", "adopt_allowed"]
    search_fields = ["slug", "target_table"]


@admin.register(models.PipelineVersion)
class PipelineVersionAdmin(ReadOnlyAdmin):
    """Versions are immutable: an edit is the next version, made by the authoring service."""

    list_display = ["pipeline", "number", "template_version", "created_by", "created_at"]


@admin.register(models.Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    """Read-only: the deployed code is exactly what the portal rendered, and deploys go through
    the deploy service (its checks, its outbox), never through an edited row."""

    list_display = ["dag_id", "version", "environment", "state", "requested_at", "registered_at"]
    list_filter = ["state", "environment"]


@admin.register(models.Promotion)
class PromotionAdmin(ReadOnlyAdmin):
    """Read-only: a promotion is filed, approved, rejected and withdrawn only through the
    releases service (four eyes, the checklist, the audit log), never by editing a row."""

    list_display = ["pipeline", "version", "environment", "state", "requested_by", "decided_by"]
    list_filter = ["state", "environment"]


@admin.register(models.RunRequest)
class RunRequestAdmin(ReadOnlyAdmin):
    """Read-only: the workers own an outbox row (claim, fenced finish); an edit would race them."""

    list_display = ["dag_id", "partition", "environment", "state", "run_state", "requested_at"]
    list_filter = ["state", "environment"]


@admin.register(models.Backfill)
class BackfillAdmin(ReadOnlyAdmin):
    """Read-only: requested, approved, paused and cancelled through the backfills service."""

    list_display = ["dag_id", "first_partition", "last_partition", "environment", "state"]
    list_filter = ["state", "environment"]


@admin.register(models.ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Read-only: tokens are created and revoked by their owners on the tokens page and the API
    (and audited there); the hash is never shown."""

    list_display = [
        "public_id",
        "user",
        "name",
        "scopes",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at"]
    search_fields = ["public_id", "name", "user__username"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f for f in super().get_readonly_fields(request, obj) if f not in SECRET_FIELDS]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.get_readonly_fields(request, obj)


class AlertDeliveryInline(admin.TabularInline):
    model = models.AlertDelivery
    extra = 0
    can_delete = False
    readonly_fields = [
        "event",
        "channel",
        "target",
        "state",
        "attempts",
        "last_error",
        "created_at",
        "sent_at",
    ]
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.Alert)
class AlertAdmin(ReadOnlyAdmin):
    """Read-only: the alert evaluator opens and resolves alerts (one per pipeline × env × kind)."""

    list_display = [
        "pipeline",
        "environment",
        "kind",
        "severity",
        "state",
        "opened_at",
        "resolved_at",
        "notify_count",
    ]
    list_filter = ["state", "severity", "kind", "environment", "team"]
    search_fields = ["pipeline__slug", "key"]
    inlines = [AlertDeliveryInline]


@admin.register(models.AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["alert", "event", "channel", "target", "state", "attempts", "created_at"]
    list_filter = ["state", "channel", "event"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only, like the table itself: no add, change or delete here either."""

    list_display = ["at", "actor", "action", "pipeline", "environment", "summary"]
    list_filter = ["action", "environment"]
    search_fields = ["pipeline__slug", "actor__username", "summary"]
