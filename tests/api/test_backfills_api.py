"""The backfills API (issue 9): preview, every guardrail as the page's message under its field,
submit with the preview's fingerprint, follow, pause / resume / cancel, and the approval of a
prod backfill, as alice (editor, requester), bob (approver) and mallory (no team) see them.

The clock is frozen at 2026-11-10 12:00 UTC (tests/backfills/conftest.py): daily runs at 02:00,
so the latest complete partition is 2026-11-09."""

from __future__ import annotations

import json
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from pipelines.backfills import services as backfills
from pipelines.core.tokens import token_create
from pipelines.models import Backfill, PipelineHealth
from tests.backfills.conftest import NOW, scheduled_run
from tests.conftest import make_health

PREVIEW = "/api/v1/pipelines/orders-daily/backfills/preview"
SUBMIT = "/api/v1/pipelines/orders-daily/backfills"
REASON = "Reload after the currency fix."


def post(client: Client, url: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(url, json.dumps(body or {}), content_type="application/json")


def token_client(user: Any) -> Client:
    key = token_create(user=user, scopes=["read", "write", "approve"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def payload(**changes: Any) -> dict[str, Any]:
    """A week of dev, missing partitions only, one run at a time."""
    return {
        "environment": "dev",
        "start": "2026-11-01",
        "end": "2026-11-07",
        "reprocess": "missing",
        "max_active_runs": 1,
    } | changes


def preview(client: Client, **changes: Any) -> Any:
    return post(client, PREVIEW, payload(**changes))


def submit(client: Client, *, reason: str = REASON, **changes: Any) -> Any:
    """Preview, then submit what was previewed."""
    shown = preview(client, **changes)
    assert shown.status_code == 200, shown.content
    body = payload(**changes) | {"reason": reason, "fingerprint": shown.json()["fingerprint"]}
    return post(client, SUBMIT, body)


def typical_run(deployment: Any, seconds: float) -> None:
    """The pipeline's health there says a run takes `seconds` (what estimates divide by)."""
    pipeline, environment = deployment.version.pipeline, deployment.environment
    PipelineHealth.objects.filter(pipeline=pipeline, environment=environment).delete()
    make_health(pipeline, environment, p50_duration_s=seconds)


def step(backfill_id: int) -> None:
    """One step of the outbox task, due now (the fake Airflow answers)."""
    Backfill.objects.filter(id=backfill_id).update(next_attempt_at=None)
    backfills.backfill_step(backfill_id=backfill_id)


@pytest.fixture
def bob_api(bob) -> Client:
    return token_client(bob)


# --- preview ---------------------------------------------------------------------------------


def test_preview_answers_the_counts_and_the_fingerprint(api_client, deployed):
    dev = deployed["dev"]
    scheduled_run(dev, 2)
    scheduled_run(dev, 3, "failed")
    scheduled_run(dev, 4, "running")
    typical_run(dev, 120.0)

    response = preview(api_client)

    assert response.status_code == 200, response.content
    body = response.json()
    assert {k: body[k] for k in ("loaded", "failed", "running", "missing")} == {
        "loaded": 1,
        "failed": 1,
        "running": 1,
        "missing": 4,
    }
    assert (body["partitions"], body["runs"]) == (4, 4)
    assert body["first"] == ["2026-11-01", "2026-11-05", "2026-11-06", "2026-11-07"]
    assert body["last"] == []
    assert body["estimate_seconds"] == 4 * 120.0
    assert body["next_run"] == "2026-11-11T02:00:00Z"
    assert body["sla_deadline"] == "2026-11-11T04:00:00Z"
    assert len(body["fingerprint"]) == 64
    assert preview(api_client).json()["fingerprint"] == body["fingerprint"]
    assert preview(api_client, reprocess="failed").json()["runs"] == 5
    assert preview(api_client, max_active_runs=4).json()["estimate_seconds"] == 120.0
    assert not Backfill.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"start": "2026-11-05", "end": "2026-11-03"},
            "end",
            "The end, 2026-11-03, is before the start, 2026-11-05.",
        ),
        (
            {"start": "2026-11-08", "end": "2026-11-10"},
            "end",
            "2026-11-10 is not complete yet in UTC: the latest complete partition is 2026-11-09.",
        ),
        (
            {"start": "2019-11-01"},
            "start",
            "2019-11-01 is before the pipeline's start date",
        ),
        ({"max_active_runs": 17}, "max_active_runs", "At most 16 runs at a time."),
        ({"max_active_runs": 0}, "max_active_runs", "At least 1 run at a time."),
        ({"environment": "moon"}, "environment", "Select a valid choice."),
    ],
)
def test_each_guardrail_is_422_with_the_pages_message(
    api_client, deployed, changes, field, message
):
    response = preview(api_client, **changes)
    assert response.status_code == 422, response.content
    errors = response.json()["errors"]
    assert list(errors) == [field]
    assert errors[field][0].startswith(message)


def test_a_malformed_partition_is_422_on_its_field(api_client, deployed):
    errors = preview(api_client, start="11/01/2026", end="").json()["errors"]
    assert set(errors) == {"start", "end"}
    assert errors["end"] == ["Enter the last partition."]


def test_not_deployed_there_is_422_on_the_environment(api_client, deployed):
    response = preview(api_client, environment="stage")
    assert response.status_code == 422
    assert response.json()["errors"] == {
        "environment": ["orders-daily is not deployed to Stage: deploy it there first."]
    }


def test_over_the_environments_cap_is_422_unless_an_admin_allows_it(
    api_client, deployed, envs, alice
):
    envs["dev"].backfill_max_partitions = 5
    envs["dev"].save()
    response = preview(api_client)
    assert response.status_code == 422
    assert response.json()["errors"]["end"][0].startswith(
        "7 partitions is more than Dev's cap of 5 for one backfill"
    )
    assert preview(api_client, allow_over_cap=True).status_code == 422  # alice is no admin
    alice.is_superuser = True
    alice.save()
    allowed = preview(api_client, allow_over_cap=True)
    assert allowed.status_code == 200
    assert allowed.json()["partitions"] == 7


def test_the_partition_a_scheduled_run_is_about_to_load_is_422(api_client, deployed):
    with time_machine.travel(NOW.replace(hour=1, minute=30), tick=False):
        refused = preview(api_client, start="2026-11-08", end="2026-11-09")
        allowed = preview(api_client, start="2026-11-07", end="2026-11-08")
    assert refused.status_code == 422
    assert refused.json()["errors"] == {
        "end": [
            "2026-11-09 is loaded by the scheduled run at 2026-11-10 02:00 UTC, which has not "
            "started yet: a backfill cannot include it. End the range before it, or wait until "
            "the scheduled run has finished."
        ]
    }
    assert allowed.json()["partitions"] == 2


def test_outsiders_get_403_and_unknown_pipelines_404(deployed, mallory, api_client):
    outsider = token_client(mallory)
    assert preview(outsider).status_code == 403
    body = payload() | {"reason": REASON, "fingerprint": "0" * 64}
    response = post(outsider, SUBMIT, body)
    assert response.status_code == 403
    assert set(response.json()) == {"detail"}
    missing = post(api_client, "/api/v1/pipelines/nope/backfills/preview", payload())
    assert missing.status_code == 404
    assert not Backfill.objects.exists()


def test_a_platform_admin_outside_the_team_may_backfill(deployed):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    shown = preview(token_client(root))
    assert shown.status_code == 200, shown.content
    body = payload() | {"reason": REASON, "fingerprint": shown.json()["fingerprint"]}
    made = post(token_client(root), SUBMIT, body)
    assert made.status_code == 202, made.content
    assert Backfill.objects.get().requested_by == root


# --- submit ----------------------------------------------------------------------------------


def test_submit_answers_202_with_the_queued_backfill(api_client, deployed):
    fingerprint = preview(api_client).json()["fingerprint"]

    response = post(api_client, SUBMIT, payload(reason=REASON, fingerprint=fingerprint))

    assert response.status_code == 202, response.content
    body = response.json()
    backfill = Backfill.objects.get()
    assert body["id"] == backfill.id
    assert (body["state"], body["pipeline"], body["environment"]) == (
        "queued",
        "orders-daily",
        "dev",
    )
    assert (body["start"], body["end"], body["partitions"], body["runs"]) == (
        "2026-11-01",
        "2026-11-07",
        7,
        7,
    )
    assert (body["reason"], body["requested_by"], body["decided_by"]) == (REASON, "alice", None)
    assert (body["done"], body["queued"], body["percent"]) == (0, 7, 0)
    assert (body["chunk"], body["chunks"], body["airflow_backfill_id"]) == (1, 1, None)
    assert (backfill.fingerprint, backfill.reason) == (fingerprint, REASON)


def test_a_reason_is_required(api_client, deployed):
    response = submit(api_client, reason="  ")
    assert response.status_code == 422
    assert response.json()["errors"] == {
        "reason": ["Say why: whoever sees the backfill running reads it."]
    }
    assert not Backfill.objects.exists()


def test_a_stale_fingerprint_is_409_with_the_new_preview(api_client, deployed):
    stale = preview(api_client).json()["fingerprint"]
    scheduled_run(deployed["dev"], 3)  # loaded meanwhile: six partitions left

    response = post(api_client, SUBMIT, payload() | {"reason": REASON, "fingerprint": stale})

    assert response.status_code == 409
    body = response.json()
    assert body["detail"].startswith("What this backfill would run changed since the preview")
    assert (body["preview"]["partitions"], body["preview"]["loaded"]) == (6, 1)
    assert body["preview"]["fingerprint"] != stale
    assert not Backfill.objects.exists()
    new = {"reason": REASON, "fingerprint": body["preview"]["fingerprint"]}
    again = post(api_client, SUBMIT, payload() | new)
    assert again.status_code == 202


def test_a_second_active_backfill_is_a_field_error_in_preview_and_409_on_submit(
    api_client, deployed
):
    first = submit(api_client).json()
    message = (
        f"A backfill of orders-daily in Dev is queued (#{first['id']}, 2026-11-01 → 2026-11-07): "
        "one runs at a time; wait for it to finish or cancel it."
    )
    shown = preview(api_client, start="2026-11-06", end="2026-11-09")
    assert shown.status_code == 422
    assert shown.json() == {"errors": {"start": [message]}}
    body = payload(start="2026-11-06", end="2026-11-09") | {"reason": REASON}
    response = post(api_client, SUBMIT, body | {"fingerprint": "0" * 64})
    assert response.status_code == 409
    assert response.json()["detail"] == message
    assert Backfill.objects.count() == 1


# --- follow ----------------------------------------------------------------------------------


@pytest.fixture
def running(api_client, deployed, fake_airflow) -> Backfill:
    """Alice's backfill of everything in the week, submitted to Airflow; four of its runs
    synced (two succeeded, one failed, one running), and one older run that is not its own."""
    created = submit(api_client, reprocess="all").json()
    step(created["id"])
    backfill = Backfill.objects.get(id=created["id"])
    dev = deployed["dev"]
    for n, state in [(1, "success"), (2, "success"), (3, "failed"), (4, "running")]:
        scheduled_run(dev, n, state, run_type="backfill", queued_at=backfill.submitted_at)
    scheduled_run(dev, 5, "success", queued_at=backfill.submitted_at.replace(year=2025))
    typical_run(dev, 60.0)
    return backfill


def test_one_backfill_with_its_progress(api_client, running):
    response = api_client.get(f"/api/v1/backfills/{running.id}")

    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["airflow_backfill_id"], body["chunk"], body["chunks"]) == (
        "running",
        1,
        1,
        1,
    )
    assert {k: body[k] for k in ("runs", "done", "failed", "running", "queued", "percent")} == {
        "runs": 7,
        "done": 2,
        "failed": 1,
        "running": 1,
        "queued": 3,
        "percent": 43,
    }
    assert body["eta_seconds"] == 4 * 60.0  # four left, one at a time, a minute each
    assert (body["reprocess"], body["max_active_runs"], body["error"]) == ("all", 1, "")
    assert api_client.get("/api/v1/backfills/999999").status_code == 404


def backfill_list(client: Client, query: str = "") -> Any:
    return client.get(f"/api/v1/backfills{query}")


def test_the_list_filters_and_shows_the_same_progress(api_client, running, envs):
    prod = submit(api_client, environment="prod").json()  # awaiting approval
    ids = lambda query: [b["id"] for b in backfill_list(api_client, query).json()["results"]]  # noqa: E731

    assert ids("") == [prod["id"], running.id]
    assert ids("?environment=dev") == [running.id]
    assert ids("?state=awaiting_approval") == [prod["id"]]
    assert ids("?state=active&pipeline=orders-daily&team=payments") == [prod["id"], running.id]
    assert ids("?state=succeeded") == []
    assert ids("?team=other") == []
    assert ids("?pipeline=other") == []
    page = backfill_list(api_client).json()
    assert (page["count"], page["page"], page["pages"]) == (2, 1, 1)
    detail = api_client.get(f"/api/v1/backfills/{running.id}").json()
    assert page["results"][1] == detail


@pytest.mark.parametrize(
    ("query", "field"),
    [("?state=maybe", "state"), ("?environment=no%20slug", "environment"), ("?page=0", "page")],
)
def test_a_bad_list_filter_is_422_on_its_field(api_client, deployed, query, field):
    response = backfill_list(api_client, query)
    assert response.status_code == 422
    assert list(response.json()["errors"]) == [field]


def test_the_list_answers_in_a_fixed_number_of_queries(api_client, running):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert backfill_list(api_client).status_code == 200
        return len(captured)

    one = queries()
    for n in range(3):  # ended ones
        copy = Backfill.objects.get(id=running.id)
        copy.pk, copy.state = None, "succeeded"
        copy.submitted_at = running.submitted_at.replace(year=2025 - n)
        copy.save()
    assert backfill_list(api_client).json()["count"] == 4
    assert queries() == one


# --- pause, resume, cancel -------------------------------------------------------------------


def test_pause_resume_and_cancel_through_the_api(api_client, running, fake_airflow, mallory):
    url = f"/api/v1/backfills/{running.id}"
    paused = post(api_client, f"{url}/pause")
    assert paused.status_code == 200, paused.content
    assert (paused.json()["state"], paused.json()["wanted"]) == ("running", "pause")
    step(running.id)
    assert api_client.get(url).json()["state"] == "paused"
    assert fake_airflow.backfills[1]["is_paused"]

    assert post(api_client, f"{url}/resume").status_code == 200
    step(running.id)
    assert api_client.get(url).json()["state"] == "running"
    assert not fake_airflow.backfills[1]["is_paused"]

    outsider = post(token_client(mallory), f"{url}/cancel")
    assert outsider.status_code == 403
    refusal = "Only members of team Payments or a platform admin may do this."
    assert outsider.json() == {"detail": refusal}

    assert post(api_client, f"{url}/cancel").status_code == 200
    step(running.id)
    assert api_client.get(url).json()["state"] == "cancelled"
    assert fake_airflow.backfills[1]["completed_at"]
    again = post(api_client, f"{url}/resume")
    assert again.status_code == 409
    assert again.json() == {
        "detail": "The backfill is cancelled: it cannot be resumed.",
        "preview": None,
    }
    assert post(api_client, "/api/v1/backfills/999999/pause").status_code == 404


# --- approval --------------------------------------------------------------------------------


def test_bob_approves_a_prod_backfill_alice_cannot(api_client, bob_api, deployed, fake_airflow):
    filed = submit(api_client, environment="prod")
    assert filed.status_code == 202, filed.content
    url = f"/api/v1/backfills/{filed.json()['id']}"
    assert filed.json()["state"] == "awaiting_approval"

    own = post(api_client, f"{url}/approve")
    assert own.status_code == 403
    assert "Only approvers of team Payments" in own.json()["detail"]

    response = post(bob_api, f"{url}/approve", {"comment": "Go."})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["state"], body["decided_by"], body["decision_comment"]) == ("queued", "bob", "Go.")
    step(body["id"])
    assert fake_airflow.backfills[1]["dag_id"] == "prod__orders_daily"
    again = post(bob_api, f"{url}/approve")
    assert again.status_code == 409
    assert "a decided request is final" in again.json()["detail"]


def test_an_approver_cannot_approve_his_own_backfill(bob_api, deployed):
    filed = submit(bob_api, environment="prod").json()
    response = post(bob_api, f"/api/v1/backfills/{filed['id']}/approve")
    assert response.status_code == 403
    assert "You requested this backfill: someone else" in response.json()["detail"]
    assert Backfill.objects.get().state == "awaiting_approval"


def test_rejecting_needs_a_comment(api_client, bob_api, deployed):
    filed = submit(api_client, environment="prod").json()
    url = f"/api/v1/backfills/{filed['id']}/reject"
    missing = post(bob_api, url, {"comment": " "})
    assert missing.status_code == 422
    assert missing.json() == {
        "errors": {"comment": ["Say why it is rejected: the requester reads it."]}
    }
    too_long = post(bob_api, url, {"comment": "x" * 501})
    assert too_long.json()["errors"] == {
        "comment": ["Keep the comment to 500 characters or fewer (it has 501)."]
    }
    assert Backfill.objects.get().state == "awaiting_approval"
    response = post(bob_api, url, {"comment": "Not during the close."})
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["decision_comment"]) == (
        "rejected",
        "Not during the close.",
    )


HOURLY = {"partition_grain": "hour", "schedule": "5 * * * *", "partition_column": "updated_at"}


@pytest.mark.parametrize(
    ("filed_as", "then", "start", "end", "grain"),
    [
        # day → hour: "2026-11-01" reads as an hour; hour → day does not parse at all (was a 500).
        ({}, HOURLY, "2026-11-01", "2026-11-07", "hour"),
        (HOURLY, {}, "2026-11-01T01:00", "2026-11-01T05:00", "day"),
    ],
)
def test_approving_after_the_grain_changed_is_409_stale(
    api_client, bob_api, deployed, alice, envs, filed_as, then, start, end, grain
):
    from tests.releases.conftest import edit, mark_deployed

    pipeline = deployed["prod"].version.pipeline
    if filed_as:
        mark_deployed(edit(pipeline, alice, **filed_as), envs["prod"], alice, ago=2)
    filed = submit(api_client, environment="prod", start=start, end=end)
    assert filed.status_code == 202, filed.content
    mark_deployed(
        edit(pipeline, alice, **(then or {"description": "back to days"})),
        envs["prod"],
        alice,
        ago=1,
    )
    response = post(bob_api, f"/api/v1/backfills/{filed.json()['id']}/approve")
    assert response.status_code == 409, response.content
    assert response.json()["detail"].startswith(f"Stale: orders-daily now loads {grain} partitions")
    assert Backfill.objects.get().state == "awaiting_approval"
