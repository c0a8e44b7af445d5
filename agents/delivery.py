"""Webhook delivery: alert changes POSTed to the clinician's webhook, from an outbox.

The alerts step queues one 'pending' row per (alert, change) in alert_deliveries in the
same transaction as the alert itself (a transactional outbox), so nothing stored can go
undelivered. A timer claims pending rows (SKIP LOCKED: several workers share the queue)
and delivers at-least-once with retries and exponential backoff; a delivery that keeps
failing stays visible (status 'failed' on the alert, a metric) and is retried later.
rtm.alerts carries the same changes for other consumers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from typing import Any, Sequence

import httpx
import orjson

from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.db.alerts import claim_deliveries, mark_delivery, webhook_for
from streams.app import Topology
from streams.db.events import EventStore

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-RTM-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over "<timestamp>.<body>", hex; receivers recompute and compare."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Deliverer:
    def __init__(self, store: EventStore, settings: Settings, metrics: WorkerMetrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.settings.webhook_timeout_s)
        return self._client

    async def deliver(self, change: dict[str, Any]) -> str:
        alert = change["alert"]
        async with self.store.acquire() as conn:
            hook = await webhook_for(conn, alert["clinician_id"])
        if hook is None:
            await self._mark(alert["id"], change["change"], "no_webhook", 0, "no webhook configured")
            self.metrics.deliveries.labels("no_webhook").inc()
            return "no_webhook"
        url, secret = hook
        body = orjson.dumps(change)
        attempts, error = 0, ""
        delay = self.settings.webhook_backoff_s
        while attempts < self.settings.webhook_max_attempts:
            attempts += 1
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": f"{alert['id']}:{change['change']}",
                "X-RTM-Timestamp": ts,
                SIGNATURE_HEADER: sign(secret, ts, body),
            }
            try:
                resp = await self.client.post(url, content=body, headers=headers)
                if 200 <= resp.status_code < 300:
                    await self._mark(alert["id"], change["change"], "delivered", attempts, None)
                    self.metrics.deliveries.labels("delivered").inc()
                    return "delivered"
                error = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            self.metrics.deliveries.labels("retry").inc()
            await asyncio.sleep(delay)
            delay *= 2
        await self._mark(alert["id"], change["change"], "failed", attempts, error)
        self.metrics.deliveries.labels("failed").inc()
        log.warning("webhook delivery failed after %d attempts (%s)", attempts, error)
        return "failed"

    async def _mark(self, alert_id: str, change: str, status: str, attempts: int,
                    error: str | None) -> None:
        async with self.store.acquire() as conn:
            await mark_delivery(conn, alert_id, change, status, attempts, error)

    async def run_claimed(self, statuses: Sequence[str], older_than_s: float) -> int:
        async with self.store.acquire() as conn:
            claimed = await claim_deliveries(conn, statuses, older_than_s, 200)
        await asyncio.gather(*(self.deliver(c) for c in claimed))
        return len(claimed)


def register(topology: Topology, store: EventStore, settings: Settings) -> Any:
    app = topology.app
    deliverer = Deliverer(store, settings, topology.metrics)

    @app.timer(settings.webhook_poll_s)
    async def deliver_pending() -> None:
        """Drain the outbox that the alerts step fills in its own transaction."""
        while await deliverer.run_claimed(["pending"], 0.0) == 200:
            pass

    @app.timer(settings.webhook_retry_interval_s)
    async def retry() -> None:
        # failed and unrouted deliveries, and claims a crashed worker left 'sending'
        await deliverer.run_claimed(["failed", "no_webhook"], 0.0)
        await deliverer.run_claimed(["sending"], 300.0)

    return deliver_pending
