"""Web views: pages, htmx fragments, permissions and CSRF."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from pipelines.deployments import services as deploy
from pipelines.models import Deployment, Pipeline, RunRequest
from tests.conftest import form_data


@pytest.fixture
def logged_in(client, alice, orders, environments):
    client.force_login(alice)
    return client


@pytest.fixture
def created(logged_in):
    response = logged_in.post(reverse("pipelines:create"), form_data())
    assert response.status_code == 302, response.context["form"].errors
    return Pipeline.objects.get()


def test_pages_need_login(client, db):
    for name in ["pipelines:list", "pipelines:create", "pipelines:catalog"]:
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_create_page_explains_the_default_schedule(logged_in):
    response = logged_in.get(reverse("pipelines:create"))
    body = response.content.decode()
    assert "At 02:00, every day" in body
    assert 'hx-get="/pipelines/new/schedule"' in body
    # htmx is vendored (django-htmx's copy), not fetched from a CDN.
    assert body.count('<script src="/static/django_htmx/htmx-2.min.js"') == 1


def fire_rows(html: str) -> list[str]:
    """The fire-time rows of the schedule explanation, as "local | UTC"."""
    return [
        " | ".join(re.findall(r"<td>(.*?)</td>", row))
        for row in re.findall(r"<tr><td>.*?</tr>", html)
    ]


def test_schedule_explain_fragment(logged_in, alice):
    url = reverse("pipelines:schedule-explain")
    query = {"schedule": "30 2 * * *", "timezone": "America/New_York"}
    with time_machine.travel(datetime(2026, 12, 1, 12, tzinfo=UTC), tick=False):
        logged_in.force_login(alice)  # a session of the frozen day
        text = logged_in.get(url, query).content.decode()
        bad = logged_in.get(url, {"schedule": "0 0 30 2 *", "timezone": "UTC"}).content.decode()
        tz = logged_in.get(url, {"schedule": "0 2 * * *", "timezone": "<script>"}).content.decode()
    assert "At 02:30, every day" in text
    # The local wall-clock time and the same moment in UTC, from the frozen clock.
    assert fire_rows(text) == [
        "Wed 2026-12-02 02:30 EST | Wed 2026-12-02 07:30",
        "Thu 2026-12-03 02:30 EST | Thu 2026-12-03 07:30",
        "Fri 2026-12-04 02:30 EST | Fri 2026-12-04 07:30",
        "Sat 2026-12-05 02:30 EST | Sat 2026-12-05 07:30",
        "Sun 2026-12-06 02:30 EST | Sun 2026-12-06 07:30",
    ]
    assert "never fires" in bad
    assert "&lt;script&gt;" in tz
    assert "<script>" not in tz


def test_schedule_explain_fragment_across_spring_forward(logged_in, alice):
    """The week New York moves its clocks forward (2027-03-14): 02:30 does not exist that day,
    Airflow fires at 03:30 EDT; from then on 02:30 EDT is 06:30 UTC."""
    url = reverse("pipelines:schedule-explain")
    query = {"schedule": "30 2 * * *", "timezone": "America/New_York"}
    with time_machine.travel(datetime(2027, 3, 12, 12, tzinfo=UTC), tick=False):
        logged_in.force_login(alice)  # a session of the frozen day
        text = logged_in.get(url, query).content.decode()
    assert fire_rows(text) == [
        "Sat 2027-03-13 02:30 EST | Sat 2027-03-13 07:30",
        "Sun 2027-03-14 03:30 EDT | Sun 2027-03-14 07:30",
        "Mon 2027-03-15 02:30 EDT | Mon 2027-03-15 06:30",
        "Tue 2027-03-16 02:30 EDT | Tue 2027-03-16 06:30",
        "Wed 2027-03-17 02:30 EDT | Wed 2027-03-17 06:30",
    ]


def test_source_columns_fragment_suggests_columns(logged_in):
    body = logged_in.get(reverse("pipelines:source-columns"), {"source": "shop.orders"}).content
    assert b'<option value="order_date">' in body
    assert b"updated_at" in body


def test_preview_shows_code_or_what_blocks_it(logged_in):
    ok = logged_in.post(reverse("pipelines:preview"), form_data()).content.decode()
    assert "&#x27;dag_id&#x27;: &#x27;orders_daily&#x27;" in ok
    blocked = logged_in.post(reverse("pipelines:preview"), form_data(primary_key="nope")).content
    assert "“nope” is not in the source table" in blocked.decode()
    assert not Pipeline.objects.exists()


def test_create_lands_on_pipeline_page_with_pending_dev_deployment(logged_in, created):
    deployment = Deployment.objects.get()
    assert deployment.environment.slug == "dev"
    assert deployment.state == Deployment.State.PENDING
    page = logged_in.get(created.get_absolute_url()).content.decode()
    assert 'data-state="pending"' in page
    assert "every 1s" in page  # htmx polls while a deployment is in flight


def test_deployment_table_shows_duration_and_failure_text(logged_in, created, fake_airflow):
    deployment = Deployment.objects.get()
    deploy.deployment_run(deployment_id=deployment.id)
    html = logged_in.get(reverse("pipelines:deployments", args=[created.slug])).content.decode()
    assert 'data-state="deployed"' in html
    assert " s</td>" in html
    assert "every 1s" not in html  # polling stops once nothing is in flight
    Deployment.objects.update(state="failed", error="ModuleNotFoundError: No module named 'x'")
    html = logged_in.get(reverse("pipelines:deployments", args=[created.slug])).content.decode()
    assert "No module named &#x27;x&#x27;" in html


def test_run_now_from_the_page(logged_in, created, fake_airflow):
    deploy.deployment_run(deployment_id=Deployment.objects.get().id)
    url = reverse("pipelines:run-create", args=[created.slug])
    response = logged_in.post(
        url, {"environment": "dev", "partition": "2026-11-10"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert "pipeline-changed" in response["HX-Trigger"]
    assert RunRequest.objects.get().partition == "2026-11-10"
    assert "2026-11-10" in response.content.decode()
    bad = logged_in.post(
        url, {"environment": "dev", "partition": "10/11/2026"}, HTTP_HX_REQUEST="true"
    )
    assert "Enter the partition as 2026-11-10" in bad.content.decode()
    assert RunRequest.objects.count() == 1


def test_outsiders_may_read_but_not_change(client, created, mallory):
    client.force_login(mallory)
    assert client.get(created.get_absolute_url()).status_code == 200
    url = reverse("pipelines:deployment-create", args=[created.slug])
    assert client.post(url, {"environment": "prod", "version": 1}).status_code == 403
    run = reverse("pipelines:run-create", args=[created.slug])
    assert client.post(run, {"environment": "dev", "partition": "2026-11-10"}).status_code == 403
    assert Deployment.objects.count() == 1


def test_csrf_is_enforced_on_htmx_posts(created, alice):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    url = reverse("pipelines:deployment-create", args=[created.slug])
    assert (
        strict.post(url, {"environment": "prod", "version": 1}, HTTP_HX_REQUEST="true").status_code
        == 403
    )
    page = strict.get(created.get_absolute_url())
    token = page.cookies["csrftoken"].value
    ok = strict.post(
        url, {"environment": "prod", "version": 1}, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token
    )
    assert ok.status_code == 200
    assert Deployment.objects.filter(environment__slug="prod").exists()


def test_list_page_query_count_does_not_grow(logged_in, created, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        response = logged_in.get(reverse("pipelines:list"))
    assert created.slug in response.content.decode()


def test_dag_source_page_per_environment(logged_in, created):
    url = reverse("pipelines:dag-source", args=[created.slug, 1])
    body = logged_in.get(url, {"environment": "prod"}).content.decode()
    assert "warehouse_prod" in body


def test_deploy_with_a_field_it_does_not_know_says_so_and_deploys_nothing(logged_in, created):
    url = reverse("pipelines:deployment-create", args=[created.slug])
    response = logged_in.post(
        url, {"environment": "stage", "version": 1, "forse": "1"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert "Unknown field “forse”" in response.content.decode()
    assert not Deployment.objects.filter(environment__slug="stage").exists()
