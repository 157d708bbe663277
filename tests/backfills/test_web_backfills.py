"""Backfill pages (issue 9): the form and its live preview, every guardrail next to its field,
submit with the preview's fingerprint (a changed set shows the new preview and makes nothing),
the backfill's page with its progress and controls, the list, and approval in the queue."""

from __future__ import annotations

import html as entities
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pipelines.backfills import selectors
from pipelines.backfills import services as backfills
from pipelines.backfills.models import Backfill
from pipelines.core.models import AuditEvent, Membership, Team
from pipelines.models import PipelineHealth
from pipelines.releases.selectors import promotion_pending_count
from tests.backfills.conftest import NOW, scheduled_run
from tests.backfills.test_backfills import submit
from tests.conftest import make_health
from tests.releases.conftest import edit, mark_deployed

State = Backfill.State
FORM = reverse("pipelines:backfill", args=["orders-daily"])
PREVIEW = reverse("pipelines:backfill-preview", args=["orders-daily"])
LIST = reverse("pipelines:backfills")
QUEUE = reverse("pipelines:approvals")
WEEK = {"environment": "dev", "start": "2026-11-01", "end": "2026-11-07"}


def page_of(backfill: Backfill) -> str:
    return reverse("pipelines:backfill-detail", args=[backfill.id])


def preview(client, **query) -> str:
    response = client.get(PREVIEW, WEEK | query, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


def submit_form(client, shown: str, **fields):
    """POST the form for WEEK, missing only, one at a time, with the preview's fingerprint."""
    data = {"reprocess": "missing", "max_active_runs": "1", "reason": "Reload after the fix."}
    return client.post(FORM, WEEK | data | {"fingerprint": shown} | fields)


def slot(html: str, name: str) -> str:
    """The text of the error slot next to field `name` ("form": the form's own)."""
    found = re.search(
        rf'<div class="field-errors" id="backfill-errors-{name}"[^>]*>(.*?)</div>', html
    )
    assert found, f"no error slot for {name}"
    return entities.unescape(re.sub(r"<[^>]+>", "", found[1]))


def partitions(html: str) -> int:
    return int(re.search(r'data-partitions="(\d+)"', html)[1])


def fingerprint(html: str) -> str:
    return re.search(
        r'name="fingerprint" form="backfill-form" id="id_fingerprint" value="(\w*)"', html
    )[1]


def count(html: str, name: str) -> int:
    return int(re.search(rf'data-count="{name}">(\d+)<', html)[1])


def admin(team=None):
    """A platform admin; a member of `team` (who may backfill its pipelines) if given."""
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    if team is not None:
        Membership.objects.create(team=team, user=user, role=Membership.Role.EDITOR)
    return user


@pytest.fixture
def week(deployed):
    """In dev: 2026-11-02 loaded, 11-03 failed, 11-04 running; runs take 2 minutes there."""
    dev = deployed["dev"]
    scheduled_run(dev, 2)
    scheduled_run(dev, 3, "failed")
    scheduled_run(dev, 4, "running")
    PipelineHealth.objects.filter(environment=dev.environment).delete()
    make_health(dev.version.pipeline, dev.environment, p50_duration_s=120.0)
    return dev


# --- the form and its preview ----------------------------------------------------------------


def test_the_form_renders_with_date_inputs_and_the_live_preview(client, alice, deployed):
    client.force_login(alice)

    response = client.get(FORM)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'type="date" name="start"' in html
    assert 'type="date" name="end"' in html
    assert 'type="radio" name="reprocess" value="missing"' in html
    assert "Missing only: partitions Airflow has no run for." in html  # the policy's help text
    assert re.search(r'name="max_active_runs" value="1"', html)
    assert f'hx-get="{PREVIEW}"' in html
    assert 'hx-trigger="change, keyup changed delay:300ms"' in html
    assert '<option value="dev" selected>' in html  # where it runs
    assert 'id="preview-empty"' in html
    assert "allow_over_cap" not in html  # not a platform admin


def test_an_hourly_pipeline_takes_hours(client, alice, pipeline, envs, frozen):
    version = edit(
        pipeline,
        alice,
        partition_grain="hour",
        schedule="15 * * * *",
        partition_column="updated_at",
    )
    mark_deployed(version, envs["dev"], alice)
    client.force_login(alice)

    html = client.get(FORM).content.decode()
    assert 'type="text" name="start"' in html
    assert 'placeholder="YYYY-MM-DDTHH:00"' in html
    shown = preview(client, start="2026-11-09T20:00", end="2026-11-09T23:00")
    assert partitions(shown) == 4
    assert "<code>2026-11-09T20:00</code>" in shown
    assert "Enter the partition as 2026-11-10T13:00." in slot(
        preview(client, start="yesterday"), "start"
    )


def test_a_platform_admin_sees_allow_over_cap(client, deployed, team):
    client.force_login(admin(team))
    assert 'name="allow_over_cap"' in client.get(FORM).content.decode()


def test_a_platform_admin_outside_the_team_may_backfill_over_the_cap(client, deployed, envs):
    """On call for every team: the form, the preview, a submit over the cap, and the controls."""
    envs["dev"].backfill_max_partitions = 5
    envs["dev"].save()
    root = admin()  # a member of no team
    client.force_login(root)
    detail = client.get(reverse("pipelines:detail", args=["orders-daily"])).content.decode()
    assert f'href="{FORM}"' in detail
    assert 'name="allow_over_cap"' in client.get(FORM).content.decode()
    html = preview(client, allow_over_cap="on")
    assert partitions(html) == 7
    response = submit_form(
        client, fingerprint(html), reason="Rebuild after the incident.", allow_over_cap="on"
    )
    assert response.status_code == 302, response.content.decode()
    backfill = Backfill.objects.get()
    assert (backfill.requested_by, backfill.partitions) == (root, 7)
    assert 'id="backfill-controls"' in client.get(page_of(backfill)).content.decode()
    assert post(client, root, "cancel", backfill).status_code == 302


def test_the_preview_shows_the_counts_and_follows_the_dates(client, alice, week):
    client.force_login(alice)

    html = preview(client)

    assert partitions(html) == 4  # missing only: 1, 5, 6, 7
    counts = {name: count(html, name) for name in ("loaded", "failed", "missing", "running")}
    assert counts == {"loaded": 1, "failed": 1, "missing": 4, "running": 1}
    assert "<code>2026-11-01</code>, <code>2026-11-05</code>" in html
    assert "about 8 min at 1 at a time" in html  # 4 runs × 2 min
    assert "2026-11-11 02:00" in html  # the next scheduled run
    assert "2026-11-11 04:00" in html  # its SLA deadline (120 min)
    shown = backfills.backfill_preview(
        pipeline=week.version.pipeline,
        environment=week.environment,
        first=backfills.schedule.parse_partition("2026-11-01", "day"),
        last=backfills.schedule.parse_partition("2026-11-07", "day"),
        reprocess="missing",
        max_active_runs=1,
    )
    assert fingerprint(html) == shown.fingerprint

    longer = preview(client, end="2026-11-09")
    assert partitions(longer) == 6
    assert fingerprint(longer) != fingerprint(html)
    everything = preview(client, reprocess="all", max_active_runs="2")
    assert partitions(everything) == 6  # a running run is never run again
    assert "about 6 min at 2 at a time" in everything
    assert slot(longer, "end") == ""  # the error slots are emptied out of band
    assert 'id="backfill-errors-end" hx-swap-oob="true"' in longer


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"start": "2026-11-05", "end": "2026-11-03"}, "end", "The end, 2026-11-03, is before"),
        ({"end": "2026-11-10"}, "end", "2026-11-10 is not complete yet in UTC"),
        ({"start": "2019-11-01"}, "start", "2019-11-01 is before the pipeline's start date"),
        ({"environment": "stage"}, "environment", "orders-daily is not deployed to Stage"),
        ({"environment": "nowhere"}, "environment", "Select a valid choice."),
        ({"start": "11/01/2026"}, "start", "Enter the partition as 2026-11-10."),
        ({"max_active_runs": "17"}, "max_active_runs", "At most 16 runs at a time."),
        ({"reprocess": "some"}, "reprocess", "Select a valid choice."),
    ],
)
def test_each_guardrail_is_shown_next_to_its_field(client, alice, deployed, query, field, message):
    client.force_login(alice)

    html = preview(client, **query)

    assert message in slot(html, field)
    assert 'id="preview-blocked"' in html
    assert fingerprint(html) == ""  # nothing to submit


def test_the_cap_and_an_active_backfill_are_shown_next_to_their_fields(
    client, alice, deployed, envs, team
):
    envs["dev"].backfill_max_partitions = 5
    envs["dev"].save()
    client.force_login(alice)
    assert "7 partitions is more than Dev's cap of 5" in slot(preview(client), "end")

    client.force_login(admin(team))
    html = preview(client, allow_over_cap="on")
    assert partitions(html) == 7  # a platform admin may allow it

    envs["dev"].backfill_max_partitions = 100
    envs["dev"].save()
    first = submit(deployed, alice)
    client.force_login(alice)
    assert f"(#{first.id}, 2026-11-01 → 2026-11-07): one runs at a time" in slot(
        preview(client, start="2026-11-08", end="2026-11-09"), "start"
    )


def test_a_field_not_filled_in_yet_is_no_error_while_typing(client, alice, deployed):
    client.force_login(alice)
    html = preview(client, end="")
    assert slot(html, "end") == ""
    assert 'id="preview-blocked"' not in html


# --- submit ----------------------------------------------------------------------------------


def test_submit_creates_the_previewed_backfill_and_redirects_to_it(client, alice, week):
    client.force_login(alice)
    shown = fingerprint(preview(client))

    response = submit_form(client, shown)

    backfill = Backfill.objects.get()
    assert response.status_code == 302
    assert response.url == page_of(backfill)
    assert (backfill.state, backfill.partitions, backfill.reason) == (
        State.QUEUED,
        4,
        "Reload after the fix.",
    )
    assert backfill.fingerprint == shown
    assert backfill.requested_by == alice
    html = client.get(response.url).content.decode()
    assert (
        f"Backfill #{backfill.id} of 2026-11-01 → 2026-11-07 (4 partitions) in Dev queued" in html
    )


def test_a_changed_set_shows_the_new_preview_and_makes_nothing(client, alice, week):
    client.force_login(alice)
    stale = fingerprint(preview(client))
    scheduled_run(week, 5)  # loaded meanwhile: the set is 1, 6, 7 now
    data = WEEK | {"reason": "Reload after the fix.", "fingerprint": stale}

    response = client.post(FORM, data)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="backfill-changed"' in html
    assert "here is the new preview" in html
    assert "changed since the preview" in slot(html, "form")
    assert partitions(html) == 3
    assert fingerprint(html) not in ("", stale)
    assert not Backfill.objects.exists()

    again = client.post(FORM, data | {"fingerprint": fingerprint(html)})
    assert again.status_code == 302
    assert Backfill.objects.get().partitions == 3


def test_submit_without_a_reason_says_why_next_to_it(client, alice, week):
    client.force_login(alice)
    data = WEEK | {"fingerprint": fingerprint(preview(client))}

    response = client.post(FORM, data)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Say why" in slot(html, "reason")
    assert partitions(html) == 4  # the preview is still shown
    assert not Backfill.objects.exists()


def test_outsiders_may_not_see_the_form_preview_or_submit(client, mallory, deployed):
    client.force_login(mallory)
    assert client.get(FORM).status_code == 403
    assert client.get(PREVIEW, WEEK).status_code == 403
    response = client.post(FORM, WEEK | {"reason": "x", "fingerprint": "0" * 64})
    assert response.status_code == 403
    assert not Backfill.objects.exists()


def test_into_an_approval_environment_it_says_who_decides(client, alice, deployed):
    client.force_login(alice)
    query = WEEK | {"environment": "prod"}
    html = client.get(PREVIEW, query, HTTP_HX_REQUEST="true").content.decode()
    assert "Prod requires approval" in html

    response = client.post(
        FORM, query | {"reason": "Prod missed a week.", "fingerprint": fingerprint(html)}
    )

    backfill = Backfill.objects.get()
    assert backfill.state == State.AWAITING_APPROVAL
    html = client.get(response.url).content.decode()
    assert "an approver of team Payments other than you decides it" in html
    assert 'id="backfill-awaiting"' in html
    assert "You asked for this: waiting for another approver" in html
    assert reverse("pipelines:backfill-approve", args=[backfill.id]) not in html


# --- the backfill's page ---------------------------------------------------------------------


def test_the_page_shows_the_request_and_its_live_progress(client, alice, deployed):
    backfill = submit(deployed, alice, reprocess="all")
    dev = deployed["dev"]
    at = NOW + timedelta(minutes=1)
    Backfill.objects.filter(id=backfill.id).update(
        state=State.RUNNING, submitted_at=at, airflow_backfill_id=41
    )
    for n, state in ((1, "success"), (2, "success"), (3, "failed"), (4, "running")):
        scheduled_run(dev, n, state, dag_run_id=f"backfill__{n}", queued_at=at, run_type="backfill")
    client.force_login(alice)

    html = client.get(page_of(backfill)).content.decode()

    assert "Reload after the fix." in html
    assert "<code>2026-11-01</code> → <code>2026-11-07</code>: 7 partitions in 7 runs" in html
    assert "Everything" in html
    assert "1 run at a time" in html
    assert "backfill 41, chunk 1 of 1" in html
    assert 'data-state="running"' in html
    assert {n: count(html, n) for n in ("done", "running", "failed", "queued")} == {
        "done": 2,
        "running": 1,
        "failed": 1,
        "queued": 3,
    }
    assert 'value="43"' in html  # (2 done + 1 failed) of 7
    fragment = client.get(page_of(backfill), HTTP_HX_REQUEST="true").content.decode()
    assert fragment.strip().startswith('<div id="backfill-progress"')
    assert 'hx-trigger="every 2s"' in fragment


def test_a_finished_backfill_is_not_polled(client, alice, deployed):
    backfill = submit(deployed, alice)
    Backfill.objects.filter(id=backfill.id).update(state=State.SUCCEEDED)
    client.force_login(alice)
    fragment = client.get(page_of(backfill), HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in fragment
    assert "Pause" not in fragment


def post(client, user, name: str, backfill: Backfill, **data):
    client.force_login(user)
    return client.post(reverse(f"pipelines:backfill-{name}", args=[backfill.id]), data)


def test_pause_resume_and_cancel_call_the_services(client, alice, deployed):
    backfill = submit(deployed, alice)
    client.force_login(alice)
    html = client.get(page_of(backfill)).content.decode()
    assert reverse("pipelines:backfill-pause", args=[backfill.id]) in html
    assert reverse("pipelines:backfill-cancel", args=[backfill.id]) in html

    response = post(client, alice, "pause", backfill)
    assert response.status_code == 302
    backfill.refresh_from_db()
    assert backfill.wanted == Backfill.Wanted.PAUSE

    refused = post(client, alice, "resume", backfill)  # not paused yet: the step pauses it
    assert refused.status_code == 409
    assert "it cannot be resumed" in refused.content.decode()

    Backfill.objects.filter(id=backfill.id).update(state=State.PAUSED)
    html = client.get(page_of(backfill)).content.decode()
    assert reverse("pipelines:backfill-resume", args=[backfill.id]) in html
    assert post(client, alice, "resume", backfill).status_code == 302
    backfill.refresh_from_db()
    assert backfill.wanted == Backfill.Wanted.RUN

    assert post(client, alice, "cancel", backfill).status_code == 302
    backfill.refresh_from_db()
    assert backfill.wanted == Backfill.Wanted.CANCEL
    actions = AuditEvent.objects.filter(action__startswith="backfill_").order_by("id")
    assert list(actions.values_list("action", flat=True)) == [
        "backfill_requested",
        "backfill_paused",
        "backfill_resumed",
        "backfill_cancelled",
    ]


def test_outsiders_see_the_page_but_no_controls_and_are_refused(client, alice, mallory, deployed):
    backfill = submit(deployed, alice)
    client.force_login(mallory)

    html = client.get(page_of(backfill)).content.decode()
    assert 'id="backfill-controls"' not in html

    response = post(client, mallory, "cancel", backfill)
    assert response.status_code == 403
    refusal = "Only members of team Payments or a platform admin may do this."
    assert refusal in response.content.decode()
    backfill.refresh_from_db()
    assert backfill.wanted == Backfill.Wanted.RUN
    assert client.get(reverse("pipelines:backfill-detail", args=[999999])).status_code == 404
    assert post(client, alice, "pause", Backfill(id=999999)).status_code == 404
    assert client.get(reverse("pipelines:backfill-pause", args=[backfill.id])).status_code == 405


# --- the list and the pipeline's page --------------------------------------------------------


def _finished(deployed, by, n: int, *, env: str = "dev") -> list[Backfill]:
    """`n` succeeded backfills of one partition each (2026-11-01, -02, …), their run synced
    (rows only: lists read rows)."""
    d = deployed[env]
    made = []
    for i in range(n):
        at = NOW - timedelta(hours=i + 1)
        start = NOW.replace(day=i + 1, hour=2)
        backfill = Backfill.objects.create(
            pipeline=d.version.pipeline,
            environment=d.environment,
            dag_id=d.dag_id,
            first_partition=f"2026-11-{i + 1:02d}",
            last_partition=f"2026-11-{i + 1:02d}",
            from_date=start,
            to_date=start,
            reprocess="all",
            reason=f"backfill {i}",
            fingerprint="f",
            partitions=1,
            runs=1,
            state=State.SUCCEEDED,
            requested_by=by,
            submitted_at=at,
        )
        made.append(backfill)
        scheduled_run(d, i + 1, dag_run_id=f"backfill__{i}", queued_at=at + timedelta(seconds=1))
    return made


def test_the_list_shows_progress_and_filters(client, alice, bob, deployed):
    done = _finished(deployed, alice, 1)[0]
    waiting = submit(deployed, alice, env="prod")
    client.force_login(bob)

    page = client.get(LIST)

    assert page.status_code == 200
    assert [b for b, _ in page.context["rows"]] == [waiting, done]
    assert page.context["rows"][1][1]["percent"] == 100
    html = page.content.decode()
    assert f'id="backfill-{done.id}"' in html
    assert "1/1" in html
    assert 'href="/backfills/"' in html  # the nav link
    rows = lambda **q: [b for b, _ in client.get(LIST, q).context["rows"]]  # noqa: E731
    assert rows(environment="prod") == [waiting]
    assert rows(state="awaiting_approval") == [waiting]
    assert rows(state="active") == [waiting]
    assert rows(state="succeeded", environment="dev") == [done]
    assert rows(team="payments") == [waiting, done]
    Team.objects.create(slug="growth", name="Growth", domain="marketing")
    assert rows(team="growth") == []
    assert rows(pipeline="orders-daily") == [waiting, done]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "<script>alert(1)</script>"}, "state"),
        ({"state": "running' OR 1=1 --"}, "state"),
        ({"environment": "dev/../../etc"}, "environment"),
        ({"team": "x" * 5000}, "team"),
        ({"pipeline": "orders daily'; DROP TABLE x"}, "pipeline"),
        ({"page": "-1"}, "page"),
        ({"page": "9" * 400}, "page"),
    ],
)
def test_hostile_list_filters_are_field_errors_and_ignored(client, alice, deployed, query, field):
    backfill = submit(deployed, alice)
    client.force_login(alice)

    page = client.get(LIST, query)

    assert page.status_code == 200
    assert field in page.context["form"].errors
    assert [b for b, _ in page.context["rows"]] == [backfill]
    assert "<script>alert(1)</script>" not in page.content.decode()


def test_the_list_reads_a_fixed_number_of_queries(
    client, alice, deployed, django_assert_num_queries
):
    _finished(deployed, alice, 3)
    client.force_login(alice)
    with CaptureQueriesContext(connection) as three:
        page = client.get(LIST)
    assert len(page.context["rows"]) == 3

    _finished(deployed, alice, 9, env="prod")
    with django_assert_num_queries(len(three.captured_queries)):
        page = client.get(LIST)
    assert len(page.context["rows"]) == 12
    assert all(progress["done"] == 1 for _, progress in page.context["rows"])


def test_progress_of_many_is_the_progress_of_each(alice, week, deployed, django_assert_num_queries):
    made = _finished(deployed, alice, 3)
    wide = made[0]  # 2026-11-01 → 05, still running
    Backfill.objects.filter(id=wide.id).update(
        runs=5, partitions=5, to_date=NOW.replace(day=5, hour=2), state=State.RUNNING
    )
    wide.refresh_from_db()
    scheduled_run(week, 4, "failed", dag_run_id="backfill__late4", queued_at=NOW)
    scheduled_run(week, 5, "running", dag_run_id="backfill__late5", queued_at=NOW)

    with django_assert_num_queries(2):
        many = selectors.backfill_progress(made)

    counts, eta = many[wide.id]
    assert (counts["done"], counts["failed"], counts["running"], counts["queued"]) == (1, 1, 1, 2)
    assert (counts["percent"], eta) == (40, 3 * 120.0)
    for backfill in made:
        counts = backfills.progress(backfill)
        assert many[backfill.id] == (counts, backfills.eta_seconds(backfill, counts))


def test_the_pipeline_page_offers_backfill_and_lists_recent_ones(client, alice, mallory, deployed):
    backfill = submit(deployed, alice)
    client.force_login(alice)

    html = client.get(reverse("pipelines:detail", args=["orders-daily"])).content.decode()
    assert f'href="{FORM}"' in html
    recent_url = reverse("pipelines:pipeline-backfills", args=["orders-daily"])
    assert f'hx-get="{recent_url}" hx-trigger="load"' in html
    recent = client.get(recent_url).content.decode()
    assert f'id="recent-backfill-{backfill.id}"' in recent
    assert 'data-state="queued"' in recent
    assert 'hx-trigger="every 2s"' in recent  # queued: it changes on its own

    client.force_login(mallory)
    html = client.get(reverse("pipelines:detail", args=["orders-daily"])).content.decode()
    assert f'href="{FORM}"' not in html


# --- approval ---------------------------------------------------------------------------------


def test_the_queue_shows_a_prod_backfill_and_approving_it_queues_it(
    client, alice, bob, deployed, django_capture_on_commit_callbacks
):
    backfill = submit(deployed, alice, env="prod")
    assert promotion_pending_count(user=bob) == 1
    assert promotion_pending_count(user=alice) == 0  # her own
    client.force_login(bob)

    page = client.get(QUEUE)

    assert page.context["backfill_rows"] == [(backfill, True)]
    html = page.content.decode()
    row = html.split(f'id="approval-backfill-{backfill.id}"')[1].split("</tr>")[0]
    assert "orders-daily" in row
    assert "Prod" in row
    assert "Reload after the fix." in row
    assert reverse("pipelines:backfill-approve", args=[backfill.id]) in row
    assert reverse("pipelines:backfill-reject", args=[backfill.id]) in row
    badge = client.get(reverse("pipelines:approvals-badge")).content.decode()
    assert 'id="approvals-badge"' in badge
    assert ">1</span>" in badge

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(client, bob, "approve", backfill, comment="Go.")

    assert response.status_code == 302
    assert response.url == page_of(backfill)
    backfill.refresh_from_db()
    assert (backfill.state, backfill.decided_by, backfill.decision_comment) == (
        State.QUEUED,
        bob,
        "Go.",
    )
    sent = [callback.args[:2] for callback in callbacks]
    assert ("pipelines.tasks.backfill_step", backfill.id) in sent  # the step is enqueued
    assert promotion_pending_count(user=bob) == 0
    assert "Approved: the backfill is queued" in client.get(response.url).content.decode()


def test_the_requester_neither_decides_nor_counts_her_own(client, alice, deployed):
    backfill = submit(deployed, alice, env="prod")
    client.force_login(alice)
    html = client.get(QUEUE).content.decode()
    row = html.split(f'id="approval-backfill-{backfill.id}"')[1].split("</tr>")[0]
    assert "waiting for another approver" in row
    assert reverse("pipelines:backfill-approve", args=[backfill.id]) not in row

    response = post(client, alice, "approve", backfill)

    assert response.status_code == 403
    assert "Only approvers of team Payments" in response.content.decode()
    backfill.refresh_from_db()
    assert backfill.state == State.AWAITING_APPROVAL


def test_rejecting_needs_a_comment(client, alice, bob, deployed):
    backfill = submit(deployed, alice, env="prod")

    response = post(client, bob, "reject", backfill, comment=" ")

    assert response.status_code == 422
    assert "Say why it is rejected" in response.content.decode()
    backfill.refresh_from_db()
    assert backfill.state == State.AWAITING_APPROVAL
    assert (
        post(client, bob, "reject", backfill, comment="Not during the freeze.").status_code == 302
    )
    backfill.refresh_from_db()
    assert (backfill.state, backfill.decision_comment) == (State.REJECTED, "Not during the freeze.")
    html = client.get(page_of(backfill)).content.decode()
    assert "Rejected by bob" in html
    assert 'id="backfill-controls"' not in html


def test_a_cancelled_backfill_says_what_was_not_run(client, alice, deployed):
    backfill = submit(deployed, alice)
    Backfill.objects.filter(id=backfill.id).update(
        state=State.CANCELLED,
        submitted_at=timezone.now(),
        finished_at=timezone.now(),
        counted={"done": 1, "failed": 0, "cancelled": 5, "running": 1},
    )
    client.force_login(alice)
    html = client.get(page_of(backfill)).content.decode()
    assert '<td data-count="cancelled">5</td>' in html
    assert '<td data-count="failed">0</td>' in html
    assert "1 already running when it was cancelled finish on their own" in html
    listed = client.get(reverse("pipelines:backfills")).content.decode()
    assert "5 cancelled" in listed
    assert "failed</span>" not in listed


def test_submit_with_a_field_the_form_does_not_know_says_so_and_makes_nothing(client, alice, week):
    client.force_login(alice)
    shown = fingerprint(preview(client))

    response = submit_form(client, shown, max_active_run="4")

    assert response.status_code == 200
    assert "Unknown field “max_active_run”" in slot(response.content.decode(), "form")
    assert not Backfill.objects.exists()


def test_a_control_with_a_field_it_does_not_know_is_refused(client, alice, deployed):
    backfill = submit(deployed, alice)

    response = post(client, alice, "cancel", backfill, reason="x")

    assert response.status_code == 422
    assert "Unknown field “reason”" in response.content.decode()
    backfill.refresh_from_db()
    assert backfill.wanted == Backfill.Wanted.RUN
