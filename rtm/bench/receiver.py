"""A local webhook receiver for `rtm chaos` and the delivery tests: an HTTP endpoint on
loopback that answers 200 (mode ``ok``), 500 (``fail``) or not at all (``hang``, 30 s),
switchable while it runs, and records every request. Given the shared secret, it checks
each request's signature the way a clinic's receiver would (``X-RTM-Signature``:
HMAC-SHA256 over ``<X-RTM-Timestamp>.<body>``, computed here independently of the
sender's code) and keeps the Idempotency-Key of the well-signed ones."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (arrival on the monotonic clock, the mode that answered, headers, body)
Request = tuple[float, str, dict[str, str], bytes]


class Receiver:
    def __init__(self, mode: str = "ok", secret: str | None = None) -> None:
        self.mode = mode
        self.secret = secret
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
        mode = self.mode
        with self.lock:
            self.requests.append((time.monotonic(), mode, headers, body))
            if self.secret is not None:
                named = {k.lower(): v for k, v in headers.items()}  # names are case-insensitive
                if _signature_ok(self.secret, named, body):
                    self.signed.add(named.get("idempotency-key", ""))
                else:
                    self.bad_signatures += 1
        return mode

    def delivered(self) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, payload) of the requests answered 200, in arrival order."""
        with self.lock:
            return [(t, json.loads(b)) for t, m, _, b in self.requests if m == "ok"]

    def keys(self) -> list[str]:
        """The Idempotency-Key of every request, in arrival order."""
        with self.lock:
            return [h["Idempotency-Key"] for _, _, h, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    ts = headers.get("x-rtm-timestamp", "")
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(headers.get("x-rtm-signature", ""), "sha256=" + mac.hexdigest())


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            mode = receiver.record(dict(self.headers), body)
            if mode == "hang":
                time.sleep(30)
                return
            self.send_response(200 if mode == "ok" else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
