from __future__ import annotations

from django.contrib import admin
from django.forms import ModelForm
from django.http import HttpRequest

from pipelines import models
from pipelines.core.audit import audit_record
from pipelines.core.models import AuditEvent


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 1


@admin.register(models.Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "domain"]
    inlines = [MembershipInline]


class SourceColumnInline(admin.TabularInline):
    model = models.SourceColumn
    extra = 0


@admin.register(models.SourceTable)
class SourceTableAdmin(admin.ModelAdmin):
    list_display = ["__str__", "database", "introspected_at"]
    list_filter = ["database"]
    inlines = [SourceColumnInline]


@admin.register(models.SourceDatabase)
class SourceDatabaseAdmin(admin.ModelAdmin):
    list_display = ["name", "dialect", "conn_id"]


@admin.register(models.Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "order",
        "airflow_url",
        "warehouse_conn_id",
        "requires_approval",
    ]

    def save_model(
        self, request: HttpRequest, obj: models.Environment, form: ModelForm, change: bool
    ) -> None:
        # changeform_view runs in one transaction: the change and its audit event commit together.
        super().save_model(request, obj, form, change)
        fields = form.changed_data
        if not fields:
            return
        audit_record(
            actor=request.user,
            action="environment_changed",
            environment=obj,
            before={f: form.initial.get(f) for f in fields} if change else None,
            after={f: form.cleaned_data.get(f) for f in fields},
            summary=f"{'Changed' if change else 'Added'} {obj.name}: {', '.join(fields)}",
        )


@admin.register(models.Pipeline)
class PipelineAdmin(admin.ModelAdmin):
    list_display = ["slug", "team", "owner", "target_table", "created_at"]
    list_filter = ["team"]
    search_fields = ["slug", "target_table"]


@admin.register(models.PipelineVersion)
class PipelineVersionAdmin(admin.ModelAdmin):
    list_display = ["pipeline", "number", "template_version", "created_by", "created_at"]
    readonly_fields = [f.name for f in models.PipelineVersion._meta.fields]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only a service writes (its checks, its outbox, its audit event)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(models.Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    """Read-only: the deployed code is exactly what the portal rendered, and deploys go through
    the deploy service (its checks, its outbox), never through an edited row."""

    list_display = ["dag_id", "version", "environment", "state", "requested_at", "registered_at"]
    list_filter = ["state", "environment"]
    readonly_fields = [f.name for f in models.Deployment._meta.fields]


@admin.register(models.Promotion)
class PromotionAdmin(ReadOnlyAdmin):
    """Read-only: a promotion is filed, approved, rejected and withdrawn only through the
    releases service (four eyes, the checklist, the audit log), never by editing a row."""

    list_display = ["pipeline", "version", "environment", "state", "requested_by", "decided_by"]
    list_filter = ["state", "environment"]
    readonly_fields = [f.name for f in models.Promotion._meta.fields]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# The outbox columns are the workers' (claim, fenced finish): an edit there would race them.
OUTBOX_FIELDS = ["attempts", "lease_token", "lease_until", "next_attempt_at", "last_error"]


@admin.register(models.RunRequest)
class RunRequestAdmin(admin.ModelAdmin):
    list_display = ["dag_id", "partition", "environment", "state", "run_state", "requested_at"]
    list_filter = ["state", "environment"]
    readonly_fields = OUTBOX_FIELDS


@admin.register(models.ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Read-only: tokens are created and revoked on the tokens page and the API, audited."""

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
    exclude = ["key_sha256"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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


@admin.register(models.Alert)
class AlertAdmin(admin.ModelAdmin):
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
    readonly_fields = [f.name for f in models.Alert._meta.fields]
    inlines = [AlertDeliveryInline]


@admin.register(models.AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    list_display = ["alert", "event", "channel", "target", "state", "attempts", "created_at"]
    list_filter = ["state", "channel", "event"]
    readonly_fields = OUTBOX_FIELDS


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only, like the table itself: no add, change or delete here either."""

    list_display = ["at", "actor", "action", "pipeline", "environment", "summary"]
    list_filter = ["action", "environment"]
    search_fields = ["pipeline__slug", "actor__username", "summary"]
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
