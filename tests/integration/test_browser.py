"""The new-pipeline flow in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from pipelines.catalog.services import source_register
from tests.conftest import make_environment
from tests.integration.conftest import IT_DIR, SCREENSHOTS, TODAY, dags_folder, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def browser_world(live_server, airflow, worker, alice):
    """Set up the database before Playwright starts: its event loop makes Django refuse the ORM."""
    alice.set_password("alice-password-1")
    alice.save()
    make_environment(
        "dev",
        0,
        airflow_url=airflow.url,
        dags_folder=str(dags_folder("browser")),
        dag_id_prefix="it_browser__",
        warehouse_conn_id="it_warehouse_sqlite",
        warehouse_dialect="sqlite",
        target_schema="",
    )
    source_register(
        name="shop",
        url=f"sqlite:///{IT_DIR / 'source.sqlite3'}",
        conn_id="it_source_sqlite",
        teams=["payments"],
    )
    return live_server


def test_create_pipeline_in_the_browser(browser_world, browser_page):
    live_server = browser_world
    page = browser_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password-1")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Pipelines")

    page.click("text=New pipeline >> nth=0")
    name = unique("browser-orders")
    page.fill("#id_name", name)
    page.select_option("#id_source", "shop.orders")
    expect(page.locator("#source-columns")).to_contain_text("order_date")
    page.fill("#id_target_table", name.replace("-", "_"))
    page.fill("#id_schedule", "")
    page.type("#id_schedule", "30 6 * * 1-5")
    expect(page.locator("#schedule-explain")).to_contain_text(
        "At 06:30, Monday through Friday", timeout=10_000
    )
    page.fill("#id_timezone", "Europe/London")
    expect(page.locator("#schedule-explain")).to_contain_text("Europe/London", timeout=10_000)
    page.fill("#id_primary_key", "order_idd")
    page.fill("#id_partition_column", "order_date")
    expect(page.locator("#dag-preview")).to_contain_text("“order_idd” is not in the source table")
    page.screenshot(path=str(SCREENSHOTS / "create-form.png"), full_page=True)
    page.click("button:has-text('Create pipeline')")

    error = page.locator("#id_primary_key_error")
    expect(error).to_contain_text("“order_idd” is not in the source table")
    expect(page.locator("#id_primary_key")).to_have_attribute("aria-invalid", "true")

    page.fill("#id_primary_key", "order_id")
    expect(page.locator("#dag-preview")).to_contain_text("'dag_id': 'it_browser__", timeout=10_000)
    page.click("button:has-text('Create pipeline')")
    expect(page).to_have_url(re.compile(rf"/pipelines/{name}/$"))
    expect(page.locator("h1")).to_have_text(name)
    state = page.locator("#deployment-dev [data-state]")
    expect(state).to_have_text(re.compile("pending|deploying|deployed"))
    expect(state).to_have_text("deployed", timeout=90_000)  # htmx polling shows the change

    page.fill("#id_partition", (TODAY - timedelta(days=3)).isoformat())
    page.click("button:has-text('Run now')")
    run_state = page.locator("#run-table [data-state] >> nth=0")
    expect(run_state).to_have_text(re.compile("pending|queued|running|success"))
    expect(run_state).to_have_text("success", timeout=120_000)  # polled while the run is active
    page.screenshot(path=str(SCREENSHOTS / "pipeline-page.png"), full_page=True)
