"""Delivery agent: alert changes from rtm.alerts POSTed to the clinician's webhook.

At-least-once with retries and exponential backoff; a delivery that keeps failing stays
visible (alert_deliveries.status = 'failed', a metric) and a timer retries it later.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from typing import Any

import httpx
import orjson

from agents.persist import write_until_done
from rtm.metrics import WorkerMetrics
from rtm.settings import Settings
from streams.alert_store import webhook_for
from streams.app import Topology
from streams.store import EventStore

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

    async def record(self, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Register each (alert, change) once; returns those not delivered yet."""
        async def write() -> list[dict[str, Any]]:
            async with self.store.acquire() as conn:
                rows = await conn.fetch(
                    "INSERT INTO alert_deliveries (alert_id, change, clinician_id, status, payload)"
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                    " $5::jsonb[])"
                    " ON CONFLICT (alert_id, change) DO UPDATE SET alert_id = EXCLUDED.alert_id"
                    " RETURNING alert_id, change, status",
                    [c["alert"]["id"] for c in changes], [c["change"] for c in changes],
                    [c["alert"]["clinician_id"] for c in changes],
                    ["pending"] * len(changes),
                    [orjson.dumps(c).decode() for c in changes],
                )
            done = {(r["alert_id"], r["change"]) for r in rows if r["status"] == "delivered"}
            return [c for c in changes if (c["alert"]["id"], c["change"]) not in done]

        return await write_until_done(write, "deliveries")

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
            await conn.execute(
                "UPDATE alert_deliveries SET status = $3, attempts = attempts + $4,"
                " last_error = $5, updated_at = now() WHERE alert_id = $1 AND change = $2",
                alert_id, change, status, attempts, error,
            )

    async def retry_failed(self) -> int:
        async with self.store.acquire() as conn:
            rows = await conn.fetch(
                "SELECT payload FROM alert_deliveries WHERE status IN ('failed', 'no_webhook')"
                " ORDER BY updated_at LIMIT 200"
            )
        results = await asyncio.gather(*(self.deliver(orjson.loads(r["payload"])) for r in rows))
        return sum(1 for r in results if r == "delivered")


def register(topology: Topology, store: EventStore, settings: Settings) -> Any:
    app = topology.app
    deliverer = Deliverer(store, settings, topology.metrics)

    @app.agent(topology.alerts, name="deliver")
    async def deliver(stream: Any) -> None:
        async for values in stream.take(200, within=0.2):
            # A replayed alert may repeat in one batch: the last snapshot per change wins.
            unique = {(c["alert"]["id"], c["change"]): c for c in map(orjson.loads, values)}
            changes = list(unique.values())
            pending = await deliverer.record(changes)
            await asyncio.gather(*(deliverer.deliver(c) for c in pending))

    @app.timer(settings.webhook_retry_interval_s)
    async def retry() -> None:
        await deliverer.retry_failed()

    return deliver
