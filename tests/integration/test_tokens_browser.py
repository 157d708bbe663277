"""The API tokens page in a real headless Chromium, under the Content-Security-Policy.

No Airflow: the portal's pages and API alone, served by the live server. Every page visited
must log no CSP violation (a blocked inline script or style shows up as a console error).
"""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import expect

from tests.integration.conftest import SCREENSHOTS, log_in

pytestmark = pytest.mark.integration

PASSWORD = "alice-password-1"  # what conftest.log_in types


@pytest.fixture
def tokens_world(live_server, transactional_db, alice):
    """Set up the database before Playwright starts: its event loop makes Django refuse the ORM."""
    alice.set_password(PASSWORD)
    alice.save()
    return live_server


def test_create_see_once_list_and_revoke_a_token(tokens_world, browser_page):
    url = tokens_world.url
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"{m.text} {m.location}"))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: r.status == 404 and problems.append(f"404 {r.url}"))
    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm before revoking
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    log_in(page, url, "alice")

    page.click("nav >> text=API tokens")
    expect(page.locator("h1")).to_have_text("API tokens")
    page.fill("#id_name", "ci-deploys")
    page.fill("#id_expires_in_days", "30")
    expect(page.locator("#id_scopes_0")).to_be_checked()  # read, by default
    page.check("#id_scopes_1")  # write
    page.click("button:has-text('Create token')")

    secret_box = page.locator("#token-secret")
    expect(secret_box).to_have_text(re.compile(r"^pp_\S{40,}$"))
    secret = secret_box.inner_text()
    row = page.locator("#token-table tbody tr").first
    public_id = row.locator("td").first.inner_text()
    assert public_id.startswith("tok_")
    expect(row).to_contain_text("ci-deploys")
    expect(row).to_contain_text("read, write")
    expect(row.locator("[data-state]")).to_have_text("active")
    page.screenshot(path=str(SCREENSHOTS / "tokens-created.png"), full_page=True)

    api = f"{url}/api/v1/tokens"
    auth = {"Authorization": f"Bearer {secret}"}
    listed = requests.get(api, headers=auth, timeout=10)
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()] == [public_id]

    # The secret is shown once: a fresh load lists the token without it.
    page.reload()
    expect(page.locator(f"#token-{public_id}")).to_contain_text("ci-deploys")
    expect(page.locator("#token-secret")).to_have_count(0)
    assert secret not in page.content()
    assert secret[3:13] not in page.content()

    page.locator(f"#token-{public_id} button:has-text('Revoke')").click()
    expect(page.locator(f"#token-{public_id} [data-state]")).to_have_text("revoked")
    expect(page.locator("#tokens")).to_contain_text("answers 401 from now on")
    page.screenshot(path=str(SCREENSHOTS / "tokens-revoked.png"), full_page=True)

    refused = requests.get(api, headers=auth, timeout=10)
    assert refused.status_code == 401

    # The audit log shows the owner both rows, by public id only.
    page.goto(f"{url}/audit/")
    expect(page.locator("tr.audit-api_token_revoked")).to_contain_text(public_id)
    expect(page.locator("tr.audit-api_token_created")).to_contain_text(public_id)
    assert secret[3:13] not in page.content()
    # A filter's select submits its form (portal.js, not an inline handler).
    page.select_option("#au-action", "api_token_created")
    expect(page).to_have_url(re.compile(r"action=api_token_created"))
    expect(page.locator("tr.audit-api_token_revoked")).to_have_count(0)

    # Swagger UI, served from this origin, renders under the same policy.
    page.goto(f"{url}/api/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Pipeline Portal API")
    expect(page.locator(".swagger-ui")).to_contain_text("/api/v1/tokens")

    assert problems == []


@pytest.fixture
def admin_world(live_server, transactional_db, alice):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    return live_server, alice.id


def test_admin_pages_run_under_the_policy(admin_world, browser_page):
    url, alice_id = admin_world[0].url, admin_world[1]
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"{m.text} {m.location}"))
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto(f"{url}/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    for path in (
        f"/admin/auth/user/{alice_id}/change/",
        "/admin/pipelines/team/add/",
        "/admin/pipelines/apitoken/",
    ):
        page.goto(url + path)
        expect(page.locator("#content")).to_be_visible()
    # The team's membership inline adds a row with the admin's own script.
    page.goto(f"{url}/admin/pipelines/team/add/")
    page.click(".add-row a")
    expect(page.locator("tr.dynamic-memberships")).to_have_count(2)

    # The admin has no favicon of its own: Chromium's guess at /favicon.ico is not a violation.
    assert [p for p in problems if "/favicon.ico" not in p] == []
