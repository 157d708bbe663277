"""The schedule-versus-grain guardrail and the schedule preview, across DST zones.

A run loads the wall-clock partitions in [floor(previous fire), floor(fire)): a daily cron
writes one day per run whatever DST does to the hours between runs, so only schedules that
fire twice in one partition, or that Airflow would make load one partition twice, are refused.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import time_machine
from django.db import transaction
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.authoring.forms import PipelineForm
from pipelines.models import Pipeline
from pipelines.web.middleware import unstorable
from pipelines.web.views import explain_schedule
from tests.conftest import form_data, pipeline_payload

DST_ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Sydney",
    "Europe/London",
    "Australia/Lord_Howe",
    "UTC",
]
ACCEPTED = [
    ("0 2 * * *", "day"),  # the daily preset
    ("0 * * * *", "hour"),  # the hourly preset
    ("0 3 * * 1", "day"),  # the weekly preset
    ("30 2 * * *", "day"),  # skipped on spring-forward nights in New York
    ("30 1 * * *", "day"),  # repeated on fall-back nights in New York
]
# Two dates a year apart so both DST changes of every zone fall within the year checked.
FROZEN = ["2026-01-15T12:00:00Z", "2026-07-15T12:00:00Z"]


def grain_form(alice, cron: str, tz: str, grain: str) -> PipelineForm:
    column = "updated_at" if grain == "hour" else "order_date"
    data = form_data(schedule=cron, timezone=tz, partition_grain=grain, partition_column=column)
    return PipelineForm(data, user=alice)


@pytest.mark.parametrize("frozen", FROZEN)
@pytest.mark.parametrize("tz", DST_ZONES)
@pytest.mark.parametrize(("cron", "grain"), ACCEPTED)
def test_presets_are_accepted_in_every_dst_zone(alice, orders, cron, grain, tz, frozen):
    with time_machine.travel(frozen, tick=False):
        form = grain_form(alice, cron, tz, grain)
        assert form.is_valid(), form.errors


@pytest.mark.parametrize("tz", DST_ZONES)
@pytest.mark.parametrize(
    ("cron", "grain", "message"),
    [
        ("0 * * * *", "day", "fires 24 times a day, as little as 1 hour apart"),
        ("0 2,14 * * *", "day", "12 hours apart"),
        ("*/30 * * * *", "hour", "fires 2 times a hour, as little as 30 minutes apart"),
        ("0,1 3 * * 1", "day", "1 minute apart"),
    ],
)
def test_two_fires_in_one_partition_are_refused_in_every_zone(
    alice, orders, cron, grain, tz, message
):
    with time_machine.travel(FROZEN[0], tick=False):
        form = grain_form(alice, cron, tz, grain)
        assert not form.is_valid()
    assert any(message in e for e in form.errors["schedule"]), form.errors
    assert any(f"writes one partition per {grain}" in e for e in form.errors["schedule"])


@pytest.mark.parametrize(
    ("cron", "tz", "partition"),
    [
        # Airflow steps an hour-"*" cron by real time: at :30 across Lord Howe's 30-minute
        # changes it makes the next run start before the last one ended.
        ("30 * * * *", "Australia/Lord_Howe", "2026-04-05T01:00"),
        # Troll's clocks go back two hours: the 01:00 hour is loaded, then loaded again.
        ("0 * * * *", "Antarctica/Troll", "2026-10-25T01:00"),
    ],
)
def test_dst_changes_that_make_airflow_load_a_partition_twice_are_refused(
    alice, orders, cron, tz, partition
):
    with time_machine.travel(FROZEN[0], tick=False):
        form = grain_form(alice, cron, tz, "hour")
        assert not form.is_valid()
    assert any(f"two runs load partition {partition}" in e for e in form.errors["schedule"])


def test_rare_cron_gets_an_answer_not_a_500(client, alice, orders, environments):
    client.force_login(alice)
    with time_machine.travel(FROZEN[0], tick=False):
        response = client.post(reverse("pipelines:create"), form_data(schedule="0 0 29 2 *"))
    assert response.status_code == 302
    assert Pipeline.objects.get().versions.first().spec.schedule == "0 0 29 2 *"


# --- Any cron croniter accepts gets acceptance or a field error ---------------------------

FIELD_NAMES = {
    2: ["jan", "feb", "mar", "dec", "JAN"],
    3: ["mon", "tue", "sun", "sat", "MON"],
}
FIELD_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


@st.composite
def cron_field(draw, index: int) -> str:
    lo, hi = FIELD_RANGES[index]
    number = st.integers(lo - 1, hi + 1).map(str)
    names = FIELD_NAMES.get(index - 1, [])
    atom = st.one_of(number, st.sampled_from(names)) if names else number
    part = st.one_of(
        st.just("*"),
        atom,
        st.tuples(atom, atom).map("-".join),
        st.tuples(st.one_of(st.just("*"), atom), st.integers(0, 70)).map(
            lambda t: f"{t[0]}/{t[1]}"
        ),
        st.sampled_from(["L", "?", "1#2", "5L", "H", "W", "", "--", "**", "½"]),
        st.text(max_size=4),
    )
    return ",".join(draw(st.lists(part, min_size=1, max_size=3)))


CRONS = st.one_of(
    st.tuples(*(cron_field(i) for i in range(5))).map(" ".join),
    st.sampled_from(["0 0 29 2 *", "0 0 30 2 *", "0 0 31 */2 *", "* * 31 2 mon", "@yearly"]),
    st.text(max_size=30),
)
ZONES = st.sampled_from([*DST_ZONES, "Antarctica/Troll", "America/Santiago", "Asia/Tehran"])
GRAINS = st.sampled_from(["day", "hour"])


def fuzz_world():
    """alice and the orders source, made once per test (hypothesis reuses the transaction)."""
    from pipelines.models import Team
    from tests.conftest import make_source, make_user

    team, created = Team.objects.get_or_create(
        slug="payments", defaults={"name": "Payments", "domain": "finance"}
    )
    if created:
        make_user("alice", team)
        make_source()
    return team.memberships.get().user


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cron=CRONS, tz=ZONES, grain=GRAINS)
@pytest.mark.django_db
def test_any_cron_gets_acceptance_or_a_schedule_error_through_the_form(cron, tz, grain):
    alice = fuzz_world()
    with time_machine.travel(FROZEN[0], tick=False):
        form = grain_form(alice, cron, tz, grain)
        valid = form.is_valid()
        preview = explain_schedule(cron, tz, grain=grain)
    if not valid:
        assert set(form.errors) <= {"schedule"}, form.errors
    assert "error" in preview or "times" in preview


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cron=CRONS, tz=ZONES)
@pytest.mark.django_db
def test_any_cron_gets_an_answer_never_a_500_from_the_api(cron, tz):
    from django.test import Client

    from pipelines.core.tokens import token_create

    alice = fuzz_world()
    client = Client(headers={"authorization": f"Bearer {token_create(user=alice)}"})
    # Each example's pipeline is rolled back, not deleted: its audit event may not be deleted.
    with time_machine.travel(FROZEN[0], tick=False):
        # The page's form decides the same input the same way (same rules).
        page_accepts = grain_form(alice, cron, tz, "day").is_valid()
        with transaction.atomic():
            response = client.post(
                "/api/v1/pipelines",
                json.dumps(pipeline_payload(schedule=cron, timezone=tz)),
                content_type="application/json",
            )
            transaction.set_rollback(True)
    if unstorable(cron):
        # Text PostgreSQL cannot store (NUL, lone surrogates): refused before the form.
        assert response.status_code == 400, response.content
        assert "holds a NUL character or a lone surrogate" in response.json()["detail"]
    elif page_accepts:
        assert response.status_code == 201, response.content
    else:
        assert response.status_code == 422, response.content
        assert set(response.json()["errors"]) == {"schedule"}, response.json()
    assert not Pipeline.objects.exists()


# --- The preview flags fires DST skips or repeats -----------------------------------------


def test_preview_says_when_a_skipped_fire_runs_and_what_it_loads():
    explain = explain_schedule(
        "30 2 * * *", "America/New_York", datetime(2027, 1, 10, tzinfo=UTC), grain="day"
    )
    assert explain["dst"][0] == (
        "2027-03-14",
        "02:30 does not exist in America/New_York (clocks jump from 02:00 to 03:00); "
        "Airflow runs at 03:30 EDT, and it loads 2027-03-13 as usual.",
    )
    assert len(explain["dst"]) == 1  # 02:30 is not repeated in November


def test_preview_says_a_repeated_fire_runs_once_at_the_second():
    explain = explain_schedule(
        "30 1 * * *", "America/New_York", datetime(2027, 1, 10, tzinfo=UTC), grain="day"
    )
    assert explain["dst"] == [
        (
            "2027-11-07",
            "01:30 happens twice in America/New_York (clocks go back from 02:00 to 01:00); "
            "Airflow runs once, at the second 01:30 (EST), and it loads 2027-11-06 as usual.",
        )
    ]


def test_preview_says_the_second_hourly_run_of_a_repeated_hour_is_skipped():
    explain = explain_schedule(
        "0 * * * *", "Europe/London", datetime(2027, 6, 1, tzinfo=UTC), grain="hour"
    )
    ((day, text),) = [note for note in explain["dst"] if note[0] == "2027-10-31"]
    assert "01:00 happens twice in Europe/London" in text
    assert "at 01:00 BST, and it loads 2027-10-31T00:00 as usual" in text
    assert "then at 01:00 GMT, and it loads nothing" in text


def test_preview_has_no_dst_notes_in_utc_or_when_no_fire_is_touched():
    now = datetime(2027, 1, 10, tzinfo=UTC)
    assert explain_schedule("0 2 * * *", "UTC", now)["dst"] == []
    assert explain_schedule("0 12 * * *", "America/New_York", now)["dst"] == []


def test_schedule_fragment_shows_the_dst_notes(client, alice):
    with time_machine.travel("2027-01-10T00:00:00Z", tick=False):
        client.force_login(alice)
        response = client.get(
            reverse("pipelines:schedule-explain"),
            {"schedule": "0 2 * * *", "timezone": "Europe/Berlin", "partition_grain": "day"},
        )
    page = response.content.decode()
    assert response.status_code == 200
    assert "Daylight-saving changes in the next year" in page
    assert "2027-03-28" in page
    assert "02:00 does not exist in Europe/Berlin" in page
    assert "Airflow runs at 03:00 CEST, and it loads 2027-03-27 as usual." in page
    assert "runs once, at the second 02:00 (CET)" in page
