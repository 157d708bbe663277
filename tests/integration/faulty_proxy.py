"""A fault-injecting HTTP proxy in front of the test Airflow (integration tests only).

A small threaded http.server on 127.0.0.1 that forwards every request to Airflow and answers
with Airflow's answer, except where a fault is armed:

- `drop_create_replies`: that many creates of a backfill (POST /api/v2/backfills) are forwarded,
  Airflow makes the backfill, and the connection is closed without an answer (a lost reply);
- `conflict_pauses`: that many pauses of a backfill (PUT /api/v2/backfills/{id}/pause) are
  answered 409 as Airflow answers a pause of a backfill that has just completed (not forwarded);
- `delay_s`: every answer is held this long after Airflow gave it (a slow Airflow or network).

`seen` lists (method, path, what happened) for the test's messages.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

CREATE = re.compile(r"^/api/v2/backfills/?(\?.*)?$")
PAUSE = re.compile(r"^/api/v2/backfills/\d+/pause/?$")
# Not forwarded in either direction: they describe one hop, not the message.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.drop_create_replies = 0
        self.conflict_pauses = 0
        self.delay_s = 0.0
        self.seen: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self, fault: str) -> bool:
        """Use one of the armed faults `fault`; False when none is left."""
        with self._lock:
            left = getattr(self, fault)
            if left <= 0:
                return False
            setattr(self, fault, left - 1)
            return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # quiet: the test prints `seen` when it fails

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                method, path = self.command, self.path
                if method == "PUT" and PAUSE.match(path) and proxy._take("conflict_pauses"):
                    proxy.seen.append((method, path, "answered 409"))
                    self._answer(
                        409,
                        [("Content-Type", "application/json")],
                        json.dumps({"detail": "Backfill is already completed."}).encode(),
                    )
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                try:
                    upstream.request(method, path, body=body, headers=headers)
                    response = upstream.getresponse()
                    status, answer = response.status, response.read()
                    kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
                except OSError as exc:  # Airflow itself is down: say so, as a gateway does
                    proxy.seen.append((method, path, f"502 ({exc})"))
                    self._answer(502, [("Content-Type", "text/plain")], str(exc).encode())
                    return
                finally:
                    upstream.close()
                if method == "POST" and CREATE.match(path) and proxy._take("drop_create_replies"):
                    # Airflow has made it; its answer never reaches the portal.
                    proxy.seen.append((method, path, f"forwarded ({status}), reply dropped"))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                proxy.seen.append((method, path, str(status)))
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                self._answer(status, kept, answer)

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler


@contextmanager
def faulty_proxy(upstream: str) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
