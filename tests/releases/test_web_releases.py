"""Release pages (issue 8): environments side by side on the pipeline page, promote with the
live checklist, rollback, template upgrade and the upgrades overview."""

from __future__ import annotations

import re

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pipelines.authoring import codegen
from pipelines.authoring import services as authoring
from pipelines.authoring.forms import PipelineForm
from pipelines.core.models import AuditEvent
from pipelines.dashboards import selectors
from pipelines.models import Deployment, PipelineHealth, PipelineVersion, Promotion
from pipelines.releases import services as releases
from tests.conftest import form_data, make_environment, make_health
from tests.releases.conftest import edit, make_ready, mark_deployed

OLD_TEMPLATE = {"template_version": "2025.01.1", "template_sha256": "0" * 64}


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def cell(html: str, element_id: str) -> str:
    """The text of the table cell with `element_id` (cells hold no nested cells)."""
    match = re.search(rf'<td id="{element_id}"[^>]*>(.*?)</td>', html, re.S)
    assert match, f"no cell #{element_id}"
    return match.group(1)


def page(client, pipeline) -> str:
    response = client.get(pipeline.get_absolute_url())
    assert response.status_code == 200
    return response.content.decode()


def told(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def url(name: str, pipeline) -> str:
    return reverse(f"pipelines:{name}", args=[pipeline.slug])


# --- the environments panel ------------------------------------------------------------------


def test_approval_environments_offer_promote_instead_of_deploy(as_alice, pipeline, envs):
    html = page(as_alice, pipeline)

    assert "Deploy v1" in cell(html, "env-actions-dev")
    for slug in ("stage", "prod"):
        actions = cell(html, f"env-actions-{slug}")
        assert "Deploy" not in actions
        assert f'name="environment" value="{slug}"' not in actions
        promote = url("promote", pipeline) + f"?environment={slug}&amp;version=1"
        assert f'href="{promote}"' in actions
        assert "Promote v1…" in actions


def test_direct_deploy_into_an_approval_environment_is_403(as_alice, pipeline, envs):
    response = as_alice.post(
        url("deployment-create", pipeline), {"environment": "stage", "version": 1}
    )

    assert response.status_code == 403
    assert not Deployment.objects.filter(environment=envs["stage"]).exists()


def test_panel_shows_what_runs_health_pending_promotion_and_what_would_change(
    as_alice, ready, envs, alice
):
    pipeline = ready.pipeline
    mark_deployed(ready, envs["stage"], alice)
    make_health(pipeline, envs["stage"], freshness_lag_partitions=2, freshness_lag_hours=48.0)
    edit(pipeline, alice, sla_minutes=90)
    make_ready(pipeline.versions.get(number=2), envs["dev"], alice)
    promotion = releases.promotion_request(
        version=pipeline.versions.get(number=2),
        environment=envs["stage"],
        by=alice,
        reason="SLA tightened.",
    )

    html = page(as_alice, pipeline)

    stage = cell(html, "deployment-stage")
    assert "v1" in stage
    assert 'data-state="deployed"' in stage
    assert "by alice" in stage
    health = cell(html, "env-health-stage")
    assert 'data-verdict="healthy"' in health
    assert "2 behind" in health
    assert "up to date" in cell(html, "env-health-dev")
    assert "no health yet" in cell(html, "env-health-prod")
    actions = cell(html, "env-actions-stage")
    assert reverse("pipelines:promotion", args=[promotion.id]) in actions
    assert "Promotion of v2 pending" in actions
    assert "Promote v2" not in actions  # one pending request at a time
    diff = reverse("pipelines:version-diff", args=[pipeline.slug, 1, 2]) + "?environment=stage"
    assert diff in actions
    assert "What would change" not in cell(html, "env-actions-prod")  # nothing runs there


def test_versions_list_shows_each_versions_template(as_alice, pipeline, envs):
    html = page(as_alice, pipeline)
    versions = re.search(r'<table class="grid compact" id="versions">.*?</table>', html, re.S)

    assert codegen.template_label(codegen.TEMPLATE_VERSION) in versions.group(0)
    assert 'id="upgrade-needed"' not in html
    assert reverse("pipelines:upgrade", args=[pipeline.slug]) not in html


def test_panel_rollback_targets_are_the_services(pipeline, envs, alice):
    v1 = pipeline.versions.get(number=1)
    mark_deployed(v1, envs["dev"], alice)
    mark_deployed(v1, envs["stage"], alice)
    v2 = edit(pipeline, alice, sla_minutes=90)
    mark_deployed(v2, envs["dev"], alice)
    v3 = edit(pipeline, alice, sla_minutes=60)
    deploy_pending = mark_deployed(v3, envs["stage"], alice)
    Deployment.objects.filter(id=deploy_pending.id).update(state="pending", registered_at=None)
    Deployment.objects.filter(version=v1, environment=envs["stage"]).update(state="deployed")

    panels = selectors.pipeline_detail(slug=pipeline.slug)["panels"]

    for panel in panels:
        expected = releases.rollback_targets(pipeline, panel.environment)
        assert panel.rollback_targets == expected, panel.environment.slug
    assert [v.number for v in panels[0].rollback_targets] == [1]  # dev runs v2, v1 ran there


def test_panel_query_count_does_not_grow_with_environments_or_versions(
    as_alice, ready, envs, alice, django_assert_num_queries
):
    pipeline = ready.pipeline
    fragment = url("deployments", pipeline)
    with CaptureQueriesContext(connection) as small:
        assert as_alice.get(fragment).status_code == 200

    for order, slug in ((40, "dr"), (50, "perf"), (60, "eu")):
        env = make_environment(slug, order, dags_folder=f"/tmp/portal-test-dags/{slug}")
        make_health(pipeline, env)
    for n in (2, 3):
        version = edit(pipeline, alice, sla_minutes=100 - n)
        mark_deployed(version, envs["dev"], alice)
    mark_deployed(ready, envs["stage"], alice)
    for env, state in ((envs["prod"], Promotion.State.PENDING), (envs["stage"], "approved")):
        Promotion.objects.create(
            pipeline=pipeline,
            version=pipeline.versions.get(number=3),
            environment=env,
            state=state,
            reason="More environments, more versions.",
            checklist=[],
            requested_by=alice,
        )

    with django_assert_num_queries(len(small.captured_queries)):
        html = as_alice.get(fragment).content.decode()
    assert html.count('<td id="deployment-') == 6
    assert "Roll back to v1" in cell(html, "env-actions-dev")
    assert "Roll back to v3" in cell(html, "env-actions-stage")  # approved there
    assert "Promotion of v3 pending" in cell(html, "env-actions-prod")


# --- promote ---------------------------------------------------------------------------------


def test_promote_page_shows_a_blocking_failure_and_files_nothing(as_alice, pipeline, envs):
    promote = url("promote", pipeline)
    html = as_alice.get(promote, {"environment": "stage"}).content.decode()

    assert 'id="check-parsed" data-ok="false" data-blocking="true"' in html
    assert "Version 1 was never deployed to Dev." in html
    assert 'id="promote-blocked"' in html

    response = as_alice.post(promote, {"environment": "stage", "version": "1", "reason": "Go."})

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "Not ready for Stage" in errors["version"][0]
    assert 'id="check-parsed" data-ok="false"' in response.content.decode()
    assert not Promotion.objects.exists()
    assert not AuditEvent.objects.filter(action="promotion_requested").exists()


def test_promote_files_a_request_when_ready(as_alice, ready, envs):
    pipeline = ready.pipeline
    html = as_alice.get(url("promote", pipeline), {"environment": "stage"}).content.decode()
    assert 'id="promote-ready"' in html
    assert "Nothing runs in Stage yet" in html

    response = as_alice.post(
        url("promote", pipeline),
        {"environment": "stage", "version": "1", "reason": "Ran clean in dev for a day."},
    )

    assert response.status_code == 302
    assert response["Location"] == pipeline.get_absolute_url()
    promotion = Promotion.objects.get()
    assert (promotion.version, promotion.environment) == (ready, envs["stage"])
    assert promotion.reason == "Ran clean in dev for a day."
    assert promotion.state == Promotion.State.PENDING
    event = AuditEvent.objects.get(action="promotion_requested")
    assert event.after["promotion"] == promotion.id
    assert "Promotion of version 1 to Stage requested" in told(response)[0]


def test_promote_form_errors_sit_next_to_their_fields(as_alice, ready, envs):
    promote = url("promote", ready.pipeline)

    blank = as_alice.post(promote, {"environment": "stage", "version": "1", "reason": "  "})
    long = as_alice.post(promote, {"environment": "stage", "version": "1", "reason": "x" * 501})
    direct = as_alice.post(promote, {"environment": "dev", "version": "1", "reason": "Why not."})
    missing = as_alice.post(promote, {"environment": "stage", "version": "7", "reason": "Why."})

    assert blank.context["form"].errors["reason"] == ["Say why this version should go there."]
    assert "at most 500" not in long.content.decode()
    assert "500 characters or fewer (it has 501)" in long.context["form"].errors["reason"][0]
    assert "requires approval (stage, prod)" in direct.context["form"].errors["environment"][0]
    assert missing.context["form"].errors["version"] == [
        "Choose one of this pipeline's versions (1 to 1)."
    ]
    assert not Promotion.objects.exists()


def test_a_second_pending_request_is_refused_at_the_form_top(as_alice, ready, envs, carol):
    promote = url("promote", ready.pipeline)
    data = {"environment": "stage", "version": "1", "reason": "Ready."}
    assert as_alice.post(promote, data).status_code == 302

    again = as_alice.post(promote, data)

    assert "already pending" in again.context["form"].non_field_errors()[0]
    assert Promotion.objects.count() == 1


def test_promote_preselects_what_the_link_asks_for(as_alice, pipeline, envs, alice):
    edit(pipeline, alice, sla_minutes=90)
    html = as_alice.get(
        url("promote", pipeline), {"environment": "prod", "version": "1"}
    ).content.decode()
    assert '<option value="prod" selected>' in html
    assert '<option value="1" selected>' in html
    default = as_alice.get(url("promote", pipeline)).content.decode()
    assert '<option value="2" selected>' in default  # the newest version by default
    assert '<option value="dev"' not in default  # dev takes deploys directly


def test_checklist_fragment_follows_the_chosen_environment(as_alice, ready, envs):
    fragment = url("promote-checklist", ready.pipeline)

    stage = as_alice.get(fragment, {"environment": "stage", "version": "1"}).content.decode()
    prod = as_alice.get(fragment, {"environment": "prod", "version": "1"}).content.decode()

    assert "Readiness of v1 for Stage" in stage
    assert 'id="promote-ready"' in stage
    assert "Readiness of v1 for Prod" in prod
    assert 'id="check-parsed" data-ok="false" data-blocking="true"' in prod
    assert "Version 1 was never deployed to Stage." in prod
    nothing = as_alice.get(fragment, {"environment": "nope"}).content.decode()
    assert "Choose an environment and a version" in nothing


def test_promote_page_shows_the_spec_change_against_what_runs_there(as_alice, ready, envs, alice):
    pipeline = ready.pipeline
    mark_deployed(ready, envs["stage"], alice)
    edit(pipeline, alice, sla_minutes=90)

    html = as_alice.get(
        url("promote-checklist", pipeline), {"environment": "stage", "version": "2"}
    ).content.decode()

    change = re.search(r'<table class="grid compact" id="promote-change">.*?</table>', html, re.S)
    assert "<code>sla_minutes</code>" in change.group(0)
    assert "<code>120</code>" in change.group(0)
    assert "<code>90</code>" in change.group(0)


# --- rollback --------------------------------------------------------------------------------


def test_rollback_to_a_version_that_ran_there(as_alice, pipeline, envs, alice):
    v1 = pipeline.versions.get(number=1)
    mark_deployed(v1, envs["stage"], alice, ago=5)
    v2 = edit(pipeline, alice, sla_minutes=90)
    mark_deployed(v2, envs["stage"], alice, ago=2)
    html = page(as_alice, pipeline)
    assert "Roll back to v1" in cell(html, "env-actions-stage")
    assert 'data-confirm="Roll Stage back to version 1?"' in cell(html, "env-actions-stage")

    response = as_alice.post(url("rollback", pipeline), {"environment": "stage", "version": "1"})

    assert response.status_code == 302
    assert response["Location"] == pipeline.get_absolute_url()
    assert "Rolling Stage back to version 1" in told(response)[0]
    back = Deployment.objects.get(version=v1, environment=envs["stage"])
    assert back.state == Deployment.State.PENDING
    assert AuditEvent.objects.filter(action="rollback").count() == 1


def test_rollback_to_a_version_that_never_ran_there_is_refused(as_alice, pipeline, envs, alice):
    mark_deployed(pipeline.versions.get(number=1), envs["stage"], alice)
    v2 = edit(pipeline, alice, sla_minutes=90)
    assert "Roll back" not in cell(page(as_alice, pipeline), "env-actions-stage")

    response = as_alice.post(url("rollback", pipeline), {"environment": "stage", "version": "2"})

    assert response.status_code == 302
    assert "never ran in Stage" in told(response)[0]
    assert not Deployment.objects.filter(version=v2, environment=envs["stage"]).exists()
    assert not AuditEvent.objects.filter(action="rollback").exists()


def test_rollback_of_an_unknown_version_or_environment_is_404(as_alice, pipeline, envs):
    rollback = url("rollback", pipeline)
    assert as_alice.post(rollback, {"environment": "stage", "version": "9"}).status_code == 404
    assert as_alice.post(rollback, {"environment": "qa", "version": "1"}).status_code == 404
    assert as_alice.post(rollback, {"environment": "stage", "version": "x"}).status_code == 404


# --- upgrade ---------------------------------------------------------------------------------


def test_upgrade_makes_a_version_on_the_current_template(as_alice, pipeline, envs):
    PipelineVersion.objects.filter(pipeline=pipeline).update(**OLD_TEMPLATE)
    html = page(as_alice, pipeline)
    assert 'id="upgrade-needed"' in html
    assert reverse("pipelines:upgrade", args=[pipeline.slug]) in html
    overview = as_alice.get(reverse("pipelines:upgrades")).content.decode()
    assert 'id="upgrade-orders-daily"' in overview
    assert '<td class="warn">partitioned_load 2025.01.1</td>' in overview  # its template

    response = as_alice.post(url("upgrade", pipeline))

    assert response.status_code == 302
    newest = pipeline.versions.order_by("-number").first()
    assert newest.number == 2
    assert newest.template_is_current
    assert newest.spec_json == pipeline.versions.get(number=1).spec_json
    assert f"Version 2 made on template {newest.template_label}" in told(response)[0]
    after = as_alice.get(reverse("pipelines:upgrades")).content.decode()
    assert 'id="upgrade-orders-daily"' not in after
    again = as_alice.post(url("upgrade", pipeline))
    assert "Already on the current template" in told(again)[0]
    assert pipeline.versions.count() == 2


def test_a_new_template_release_makes_every_pipeline_an_upgrade(
    as_alice, pipeline, envs, monkeypatch
):
    releases_now = dict(codegen.TEMPLATE_RELEASES) | {"2099.1.1": "f" * 64}
    monkeypatch.setattr(codegen, "TEMPLATE_RELEASES", releases_now)
    monkeypatch.setattr(codegen, "TEMPLATE_VERSION", "2099.1.1")

    overview = as_alice.get(reverse("pipelines:upgrades")).content.decode()
    as_alice.post(url("upgrade", pipeline))

    assert 'id="upgrade-orders-daily"' in overview
    assert pipeline.versions.order_by("-number").first().template_version == "2099.1.1"


def test_upgrades_page_query_count_does_not_grow(
    as_alice, pipeline, envs, alice, django_assert_num_queries
):
    PipelineVersion.objects.update(**OLD_TEMPLATE)
    overview = reverse("pipelines:upgrades")
    with CaptureQueriesContext(connection) as one:
        as_alice.get(overview)
    for n in (2, 3):
        form = PipelineForm(form_data(name=f"orders-{n}", target_table=f"orders_{n}"), user=alice)
        assert form.is_valid(), form.errors
        other = authoring.pipeline_create(spec=form.spec, by=alice)
        mark_deployed(other.versions.get(), envs["dev"], alice)
        PipelineVersion.objects.filter(pipeline=other).update(**OLD_TEMPLATE)

    with django_assert_num_queries(len(one.captured_queries)):
        html = as_alice.get(overview).content.decode()
    assert html.count('<tr id="upgrade-') == 3


# --- who may ---------------------------------------------------------------------------------


def test_outsiders_may_not_promote_roll_back_or_upgrade(client, ready, envs, mallory):
    pipeline = ready.pipeline
    client.force_login(mallory)
    data = {"environment": "stage", "version": "1", "reason": "Mine now."}

    assert client.get(url("promote", pipeline)).status_code == 403
    assert client.post(url("promote", pipeline), data).status_code == 403
    assert client.get(url("promote-checklist", pipeline), data).status_code == 403
    assert client.post(url("rollback", pipeline), data).status_code == 403
    assert client.post(url("upgrade", pipeline)).status_code == 403
    assert not Promotion.objects.exists()
    assert pipeline.versions.count() == 1
    html = page(client, pipeline)
    assert 'id="env-actions-' not in html
    assert PipelineHealth.objects.count() == 1  # the page only read


def test_the_checklist_fragment_follows_the_read_rule(client, ready, envs, mallory):
    pipeline = ready.pipeline
    data = {"environment": "stage", "version": "1"}
    client.force_login(mallory)
    refused = client.get(url("promote-checklist", pipeline), data)

    mallory.is_superuser = True  # a platform admin decides promotions: may read the checklist
    mallory.save()
    allowed = client.get(url("promote-checklist", pipeline), data)

    assert refused.status_code == 403
    assert allowed.status_code == 200
    assert "Owner set" in allowed.content.decode()


def test_rollback_with_a_field_it_does_not_know_is_refused(as_alice, pipeline, envs, alice):
    v1 = pipeline.versions.get(number=1)
    mark_deployed(v1, envs["stage"], alice, ago=5)
    mark_deployed(edit(pipeline, alice, sla_minutes=90), envs["stage"], alice, ago=2)

    response = as_alice.post(
        url("rollback", pipeline), {"environment": "stage", "version": "1", "dry_run": "1"}
    )

    assert response.status_code == 302
    assert told(response) == [
        "Unknown field “dry_run”: this form does not take it (check the spelling)."
    ]
    assert not AuditEvent.objects.filter(action="rollback").exists()
