"""Generated DAG files parse in Airflow 3.3.2's own DagBag with zero import errors and warnings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.local import validate_dag_files
from pipelines.authoring import codegen
from tests.conftest import EVENTS_HOURLY, ORDERS, PORTAL_URL, target

pytestmark = pytest.mark.integration

HOSTILE = "Quotes ' \" ''' \"\"\" {{ ds }} {% raw %} ${HOME} `id` \\n\n# not a comment\nüñí 🚀 x.md"
VARIANTS = {
    "orders_pg": (ORDERS, target()),
    "events_sqlite": (EVENTS_HOURLY, target("dev", "sqlite", "", "dev__")),
    "weekly_ny": (
        replace(ORDERS, name="weekly-ny", schedule="0 3 * * 1", timezone="America/New_York"),
        target("stage", "postgres", "analytics", "stage__"),
    ),
    "hostile_text": (
        replace(
            ORDERS,
            name="hostile-text",
            description=HOSTILE,
            owner="o'brien",
            runbook_url="https://wiki.example.com/a?b=1&c='2'#{{x}}",
            tags=("a:b", "c.d-e_f"),
        ),
        target(),
    ),
}


def test_every_reference_render_parses_cleanly(tmp_path: Path):
    expected = set()
    for name, (spec, env) in VARIANTS.items():
        rendered = codegen.render_dag(spec, env, version=1, portal_url=PORTAL_URL)
        (tmp_path / f"{name}.py").write_text(rendered.source)
        expected.add(rendered.dag_id)
    check = validate_dag_files(tmp_path)
    assert check.import_errors == {}
    assert check.warnings == {}
    assert set(check.dag_ids) == expected


def test_the_check_catches_a_broken_file(tmp_path: Path):
    (tmp_path / "broken.py").write_text("from airflow.sdk import DAG\nraise ValueError('boom')\n")
    check = validate_dag_files(tmp_path)
    assert "boom" in check.import_errors["broken.py"]
