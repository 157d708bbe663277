"""A promotion dev → stage in a real headless Chromium: alice asks, bob approves, the real worker
deploys into stage and the real Airflow registers it.

Version 1 is made ready in dev by rows alone (deployed, a successful run, fresh health: the
helpers of tests/releases/conftest.py), so this test is about the pages of the flow; the real
dev → stage run is tests/integration/test_promotion.py's.
"""

from __future__ import annotations

import re

import pytest
from django.db import transaction
from playwright.sync_api import expect

from pipelines.authoring import services as authoring
from pipelines.authoring.forms import PipelineForm
from pipelines.catalog.services import source_register
from pipelines.models import Team
from tests.conftest import form_data, make_environment
from tests.integration.conftest import (
    DEPLOY_TIMEOUT,
    IT_DIR,
    SCREENSHOTS,
    dags_folder,
    log_in,
    unique,
)
from tests.releases.conftest import make_ready

pytestmark = pytest.mark.integration
STAGE_PREFIX = "it_promo_stage__"


@pytest.fixture
def promo_world(live_server, airflow, worker, alice, bob):
    """dev and stage on the test Airflow (own DAG folders and prefixes, the SQLite warehouse),
    a pipeline whose version 1 is ready to promote to stage. Set up before Playwright starts:
    its event loop makes Django refuse the ORM."""
    for user in (alice, bob):
        user.set_password(f"{user.username}-password-1")
        user.save()
    Team.objects.filter(slug="payments").update(quiet_email="payments-alerts@example.com")
    common = {
        "airflow_url": airflow.url,
        "warehouse_conn_id": "it_warehouse_sqlite",
        "warehouse_dialect": "sqlite",
        "target_schema": "",
    }
    dev = make_environment(
        "dev",
        0,
        dags_folder=str(dags_folder("promo_dev")),
        dag_id_prefix="it_promo_dev__",
        **common,
    )
    make_environment(
        "stage",
        1,
        dags_folder=str(dags_folder("promo_stage")),
        dag_id_prefix=STAGE_PREFIX,
        requires_approval=True,
        **common,
    )
    source_register(
        name="shop", url=f"sqlite:///{IT_DIR / 'source.sqlite3'}", conn_id="it_source_sqlite"
    )
    name = unique("promo-orders")
    form = PipelineForm(form_data(name=name, target_table=name.replace("-", "_")), user=alice)
    assert form.is_valid(), form.errors
    pipeline = authoring.pipeline_create(spec=form.spec, by=alice)
    # One transaction: the dev deployment's task is sent on commit, when the row already says
    # deployed, so the worker finds nothing to do and Airflow never sees dev's file.
    with transaction.atomic():
        make_ready(pipeline.versions.get(), dev, alice)
    return live_server, name


def test_promote_and_approve_in_the_browser(promo_world, browser_page):
    live_server, name = promo_world
    page = browser_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    # alice asks for version 1 in stage
    log_in(page, live_server.url, "alice")
    expect(page.locator("#approvals-badge-slot")).to_have_count(0)  # the badge has loaded
    expect(page.locator("#approvals-badge")).to_have_count(0)
    page.goto(f"{live_server.url}/pipelines/{name}/")
    page.click("#env-actions-stage >> text=Promote v1")
    expect(page).to_have_url(re.compile(rf"/pipelines/{name}/promote/"))
    expect(page.locator("#promote-checklist")).to_contain_text("Owner set", timeout=10_000)
    expect(page.locator("#promote-ready")).to_be_visible()
    page.fill("#id_reason", "Ran clean in dev; stage needs it for the quarter close.")
    page.screenshot(path=str(SCREENSHOTS / "promote-form.png"), full_page=True)
    page.click("button:has-text('Request promotion')")
    expect(page).to_have_url(re.compile(rf"/pipelines/{name}/$"))
    expect(page.locator(".messages")).to_contain_text("Promotion of version 1 to Stage requested")
    page.click("button:has-text('Log out alice')")

    # bob sees one request he may decide, opens it and approves
    log_in(page, live_server.url, "bob")
    expect(page.locator("#approvals-badge")).to_have_text("1")
    page.click("header nav >> text=Approvals")
    expect(page.locator("h1")).to_have_text("Approvals")
    row = page.locator("#approval-table tbody tr").first
    expect(row).to_contain_text(name)
    expect(row).to_contain_text("Dev → Stage")
    expect(row).to_contain_text("stage needs it for the quarter close")
    row.locator("text=Review and decide").click()
    expect(page.locator("#promotion-state")).to_have_text("pending")
    expect(page.locator("#checklist-then")).to_contain_text("Owner set")
    expect(page.locator("#checklist-now")).to_contain_text("Owner set")
    expect(page.locator("#promotion-diff")).to_contain_text("First deployment")
    page.fill("#approve_comment", "Checked the run in dev.")
    page.click("button:has-text('Approve and deploy to Stage')")

    expect(page.locator(".messages")).to_contain_text("Approved")
    expect(page.locator("#promotion-state")).to_have_text("approved")
    expect(page.locator("#promotion-decision")).to_contain_text("Checked the run in dev.")
    expect(page.locator("#approvals-badge-slot")).to_have_count(0)  # the badge has loaded
    expect(page.locator("#approvals-badge")).to_have_count(0)
    state = page.locator("#promotion-deployment [data-state]")
    expect(state).to_have_text(re.compile("pending|deploying|deployed"))
    # The worker writes stage's file; htmx polls until Airflow has registered it.
    expect(state).to_have_text("deployed", timeout=DEPLOY_TIMEOUT * 1000)
    page.screenshot(path=str(SCREENSHOTS / "promotion-approved.png"), full_page=True)

    page.click("#promotion-deployment >> text=the pipeline's deployments")
    expect(page.locator("#deployment-stage [data-state]")).to_have_text("deployed")
    expect(page.locator("#deployment-dev [data-state]")).to_have_text("deployed")
    dag_id = name.replace("-", "_")
    assert (dags_folder("promo_stage") / f"{STAGE_PREFIX}{dag_id}.py").is_file()
    assert not list(dags_folder("promo_dev").glob(f"*{dag_id}*"))  # dev was rows only
