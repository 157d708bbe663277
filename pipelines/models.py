"""Every model of the app, re-exported: Django loads `pipelines.models`; code imports each model
from the package that owns it (pipelines/<area>/models.py)."""

from __future__ import annotations

from pipelines.alerts.models import Alert, AlertDelivery  # noqa: F401
from pipelines.authoring.models import Pipeline, PipelineVersion  # noqa: F401
from pipelines.backfills.models import Backfill  # noqa: F401
from pipelines.catalog.models import Dialect, SourceColumn, SourceDatabase, SourceTable  # noqa: F401
from pipelines.core.models import ApiToken, Membership, Team  # noqa: F401
from pipelines.deployments.models import (  # noqa: F401
    READ_ONLY_CODE_FIELDS,
    Deployment,
    DeploymentQuerySet,
    Environment,
)
from pipelines.monitoring.models import (  # noqa: F401
    VERDICT_RANK,
    PipelineHealth,
    RunRecord,
    SlaMiss,
    SyncState,
    Verdict,
)
from pipelines.releases.models import Promotion  # noqa: F401
from pipelines.runs.models import RunRequest  # noqa: F401

__all__ = [
    "Team",
    "Membership",
    "ApiToken",
    "Dialect",
    "SourceDatabase",
    "SourceTable",
    "SourceColumn",
    "Pipeline",
    "PipelineVersion",
    "Environment",
    "DeploymentQuerySet",
    "READ_ONLY_CODE_FIELDS",
    "Deployment",
    "RunRequest",
    "RunRecord",
    "Verdict",
    "VERDICT_RANK",
    "PipelineHealth",
    "SlaMiss",
    "SyncState",
    "Alert",
    "AlertDelivery",
    "Promotion",
    "Backfill",
]
