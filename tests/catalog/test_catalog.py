"""Catalog introspection: database types map to the portable kinds codegen understands."""

from __future__ import annotations

import pytest

from pipelines.catalog.services import kind_of


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("timestamp with time zone", "timestamptz"),
        ("TIMESTAMPTZ", "timestamptz"),
        ("timestamp without time zone", "timestamp"),
        ("timestamp(6) without time zone", "timestamp"),
        ("timestamp(3) with time zone", "timestamptz"),
        ("numeric(12, 2)", "numeric"),
        ("date", "date"),
        ("character varying(20)", "text"),
        ("geometry", "text"),
    ],
)
def test_instants_and_wall_clock_times_are_different_kinds(raw, kind):
    assert kind_of(raw) == kind
