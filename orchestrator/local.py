"""Run a local Apache Airflow 3.3.2 (``airflow standalone``) for development and integration tests.

Standard library only: this module runs in the portal's virtualenv and drives Airflow, which lives
in its own virtualenv (``REPO/.airflow/venv``), through subprocesses.

    python -m orchestrator.local start --home /tmp/af --port 8090 --conn demo_source=sqlite:////tmp/s.db
    python -m orchestrator.local start --home /tmp/af --metadata-db postgresql://postgres@127.0.0.1/af
    python -m orchestrator.local status --home /tmp/af --port 8090
    python -m orchestrator.local stop --home /tmp/af
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VENV = REPO / ".airflow" / "venv"
DEFAULT_HOME = REPO / ".airflow" / "home"
AIRFLOW_REQUIREMENTS = [
    "apache-airflow==3.3.2",
    "apache-airflow-providers-postgres==7.1.1",
    "apache-airflow-providers-sqlite==4.3.4",
]

_MARKER = "portal-requirements.sha256"
BUNDLE_REFRESH_CHECK_INTERVAL = 1  # seconds
# Components that must report "healthy" before the instance is usable: the API answers, the
# scheduler queues runs and the dag-processor discovers files. The triggerer is not needed.
_REQUIRED_COMPONENTS = ("metadatabase", "scheduler", "dag_processor")
# Inherited variables that would leak another Airflow's settings into ours.
_DROPPED_ENV_PREFIXES = ("AIRFLOW_", "PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV")


def sqlite_conn_uri(path: Path) -> str:
    """Return the Airflow connection URI for a SQLite file (the absolute path is the host).

    ``sqlite:////abs/path.db`` parses, but SqliteHook then opens ``file://tmp/...`` and fails
    with "invalid uri authority".
    """
    return "sqlite://" + urllib.parse.quote(str(Path(path).resolve()), safe="")


def metadata_db_conn(url: str) -> str:
    """Return Airflow's ``sql_alchemy_conn`` for a ``postgresql://`` (or ``postgres://``) URL.

    A bare scheme would make SQLAlchemy pick its default driver; name psycopg2, the one Airflow
    recommends and its venv has (Airflow derives the API server's asyncpg URL from this one). A
    URL that already names a driver is kept. Anything else raises ValueError: the metadata
    database is SQLite in the home unless a PostgreSQL URL is given.

    Reference: https://airflow.apache.org/docs/apache-airflow/stable/howto/set-up-database.html
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg2://{rest}"
    if sep and scheme.startswith("postgresql+"):
        return url
    raise ValueError(f"Not a PostgreSQL URL for Airflow's metadata database: {url!r}")


def ensure_venv(venv: Path = DEFAULT_VENV, extra: Sequence[str] = ()) -> Path:
    """Create ``venv`` with the pinned Airflow unless already done; return its ``airflow`` binary.

    A marker file inside the venv holds a hash of the requirement list (pins plus ``extra``), so a
    changed pin or extra package reinstalls; an unchanged one costs a file read.
    """
    venv = Path(venv)
    requirements = [*AIRFLOW_REQUIREMENTS, *extra]
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()
    marker = venv / _MARKER
    airflow = venv / "bin" / "airflow"
    if airflow.exists() and marker.is_file() and marker.read_text().strip() == digest:
        return airflow
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements], check=True)
    marker.write_text(digest + "\n")
    return airflow


@dataclass(frozen=True)
class DagCheck:
    """Outcome of parsing a folder of DAG files with Airflow's DagBag."""

    dag_ids: list[str]
    import_errors: dict[str, str]  # file name relative to the folder -> error text
    warnings: dict[str, list[str]]  # file name relative to the folder -> warnings raised at parse
    parse_seconds: float  # DagBag construction only, without `import airflow`

    @property
    def ok(self) -> bool:
        return not self.import_errors and not self.warnings


_VALIDATE_SCRIPT = """
import json, os, sys, time
folder, out = sys.argv[1], sys.argv[2]
from airflow.dag_processing.dagbag import DagBag

started = time.perf_counter()
bag = DagBag(folder, safe_mode=False)
elapsed = time.perf_counter() - started

def rel(path):
    return os.path.relpath(path, folder) if os.path.isabs(path) else path

with open(out, "w") as fh:
    json.dump({
        "dag_ids": sorted(bag.dag_ids),
        "import_errors": {rel(k): v for k, v in bag.import_errors.items()},
        "warnings": {rel(k): list(v) for k, v in bag.captured_warnings.items()},
        "parse_seconds": elapsed,
    }, fh)
"""


def validate_dag_files(folder: Path, venv: Path = DEFAULT_VENV, timeout: float = 300) -> DagCheck:
    """Parse every DAG file in ``folder`` in a throwaway Airflow process and report what it found.

    Needs no running Airflow and no metadata database; costs ~1.2 s of ``import airflow``.
    """
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="airflow-validate-") as scratch:
        out = Path(scratch) / "result.json"
        env = _clean_environ(venv)
        env.update(
            {
                # Without AIRFLOW_HOME Airflow would create ~/airflow.
                "AIRFLOW_HOME": str(Path(scratch) / "home"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
            }
        )
        proc = subprocess.run(
            [str(Path(venv) / "bin" / "python"), "-c", _VALIDATE_SCRIPT, str(folder), str(out)],
            env=env,
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"DAG validation failed to run:\n{proc.stderr[-4000:]}")
        return DagCheck(**json.loads(out.read_text()))


@dataclass
class LocalAirflow:
    """A local Airflow (standalone: api-server, scheduler, dag-processor, triggerer) in home.

    Listens on 127.0.0.1:port; the task-log servers take port + 1 and port + 2. The metadata
    database is SQLite in home unless ``metadata_db`` names an existing PostgreSQL database:
    SQLite serialises Airflow's writers, so with a backfill created while the scheduler writes
    Airflow 3.3 answers 503 or its scheduler dies. ``airflow standalone`` creates the tables of
    an empty database and migrates an older one (``airflow db migrate``) on every start.
    """

    home: Path
    port: int = 8080
    dags_folder: Path | None = None  # default: home / "dags"
    venv: Path = DEFAULT_VENV
    users: dict[str, str] = field(default_factory=lambda: {"admin": "admin", "portal": "portal"})
    # Simple auth manager roles (viewer, user, op, admin); a user not listed here gets "op".
    roles: dict[str, str] = field(default_factory=lambda: {"admin": "admin"})
    connections: dict[str, str] = field(default_factory=dict)  # conn_id -> URI
    refresh_interval: int = 3
    parallelism: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    metadata_db: str | None = None  # postgresql://…; None: SQLite in home
    _process: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.dags_folder = Path(self.dags_folder or self.home / "dags").resolve()
        self.venv = Path(self.venv)
        if self.metadata_db is not None:
            metadata_db_conn(self.metadata_db)  # a wrong URL fails here, not in Airflow's log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "airflow.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "standalone.log"

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"

    # -- environment ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Return the full environment for Airflow processes (writes the auth and secret files)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_private(self.passwords_file, json.dumps(self.users, indent=2))
        keys = self._secrets()
        env = _clean_environ(self.venv)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW_CONFIG": str(self.home / "airflow.cfg"),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                # Default 32 spawns 32 idle workers (~30 MB each).
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                    f"{name}:{self.roles.get(name, 'op')}" for name in self.users
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                # Workers reach the API server's execution API; without a base URL Airflow assumes
                # http://localhost:8080, so every task on another port would fail.
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                # Fixed secrets so a restart keeps issued JWTs (24 h) valid.
                "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
                "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
                # Default 300 s: a new file would take minutes to appear.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(self.refresh_interval),
                # How often the processor asks whether a folder scan is due (default 5 s, which
                # would make any refresh_interval below 5 act like 5).
                "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": str(
                    BUNDLE_REFRESH_CHECK_INTERVAL
                ),
                # The scheduler and triggerer serve task logs on 8793/8794 by default (all
                # interfaces); derive them from the API port so two instances can coexist.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.port + 1),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.port + 2),
                "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
                "NO_COLOR": "1",
            }
        )
        if self.metadata_db is not None:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_db_conn(self.metadata_db)
        env.update(
            {f"AIRFLOW_CONN_{conn_id.upper()}": uri for conn_id, uri in self.connections.items()}
        )
        env.update(self.extra_env)
        return env

    def _secrets(self) -> dict[str, str]:
        path = self.home / "portal-secrets.json"
        if not path.exists():
            self._write_private(
                path,
                json.dumps(
                    {
                        "jwt_secret": secrets.token_urlsafe(32),
                        "secret_key": secrets.token_urlsafe(32),
                        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                    }
                ),
            )
        return json.loads(path.read_text())

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        if path.exists() and path.read_text() == text:
            return
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        tmp.replace(path)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, wait: bool = True, timeout: float = 120) -> None:
        """Start Airflow unless it already answers healthy on ``port``; wait until it is usable.

        Raises RuntimeError with the log tail if it exits or is not healthy within ``timeout``.
        """
        if self.healthy():
            return
        if self.pid() is None:  # also clears a stale pid file
            if _port_in_use(self.port):
                raise RuntimeError(
                    f"Port {self.port} is taken by something that is not a healthy Airflow."
                )
            self._spawn()
        if wait:
            self.wait_healthy(timeout)

    def _spawn(self) -> None:
        env = self.env()
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(
                f"\n==== orchestrator.local start {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode()
            )
            log.flush()
            # start_new_session = setsid: own process group, so stop() reaches every component.
            self._process = subprocess.Popen(
                [str(self.venv / "bin" / "airflow"), "standalone"],
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._process.pid}\n")

    def wait_healthy(self, timeout: float = 120) -> None:
        """Poll the health endpoint until the required components are healthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            if self._process is not None and self._process.poll() is not None:
                code, tail = self._process.returncode, self.log_tail()
                self.stop()  # components it spawned may outlive it
                raise RuntimeError(f"Airflow exited with {code} during start-up:\n{tail}")
            if self._process is None and self.pid() is None:
                raise RuntimeError(f"Airflow is not running:\n{self.log_tail()}")
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"Airflow not healthy after {timeout:.0f} s:\n{tail}")

    def stop(self, timeout: float = 30) -> bool:
        """SIGTERM the process group, SIGKILL it after ``timeout``; False if it was not running."""
        pgid = self.pid()
        if pgid is None:
            return False
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            while self._group_alive(pgid) and time.monotonic() < deadline + 10:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        self._process = None
        return True

    def pid(self) -> int | None:
        """Return the process group id of a running instance; remove a stale pid file."""
        try:
            pgid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if self._group_alive(pgid):
            return pgid
        self.pid_file.unlink(missing_ok=True)
        return None

    def _group_alive(self, pgid: int) -> bool:
        if self._process is not None and self._process.pid == pgid:
            self._process.poll()  # reap our own child, or the zombie keeps the group "alive"
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # the pid was reused by someone else's process group
            return False
        return True

    def status(self) -> dict[str, Any]:
        """Return pid (or None), health and where to find it."""
        health = self.health()
        return {
            "pid": self.pid(),
            "healthy": _is_healthy(health),
            "url": self.url,
            "home": str(self.home),
            "dags_folder": str(self.dags_folder),
            "log": str(self.log_file),
            "components": {name: part.get("status") for name, part in (health or {}).items()},
        }

    def run_foreground(self, timeout: float = 120) -> int:
        """Start, block until SIGINT/SIGTERM (or Airflow exits), then stop; return an exit code."""

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            self.start(timeout=timeout)
            users = ", ".join(f"{name}/{pw}" for name, pw in self.users.items())
            print(
                f"Airflow at {self.url} (users {users}); log {self.log_file}. Ctrl-C stops it.",
                flush=True,
            )
            while self.pid() is not None:
                time.sleep(1)
            print(f"Airflow exited; see {self.log_file}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the stop
            try:
                self.stop()
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, previous)

    # -- HTTP ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any] | None:
        """Return GET /api/v2/monitor/health as a dict, or None if Airflow does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as resp:
                return json.load(resp)
        except (OSError, ValueError):
            return None

    def healthy(self) -> bool:
        return _is_healthy(self.health())

    def token(self, username: str = "portal") -> str:
        """Return a JWT for ``username`` (POST /auth/token)."""
        body = json.dumps({"username": username, "password": self.users[username]}).encode()
        request = urllib.request.Request(
            f"{self.url}/auth/token", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.load(resp)["access_token"]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def validate_dag_files(self, folder: Path | None = None) -> DagCheck:
        """Parse ``folder`` (default: the DAGs folder) with this instance's venv."""
        return validate_dag_files(folder or self.dags_folder, venv=self.venv)


def _clean_environ(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    # `airflow standalone` spawns `airflow <component>` by name: the venv's bin must come first.
    env["PATH"] = os.pathsep.join([str(Path(venv) / "bin"), env.get("PATH", os.defpath)])
    env["VIRTUAL_ENV"] = str(venv)
    return env


def _is_healthy(health: dict[str, Any] | None) -> bool:
    return bool(health) and all(
        (health.get(name) or {}).get("status") == "healthy" for name in _REQUIRED_COMPONENTS
    )


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ensure-venv, start, stop, status, foreground, validate."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.local", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "command", choices=["ensure-venv", "start", "stop", "status", "foreground", "validate"]
    )
    parser.add_argument("folder", nargs="?", type=Path, help="DAG folder for `validate`")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--dags-folder", type=Path)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--conn", action="append", default=[], metavar="ID=URI", help="repeatable")
    parser.add_argument(
        "--metadata-db",
        metavar="URL",
        help="postgresql:// URL of an existing database for Airflow's metadata (default: SQLite)",
    )
    parser.add_argument(
        "--extra", action="append", default=[], help="extra pip requirement (ensure-venv)"
    )
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)

    if args.command == "ensure-venv":
        print(ensure_venv(args.venv, extra=args.extra))
        return 0
    if args.command == "validate":
        check = validate_dag_files(
            args.folder or args.dags_folder or args.home / "dags", venv=args.venv
        )
        print(json.dumps(check.__dict__, indent=2))
        return 0 if check.ok else 1
    connections = dict(item.split("=", 1) for item in args.conn)
    airflow = LocalAirflow(
        home=args.home,
        port=args.port,
        dags_folder=args.dags_folder,
        venv=args.venv,
        connections=connections,
        metadata_db=args.metadata_db,
    )
    if args.command == "start":
        airflow.start(timeout=args.timeout)
    elif args.command == "stop":
        airflow.stop()
    elif args.command == "foreground":
        return airflow.run_foreground(timeout=args.timeout)
    print(json.dumps(airflow.status(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
