"""Run now under four eyes in a real headless Chromium: alice asks to re-load a loaded partition
in prod, the form says before she submits that it will wait for an approver, the run waits;
bob approves it from the approvals queue.

The deployment and the partition's successful run are rows alone (no Airflow): this test is
about the pages; tests/integration/test_promotion.py re-loads a partition in stage through a
real approval and the real Airflow.
"""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from playwright.sync_api import expect

from pipelines.authoring import services as authoring
from pipelines.authoring.forms import PipelineForm
from pipelines.core import schedule
from pipelines.models import RunRecord
from pipelines.runs.services import partition_range
from tests.conftest import form_data, make_environment, make_source
from tests.integration.conftest import SCREENSHOTS, log_in
from tests.releases.conftest import mark_deployed

pytestmark = pytest.mark.integration


@pytest.fixture
def reload_world(live_server, alice, bob):
    """prod (requires approval) with the pipeline deployed and its latest complete partition
    loaded; set up before Playwright starts (its event loop makes Django refuse the ORM)."""
    for user in (alice, bob):
        user.set_password(f"{user.username}-password-1")
        user.save()
    make_source()
    prod = make_environment("prod", 0, requires_approval=True, airflow_url="http://127.0.0.1:9")
    form = PipelineForm(form_data(name="reload-orders"), user=alice)
    assert form.is_valid(), form.errors
    pipeline = authoring.pipeline_create(spec=form.spec, by=alice)
    version = pipeline.versions.get()
    # One transaction: the deployment's task is sent on commit, when the row already says
    # deployed, so a worker finds nothing to do.
    with transaction.atomic():
        deployment = mark_deployed(version, prod, alice)
    _, latest = partition_range(spec=version.spec, now=timezone.now())
    key = schedule.format_partition(latest, version.spec.partition_grain)
    start = latest.replace(tzinfo=UTC)
    RunRecord.objects.create(
        environment=prod,
        pipeline=pipeline,
        dag_id=deployment.dag_id,
        dag_run_id="scheduled__loaded",
        run_type="scheduled",
        state="success",
        start_date=timezone.now() - timedelta(hours=1),
        partition_start=start,
        partition_end=start + schedule.GRAINS[version.spec.partition_grain],
        synced_at=timezone.now(),
    )
    return live_server, pipeline.slug, key


def test_reload_in_prod_waits_for_an_approver_in_the_browser(reload_world, browser_page):
    live_server, slug, key = reload_world
    page = browser_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/pipelines/{slug}/")
    page.select_option("#id_environment", "prod")
    page.fill("#id_partition", key)
    page.locator("#id_partition").dispatch_event("change")
    case = page.locator("#run-case [data-case]")
    expect(case).to_have_attribute("data-case", "approval", timeout=10_000)
    expect(case).to_contain_text(f"{key} is loaded in Prod: a run replaces its rows")
    page.click("button:has-text('Run now')")
    row = page.locator("#run-table tbody tr").first
    expect(row).to_contain_text("awaiting approval")
    expect(row).to_contain_text("waits until an approver of team Payments other than you")
    page.screenshot(path=str(SCREENSHOTS / "run-awaiting-approval.png"), full_page=True)
    page.click("button:has-text('Log out alice')")

    log_in(page, live_server.url, "bob")
    expect(page.locator("#approvals-badge")).to_have_text("1")
    page.click("header nav >> text=Approvals")
    waiting = page.locator("#run-approval-table tbody tr").first
    expect(waiting).to_contain_text(slug)
    expect(waiting).to_contain_text(key)
    waiting.locator("input[name=comment]").fill("Checked the source: re-load it.")
    waiting.locator("button:has-text('Approve')").click()
    expect(page.locator(".messages")).to_contain_text("Approved: run #")
    expect(page.locator("#run-approval-table")).to_contain_text("No run awaits approval")
    page.goto(f"{live_server.url}/pipelines/{slug}/")
    expect(page.locator("#run-table tbody tr").first).to_contain_text(
        "Approved by bob: Checked the source: re-load it."
    )
