"""Backfill preview, guardrails and submit (issue 9): every guardrail is a message next to its
field, nothing is submitted; what is submitted is exactly the previewed set."""

from __future__ import annotations

import pytest
import time_machine

from pipelines.backfills import services as backfills
from pipelines.backfills.models import Backfill
from pipelines.core.models import AuditEvent
from pipelines.models import PipelineHealth
from tests.backfills.conftest import NOW, day, scheduled_run
from tests.conftest import make_health, make_user


def preview(deployed, *, env="dev", first=1, last=7, reprocess="missing", active=1, **kw):
    d = deployed[env]
    return backfills.backfill_preview(
        pipeline=d.version.pipeline,
        environment=d.environment,
        first=day(first),
        last=day(last),
        reprocess=reprocess,
        max_active_runs=active,
        **kw,
    )


def refused(deployed, **kw) -> dict[str, str]:
    with pytest.raises(backfills.BackfillError) as caught:
        preview(deployed, **kw)
    return caught.value.errors


def submit(deployed, by, *, env="dev", fingerprint=None, reason="Reload after the fix.", **kw):
    shown = preview(deployed, env=env, **kw)
    d = deployed[env]
    return backfills.backfill_request(
        pipeline=d.version.pipeline,
        environment=d.environment,
        first=shown.first,
        last=shown.last,
        reprocess=shown.reprocess,
        max_active_runs=shown.max_active_runs,
        reason=reason,
        fingerprint=fingerprint or shown.fingerprint,
        by=by,
    )


# --- preview ---------------------------------------------------------------------------------


def test_a_week_previews_seven_runs_with_their_states(deployed):
    dev = deployed["dev"]
    scheduled_run(dev, 2)
    scheduled_run(dev, 3, "failed")
    scheduled_run(dev, 4, "running")
    PipelineHealth.objects.filter(environment=dev.environment).delete()
    make_health(dev.version.pipeline, dev.environment, p50_duration_s=120.0)

    shown = preview(deployed)

    assert shown.counts == {"loaded": 1, "failed": 1, "running": 1, "missing": 4}
    assert shown.partitions == 4  # missing only: 1, 5, 6, 7
    assert shown.first_keys == ["2026-11-01", "2026-11-05", "2026-11-06", "2026-11-07"]
    assert shown.estimate_seconds == 4 * 120.0  # one at a time
    assert preview(deployed, active=4).estimate_seconds == 120.0
    assert shown.next_run.isoformat() == "2026-11-11T02:00:00+00:00"
    assert shown.sla_deadline.isoformat() == "2026-11-11T04:00:00+00:00"  # SLA 120 min


@pytest.mark.parametrize(
    ("reprocess", "runs"),
    [("missing", 4), ("failed", 5), ("all", 6)],  # a running run is never run again
)
def test_the_reprocess_policy_follows_airflow(deployed, reprocess, runs):
    dev = deployed["dev"]
    scheduled_run(dev, 2)
    scheduled_run(dev, 3, "failed")
    scheduled_run(dev, 4, "running")
    assert len(preview(deployed, reprocess=reprocess).to_run) == runs


def test_the_fingerprint_changes_with_what_would_run(deployed):
    before = preview(deployed).fingerprint
    assert preview(deployed).fingerprint == before
    scheduled_run(deployed["dev"], 5)
    assert preview(deployed).fingerprint != before
    assert preview(deployed, active=2).fingerprint != preview(deployed).fingerprint


def test_ten_years_of_hours_fit_in_one_preview(pipeline, envs, alice, frozen):
    from tests.releases.conftest import edit, mark_deployed

    version = edit(
        pipeline,
        alice,
        partition_grain="hour",
        schedule="15 * * * *",
        partition_column="updated_at",
    )
    mark_deployed(version, envs["dev"], alice)
    envs["dev"].backfill_max_partitions = 100_000
    envs["dev"].save()
    shown = backfills.backfill_preview(
        pipeline=pipeline,
        environment=envs["dev"],
        first=day(1).replace(year=2020, month=1),  # the DAG's start date
        last=day(9).replace(hour=23),
        reprocess="all",
        max_active_runs=1,
    )
    hours = (day(10) - day(1).replace(month=1, year=2020)).days * 24  # 2020-01-01 → 11-09 23:00
    assert shown.partitions == shown.counts["missing"] == hours == 60_120
    assert shown.last_keys[-1] == "2026-11-09T23:00"


# --- guardrails ------------------------------------------------------------------------------


def test_end_before_start(deployed):
    assert refused(deployed, first=5, last=3) == {
        "end": "The end, 2026-11-03, is before the start, 2026-11-05."
    }


def test_future_and_incomplete_partitions(deployed):
    errors = refused(deployed, first=8, last=10)
    assert errors == {
        "end": "2026-11-10 is not complete yet in UTC: the latest complete partition is 2026-11-09."
    }


def test_before_the_start_date(deployed):
    d = deployed["dev"]
    with pytest.raises(backfills.BackfillError) as caught:
        backfills.backfill_preview(
            pipeline=d.version.pipeline,
            environment=d.environment,
            first=day(1).replace(year=2019),
            last=day(1),
            reprocess="all",
            max_active_runs=1,
        )
    assert caught.value.errors["start"].startswith("2019-11-01 is before the pipeline's start")


def test_the_environment_cap_and_the_admin_override(deployed, envs, alice):
    envs["dev"].backfill_max_partitions = 5
    envs["dev"].save()
    errors = refused(deployed, by=alice)
    assert errors["end"].startswith("7 partitions is more than Dev's cap of 5")
    assert refused(deployed, by=alice, allow_over_cap=True)  # alice is no admin
    admin = make_user("root")
    admin.is_superuser = True
    admin.save()
    assert preview(deployed, by=admin, allow_over_cap=True).partitions == 7


def test_the_partition_the_scheduled_run_is_about_to_load_is_refused(deployed):
    with time_machine.travel(NOW.replace(hour=1, minute=30), tick=False):
        errors = refused(deployed, first=8, last=9)
        assert preview(deployed, first=7, last=8).partitions == 2
    assert errors == {
        "end": "2026-11-09 is loaded by the scheduled run at 2026-11-10 02:00 UTC, which has "
        "not started yet: a backfill cannot include it. End the range before it, or wait until "
        "the scheduled run has finished."
    }


def test_the_partition_the_scheduled_run_is_loading_is_refused(deployed):
    with time_machine.travel(NOW.replace(hour=2, minute=10), tick=False):
        errors = refused(deployed, first=8, last=9)
    assert errors == {
        "end": "2026-11-09 is being loaded by the scheduled run at 2026-11-10 02:00 UTC: a "
        "backfill of it would race that run. End the range before it, or wait until the "
        "scheduled run has finished."
    }


def test_not_deployed_there(deployed, envs):
    d = deployed["dev"]
    with pytest.raises(backfills.BackfillError) as caught:
        backfills.backfill_preview(
            pipeline=d.version.pipeline,
            environment=envs["stage"],
            first=day(1),
            last=day(2),
            reprocess="all",
            max_active_runs=1,
        )
    assert caught.value.errors == {
        "environment": "orders-daily is not deployed to Stage: deploy it there first."
    }


# --- submit ----------------------------------------------------------------------------------


def test_submit_queues_audits_and_enqueues_on_commit(
    deployed, alice, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        backfill = submit(deployed, alice)
    assert (backfill.state, backfill.partitions, backfill.runs) == ("queued", 7, 7)
    assert (backfill.first_partition, backfill.last_partition) == ("2026-11-01", "2026-11-07")
    assert backfill.from_date.isoformat() == "2026-11-01T02:00:00+00:00"
    assert backfill.to_date.isoformat() == "2026-11-07T02:00:00+00:00"
    assert len(callbacks) == 1
    event = AuditEvent.objects.get(action="backfill_requested")
    assert event.after["partitions"] == 7
    assert event.actor == alice


def test_a_changed_set_is_refused_with_the_new_preview(deployed, alice):
    stale = preview(deployed).fingerprint
    scheduled_run(deployed["dev"], 3)
    with pytest.raises(backfills.BackfillError) as caught:
        submit(deployed, alice, fingerprint=stale)
    assert caught.value.status == 409
    assert caught.value.preview.partitions == 6
    assert not Backfill.objects.exists()


def test_a_second_active_backfill_is_refused(deployed, alice, carol):
    first = submit(deployed, alice)
    with pytest.raises(backfills.BackfillError) as caught:
        submit(deployed, carol, first=6, last=9)
    assert caught.value.errors["start"] == (
        f"A backfill of orders-daily in Dev is queued (#{first.id}, 2026-11-01 → 2026-11-07): "
        "one runs at a time; wait for it to finish or cancel it."
    )


def test_a_reason_is_required_and_outsiders_are_refused(deployed, alice, mallory):
    with pytest.raises(backfills.BackfillError) as caught:
        submit(deployed, alice, reason="  ")
    assert caught.value.errors == {"reason": "Say why: whoever sees the backfill running reads it."}
    with pytest.raises(backfills.BackfillError) as caught:
        submit(deployed, mallory)
    assert caught.value.status == 403


def test_chunks_split_a_long_range_into_airflow_backfills(deployed, alice, settings):
    settings.BACKFILL_CHUNK_RUNS = 3
    backfill = submit(deployed, alice)
    assert [len(c) for c in backfill.chunks] == [2, 2, 2]
    assert [c[0][:10] for c in backfill.chunks] == ["2026-11-01", "2026-11-04", "2026-11-07"]
    assert [c[1][:10] for c in backfill.chunks] == ["2026-11-03", "2026-11-06", "2026-11-07"]


def test_in_an_approval_environment_it_waits_for_an_approver(deployed, alice):
    backfill = submit(deployed, alice, env="prod")
    assert backfill.state == "awaiting_approval"


def test_the_first_and_last_few_never_repeat_each_other(deployed):
    shown = preview(deployed, reprocess="all")
    assert shown.first_keys == [f"2026-11-0{n}" for n in range(1, 6)]
    assert shown.last_keys == ["2026-11-06", "2026-11-07"]
    assert preview(deployed, first=1, last=3).last_keys == []
