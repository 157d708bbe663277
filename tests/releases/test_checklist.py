"""The readiness checklist: each check from facts, with its reason; extensible; never a 500."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from pipelines.alerts.models import Alert
from pipelines.models import PipelineHealth, RunRecord, RunRequest
from pipelines.releases import checklist as readiness
from tests.releases.conftest import edit, mark_deployed, succeed


def items(version, env) -> dict[str, readiness.Item]:
    return {item.check: item for item in readiness.checklist(version, env)}


def test_every_check_passes_for_a_ready_version_and_says_why(ready, envs):
    found = items(ready, envs["stage"])
    assert [c.name for c in readiness.CHECKS] == list(found)
    assert all(item.ok for item in found.values()), [i for i in found.values() if not i.ok]
    assert found["successful_run"].reason.startswith("1 successful run in Dev within 7 days")
    assert found["alert_route"].reason == "Alert route: payments-alerts@example.com."
    assert {i.check for i in found.values() if not i.blocking} == {"target_quiet", "dst"}


def test_prod_pages_on_call_so_the_route_must_be_the_on_call_one(ready, envs, team, alice):
    team.oncall_email = ""
    team.save()
    found = items(ready, envs["prod"])
    assert not found["alert_route"].ok
    assert "no on-call email or webhook" in found["alert_route"].reason


def test_owner_outside_the_team_or_deactivated(ready, envs, pipeline, alice, team):
    team.memberships.filter(user=alice).delete()
    assert (
        items(ready, envs["stage"])["owner"].reason
        == "Owner alice is not a member of team Payments."
    )
    alice.is_active = False
    alice.save()
    assert "deactivated" in items(ready, envs["stage"])["owner"].reason


def test_spec_checks_read_the_version(pipeline, envs, alice):
    version = edit(pipeline, alice, sla_minutes="", runbook_url="", retries=0)
    found = items(version, envs["stage"])
    assert [found[name].ok for name in ("sla", "runbook", "retries")] == [False, False, False]
    assert found["retries"].reason == "Retries is 0: one network blip fails the run."


def test_a_run_of_an_older_version_does_not_count(ready, envs, alice, pipeline):
    dev = envs["dev"]
    succeed(ready, dev, ago=2)
    version2 = edit(pipeline, alice, description="v2")
    mark_deployed(version2, dev, alice, ago=1)
    found = items(version2, envs["stage"])
    assert not found["successful_run"].ok  # the successes were v1's, before v2 was registered
    succeed(version2, dev, ago=0.5)
    assert items(version2, envs["stage"])["successful_run"].ok
    # v1's window ends where v2 took over: v2's run is not v1's.
    RunRecord.objects.filter(start_date__lt=timezone.now() - timedelta(minutes=45)).delete()
    assert not items(ready, envs["stage"])["successful_run"].ok


def test_the_window_is_the_target_environments(ready, envs):
    RunRecord.objects.update(start_date=timezone.now() - timedelta(days=3))
    stage = envs["stage"]
    stage.readiness_success_days = 2
    stage.save()
    found = items(ready, stage)
    assert not found["successful_run"].ok
    assert "within the last 2 days" in found["successful_run"].reason


def test_stale_data_and_open_pages_block(ready, envs, pipeline):
    dev = envs["dev"]
    PipelineHealth.objects.filter(environment=dev).update(
        freshness_lag_partitions=3, freshness_lag_hours=50.0
    )
    Alert.objects.create(
        key=Alert.key_for(pipeline.id, dev.id, "run_failed"),
        pipeline=pipeline,
        environment=dev,
        team=pipeline.team,
        kind="run_failed",
        severity="page",
        summary="Last run failed after all retries.",
        portal_url="http://portal.test/",
        opened_at=timezone.now(),
        last_seen_at=timezone.now(),
    )
    found = items(ready, envs["stage"])
    assert found["fresh"].reason == "Dev is 3 partition(s) behind (50.0 h)."
    assert found["no_page_alert"].reason == "Run failed in Dev: Last run failed after all retries."


def test_an_active_run_in_the_target_is_advisory(ready, envs, pipeline, alice):
    RunRequest.objects.create(
        pipeline=pipeline,
        environment=envs["stage"],
        partition="2026-11-20",
        dag_id="stage__orders_daily",
        dag_run_id="portal__x",
        logical_date=timezone.now(),
        requested_by=alice,
        state="submitted",
        run_state="running",
    )
    item = items(ready, envs["stage"])["target_quiet"]
    assert (item.ok, item.blocking) == (False, False)
    assert "2026-11-20" in item.reason


def test_a_check_that_raises_fails_with_its_error_and_the_others_still_run(
    ready, envs, monkeypatch
):
    def broken(facts):
        raise KeyError("nope")

    monkeypatch.setattr(
        readiness, "CHECKS", [*readiness.CHECKS, readiness.Check("broken", "Broken", True, broken)]
    )
    found = items(ready, envs["stage"])
    assert found["broken"].reason.startswith("The check itself failed: an internal error (ref")
    assert "nope" not in found["broken"].reason
    assert found["owner"].ok


def test_the_facts_take_a_fixed_number_of_queries(
    ready, envs, alice, django_assert_max_num_queries
):
    for hours in range(20):
        succeed(ready, envs["dev"], ago=hours / 10)
    with django_assert_max_num_queries(14):
        readiness.checklist(ready, envs["stage"])


def test_nothing_loaded_is_not_fresh(ready, envs):
    PipelineHealth.objects.update(latest_loaded_partition=None, freshness_lag_partitions=None)
    item = items(ready, envs["stage"])["fresh"]
    assert (item.ok, item.reason) == (False, "No partition is loaded in Dev yet.")
