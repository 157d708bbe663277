"""A backfill in a real headless Chromium: alice opens the form of a pipeline that runs in dev on
the real Airflow (SQLite warehouse), types a range and sees the preview's partition count follow
the dates, submits, and the backfill's page shows the real worker submit it to Airflow.

Set up before Playwright starts (its event loop makes Django refuse the ORM): the pipeline is
deployed through the real worker and registered by Airflow first.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from pipelines.authoring import services as authoring
from pipelines.authoring.forms import PipelineForm
from pipelines.catalog.services import source_register
from pipelines.deployments import services as deploy
from pipelines.models import Deployment
from tests.conftest import form_data, make_environment
from tests.integration.conftest import (
    DEPLOY_TIMEOUT,
    IT_DIR,
    RUN_TIMEOUT,
    SCREENSHOTS,
    TODAY,
    dags_folder,
    log_in,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def backfill_world(live_server, airflow, worker, alice):
    """dev on the test Airflow with the SQLite warehouse, and a daily pipeline deployed there
    (written by the worker, registered by Airflow)."""
    alice.set_password("alice-password-1")
    alice.save()
    dev = make_environment(
        "dev",
        0,
        airflow_url=airflow.url,
        dags_folder=str(dags_folder("backfill_browser")),
        dag_id_prefix="it_bf_browser__",
        warehouse_conn_id="it_warehouse_sqlite",
        warehouse_dialect="sqlite",
        target_schema="",
    )
    source_register(
        name="shop", url=f"sqlite:///{IT_DIR / 'source.sqlite3'}", conn_id="it_source_sqlite"
    )
    name = unique("bf-orders")
    form = PipelineForm(form_data(name=name, target_table=name.replace("-", "_")), user=alice)
    assert form.is_valid(), form.errors
    pipeline = authoring.pipeline_create(spec=form.spec, by=alice)
    deployment = deploy.deployment_request(
        version=pipeline.versions.get(), environment=dev, by=alice
    )
    wait_for(
        lambda: Deployment.objects.get(id=deployment.id).state == Deployment.State.DEPLOYED,
        timeout=DEPLOY_TIMEOUT,
        what="the deployment to dev",
    )
    return live_server, name


def test_backfill_with_a_live_preview_in_the_browser(backfill_world, browser_page):
    live_server, name = backfill_world
    page = browser_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Days well before today: complete, and no scheduled run (02:00 UTC) is about to load one.
    first, third, fourth = (TODAY - timedelta(days=n) for n in (8, 6, 5))

    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/pipelines/{name}/")
    page.click("text=Backfill…")
    expect(page).to_have_url(re.compile(rf"/pipelines/{name}/backfill/$"))
    expect(page.locator("#preview-empty")).to_be_visible()

    count = page.locator("#preview-partitions")
    page.fill("#id_start", first.isoformat())
    page.fill("#id_end", third.isoformat())
    expect(count).to_have_attribute("data-partitions", "3", timeout=10_000)
    expect(count).to_contain_text("3 partitions")
    expect(page.locator("#preview-counts [data-count=missing]")).to_have_text("3")
    page.fill("#id_end", fourth.isoformat())
    expect(count).to_have_attribute("data-partitions", "4", timeout=10_000)
    page.fill("#id_end", (TODAY + timedelta(days=3)).isoformat())  # not complete yet
    expect(page.locator("#backfill-errors-end")).to_contain_text("is not complete yet")
    expect(page.locator("#preview-blocked")).to_be_visible()
    page.fill("#id_end", fourth.isoformat())
    expect(count).to_have_attribute("data-partitions", "4", timeout=10_000)
    expect(page.locator("#backfill-errors-end")).to_have_text("")
    expect(page.locator("#id_fingerprint")).to_have_attribute("value", re.compile(r"^\w{64}$"))
    page.fill("#id_reason", "Reload four days after the source fix.")
    page.screenshot(path=str(SCREENSHOTS / "backfill-form.png"), full_page=True)
    page.click("#backfill-submit")

    expect(page).to_have_url(re.compile(r"/backfills/\d+/$"))
    expect(page.locator(".messages")).to_contain_text("(4 partitions) in Dev queued")
    expect(page.locator("#backfill-reason")).to_have_text("Reload four days after the source fix.")
    # The worker submits the chunk to Airflow; the page polls until it says so.
    state = page.locator("#backfill-state")
    expect(state).to_have_attribute(
        "data-state", re.compile("running|succeeded"), timeout=RUN_TIMEOUT * 1000
    )
    expect(page.locator("#backfill-airflow")).to_contain_text(re.compile(r"backfill \d+"))
    page.screenshot(path=str(SCREENSHOTS / "backfill-page.png"), full_page=True)
