"""Reads of the catalog."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from pipelines.catalog.models import SourceTable


def granted_tables(*, user: Any) -> QuerySet[SourceTable]:
    """The tables of the source databases granted to a team `user` is a member of: the one
    place that says which sources a user may build pipelines on."""
    return (
        SourceTable.objects.filter(database__teams__memberships__user=user)
        .select_related("database")
        .distinct()
    )
