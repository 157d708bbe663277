"""The approvals queue, the nav badge and a promotion's page: who sees what, who may decide,
and what a refusal looks like (the page again, with the reason and the service's status)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pipelines.authoring import services as authoring
from pipelines.authoring.forms import PipelineForm
from pipelines.core.models import AuditEvent, Membership
from pipelines.models import Deployment, Promotion
from pipelines.releases import services as releases
from pipelines.releases.selectors import promotion_pending_count
from tests.conftest import form_data
from tests.releases.conftest import edit, make_ready, mark_deployed

State = Promotion.State
QUEUE = reverse("pipelines:approvals")
BADGE = reverse("pipelines:approvals-badge")


@pytest.fixture
def filed(ready, envs, alice):
    """alice asks to promote version 1 from dev to stage."""
    return releases.promotion_request(
        version=ready, environment=envs["stage"], by=alice, reason="Ran clean in dev for a week."
    )


def page_of(promotion) -> str:
    return reverse("pipelines:promotion", args=[promotion.id])


def post(client, user, name: str, promotion, **data):
    client.force_login(user)
    return client.post(reverse(f"pipelines:promotion-{name}", args=[promotion.id]), data)


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def stage_deployments(envs) -> list[Deployment]:
    return list(Deployment.objects.filter(environment=envs["stage"]))


# --- the queue and the badge -----------------------------------------------------------------


def test_queue_offers_the_decision_to_an_approver(client, bob, filed):
    client.force_login(bob)

    page = client.get(QUEUE)

    assert page.status_code == 200
    assert page.context["rows"] == [(filed, True)]
    row = page.content.decode().split(f'id="promotion-{filed.id}"')[1].split("</tr>")[0]
    assert "orders-daily" in row
    assert "v1" in row
    assert "Dev → Stage" in row
    assert "alice" in row
    assert "Ran clean in dev for a week." in row
    assert "Review and decide" in row


def test_queue_tells_the_requester_to_wait_for_another_approver(client, alice, filed):
    client.force_login(alice)

    page = client.get(QUEUE)

    assert page.context["rows"] == [(filed, False)]
    html = page.content.decode()
    assert "waiting for another approver" in html
    assert "Review and decide" not in html


def test_badge_counts_what_the_viewer_may_decide(client, alice, bob, mallory, filed):
    assert promotion_pending_count(user=bob) == 1
    assert promotion_pending_count(user=alice) == 0  # her own
    assert promotion_pending_count(user=mallory) == 0  # not in the team
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    assert promotion_pending_count(user=admin) == 1

    client.force_login(bob)
    badge = client.get(BADGE)
    assert badge.status_code == 200
    assert 'id="approvals-badge"' in badge.content.decode()
    assert ">1</span>" in badge.content.decode()
    assert 'title="1 request (promotions and backfills) you may decide"' in badge.content.decode()
    for user in (alice, mallory):
        client.force_login(user)
        badge = client.get(BADGE)
        assert badge.status_code == 200
        assert badge.content.decode().strip() == ""


def test_every_page_loads_the_badge_after_it_and_links_the_queue(client, bob, filed):
    client.force_login(bob)

    html = client.get(reverse("pipelines:health")).content.decode()

    assert f'href="{QUEUE}"' in html  # without JavaScript: the queue, without a number
    assert f'hx-get="{BADGE}" hx-trigger="load"' in html
    assert 'id="approvals-badge"' not in html  # counted by the badge's own request


def test_badge_for_a_visitor_is_empty_not_a_redirect(client, filed, django_assert_num_queries):
    with django_assert_num_queries(0):
        badge = client.get(BADGE)

    assert badge.status_code == 200
    assert badge.content.decode().strip() == ""


def test_badge_view_is_its_one_query_after_the_session(
    client, bob, filed, django_assert_num_queries
):
    client.force_login(bob)
    with django_assert_num_queries(3):  # session, user, the count
        badge = client.get(BADGE)
    assert ">1</span>" in badge.content.decode()


def test_an_approver_who_asked_neither_counts_nor_decides_her_own(client, alice, bob, filed):
    Membership.objects.filter(user=alice).update(role=Membership.Role.APPROVER)
    client.force_login(alice)

    page = client.get(QUEUE)

    assert promotion_pending_count(user=alice) == 0
    assert promotion_pending_count(user=bob) == 1
    assert page.context["rows"] == [(filed, False)]
    assert "waiting for another approver" in page.content.decode()


def test_badge_is_one_query_and_none_for_a_visitor(bob, filed, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert promotion_pending_count(user=bob) == 1
    with django_assert_num_queries(0):
        assert promotion_pending_count(user=None) == 0


def test_queue_filters_by_state_and_environment(client, bob, alice, filed, envs):
    post(client, alice, "withdraw", filed)
    client.force_login(bob)

    assert client.get(QUEUE).context["rows"] == []  # pending by default
    rows = client.get(QUEUE, {"state": "withdrawn"}).context["rows"]
    assert rows == [(filed, False)]
    assert client.get(QUEUE, {"state": "all", "environment": "stage"}).context["rows"] == rows
    assert client.get(QUEUE, {"state": "all", "environment": "prod"}).context["rows"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "<script>alert(1)</script>"}, "state"),
        ({"state": "pending' OR 1=1 --"}, "state"),
        ({"environment": "stage/../../etc"}, "environment"),
        ({"environment": "x" * 5000}, "environment"),
        ({"pipeline": "orders daily'; DROP TABLE x"}, "pipeline"),
        ({"page": "-1"}, "page"),
        ({"page": "9" * 400}, "page"),
    ],
)
def test_hostile_filter_values_are_field_errors_and_ignored(client, bob, filed, query, field):
    client.force_login(bob)

    page = client.get(QUEUE, query)

    assert page.status_code == 200
    assert field in page.context["form"].errors
    assert page.context["rows"] == [(filed, True)]  # listed as if the value were not given
    assert "<script>alert(1)</script>" not in page.content.decode()


def test_forged_keyset_tokens_are_ignored(client, bob, filed):
    client.force_login(bob)
    for token in ("not-a-token", "W10", "x" * 999, "%00"):
        page = client.get(QUEUE, {"after": token, "before": token})
        assert page.status_code == 200
        assert page.context["rows"] == [(filed, True)]


def _pending_requests(count: int, envs, alice, carol) -> None:
    """`count` pending requests, one per pipeline, asked by alice and carol in turn (rows only:
    the queue reads rows)."""
    start = Promotion.objects.count()
    for n in range(start, start + count):
        form = PipelineForm(form_data(name=f"orders-{n}", target_table=f"orders_{n}"), user=alice)
        assert form.is_valid(), form.errors
        pipeline = authoring.pipeline_create(spec=form.spec, by=alice)
        Promotion.objects.create(
            pipeline=pipeline,
            version=pipeline.versions.get(),
            environment=envs["stage" if n % 2 else "prod"],
            source_environment=envs["dev"],
            reason=f"request {n}",
            checklist=[],
            requested_by=alice if n % 2 else carol,
        )


def test_queue_query_count_does_not_grow_with_requests(
    client, bob, alice, carol, orders, envs, django_assert_num_queries
):
    _pending_requests(5, envs, alice, carol)
    client.force_login(bob)
    with CaptureQueriesContext(connection) as five:
        page = client.get(QUEUE)
    assert len(page.context["rows"]) == 5

    _pending_requests(15, envs, alice, carol)
    with django_assert_num_queries(len(five.captured_queries)):
        page = client.get(QUEUE)
    assert len(page.context["rows"]) == 20
    assert all(may for _, may in page.context["rows"])
    assert f'hx-get="{BADGE}"' in page.content.decode()  # the badge's count is not here


# --- the promotion's page ------------------------------------------------------------------------


def test_page_shows_the_request_the_checklists_and_a_first_deployment(client, bob, filed):
    client.force_login(bob)

    page = client.get(page_of(filed))

    assert page.status_code == 200
    html = page.content.decode()
    assert "Ran clean in dev for a week." in html
    assert 'id="checklist-then"' in html
    assert 'id="checklist-now"' in html
    assert html.count("Owner set, active and in the team") == 2
    assert "First deployment" in html
    assert "dag_id" in page.context["diff"]["source"]
    assert {"field": "primary_key", "before": "", "after": '["order_id"]'} in page.context["diff"][
        "spec"
    ]
    assert 'action="{}"'.format(reverse("pipelines:promotion-approve", args=[filed.id])) in html
    assert "Withdraw" not in html


def test_page_diffs_against_what_runs_in_the_target(client, bob, alice, pipeline, ready, envs):
    mark_deployed(ready, envs["stage"], bob)
    version2 = edit(pipeline, alice, sla_minutes=45)
    make_ready(version2, envs["dev"], alice)
    promotion = releases.promotion_request(
        version=version2, environment=envs["stage"], by=alice, reason="Tighter SLA."
    )
    client.force_login(bob)

    page = client.get(page_of(promotion))

    diff = page.context["diff"]
    assert not diff["first"]
    assert diff["current"].version == ready
    assert {"field": "sla_minutes", "before": "120", "after": "45"} in diff["spec"]
    added = [line for line in diff["code"].splitlines() if line.startswith("+")]
    assert any("45 minutes" in line for line in added)
    assert 'id="spec-diff"' in page.content.decode()


def test_the_requester_sees_withdraw_and_no_decision(client, alice, filed):
    client.force_login(alice)

    html = client.get(page_of(filed)).content.decode()

    assert "waiting for another approver" in html
    assert reverse("pipelines:promotion-withdraw", args=[filed.id]) in html
    assert reverse("pipelines:promotion-approve", args=[filed.id]) not in html


def test_unknown_promotion_is_404(client, bob, db):
    client.force_login(bob)
    assert client.get(reverse("pipelines:promotion", args=[999999])).status_code == 404
    assert post(client, bob, "approve", type("P", (), {"id": 999999})).status_code == 404


# --- decisions -----------------------------------------------------------------------------------


def test_approver_approves_and_the_stage_deployment_is_requested(client, bob, filed, envs):
    response = post(client, bob, "approve", filed, comment="Looks good.")

    assert response.status_code == 302
    assert response.url == page_of(filed)
    filed.refresh_from_db()
    assert filed.state == State.APPROVED
    assert filed.decided_by == bob
    assert filed.decision_comment == "Looks good."
    (deployment,) = stage_deployments(envs)
    assert deployment.state == Deployment.State.PENDING
    assert deployment.version_id == filed.version_id
    assert filed.deployment == deployment
    assert actions()[-2:] == ["deployment_requested", "promotion_approved"]

    page = client.get(page_of(filed))
    html = page.content.decode()
    assert "Approved: the version is being deployed" in html
    assert 'data-state="pending"' in html
    assert "Looks good." in html
    assert 'id="checklist-decided"' in html
    fragment = client.get(page_of(filed), HTTP_HX_REQUEST="true")
    assert fragment.content.decode().strip().startswith('<div id="promotion-deployment"')
    assert 'hx-trigger="every 2s"' in fragment.content.decode()


@pytest.mark.parametrize(
    ("role", "message"),
    [
        ("editor", "Only approvers of team Payments"),
        ("approver", "You requested this promotion: someone else must approve or reject it"),
    ],
)
def test_requester_may_not_approve_her_own_request(client, alice, filed, envs, role, message):
    Membership.objects.filter(user=alice).update(role=role)
    before = actions()

    response = post(client, alice, "approve", filed, comment="Trust me.")

    assert response.status_code == 403
    html = response.content.decode()
    assert message in html
    assert "waiting for another approver" in html  # the page again, without decision forms
    filed.refresh_from_db()
    assert filed.state == State.PENDING
    assert stage_deployments(envs) == []
    assert actions() == before


def test_someone_outside_the_team_may_not_decide(client, mallory, filed, envs):
    for name in ("approve", "reject"):
        response = post(client, mallory, name, filed, comment="No.")
        assert response.status_code == 403
        assert "Only approvers of team Payments" in response.content.decode()
    filed.refresh_from_db()
    assert filed.state == State.PENDING
    assert stage_deployments(envs) == []


def test_approving_twice_is_a_conflict(client, bob, filed, envs):
    assert post(client, bob, "approve", filed).status_code == 302

    again = post(client, bob, "approve", filed)

    assert again.status_code == 409
    assert "already approved by bob" in again.content.decode()
    assert len(stage_deployments(envs)) == 1


def test_a_stale_request_is_refused_with_the_reason(client, bob, alice, pipeline, filed, envs):
    version2 = edit(pipeline, alice, sla_minutes=45)
    mark_deployed(version2, envs["stage"], bob)  # someone deployed a newer version since

    response = post(client, bob, "approve", filed)

    assert response.status_code == 409
    html = response.content.decode()
    assert 'id="promotion-error"' in html
    assert "Stale: version 2 was deployed to Stage" in html
    filed.refresh_from_db()
    assert filed.state == State.PENDING
    assert [d.version.number for d in stage_deployments(envs)] == [2]
    assert "Stale: version 2" in client.get(page_of(filed)).content.decode()  # before deciding


def test_reject_needs_a_comment(client, bob, filed):
    response = post(client, bob, "reject", filed, comment="   ")

    assert response.status_code == 422
    errors = response.context["reject_form"].errors["comment"]
    assert errors == ["Say why it is rejected: the requester reads it."]
    filed.refresh_from_db()
    assert filed.state == State.PENDING

    response = post(client, bob, "reject", filed, comment="Wait for the freeze to end.")
    assert response.status_code == 302
    filed.refresh_from_db()
    assert (filed.state, filed.decision_comment) == (State.REJECTED, "Wait for the freeze to end.")
    assert actions()[-1] == "promotion_rejected"


def test_an_overlong_comment_is_a_field_error_not_a_500(client, bob, filed, envs):
    response = post(client, bob, "approve", filed, comment="x" * 501)

    assert response.status_code == 422
    assert "500 characters or fewer" in response.content.decode()
    filed.refresh_from_db()
    assert filed.state == State.PENDING
    assert stage_deployments(envs) == []


def test_the_requester_withdraws(client, alice, bob, filed):
    assert post(client, bob, "withdraw", filed).status_code == 403

    response = post(client, alice, "withdraw", filed)

    assert response.status_code == 302
    filed.refresh_from_db()
    assert filed.state == State.WITHDRAWN
    assert actions()[-1] == "promotion_withdrawn"
    assert post(client, alice, "withdraw", filed).status_code == 409
    assert promotion_pending_count(user=bob) == 0


def test_decisions_are_posts(client, bob, filed):
    client.force_login(bob)
    url = reverse("pipelines:promotion-approve", args=[filed.id])
    assert client.get(url).status_code == 405
    filed.refresh_from_db()
    assert filed.state == State.PENDING


def test_someone_outside_the_team_may_not_read_a_request_and_its_checklists(
    client, bob, mallory, filed
):
    client.force_login(mallory)
    page = client.get(reverse("pipelines:promotion", args=[filed.id]))
    approve = client.post(reverse("pipelines:promotion-approve", args=[filed.id]), {})
    queue = client.get(reverse("pipelines:approvals")).content.decode()

    assert page.status_code == 403
    assert f'id="promotion-{filed.id}"' not in queue
    assert approve.status_code == 403
    assert "Only approvers of team Payments" in approve.content.decode()
    assert "Owner set" not in approve.content.decode()
    client.force_login(bob)
    own_team = client.get(reverse("pipelines:approvals")).content.decode()
    assert f'id="promotion-{filed.id}"' in own_team


def test_a_decision_with_a_field_the_form_does_not_know_is_refused(client, bob, filed, envs):
    response = post(client, bob, "approve", filed, coment="typo")

    assert response.status_code == 422
    assert "Unknown field “coment”" in response.content.decode()
    filed.refresh_from_db()
    assert filed.state == State.PENDING
