"""AirflowClient: the only module that speaks HTTP to Airflow (REST API v2, Airflow 3.3).

Reference: https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html
One requests.Session per client with connect/read timeouts; urllib3 retries connection errors
and 502/503/504 with exponential backoff (those calls are safe to repeat: triggers carry a
deterministic dag_run_id, so a repeated POST answers 409, which callers treat as done). Creating
a backfill is not: Airflow gives each one a new id, so a create is sent once (connection errors
aside: nothing was sent) and a lost or 5xx answer is the caller's to reconcile with the list of
backfills (AirflowUnavailable). A JWT from /auth/token is fetched lazily and fetched again once
on a 401.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import posixpath
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests
from django.conf import settings
from django.db import models
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

logger = logging.getLogger(__name__)


class DagRunState(models.TextChoices):
    """An Airflow DagRun's state (REST API v2 `DagRunState`), as the portal's rows keep it."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCESS = "success", "Success"
    FAILED = "failed", "Failed"


# A run in one of these states changes no more.
TERMINAL_RUN_STATES = frozenset({DagRunState.SUCCESS, DagRunState.FAILED})


class AirflowError(Exception):
    """Airflow answered with an error; `message` is Airflow's own text."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AirflowUnavailable(AirflowError):
    """Airflow could not be reached or answered 5xx after retries: transient, retry later."""


class AirflowAuthError(AirflowError):
    """Bad credentials (401) or not allowed (403): permanent until someone fixes the config."""


class AirflowCredentialsError(AirflowError):
    """The environment's credentials cannot be read (a variable unset, or a name not allowed)."""


class AirflowNotFound(AirflowError):
    """404: the DAG, run or file is not known to Airflow."""


class AirflowConflict(AirflowError):
    """409: the thing already exists (a run with this id or logical date)."""


class AirflowBackfillRunning(AirflowConflict):
    """409 on creating a backfill: the DAG has one that has not completed (one per DAG)."""


@dataclass(frozen=True)
class ImportError_:
    filename: str
    stack_trace: str
    timestamp: str


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:2000] or response.reason
    if isinstance(body, dict):
        detail = body.get("detail", body)
        if isinstance(detail, list):  # FastAPI validation errors
            return "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail
            )
        return str(detail)
    return str(body)


MAX_REASON_CHARS = 2000


def first_failed(instances: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the task instance that failed first (the others failed because of it)."""
    failed = [t for t in instances if t.get("state") == "failed"]
    return min(failed, key=lambda t: t.get("end_date") or "") if failed else None


def log_message(log: list[dict[str, Any] | str]) -> str:
    """Return the exception (or last error line) a task log ends with; "" if none.

    Airflow 3 logs are structured: the line "Task failed with exception" carries
    `error_detail`, a list of exceptions with their type and value.
    """
    for entry in reversed(log):
        if not isinstance(entry, dict):
            continue
        details = [d for d in entry.get("error_detail") or [] if isinstance(d, dict)]
        if details:
            # The chain lists causes too ("raise … from …"): the raised one is not a cause.
            detail = next((d for d in details if not d.get("is_cause")), details[0])
            kind, value = str(detail.get("exc_type", "")), str(detail.get("exc_value", ""))
            # AirflowFailException carries the DAG's own sentence: the type adds nothing.
            return value if kind == "AirflowFailException" and value else f"{kind}: {value}"
    for entry in reversed(log):
        if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
            return str(entry.get("event", ""))
    lines = [line for item in log if isinstance(item, str) for line in item.splitlines()]
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return errors[-1].strip() if errors else ""


def explain_failure(
    instances: list[dict[str, Any]],
    failed: dict[str, Any] | None,
    log: list[dict[str, Any] | str],
) -> str:
    if failed is None:
        timed_out = [t["task_id"] for t in instances if t.get("state") in ("running", "queued")]
        if timed_out:
            return f"The run was marked failed while {', '.join(timed_out)} had not finished."
        return "The run was marked failed without a failed task (by hand, or a run timeout)."
    task_id = failed.get("task_id", "?")
    tries = int(failed.get("try_number") or 1)
    after = f" (try {tries})" if tries > 1 else ""
    message = log_message(log) or "no error message in its log"
    return f"{task_id} failed{after}: {message}"[:MAX_REASON_CHARS]


def run_failure_text(client: Any, dag_id: str, dag_run_id: str) -> str | None:
    """Why a failed run failed, as the portal shows it; None while Airflow is unreachable.

    An answer Airflow cannot give (the run or its log is gone) is itself the text, so callers
    store it once instead of asking again forever.
    """
    try:
        return client.failure_reason(dag_id, dag_run_id) or "Airflow gave no reason."
    except AirflowUnavailable:
        return None
    except AirflowError as exc:
        return f"Airflow could not say why this run failed: {exc.message}"


def url_problem(url: str) -> str | None:
    """Why `url` cannot be an Airflow API address, or None.

    A user name or password in it would be sent to Airflow outside the credential variables
    and shown wherever the URL is (error texts, pages): refused.
    """
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        return "Enter a valid http:// or https:// URL."
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "Enter a valid http:// or https:// URL."
    if "@" in parts.netloc:
        return (
            "Put no user name or password in the Airflow URL: the portal reads them from the "
            "credential variables, and a URL appears in messages."
        )
    return None


@dataclass(frozen=True)
class AirflowAddress:
    """Where an Airflow URL leads: scheme, the addresses its host resolves to, port, path."""

    scheme: str
    hosts: frozenset[str]
    port: int
    path: str

    def same_as(self, other: AirflowAddress) -> bool:
        """One Airflow: same scheme, port and path, and a host address in common."""
        return (self.scheme, self.port, self.path) == (other.scheme, other.port, other.path) and (
            bool(self.hosts & other.hosts)
        )


DEFAULT_PORTS = {"http": 80, "https": 443}


def _address_key(address: str) -> str:
    """One spelling per address; every loopback address is "this machine" (localhost, ::1,
    127.0.0.1 and 127.0.1.1 all reach a server listening on all of them)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return "loopback" if ip.is_loopback or ip.is_unspecified else ip.compressed


def airflow_address(url: str) -> AirflowAddress:
    """Resolve `url` (valid per url_problem) to what it reaches; a host that does not resolve
    (now) is known by its name alone."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        infos = []
    hosts = {_address_key(str(info[4][0])) for info in infos} | {_address_key(host)}
    path = posixpath.normpath("/" + unquote(parts.path).strip("/"))
    return AirflowAddress(scheme=scheme, hosts=frozenset(hosts), port=port, path=path)


# An IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", is 29 characters.
IMF_FIXDATE_LENGTH = 29


def server_date(value: str) -> datetime | None:
    """The time a Date header says, time-zone aware, or None if it says none.

    A proxy that adds its own Date beside Airflow's makes requests join the two with ", ",
    which the parser reads as one naive time: the first is taken. A date without a zone
    ("-0000") is UTC, as every HTTP date is.
    Reference: https://www.rfc-editor.org/rfc/rfc9110#field.date
    """
    first = value[:IMF_FIXDATE_LENGTH]
    joined = len(value) > IMF_FIXDATE_LENGTH and first.endswith(" GMT")
    for text in (first, value) if joined else (value,):
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            continue
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return None


def _unreachable_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "it did not answer in time"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed (its certificate, or the CA bundle)"
    if isinstance(exc, requests.ConnectionError):
        return "the connection failed (refused, reset, or the host name is unknown)"
    return "the request could not be sent"


class AirflowClient:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> None:
        if problem := url_problem(base_url):  # checked when saved, and again here (older rows)
            raise AirflowError(f"The environment's Airflow URL is refused: {problem}")
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        read_timeout = timeout if timeout is not None else settings.AIRFLOW_TIMEOUT_SECONDS
        self.timeout = (min(3.05, read_timeout), read_timeout)
        total = retries if retries is not None else settings.AIRFLOW_RETRIES
        self.session = self._session(total, status=total)
        # For calls that must not be repeated blindly (creating a backfill): connection errors
        # only, where nothing reached Airflow.
        self.session_once = self._session(total, status=0)
        self._token: str | None = None
        # Airflow's clock at its latest answer (the Date header, to the second): what Airflow's
        # own timestamps (parse times, import errors) are compared with, never the portal's.
        self.server_time: datetime | None = None

    def _session(self, total: int, *, status: int) -> requests.Session:
        retry = Retry(
            total=total,
            connect=total,
            read=0,  # a read timeout may mean the request was applied: do not blindly repeat
            status=status,
            backoff_factor=0.5,
            backoff_max=8,
            status_forcelist=(502, 503, 504),
            allowed_methods=None,  # every method: see the module docstring
            raise_on_status=False,
        )
        session = requests.Session()
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        # The environment's proxy and CA bundle settings, read once per client: requests reads
        # them (and ~/.netrc) again on every call otherwise, ~0.5 ms each, a fifth of a large
        # sync's paging. A .netrc entry would only have replaced our bearer token.
        session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        session.trust_env = False
        return session

    @classmethod
    def for_environment(cls, environment: Any) -> AirflowClient:
        """The client of `environment`'s Airflow.

        Raises secrets.SecretNameError for a variable name outside the prefix, and
        AirflowCredentialsError when a variable is not set (the sentence names the variable,
        never a value): no request could succeed, so no caller should try one.
        """
        username, password = environment.airflow_credentials()
        names = (environment.airflow_username_env, environment.airflow_password_env)
        unset = [name for name, value in zip(names, (username, password), strict=True) if not value]
        if unset:
            raise AirflowCredentialsError(
                f"The credentials of {environment.name}'s Airflow cannot be read: "
                f"{' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set in the "
                "portal's environment."
            )
        return cls(environment.airflow_url, username, password)

    # --- plumbing -------------------------------------------------------------------------------
    def _send(
        self, method: str, path: str, *, once: bool = False, **kwargs: Any
    ) -> requests.Response:
        session = self.session_once if once else self.session
        try:
            # Never follow a redirect: a 307 would replay the credential POST (or the bearer
            # token) to whatever host the answer names.
            response = session.request(
                method,
                f"{self.base_url}{path}",
                timeout=self.timeout,
                allow_redirects=False,
                **kwargs,
            )
        except requests.RequestException as exc:
            # requests' text (pools, object addresses, the proxy) is for the log, not a page.
            logger.warning("Airflow at %s %s %s: %r", self.base_url, method, path, exc)
            raise AirflowUnavailable(
                f"Airflow at {self.base_url} is unreachable: {_unreachable_reason(exc)}."
            ) from exc
        self._read_clock(response)
        if 300 <= response.status_code < 400:
            raise AirflowError(
                f"Airflow at {self.base_url} answered {response.status_code}, a redirect, which "
                "the portal does not follow (it would send the credentials elsewhere): set the "
                "environment's Airflow URL to the address that answers itself.",
                status=response.status_code,
            )
        return response

    def _read_clock(self, response: requests.Response) -> None:
        self.server_time = server_date(response.headers.get("Date", "")) or self.server_time

    def _authenticate(self) -> str:
        response = self._send(
            "POST", "/auth/token", json={"username": self.username, "password": self.password}
        )
        if response.status_code in (200, 201):
            return response.json()["access_token"]
        self._raise(response)
        raise AssertionError("unreachable")

    def _raise(self, response: requests.Response) -> None:
        status, message = response.status_code, _message(response)
        text = f"Airflow answered {status}: {message}"
        if status in (401, 403):
            raise AirflowAuthError(text, status=status)
        if status == 404:
            raise AirflowNotFound(text, status=status)
        if status == 409:
            raise AirflowConflict(text, status=status)
        if status >= 500:
            raise AirflowUnavailable(text, status=status)
        raise AirflowError(text, status=status)

    def request(self, method: str, path: str, *, once: bool = False, **kwargs: Any) -> Any:
        """Send an authenticated request to `path` (under the base URL); return the JSON body.

        `once`: never repeated after it may have reached Airflow (a 5xx is not retried).
        """
        for attempt in (1, 2):
            if self._token is None:
                self._token = self._authenticate()
            headers = {"Authorization": f"Bearer {self._token}"}
            response = self._send(method, path, once=once, headers=headers, **kwargs)
            if response.status_code == 401 and attempt == 1:
                self._token = None  # expired or rotated: fetch a new one once
                continue
            if response.status_code >= 400:
                self._raise(response)
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    # --- endpoints ------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        response = self._send("GET", "/api/v2/monitor/health")
        if response.status_code != 200:
            self._raise(response)
        return response.json()

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/api/v2/dags/{dag_id}")
        except AirflowNotFound:
            return None

    def set_paused(self, dag_id: str, *, paused: bool) -> dict[str, Any]:
        return self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused})

    def reparse_file(self, file_token: str) -> None:
        self.request("PUT", f"/api/v2/parseDagFile/{file_token}")

    def import_errors(self, *, filename_pattern: str | None = None) -> list[ImportError_]:
        """Return import errors, optionally of files whose path contains `filename_pattern`.

        Airflow stores file names relative to the DAG bundle ("dev/x.py"); its `filename`
        filter is exact, `filename_pattern` a case-insensitive substring (ILIKE) match.
        """
        params: dict[str, Any] = {"limit": 100, "order_by": "-timestamp"}
        if filename_pattern:
            params["filename_pattern"] = filename_pattern
        body = self.request("GET", "/api/v2/importErrors", params=params)
        return [
            ImportError_(
                filename=item.get("filename", ""),
                stack_trace=item.get("stack_trace", ""),
                timestamp=item.get("timestamp", ""),
            )
            for item in body.get("import_errors", [])
        ]

    def trigger_run(
        self,
        dag_id: str,
        *,
        dag_run_id: str,
        logical_date: datetime,
        conf: dict[str, Any],
        note: str = "",
    ) -> dict[str, Any]:
        if logical_date.tzinfo is None:
            raise ValueError("logical_date must be time-zone aware (Airflow rejects naive ones)")
        payload = {
            "dag_run_id": dag_run_id,
            "logical_date": logical_date.isoformat(),
            "conf": conf,
            "note": note or None,
        }
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=payload)

    def get_run(self, dag_id: str, dag_run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(dag_run_id, safe='')}")

    def task_instances(self, dag_id: str, dag_run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(dag_run_id, safe='')}/taskInstances"
        return self.request("GET", path).get("task_instances", [])

    def task_log(
        self, dag_id: str, dag_run_id: str, task_id: str, try_number: int
    ) -> list[dict[str, Any] | str]:
        """Return the log of one try as Airflow's structured entries (one dict per line)."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(dag_run_id, safe='')}/taskInstances/"
            f"{quote(task_id, safe='')}/logs/{try_number}"
        )
        content = self.request("GET", path, params={"full_content": "true"}).get("content")
        return content if isinstance(content, list) else [str(content or "")]

    def failure_reason(self, dag_id: str, dag_run_id: str) -> str:
        """Return why a failed DagRun failed: the failed task and the message it failed with."""
        instances = self.task_instances(dag_id, dag_run_id)
        failed = first_failed(instances)
        if failed is None:
            return explain_failure(instances, None, [])
        try_number = max(int(failed.get("try_number") or 1), 1)
        log = self.task_log(dag_id, dag_run_id, failed["task_id"], try_number)
        return explain_failure(instances, failed, log)

    # --- lists across DAGs (sync) ---------------------------------------------------------------
    PAGE_SIZE = 100  # Airflow's maximum page size

    def _pages(
        self, path: str, key: str, params: dict[str, Any], *, order_by: str = "id"
    ) -> Iterator[dict[str, Any]]:
        """Yield every item of a paged list, ordered by id so offsets stay stable.

        New rows get higher ids and land at the end, so paging while Airflow writes skips
        nothing; an item seen twice is harmless to the idempotent callers.
        """
        offset = 0
        while True:
            page = {**params, "limit": self.PAGE_SIZE, "offset": offset, "order_by": order_by}
            body = self.request("GET", path, params=page)
            items = body.get(key, [])
            yield from items
            offset += len(items)
            if not items or offset >= body.get("total_entries", 0):
                return

    def runs_updated_since(
        self, since: datetime, *, dag_id_prefix: str = ""
    ) -> Iterator[dict[str, Any]]:
        """Yield DagRuns of every DAG changed at or after `since` (one paged stream)."""
        params: dict[str, Any] = {"updated_at_gte": since.isoformat()}
        if dag_id_prefix:
            params["dag_id_prefix_pattern"] = dag_id_prefix
        yield from self._pages("/api/v2/dags/~/dagRuns", "dag_runs", params)

    def paused_dag_ids(self, *, dag_id_prefix: str = "") -> set[str]:
        params: dict[str, Any] = {"paused": "true"}
        if dag_id_prefix:
            params["dag_id_prefix_pattern"] = dag_id_prefix
        # /dags sorts by dag_id, its key: it answers 400 to order_by=id.
        dags = self._pages("/api/v2/dags", "dags", params, order_by="dag_id")
        return {d["dag_id"] for d in dags}

    def retrying_dag_ids(self, *, dag_id_prefix: str = "") -> set[str]:
        """DAGs with a task instance waiting to retry (a warning, not yet a failure)."""
        params: dict[str, Any] = {"state": "up_for_retry"}
        if dag_id_prefix:
            params["dag_id_prefix_pattern"] = dag_id_prefix
        path = "/api/v2/dags/~/dagRuns/~/taskInstances"
        return {t["dag_id"] for t in self._pages(path, "task_instances", params)}

    def import_error_files(self) -> set[str]:
        """Bundle-relative paths of every file Airflow cannot import."""
        return {e["filename"] for e in self._pages("/api/v2/importErrors", "import_errors", {})}

    # --- backfills ------------------------------------------------------------------------------
    # Reference: https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html#tag/Backfill
    # Airflow walks the DAG's timetable from from_date: the runs whose logical date (data
    # interval start) is in [from_date, to_date], both ends included, whose interval has ended.
    REPROCESS_BEHAVIORS = ("none", "failed", "completed")

    def _backfill_body(
        self,
        dag_id: str,
        from_date: datetime,
        to_date: datetime,
        reprocess: str,
        max_active_runs: int,
        dag_run_conf: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        for name, moment in (("from_date", from_date), ("to_date", to_date)):
            if moment.tzinfo is None:
                raise ValueError(f"{name} must be time-zone aware (Airflow rejects naive ones)")
        if reprocess not in self.REPROCESS_BEHAVIORS:
            raise ValueError(f"reprocess must be one of {', '.join(self.REPROCESS_BEHAVIORS)}")
        if max_active_runs < 1:
            raise ValueError("max_active_runs must be at least 1")
        body: dict[str, Any] = {
            "dag_id": dag_id,
            "from_date": from_date.isoformat(),
            "to_date": to_date.isoformat(),
            "reprocess_behavior": reprocess,
            # Always sent: Airflow's default (10) replaces the DAG's own max_active_runs.
            "max_active_runs": max_active_runs,
            "run_backwards": False,
        }
        if dag_run_conf is not None:
            body["dag_run_conf"] = dag_run_conf
        return body

    def backfill_dry_run(
        self,
        dag_id: str,
        from_date: datetime,
        to_date: datetime,
        *,
        reprocess: str,
        max_active_runs: int,
    ) -> list[datetime]:
        """Return the logical dates (aware) of the runs a backfill would create, in order.

        Existing runs the reprocess behaviour re-runs are listed too (Airflow clears them);
        queued and running ones never are. An empty list is not an error here, unlike create.
        """
        body = self._backfill_body(dag_id, from_date, to_date, reprocess, max_active_runs)
        answer = self.request("POST", "/api/v2/backfills/dry_run", json=body)
        return [
            datetime.fromisoformat(item["logical_date"])
            for item in answer.get("backfills", [])
            if item.get("logical_date")
        ]

    def backfill_create(
        self,
        dag_id: str,
        from_date: datetime,
        to_date: datetime,
        *,
        reprocess: str,
        max_active_runs: int,
        dag_run_conf: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a backfill; return Airflow's backfill (with its `id`).

        Raises AirflowBackfillRunning while the DAG has another backfill that has not
        completed, and AirflowError (422) when the range holds no run to create. Sent once:
        AirflowUnavailable means the outcome is unknown (Airflow may have created it); the
        caller looks in `backfills(dag_id)` before it creates again.
        """
        body = self._backfill_body(
            dag_id, from_date, to_date, reprocess, max_active_runs, dag_run_conf
        )
        try:
            return self.request("POST", "/api/v2/backfills", json=body, once=True)
        except AirflowConflict as exc:
            raise AirflowBackfillRunning(
                f"Airflow is still running another backfill of {dag_id} (one per DAG at a "
                f"time): wait until it completes or cancel it, then submit again. {exc.message}",
                status=exc.status,
            ) from exc

    def backfill_get(self, backfill_id: int) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/backfills/{int(backfill_id)}")

    def backfill_pause(self, backfill_id: int) -> dict[str, Any]:
        """Stop creating runs (those running go on); 409 once the backfill has completed."""
        return self.request("PUT", f"/api/v2/backfills/{int(backfill_id)}/pause")

    def backfill_unpause(self, backfill_id: int) -> dict[str, Any]:
        return self.request("PUT", f"/api/v2/backfills/{int(backfill_id)}/unpause")

    def backfill_cancel(self, backfill_id: int) -> dict[str, Any]:
        """Pause it, fail its queued runs and mark it completed (running runs finish)."""
        return self.request("PUT", f"/api/v2/backfills/{int(backfill_id)}/cancel")

    def backfill_runs(
        self, dag_id: str, from_date: datetime, to_date: datetime
    ) -> list[dict[str, Any]]:
        """Return the DAG's backfill-type runs with a logical date in [from_date, to_date].

        Airflow's run list does not say which backfill made a run; callers tell theirs apart
        by `queued_at` (a run a backfill re-runs is queued again when it is submitted).
        """
        params = {
            "logical_date_gte": from_date.isoformat(),
            "logical_date_lte": to_date.isoformat(),
            "run_type": "backfill",
        }
        return list(self._pages(f"/api/v2/dags/{dag_id}/dagRuns", "dag_runs", params))

    def backfill_list(self, dag_id: str) -> list[dict[str, Any]]:
        """Return every backfill of `dag_id`, oldest first."""
        return list(self._pages("/api/v2/backfills", "backfills", {"dag_id": dag_id}))
