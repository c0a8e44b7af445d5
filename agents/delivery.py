"""Webhook delivery: alert changes POSTed to the clinician's webhook, from an outbox.

The alerts step queues one row per (alert, change) in alert_deliveries in the same
transaction as the alert itself (a transactional outbox), routed to the endpoint (webhook)
in effect then, so nothing stored can go undelivered and a webhook added later gets no
history. Delivery is per endpoint, so that one bad receiver cannot stall another:

- every ``webhook_poll_s`` the worker claims the head of each ready endpoint's queue (its
  most severe, then oldest, due delivery) and, from a healthy endpoint, up to
  ``webhook_run`` deliveries that follow it, and posts them one after another; at most one
  attempt is in flight per endpoint (SKIP LOCKED and a claim lease let several workers
  share the queue); the run is recorded in one transaction when it ends, so an endpoint's
  deliveries cost a POST each and two statements a run, not two statements each (a more
  urgent delivery queued meanwhile comes next, after at most ``webhook_run`` POSTs);
- an attempt is ONE signed POST with a short timeout, never an inline sleeping retry; after
  a 2xx the same endpoint's next delivery follows at once;
- after a failure the endpoint waits ``backoff * 2^(failures - 1)``, capped by the severity
  of the most urgent delivery it holds (``RetryPolicy``): a critical alert is retried at
  least every ``webhook_max_delay_critical_s`` (60 s) while its receiver is down, and is the
  first thing it gets when it is back;
- after ``webhook_max_attempts`` attempts a delivery shows 'failed' (on the alert and in the
  metric) and is still retried, at least ``webhook_retry_interval_s`` apart (growing, at most
  the severity's cap), out of the way of the rest of its endpoint's queue (so one payload a
  receiver keeps refusing cannot hold the others); when the endpoint recovers from an
  outage those are pulled forward, and the backlog drains critical first.

Delivery is at-least-once: receivers dedupe on the ``Idempotency-Key`` header
(``<alert id>:<change>``). rtm.alerts carries the same changes for other consumers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import socket
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from alerts.models import SEVERITY_RANK
from streams.clock import SYSTEM_CLOCK, Clock, clock_for
from streams.db.deliveries import (
    Claimed,
    claim_deliveries,
    delivery_backlog,
    mark_attempt_failed,
    mark_delivered,
    release_deliveries,
)
from streams.db.pool import Pool
from streams.kafka.app import Topology, timer
from streams.kafka.supervise import Supervisor
from streams.metrics import WorkerMetrics
from streams.secrets import secret_box
from streams.settings import Settings

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-RTM-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over "<timestamp>.<body>", hex; receivers recompute and compare."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def validate_url(url: str) -> str:
    """The URL if it can be a webhook (http or https with a host), else ValueError saying
    what is wrong."""
    if not url or url != url.strip() or any(ch.isspace() for ch in url):
        raise ValueError("must be an absolute http:// or https:// URL without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username is not None or parts.password is not None:
        # stored and listed in plain; the HMAC signature is the receiver's authentication
        raise ValueError(
            "must not carry credentials (user:password@); the signature authenticates the sender"
        )
    if port == 0:
        raise ValueError("has port 0")
    host = parts.hostname
    if not _is_ip(host) and not all(
        label and len(label) <= 63 and all(ch.isalnum() or ch == "-" for ch in label)
        for label in host.rstrip(".").split(".")
    ):
        raise ValueError(f"has an invalid host name {host!r}")
    return url


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class DestinationRefused(ValueError):
    """A webhook URL whose host is (or resolves to) an address the policy refuses."""


@dataclass(frozen=True)
class Destinations:
    """Where webhooks may go: public addresses only (no loopback, link-local, private,
    carrier-grade NAT, metadata or other non-global ranges), unless an allow-list setting
    (``RTM_WEBHOOK_ALLOW_NETWORKS``) names the network. Checked when a webhook is set and
    again on the resolved address at every delivery, which then connects to that checked
    address (a name that resolves elsewhere between the two cannot redirect it)."""

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, s: Settings) -> Destinations:
        return cls(parse_networks(s.webhooks.allow_networks))

    def refused(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in net for net in self.allow):
            return False
        return not ip.is_global or ip.is_multicast

    def check_ips(self, host: str, ips: list[str]) -> str:
        """The first address if every one is allowed, else DestinationRefused."""
        if not ips:
            raise DestinationRefused(f"host {host!r} has no address")
        for raw in ips:
            if self.refused(ipaddress.ip_address(raw.split("%", 1)[0])):
                raise DestinationRefused(
                    f"host {host!r} is a loopback, private, link-local or other non-public"
                    " address (allow it with RTM_WEBHOOK_ALLOW_NETWORKS)"
                )
        return ips[0]

    async def resolve(self, url: str) -> str:
        """The address to connect to for ``url``, every resolved address checked."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if _is_ip(host):
            return self.check_ips(host, [host])
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError:
            raise DestinationRefused(f"host {host!r} does not resolve") from None
        return self.check_ips(host, sorted({str(info[4][0]) for info in infos}, key=_v4_first))

    def check_now(self, url: str) -> None:
        """When a webhook is set: an address literal is checked; a name that resolves is
        checked on what it resolves to (one that does not resolve yet is checked at
        delivery)."""
        host = urlsplit(url).hostname or ""
        if _is_ip(host):
            self.check_ips(host, [host])
            return
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return
        self.check_ips(host, [str(info[4][0]) for info in infos])


def _v4_first(ip: str) -> tuple[int, str]:
    return (0 if ":" not in ip else 1, ip)


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``"127.0.0.1/32, 10.0.0.0/8"`` -> networks (a bare address is its /32 or /128)."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    )


def pinned(url: str, ip: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL with its host replaced by the checked address, the Host header and the TLS
    server name to send: the connection goes where the check looked, HTTPS still verifies
    the certificate against the name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _is_ip(host):
        return url, {}, {}
    netloc = f"[{ip}]" if ":" in ip else ip
    if parts.port is not None:
        netloc += f":{parts.port}"
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
    extensions: dict[str, Any] = {}
    if parts.scheme.lower() == "https":
        extensions["sni_hostname"] = host
    return parts._replace(netloc=netloc).geturl(), headers, extensions


def redact_url(url: str) -> str:
    """The URL without its query (tokens some receivers put there), for listings."""
    parts = urlsplit(url)
    return parts._replace(query="…" if parts.query else "", fragment="").geturl()


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed delivery, and a failing endpoint, may be tried again (pure)."""

    backoff_s: float
    max_attempts: int
    retry_interval_s: float
    caps: tuple[float, float, float, float]  # by severity rank: critical, high, medium, low

    @classmethod
    def from_settings(cls, s: Settings) -> RetryPolicy:
        return cls(
            s.webhooks.backoff_s,
            s.webhooks.max_attempts,
            s.webhooks.retry_interval_s,
            (
                s.webhooks.max_delay_critical_s,
                s.webhooks.max_delay_high_s,
                s.webhooks.max_delay_medium_s,
                s.webhooks.max_delay_low_s,
            ),
        )

    def cap(self, rank: int) -> float:
        return self.caps[min(max(rank, 0), len(self.caps) - 1)]

    def _exp(self, n: int) -> float:
        # 2^60 * backoff is beyond every cap; the bound keeps the float finite
        return float(self.backoff_s * 2 ** min(max(n - 1, 0), 60))

    def endpoint_delay(self, failures: int, rank: int) -> float:
        """After `failures` consecutive failed attempts, how long the endpoint waits before
        its next attempt if the delivery at the head of its queue has severity `rank`."""
        if failures <= 0:
            return 0.0
        return min(self._exp(failures), self.cap(rank))

    def endpoint_delays(self, failures: int) -> tuple[float, ...]:
        return tuple(self.endpoint_delay(failures, r) for r in range(len(self.caps)))

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def delivery_delay(self, attempts: int, rank: int) -> float:
        """After its `attempts`-th failed attempt, how long the delivery itself waits. Until
        the quick attempts are used up it stays at the head of its endpoint's queue (0: the
        endpoint's backoff paces it); then at least retry_interval, growing, at most the cap."""
        if not self.exhausted(attempts):
            return 0.0
        return min(max(self.retry_interval_s, self._exp(attempts)), self.cap(rank))


def severity_rank(severity: str) -> int:
    """0 (critical) .. 3 (low): the queue order; an unknown severity goes last."""
    return _RANKS.get(severity, len(_RANKS) - 1)


_RANKS: dict[str, int] = {severity: rank for severity, rank in SEVERITY_RANK.items()}


def signed_headers(
    secret: str, body: bytes, idempotency_key: str, clock: Clock = SYSTEM_CLOCK
) -> dict[str, str]:
    """The POST's headers: the signature over ``clock``'s time (seconds) and the body."""
    ts = str(int(clock.now().timestamp()))
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        "X-RTM-Timestamp": ts,
        SIGNATURE_HEADER: sign(secret, ts, body),
    }


async def post_signed(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    body: bytes,
    idempotency_key: str,
    destinations: Destinations,
    clock: Clock = SYSTEM_CLOCK,
) -> str | None:
    """One attempt: None on a 2xx, else what went wrong (no URL, no body: those may carry
    patient data or tokens and the error ends up in logs and the API). The destination is
    checked on its resolved address first, and the POST goes to that address."""
    try:
        ip = await destinations.resolve(url)
    except DestinationRefused:
        return "destination refused"
    target, host, extensions = pinned(url, ip)
    try:
        resp = await client.post(
            target,
            content=body,
            headers={**signed_headers(secret, body, idempotency_key, clock), **host},
            extensions=extensions,
        )
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"


async def send_ping(
    url: str,
    secret: str,
    timeout_s: float,
    destinations: Destinations,
    clock: Clock = SYSTEM_CLOCK,
) -> bool:
    """A signed test POST (`rtm alerts webhook --test`): {"change": "ping", ...}; True when
    it was delivered (a 2xx). Nothing else is told (no status, no error, no time): the
    command must not work as a port scanner."""
    ping_id = str(uuid.uuid4())
    now = clock.now()
    body = orjson.dumps(
        {
            "change": "ping",
            "ping_id": ping_id,
            "sent_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        error = await post_signed(client, url, secret, body, f"ping:{ping_id}", destinations, clock)
    return error is None


class Deliverer:
    """Posts the worker's share of the queue, one attempt in flight per endpoint."""

    def __init__(
        self,
        store: Pool,
        settings: Settings,
        metrics: WorkerMetrics,
        supervisor: Supervisor | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        # the signatures' time: the process's clock (RTM_CLOCK_NOW when set)
        self.clock = clock if clock is not None else clock_for(settings)
        # runs each endpoint's loop: an exception there (a database going down mid-claim
        # included) is logged and counted, the claim lapses and the delivery is taken again
        self.supervisor = supervisor or Supervisor()
        self.settings = settings
        self.metrics = metrics
        self.policy = RetryPolicy.from_settings(settings)
        self.destinations = Destinations.from_settings(settings)
        # Long enough for one attempt and its bookkeeping; a worker that dies mid-attempt
        # holds its endpoint this long, then another worker takes the delivery again.
        self.lease_s = settings.webhooks.timeout_s + 10.0
        self.in_flight: set[int] = set()  # webhook ids
        # deliveries one claim takes from a healthy endpoint's queue, posted in order
        self.run = settings.webhooks.run
        self.secrets = secret_box(settings)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.settings.webhooks.timeout_s)
        return self._client

    async def dispatch(self) -> int:
        """Claim the ready endpoints' runs and start one delivery loop per endpoint."""
        free = self.settings.webhooks.max_in_flight - len(self.in_flight)
        if free <= 0:
            return 0
        async with self.store.acquire() as conn:
            claimed = await claim_deliveries(
                conn, sorted(self.in_flight), free, self.lease_s, run=self.run
            )
        runs: dict[int, list[Claimed]] = {}
        for c in claimed:
            runs.setdefault(c.webhook_id, []).append(c)
        for webhook_id, run in runs.items():
            self.in_flight.add(webhook_id)
            task = self.supervisor.spawn("webhook_endpoint", self._endpoint(run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(runs)

    async def _endpoint(self, first: list[Claimed]) -> None:
        """Deliver to one endpoint until its queue is empty or an attempt fails."""
        webhook_id = first[0].webhook_id
        run = first
        try:
            while run:
                if not await self.attempt_run(run):
                    return
                async with self.store.acquire() as conn:
                    busy = sorted(self.in_flight - {webhook_id})
                    run = await claim_deliveries(
                        conn, busy, 1, self.lease_s, only=webhook_id, run=self.run
                    )
        finally:
            self.in_flight.discard(webhook_id)

    async def attempt_run(self, run: list[Claimed]) -> bool:
        """One endpoint's claimed run, one POST after another, and its bookkeeping in one
        transaction: the 2xx ones delivered, a failed attempt recorded, the rest (after a
        failure, or those whose POST could outlast the claim's lease) released. False after
        a failed attempt (the endpoint backs off)."""
        loop = asyncio.get_running_loop()
        # the last moment a POST may start and still end (timeout) within the lease
        last_start = loop.time() + self.lease_s - self.settings.webhooks.timeout_s - 1.0
        done: list[Claimed] = []
        failure: tuple[Claimed, str] | None = None  # the refused delivery and why
        for c in run:
            if done and loop.time() > last_start:
                break
            error = await self.post(c)
            if error is not None:
                failure = (c, error)
                break
            done.append(c)
        rest = run[len(done) + (failure is not None) :]
        async with self.store.acquire() as conn, conn.transaction():
            # Back after an outage of more than one attempt (a single failure is as likely
            # one refused payload, which must not be pulled forward again): the deliveries
            # that were set aside come now.
            await mark_delivered(conn, done, pull_forward=run[0].failures >= 2)
            await release_deliveries(conn, rest)
            if failure is not None:
                await self._record_failure(conn, *failure)
        if done:
            self.metrics.deliveries.labels("delivered").inc(len(done))
        if failure is not None:
            self._count_failure(*failure)
        return failure is None  # a run that outlasted its lease: the rest is claimed next

    async def _record_failure(self, conn: Any, c: Claimed, error: str) -> None:
        attempts = c.attempts + 1
        await mark_attempt_failed(
            conn,
            c,
            error,
            self.policy.exhausted(attempts),
            self.policy.delivery_delay(attempts, c.severity_rank),
            self.policy.endpoint_delays(c.failures + 1),
        )

    def _count_failure(self, c: Claimed, error: str) -> None:
        """Once recorded: 'failed' is counted once per delivery, when its quick attempts
        run out; before that, a 'retry'."""
        attempts = c.attempts + 1
        outcome = "failed" if attempts == self.policy.max_attempts else "retry"
        self.metrics.deliveries.labels(outcome).inc()
        if outcome == "failed":
            log.warning(
                "webhook delivery failed after %d attempts (%s); retried at most %.0f s apart",
                attempts,
                error,
                self.policy.cap(c.severity_rank),
            )

    async def post(self, c: Claimed) -> str | None:
        """One signed POST of a claimed delivery: None on a 2xx, else what went wrong."""
        body = orjson.dumps(orjson.loads(c.payload))
        try:
            secret = self.secrets.open(c.secret)
        except ValueError as exc:  # sealed with another key: visible as a failed delivery
            return str(exc)
        return await post_signed(
            self.client,
            c.url,
            secret,
            body,
            f"{c.alert_id}:{c.change}",
            self.destinations,
            self.clock,
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def register(topology: Topology, store: Pool, settings: Settings) -> Any:
    deliverer = Deliverer(store, settings, topology.metrics, topology.supervisor)

    @timer(topology, settings.webhooks.poll_s)
    async def deliver_due() -> None:
        """Start deliveries for the endpoints whose queue has something due."""
        await deliverer.dispatch()

    metrics = topology.metrics

    @timer(topology, settings.webhooks.backlog_interval_s)
    async def measure_backlog() -> None:
        """What operators page on: an undelivered critical alert, a growing backlog."""
        async with store.acquire() as conn:
            backlog = await delivery_backlog(conn)
        for rank, severity in enumerate(SEVERITIES):
            n, oldest = backlog.get(rank, (0, 0.0))
            metrics.webhook_backlog.labels(severity).set(n)
            metrics.webhook_oldest_undelivered.labels(severity).set(oldest)

    return deliver_due


SEVERITIES = tuple(SEVERITY_RANK)  # severity_rank 0..3: critical, high, medium, low
