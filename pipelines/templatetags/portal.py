"""Small display filters for health pages."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template

from pipelines.core import schedule

register = template.Library()


@register.filter
def partition(value: datetime | None) -> str:
    """Show a stored partition start (wall-clock labelled UTC) by the one partition key format:
    2026-11-10, or 2026-11-10T13:00 for an hour that is not midnight (what Run now and the API
    take and what run requests store)."""
    if value is None:
        return "—"
    wall = value.astimezone(UTC).replace(tzinfo=None)
    return schedule.format_partition(wall, "day" if wall.hour == 0 else "hour")


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


@register.filter
def seconds(value: float | None) -> str:
    """Show a duration compactly: 42 s, 3.5 min, 1.2 h."""
    if value is None:
        return "—"
    if value < 90:
        return f"{value:.0f} s"
    if value < 5400:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"
