"""/metrics in Prometheus text format, read from PipelineHealth (one query per scrape).

prometheus-client renders the exposition format; a custom collector yields fresh values from the
database on every scrape instead of keeping in-process counters (several web processes serve the
same numbers).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from pipelines.monitoring.models import PipelineHealth, Verdict

LABELS = ["pipeline", "environment", "team", "owner"]


class HealthCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "portal_pipeline_freshness_lag_partitions",
            "Partitions between the newest loaded and the newest expected one.",
            labels=LABELS,
        )
        lag_hours = GaugeMetricFamily(
            "portal_pipeline_freshness_lag_hours", "Freshness lag in hours.", labels=LABELS
        )
        last_success = GaugeMetricFamily(
            "portal_pipeline_last_success_timestamp_seconds",
            "When the last successful run was queued (Unix time).",
            labels=LABELS,
        )
        verdict = GaugeMetricFamily(
            "portal_pipeline_verdict",
            "1 for the pipeline's current verdict, 0 for the others.",
            labels=[*LABELS, "verdict"],
        )
        misses = GaugeMetricFamily(
            "portal_pipeline_sla_misses_7d", "SLA misses in the last 7 days.", labels=LABELS
        )
        unreachable = GaugeMetricFamily(
            "portal_pipeline_orchestrator_unreachable",
            "1 while the environment's Airflow cannot be reached.",
            labels=LABELS,
        )
        rows = PipelineHealth.objects.values_list(
            "pipeline__slug",
            "environment__slug",
            "team__slug",
            "owner__username",
            "verdict",
            "freshness_lag_partitions",
            "freshness_lag_hours",
            "last_success_at",
            "sla_misses_7d",
            "orchestrator_unreachable_since",
        ).order_by("pipeline__slug", "environment__order")
        for pipeline, env, team, owner, current, lag_p, lag_h, success, miss, down in rows:
            labels = [pipeline, env, team, owner]
            if lag_p is not None:
                lag.add_metric(labels, lag_p)
                lag_hours.add_metric(labels, lag_h or 0.0)
            if success is not None:
                last_success.add_metric(labels, success.timestamp())
            for v in Verdict.values:
                verdict.add_metric([*labels, v], 1.0 if v == current else 0.0)
            misses.add_metric(labels, miss)
            unreachable.add_metric(labels, 1.0 if down else 0.0)
        yield from (lag, lag_hours, last_success, verdict, misses, unreachable)


def metrics_allowed(request: HttpRequest) -> bool:
    """Return whether the request may read /metrics.

    The labels name every pipeline, owner and team, so the scrape needs the bearer token or a
    logged-in user; it is open only while DEBUG is on and no token is set (local runs).
    """
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if hmac.compare_digest(sent.encode(), token.encode()):
            return True
    if request.user.is_authenticated:
        return True
    return settings.DEBUG and not token


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Scrape endpoint: PipelineHealth as Prometheus gauges, for the token or a logged-in user."""
    if not metrics_allowed(request):
        how = "Send Authorization: Bearer <METRICS_TOKEN>, or log in."
        if not settings.METRICS_TOKEN:
            how = "Log in, or set METRICS_TOKEN and send Authorization: Bearer <METRICS_TOKEN>."
        response = HttpResponse(how + "\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
