"""Editing a pipeline: the same guarded form, a new immutable version only when something
changed, a required change note, and a diff between any two versions (spec and generated DAG)."""

from __future__ import annotations

import html
import json

import pytest
from django.urls import reverse

from pipelines.models import Pipeline, PipelineVersion
from tests.conftest import form_data, pipeline_payload


@pytest.fixture
def pipeline(api_client, alice, orders, environments) -> Pipeline:
    created = api_client.post(
        "/api/v1/pipelines", json.dumps(pipeline_payload()), content_type="application/json"
    )
    assert created.status_code == 201, created.content
    return Pipeline.objects.get(slug="orders-daily")


def put(api_client, body: dict):
    return api_client.put(
        "/api/v1/pipelines/orders-daily", json.dumps(body), content_type="application/json"
    )


def test_the_edit_form_starts_from_the_newest_version(client, alice, pipeline):
    client.force_login(alice)
    page = client.get(reverse("pipelines:edit", args=[pipeline.slug]))
    assert page.status_code == 200
    form = page.context["form"]
    assert form["schedule"].value() == "0 2 * * *"
    assert form["source"].value() == "shop.orders"
    assert form["primary_key"].value() == "order_id"  # as the text input shows it
    assert form.fields["name"].disabled


def test_saving_a_change_makes_the_next_version_with_its_note(client, alice, pipeline):
    client.force_login(alice)
    data = form_data(schedule="0 3 * * *", change_note="Run after the upstream export")
    response = client.post(reverse("pipelines:edit", args=[pipeline.slug]), data)
    assert response.status_code == 302, response.context["form"].errors
    version = pipeline.versions.get(number=2)
    assert (version.spec.schedule, version.change_note) == ("0 3 * * *", data["change_note"])
    assert version.created_by == alice
    page = client.get(pipeline.get_absolute_url()).content.decode()
    assert "Run after the upstream export" in page
    assert reverse("pipelines:version-diff", args=[pipeline.slug, 1, 2]) in page


def test_saving_without_a_change_makes_no_version(client, alice, pipeline):
    client.force_login(alice)
    response = client.post(
        reverse("pipelines:edit", args=[pipeline.slug]), form_data(change_note="nothing")
    )
    assert response.status_code == 200
    assert "Nothing changed: no new version was made." in response.content.decode()
    assert PipelineVersion.objects.count() == 1


def test_an_edit_needs_a_change_note_and_keeps_name_and_table(client, alice, pipeline):
    client.force_login(alice)
    url = reverse("pipelines:edit", args=[pipeline.slug])
    missing = client.post(url, form_data(schedule="0 3 * * *"))
    assert "change_note" in missing.context["form"].errors
    renamed = form_data(name="other-name", target_table="other", change_note="rename?")
    renamed["schedule"] = "0 4 * * *"
    assert client.post(url, renamed).status_code == 302
    spec = pipeline.versions.get(number=2).spec
    assert (spec.name, spec.target_table) == ("orders-daily", "orders_daily")


def test_only_the_team_may_edit(client, mallory, pipeline):
    client.force_login(mallory)
    assert client.get(reverse("pipelines:edit", args=[pipeline.slug])).status_code == 403


def test_api_edit_versions_and_diff(api_client, pipeline):
    body = pipeline_payload(schedule="0 3 * * *", change_note="later")
    first = put(api_client, body)
    assert first.status_code == 200, first.content
    assert first.json() == {"version": 2, "created": True}
    assert put(api_client, body).json() == {"version": 2, "created": False}
    bad = put(api_client, pipeline_payload(schedule="61 * * * *", change_note="x"))
    assert bad.status_code == 422
    assert "schedule" in bad.json()["errors"]

    versions = api_client.get("/api/v1/pipelines/orders-daily/versions").json()
    assert [(v["number"], v["change_note"]) for v in versions] == [(2, "later"), (1, "")]

    diff = api_client.get("/api/v1/pipelines/orders-daily/versions/1/diff/2?environment=prod")
    assert diff.status_code == 200, diff.content
    body = diff.json()
    assert body["environment"] == "prod"
    assert {"field": "schedule", "before": "0 2 * * *", "after": "0 3 * * *"} in body["spec"]
    lines = body["code"].splitlines()
    assert any(line.startswith("-") and "'0 2 * * *'" in line for line in lines)
    assert any(line.startswith("+") and "'0 3 * * *'" in line for line in lines)
    assert "+++ v2/prod" in body["code"]


def test_the_diff_page_shows_spec_and_code_side_by_side(client, alice, api_client, pipeline):
    put(api_client, pipeline_payload(retries=5, change_note="more retries"))
    client.force_login(alice)
    page = client.get(reverse("pipelines:version-diff", args=[pipeline.slug, 1, 2]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "<code>retries</code>" in text
    assert 'class="diff"' in text  # difflib's side-by-side table


def test_an_edit_is_audited_with_both_specs(api_client, alice, pipeline):
    from pipelines.core.models import AuditEvent

    put(api_client, pipeline_payload(schedule="0 3 * * *", change_note="later"))
    event = AuditEvent.objects.get(action="pipeline_edited")
    assert (event.actor, event.pipeline_id) == (alice, pipeline.id)
    assert (event.before["schedule"], event.after["schedule"]) == ("0 2 * * *", "0 3 * * *")
    assert event.summary == "v2: later"


def test_the_edit_preview_renders_the_next_version_without_asking_for_the_note(
    client, alice, pipeline
):
    client.force_login(alice)
    url = reverse("pipelines:preview") + f"?pipeline={pipeline.slug}"
    response = client.post(url, form_data(schedule="0 3 * * *"))
    text = html.unescape(response.content.decode())
    assert "'version': 2" in text
    assert "'schedule': '0 3 * * *'" in text
    assert "A pipeline named" not in text  # no "name taken" refusal in edit mode
