"""LocalAirflow's environment: the metadata database is SQLite in the home unless a PostgreSQL
URL is given, which Airflow gets in SQLAlchemy's form with the psycopg2 driver."""

from __future__ import annotations

import json

import pytest

from orchestrator import local
from orchestrator.local import LocalAirflow

SQL_ALCHEMY_CONN = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"


@pytest.mark.parametrize(
    ("url", "conn"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/portal_it_airflow",
            "postgresql+psycopg2://postgres@127.0.0.1:5432/portal_it_airflow",
        ),
        ("postgres://u:p%40ss@db/af", "postgresql+psycopg2://u:p%40ss@db/af"),
        ("postgresql+psycopg2://u@db/af", "postgresql+psycopg2://u@db/af"),
    ],
)
def test_a_postgresql_metadata_db_reaches_airflow_with_the_psycopg2_driver(tmp_path, url, conn):
    env = LocalAirflow(home=tmp_path, metadata_db=url).env()

    assert env[SQL_ALCHEMY_CONN] == conn


def test_without_a_metadata_db_airflow_keeps_sqlite_even_if_the_shell_names_another(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(SQL_ALCHEMY_CONN, "postgresql+psycopg2://someone@elsewhere/theirs")

    env = LocalAirflow(home=tmp_path).env()

    assert SQL_ALCHEMY_CONN not in env  # Airflow's default: sqlite in AIRFLOW_HOME
    assert env["AIRFLOW_HOME"] == str(tmp_path.resolve())


@pytest.mark.parametrize("url", ["sqlite:////tmp/airflow.db", "mysql://u@db/af", "127.0.0.1/af"])
def test_a_metadata_db_that_is_not_postgresql_is_refused_when_configured(tmp_path, url):
    with pytest.raises(ValueError, match="Not a PostgreSQL URL"):
        LocalAirflow(home=tmp_path, metadata_db=url)

    assert not tmp_path.joinpath("simple_auth_manager_passwords.json").exists()


def test_the_start_command_passes_the_metadata_db(tmp_path, monkeypatch, capsys):
    started: list[LocalAirflow] = []
    monkeypatch.setattr(LocalAirflow, "start", lambda self, timeout: started.append(self))
    monkeypatch.setattr(LocalAirflow, "health", lambda self: None)
    url = "postgresql://postgres@127.0.0.1:5432/af"

    code = local.main(["start", "--home", str(tmp_path), "--metadata-db", url])

    assert code == 0
    (airflow,) = started
    assert airflow.metadata_db == url
    assert airflow.env()[SQL_ALCHEMY_CONN] == "postgresql+psycopg2://postgres@127.0.0.1:5432/af"
    assert json.loads(capsys.readouterr().out)["home"] == str(tmp_path.resolve())


def test_ensure_venv_installs_at_the_locked_versions_and_again_when_the_lock_changes(
    tmp_path, monkeypatch
):
    calls = []

    def run(cmd, check):
        calls.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            (tmp_path / "venv" / "bin").mkdir(parents=True)
            (tmp_path / "venv" / "bin" / "python").touch()
        else:
            (tmp_path / "venv" / "bin" / "airflow").touch()

    monkeypatch.setattr(local.subprocess, "run", run)
    lock = tmp_path / "airflow.lock.txt"
    lock.write_text("apache-airflow==3.3.2\n")
    venv = tmp_path / "venv"

    local.ensure_venv(venv, lock=lock)
    install = calls[-1]
    assert install[1:] == [
        "-m",
        "pip",
        "install",
        "--quiet",
        "-c",
        str(lock),
        *local.AIRFLOW_REQUIREMENTS,
    ]
    local.ensure_venv(venv, lock=lock)
    assert len(calls) == 2  # venv + install; unchanged: nothing more
    lock.write_text("apache-airflow==3.3.2\nsqlalchemy==2.0.49\n")
    local.ensure_venv(venv, lock=lock)
    assert calls[-1] == install  # a new lock reinstalls
    assert len(calls) == 3
