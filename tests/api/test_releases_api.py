"""The releases API (issue 8): file a promotion, the approvals queue, approve / reject /
withdraw, rollback, template upgrade and the live checklist, as alice (editor, requester),
bob (approver), carol (editor) and mallory (no team) see them through their tokens."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pipelines.core.tokens import token_create
from pipelines.models import Deployment, PipelineHealth, PipelineVersion, Promotion
from tests.releases.conftest import edit, mark_deployed

REASON = "Ready for stage: ran clean in dev."


def post(client: Client, url: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(url, json.dumps(body or {}), content_type="application/json")


def token_client(user: Any) -> Client:
    key = token_create(user=user, scopes=["read", "write", "approve"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.fixture
def bob_api(bob) -> Client:
    return token_client(bob)


def file(client: Client, environment: str = "stage", version: int = 1, reason: str = REASON):
    return post(
        client,
        "/api/v1/pipelines/orders-daily/promotions",
        {"environment": environment, "version": version, "reason": reason},
    )


@pytest.fixture
def filed(api_client, ready) -> dict[str, Any]:
    """Alice's pending promotion of version 1 to stage."""
    response = file(api_client)
    assert response.status_code == 201, response.content
    return response.json()


# --- filing ----------------------------------------------------------------------------------


def test_filing_answers_201_with_the_checklist(filed):
    assert (filed["state"], filed["environment"], filed["version"]) == ("pending", "stage", 1)
    assert (filed["requested_by"], filed["source_environment"]) == ("alice", "dev")
    checks = {item["check"]: item for item in filed["checklist"]}
    assert set(checks["successful_run"]) == {"check", "label", "ok", "blocking", "reason"}
    assert checks["successful_run"]["ok"]
    assert all(item["ok"] for item in filed["checklist"] if item["blocking"])
    assert filed["deployment"] is None
    assert Promotion.objects.get().id == filed["id"]


def test_a_failing_blocking_item_is_422_with_the_checklist_and_files_nothing(
    api_client, pipeline, envs
):
    response = file(api_client)  # version 1 never went to dev
    assert response.status_code == 422
    body = response.json()
    assert body["errors"]["version"][0].startswith("Not ready for Stage:")
    parsed = next(item for item in body["checklist"] if item["check"] == "parsed")
    assert (parsed["ok"], parsed["blocking"]) == (False, True)
    assert "never deployed to Dev" in parsed["reason"]
    assert not Promotion.objects.exists()


def test_a_second_pending_request_is_409(api_client, filed):
    response = file(api_client, reason="Again.")
    assert response.status_code == 409
    assert "is already pending" in response.json()["detail"]
    assert Promotion.objects.count() == 1


def test_filing_validates_the_environment_version_and_reason(api_client, ready):
    """The promote page's form answers, with its sentences."""
    unknown = file(api_client, environment="moon", version=9)
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == {
        "environment": [
            "Choose an environment that requires approval (stage, prod); the others take "
            "Deploy directly."
        ],
        "version": ["Choose one of this pipeline's versions (1 to 1)."],
    }
    direct = file(api_client, environment="dev")
    assert direct.status_code == 422
    assert list(direct.json()["errors"]) == ["environment"]
    blank = file(api_client, reason="  ")
    assert blank.json()["errors"] == {"reason": ["Say why this version should go there."]}
    long = file(api_client, reason="x" * 501)
    assert long.status_code == 422
    assert long.json()["errors"] == {
        "reason": ["Keep the reason to 500 characters or fewer (it has 501)."]
    }
    assert not Promotion.objects.exists()


def test_an_outsider_cannot_file(ready, mallory):
    response = file(token_client(mallory))
    assert response.status_code == 403
    assert not Promotion.objects.exists()


def test_a_direct_deploy_into_stage_is_403_with_the_way_to_get_there(api_client, ready):
    response = post(
        api_client,
        "/api/v1/pipelines/orders-daily/deployments",
        {"environment": "stage", "version": 1},
    )
    assert response.status_code == 403
    assert response.json()["detail"].startswith("Stage requires an approved promotion")
    assert not Deployment.objects.filter(environment__slug="stage").exists()


# --- the queue -------------------------------------------------------------------------------


def queue(client: Client, query: str = "") -> Any:
    return client.get(f"/api/v1/promotions{query}")


def test_the_queue_lists_pending_requests_and_filters(api_client, filed):
    ids = lambda query: [p["id"] for p in queue(api_client, query).json()["results"]]  # noqa: E731
    assert ids("") == [filed["id"]]
    assert ids("?environment=stage&pipeline=orders-daily") == [filed["id"]]
    assert ids("?environment=prod") == []
    assert ids("?pipeline=other") == []
    assert ids("?state=approved") == []
    assert ids("?state=all") == [filed["id"]]
    page = queue(api_client).json()
    assert (page["count"], page["page"], page["pages"]) == (1, 1, 1)


def test_the_queue_answers_in_a_fixed_number_of_queries(api_client, filed, bob, ready, envs):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert queue(api_client, "?state=all").status_code == 200
        return len(captured)

    one = queries()
    deployment = mark_deployed(ready, envs["stage"], bob)
    for _ in range(3):
        Promotion.objects.create(
            pipeline=ready.pipeline,
            version=ready,
            environment=envs["stage"],
            state="approved",
            reason=REASON,
            checklist=[],
            requested_by=ready.created_by,
            decided_by=bob,
            decided_at=timezone.now(),
            deployment=deployment,
        )
    assert queue(api_client, "?state=all").json()["count"] == 4
    assert queries() == one


@pytest.mark.parametrize(
    ("query", "field"),
    [("?state=maybe", "state"), ("?environment=no%20slug", "environment"), ("?page=0", "page")],
)
def test_a_bad_queue_filter_is_422_on_its_field(api_client, filed, query, field):
    response = queue(api_client, query)
    assert response.status_code == 422
    assert list(response.json()["errors"]) == [field]


def test_one_promotion_and_a_missing_one(api_client, filed):
    got = api_client.get(f"/api/v1/promotions/{filed['id']}").json()
    assert got == filed
    assert api_client.get("/api/v1/promotions/999999").status_code == 404


# --- deciding --------------------------------------------------------------------------------


def approve(client: Client, promotion_id: int, body: dict[str, Any] | None = None) -> Any:
    return post(client, f"/api/v1/promotions/{promotion_id}/approve", body)


def test_bob_approves_and_the_version_deploys_to_stage(filed, bob_api, api_client):
    response = approve(bob_api, filed["id"], {"comment": "Looks good."})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["state"], body["decided_by"], body["decision_comment"]) == (
        "approved",
        "bob",
        "Looks good.",
    )
    deployment = Deployment.objects.get(environment__slug="stage")
    assert body["deployment"] == {"id": deployment.id, "state": "pending"}
    assert deployment.version.number == 1
    assert all(item["ok"] for item in body["decision_checklist"] if item["blocking"])
    assert api_client.get(f"/api/v1/promotions/{filed['id']}").json() == body
    audit = api_client.get("/api/v1/audit?action=promotion_approved").json()
    assert [(e["actor"], e["environment"]) for e in audit["results"]] == [("bob", "stage")]
    assert audit["results"][0]["after"]["deployment"] == deployment.id


def test_approving_needs_no_body(filed, bob):
    url = f"/api/v1/promotions/{filed['id']}/approve"
    response = token_client(bob).post(url, content_type="application/json")  # an empty body
    assert response.status_code == 200, response.content
    assert response.json()["decision_comment"] == ""


def test_an_approver_cannot_approve_his_own_request(ready, bob_api):
    promotion = file(bob_api).json()
    response = approve(bob_api, promotion["id"])
    assert response.status_code == 403
    assert "You requested this promotion: someone else" in response.json()["detail"]
    assert Promotion.objects.get().state == "pending"
    assert not Deployment.objects.filter(environment__slug="stage").exists()


def test_the_requesting_editor_cannot_approve_either(filed, api_client):
    response = approve(api_client, filed["id"])
    assert response.status_code == 403
    assert Promotion.objects.get().state == "pending"


def test_an_editor_or_an_outsider_cannot_approve(filed, carol, mallory):
    for user in (carol, mallory):
        response = approve(token_client(user), filed["id"])
        assert response.status_code == 403
        assert "Only approvers of team Payments" in response.json()["detail"]
    assert not Deployment.objects.filter(environment__slug="stage").exists()


def test_approving_twice_is_409(filed, bob_api):
    assert approve(bob_api, filed["id"]).status_code == 200
    again = approve(bob_api, filed["id"])
    assert again.status_code == 409
    assert "already approved by bob" in again.json()["detail"]
    assert Deployment.objects.filter(environment__slug="stage").count() == 1


def test_a_request_overtaken_by_a_deployment_is_409_stale(filed, bob_api, pipeline, envs, alice):
    version2 = edit(pipeline, alice, description="Second version.")
    later = mark_deployed(version2, envs["stage"], alice)
    Deployment.objects.filter(id=later.id).update(
        requested_at=timezone.now() + timedelta(seconds=1)
    )
    response = approve(bob_api, filed["id"])
    assert response.status_code == 409
    assert response.json()["detail"].startswith("Stale: version 2 was deployed to Stage")
    assert Promotion.objects.get().state == "pending"


def test_a_blocking_check_failing_now_is_409_with_the_checklist(filed, bob_api, pipeline, envs):
    PipelineHealth.objects.filter(pipeline=pipeline, environment=envs["dev"]).update(
        freshness_lag_partitions=3
    )
    response = approve(bob_api, filed["id"])
    assert response.status_code == 409
    body = response.json()
    assert body["detail"].startswith("Stale: a blocking check fails now: Data fresh")
    fresh = next(item for item in body["checklist"] if item["check"] == "fresh")
    assert not fresh["ok"]
    assert not Deployment.objects.filter(environment__slug="stage").exists()


def test_rejecting_needs_a_comment(filed, bob_api):
    url = f"/api/v1/promotions/{filed['id']}/reject"
    missing = post(bob_api, url, {"comment": " "})
    assert missing.status_code == 422
    assert missing.json()["errors"] == {
        "comment": ["Say why it is rejected: the requester reads it."]
    }
    too_long = post(bob_api, url, {"comment": "x" * 501})
    assert too_long.json()["errors"] == {
        "comment": ["Keep the comment to 500 characters or fewer (it has 501)."]
    }
    assert Promotion.objects.get().state == "pending"
    response = post(bob_api, url, {"comment": "Not during the close."})
    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["decision_comment"], body["deployment"]) == (
        "rejected",
        "Not during the close.",
        None,
    )


def test_only_the_requester_withdraws_and_only_once(filed, api_client, bob_api):
    url = f"/api/v1/promotions/{filed['id']}/withdraw"
    assert post(bob_api, url).status_code == 403
    response = post(api_client, url)
    assert response.status_code == 200
    assert response.json()["state"] == "withdrawn"
    again = post(api_client, url)
    assert again.status_code == 409
    assert again.json()["detail"] == "This request is withdrawn already."
    assert post(api_client, "/api/v1/promotions/999999/withdraw").status_code == 404


# --- rollback, upgrade, checklist ------------------------------------------------------------


def rollback(client: Client, environment: str, version: int) -> Any:
    return post(
        client,
        "/api/v1/pipelines/orders-daily/rollback",
        {"environment": environment, "version": version},
    )


def test_rollback_to_a_version_that_ran_in_stage(api_client, ready, pipeline, envs, alice):
    mark_deployed(ready, envs["stage"], alice, ago=5)
    version2 = edit(pipeline, alice, description="Second version.")
    mark_deployed(version2, envs["stage"], alice, ago=1)

    response = rollback(api_client, "stage", 1)

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["environment"], body["version"], body["state"]) == ("stage", 1, "pending")
    assert Deployment.objects.get(id=body["id"]).version == ready


def test_rollback_to_a_version_never_approved_in_stage_is_403(
    api_client, ready, pipeline, envs, alice
):
    mark_deployed(ready, envs["stage"], alice)
    edit(pipeline, alice, description="Second version.")
    before = Deployment.objects.count()

    response = rollback(api_client, "stage", 2)

    assert response.status_code == 403
    assert response.json()["detail"] == (
        "Version 2 never ran in Stage and was never approved there: request a promotion instead."
    )
    assert Deployment.objects.count() == before
    current = rollback(api_client, "stage", 1)
    assert current.json()["errors"] == {"version": ["Version 1 already runs in Stage."]}
    unknown = rollback(api_client, "moon", 7).json()["errors"]
    assert unknown == {
        "environment": ["No environment “moon”."],
        "version": ["orders-daily has no version 7."],
    }


def test_upgrade_makes_a_version_on_the_current_template(api_client, pipeline):
    PipelineVersion.objects.filter(pipeline=pipeline).update(
        template_version="2025.1.1", template_sha256="0" * 64
    )
    url = "/api/v1/pipelines/orders-daily/upgrade"

    response = post(api_client, url)

    assert response.status_code == 201
    assert response.json() == {"version": 2, "created": True}
    versions = api_client.get("/api/v1/pipelines/orders-daily/versions").json()
    assert [(v["number"], v["template_current"]) for v in versions] == [(2, True), (1, False)]
    assert versions[1]["template"].endswith("2025.1.1")
    again = post(api_client, url)
    assert again.status_code == 200
    assert again.json() == {"version": 2, "created": False}


def test_only_team_members_upgrade(pipeline, mallory):
    PipelineVersion.objects.filter(pipeline=pipeline).update(template_version="2025.1.1")
    response = post(token_client(mallory), "/api/v1/pipelines/orders-daily/upgrade")
    assert response.status_code == 403
    assert pipeline.versions.count() == 1


def test_the_live_checklist_for_the_promote_form(api_client, ready, pipeline, envs):
    url = "/api/v1/pipelines/orders-daily/checklist"
    body = api_client.get(f"{url}?environment=stage&version=1").json()
    assert (body["version"], body["environment"], body["source_environment"]) == (1, "stage", "dev")
    assert body["ready"] is True
    assert {item["check"] for item in body["checklist"]} >= {"owner", "successful_run", "fresh"}

    edit(pipeline, pipeline.owner, description="Second version.")  # never went to dev
    newest = api_client.get(f"{url}?environment=stage").json()
    assert (newest["version"], newest["ready"]) == (2, False)
    bad = api_client.get(f"{url}?environment=moon&version=9")
    assert bad.status_code == 422
    assert set(bad.json()["errors"]) == {"environment", "version"}
    assert api_client.get(url).status_code == 422
