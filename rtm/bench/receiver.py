"""A local webhook receiver for `rtm chaos` and the delivery tests: an HTTP endpoint on
loopback that answers 200 (mode ``ok``), 500 (``fail``) or not at all (``hang``, 30 s),
switchable while it runs, and records every request. Given the shared secret, it checks
each request's signature the way a clinic's receiver would (``X-RTM-Signature``:
HMAC-SHA256 over ``<X-RTM-Timestamp>.<body>``, computed here independently of the
sender's code) and keeps the Idempotency-Key of the well-signed ones. Each arrival is
recorded on both clocks: the monotonic one for durations within this process, the wall
clock to compare with instants other processes stamped (the gateway's received_at)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from streams.clock import SYSTEM_CLOCK


class Request(NamedTuple):
    at: float  # arrival on the monotonic clock
    # arrival on the wall clock: another process's timestamp (the gateway's received_at) is
    # an instant on the wall clock, and only a reading of that clock at the same moment
    # compares with it (a monotonic reading shifted by an offset taken earlier would be off
    # by any step or slew of the wall clock since)
    wall: float
    mode: str  # the mode that answered
    headers: dict[str, str]
    body: bytes
    signed: bool | None  # the signature checked out (None: no secret to check it with)


class Receiver:
    def __init__(
        self, mode: str = "ok", secret: str | None = None, refuse: set[str] | None = None
    ) -> None:
        self.mode = mode
        self.secret = secret
        self.refuse = refuse or set()  # Idempotency-Keys answered 500 whatever the mode
        self.requests: list[Request] = []
        self.signed: set[str] = set()  # Idempotency-Keys of the well-signed requests
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def record(self, headers: dict[str, str], body: bytes) -> str:
        """Record one request; the mode it is answered in."""
        at, wall = time.monotonic(), SYSTEM_CLOCK.now().timestamp()
        mode = "fail" if headers.get("Idempotency-Key") in self.refuse else self.mode
        signed: bool | None = None
        with self.lock:
            if self.secret is not None:
                named = {k.lower(): v for k, v in headers.items()}  # names are case-insensitive
                signed = _signature_ok(self.secret, named, body)
                if signed:
                    self.signed.add(named.get("idempotency-key", ""))
                else:
                    self.bad_signatures += 1
            self.requests.append(Request(at, wall, mode, headers, body, signed))
        return mode

    def delivered(self) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, payload) of the requests answered 200, in arrival order."""
        with self.lock:
            return [(r.at, json.loads(r.body)) for r in self.requests if r.mode == "ok"]

    def arrivals(self) -> list[tuple[float, dict[str, Any]]]:
        """(wall-clock arrival, payload) of the requests answered 200 whose signature
        checked out (all answered 200 without a secret), in arrival order: what a clinic's
        receiver would have accepted, and when."""
        with self.lock:
            return [
                (r.wall, json.loads(r.body))
                for r in self.requests
                if r.mode == "ok" and r.signed is not False
            ]

    def keys(self) -> list[str]:
        """The Idempotency-Key of every request, in arrival order."""
        with self.lock:
            return [r.headers["Idempotency-Key"] for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    ts = headers.get("x-rtm-timestamp", "")
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(headers.get("x-rtm-signature", ""), "sha256=" + mac.hexdigest())


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1: a connection is kept for the next request, as a clinic's receiver
        # behind an ordinary web server keeps it (HTTP/1.0, the default, closed each one:
        # a new connection per POST, about twice the sender's CPU; docs/benchmarks.md)
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            mode = receiver.record(dict(self.headers), body)
            if mode == "hang":
                time.sleep(30)
                self.close_connection = True  # no answer, and no next request on it
                return
            self.send_response(200 if mode == "ok" else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
