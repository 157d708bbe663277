from __future__ import annotations

from django.urls import path

from pipelines.web import approvals, backfills, releases, runs, tokens, views

app_name = "pipelines"

urlpatterns = [
    path("", views.pipeline_list, name="list"),
    path("catalog/", views.catalog, name="catalog"),
    path("health/", views.health_overview, name="health"),
    path("health/sla/", views.sla_dashboard, name="sla"),
    path("health/ownership/", views.ownership, name="ownership"),
    path("health/alerts/", views.alert_list, name="alerts"),
    path("audit/", views.audit_log, name="audit"),
    path("tokens/", tokens.token_page, name="tokens"),
    path("tokens/new", tokens.token_create, name="token-create"),
    path("tokens/<str:public_id>/revoke", tokens.token_revoke, name="token-revoke"),
    path("approvals/", approvals.approval_queue, name="approvals"),
    path("approvals/badge", approvals.approvals_badge, name="approvals-badge"),
    path("promotions/<int:promotion_id>/", approvals.promotion_detail, name="promotion"),
    path(
        "promotions/<int:promotion_id>/approve",
        approvals.promotion_approve,
        name="promotion-approve",
    ),
    path(
        "promotions/<int:promotion_id>/reject", approvals.promotion_reject, name="promotion-reject"
    ),
    path(
        "promotions/<int:promotion_id>/withdraw",
        approvals.promotion_withdraw,
        name="promotion-withdraw",
    ),
    path("pipelines/new/", views.pipeline_create, name="create"),
    path("pipelines/new/schedule", views.schedule_explain, name="schedule-explain"),
    path("pipelines/new/columns", views.source_columns, name="source-columns"),
    path("pipelines/new/preview", views.pipeline_preview, name="preview"),
    path("pipelines/<slug:slug>/", views.pipeline_detail, name="detail"),
    path("pipelines/<slug:slug>/deployments/", views.deployment_create, name="deployment-create"),
    path("pipelines/<slug:slug>/deployments/table", views.deployment_table, name="deployments"),
    path("pipelines/<slug:slug>/runs/", runs.run_create, name="run-create"),
    path("pipelines/<slug:slug>/runs/table", runs.run_table, name="runs"),
    path("pipelines/<slug:slug>/runs/case", runs.run_case, name="run-case"),
    path("runs/<int:run_id>/approve", runs.run_approve, name="run-approve"),
    path("runs/<int:run_id>/reject", runs.run_reject, name="run-reject"),
    path("runs/<int:run_id>/withdraw", runs.run_withdraw, name="run-withdraw"),
    path("pipelines/<slug:slug>/health", views.pipeline_health, name="pipeline-health"),
    path("pipelines/<slug:slug>/versions/<int:number>/dag", views.dag_source, name="dag-source"),
    path("pipelines/<slug:slug>/edit/", views.pipeline_edit, name="edit"),
    path("pipelines/<slug:slug>/promote/", releases.promote, name="promote"),
    path(
        "pipelines/<slug:slug>/promote/checklist",
        releases.promote_checklist,
        name="promote-checklist",
    ),
    path("pipelines/<slug:slug>/rollback/", releases.rollback, name="rollback"),
    path("pipelines/<slug:slug>/upgrade/", releases.upgrade, name="upgrade"),
    path("upgrades/", releases.upgrades, name="upgrades"),
    path("pipelines/<slug:slug>/backfill/", backfills.backfill_form, name="backfill"),
    path(
        "pipelines/<slug:slug>/backfill/preview",
        backfills.backfill_preview_fragment,
        name="backfill-preview",
    ),
    path(
        "pipelines/<slug:slug>/backfills/",
        backfills.pipeline_backfills,
        name="pipeline-backfills",
    ),
    path("backfills/", backfills.backfill_list, name="backfills"),
    path("backfills/<int:backfill_id>/", backfills.backfill_detail, name="backfill-detail"),
    path("backfills/<int:backfill_id>/pause", backfills.backfill_pause, name="backfill-pause"),
    path("backfills/<int:backfill_id>/resume", backfills.backfill_resume, name="backfill-resume"),
    path("backfills/<int:backfill_id>/cancel", backfills.backfill_cancel, name="backfill-cancel"),
    path(
        "backfills/<int:backfill_id>/approve", backfills.backfill_approve, name="backfill-approve"
    ),
    path("backfills/<int:backfill_id>/reject", backfills.backfill_reject, name="backfill-reject"),
    path(
        "pipelines/<slug:slug>/versions/<int:a>/diff/<int:b>/",
        views.version_diff,
        name="version-diff",
    ),
]
