"""Alert use cases: a clinician's acknowledgement, and publishing the rtm.alerts outbox.

``acknowledge``: what ``POST /v1/alerts/{id}/ack`` (and the dashboard's button) does. The
alert is found in the caller's scope; an open one takes ``Alert.acknowledged`` (the one
transition, the rules use it too) and is stored at once with the clinician's note; the
audit row names the patient; then the acknowledgement goes to rtm.events as a control
record, keyed by patient, so the rules start the kind's cool-down in order with the
patient's events.

``Publisher``: the ingest batch queues its alert changes in ``alert_publish`` in its
transaction; after the commit they are sent to rtm.alerts and deleted once Kafka
acknowledged them. A timer (agents/alerts.py) sends what a crashed worker left behind, so a
kill between commit and publish loses none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

import orjson

from alerts.models import Alert
from streams.access import Principal
from streams.clock import Clock
from streams.db.access import audit_principal
from streams.db.alerts import Queued, alert_in_scope
from streams.db.alerts import acknowledge as record_acknowledgement
from streams.db.pool import Pool
from streams.metrics import WorkerMetrics

# --- the acknowledgement -------------------------------------------------------------------


class AckSender(Protocol):
    """rtm.events, for the acknowledgement's control record (the gateway's producer)."""

    async def send_ack(
        self, alert_id: str, org_id: str, patient_id: str, at: dt.datetime, by: str
    ) -> None: ...


async def acknowledge(
    pool: Pool,
    sender: AckSender,
    clock: Clock,
    who: Principal,
    alert_id: str,
    note: str | None,
    *,
    source: str,
) -> Alert | None:
    """Acknowledge ``alert_id`` in ``who``'s name with an optional note; the alert after it
    (None: not in the caller's scope, or unknown). ``source`` is the audit row's request.
    An alert acknowledged already stays as it was (the first acknowledgement counts) and
    the control record is sent again (the rules take it once); a resolved one is only
    audited."""
    by = who.name
    async with pool.acquire() as conn:
        alert = await alert_in_scope(conn, who.scope(), alert_id)
        if alert is None:
            return None
        at = clock.now()
        if alert.status == "open":
            alert = alert.acknowledged(at, by)
            await record_acknowledgement(conn, alert, note)
        await audit_principal(
            conn,
            who,
            "acknowledge",
            source,
            [alert.patient_id],
            {"alert_id": alert_id, "note": note},
        )
    if alert.status == "acknowledged":
        await sender.send_ack(alert_id, alert.org_id, alert.patient_id, at, by)
    return alert


# --- the rtm.alerts outbox -----------------------------------------------------------------


class AlertsTopic(Protocol):
    """rtm.alerts."""

    async def publish_alerts(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Send (key, value) records and return once Kafka acknowledged every one."""
        ...


class Outbox(Protocol):
    async def unpublished(self, older_than_s: float, limit: int) -> list[Queued]: ...

    async def published(self, seqs: Sequence[int]) -> None: ...


class Publisher:
    def __init__(
        self, outbox: Outbox, topic: AlertsTopic, metrics: WorkerMetrics, clock: Clock
    ) -> None:
        self.outbox = outbox
        self.topic = topic
        self.metrics = metrics
        self.clock = clock

    async def publish(
        self, rows: Sequence[Queued], received: dict[str, dt.datetime] | None = None
    ) -> None:
        """Send queued changes to rtm.alerts (key ``<org>/<patient_id>``), wait for Kafka's
        acks, then delete the rows. A failure leaves them for the timer. ``received``: the
        batch's new events' received_at by id (the alert latency metric)."""
        if not rows:
            return
        await self.topic.publish_alerts([(r.key.encode(), r.payload.encode()) for r in rows])
        if received:
            now = self.clock.now()
            for r in rows:
                change = orjson.loads(r.payload)
                if change["change"] != "fired":
                    continue
                for eid in change["alert"]["event_ids"]:
                    if eid in received:
                        self.metrics.e2e_alert.observe((now - received[eid]).total_seconds())
        await self.outbox.published([r.seq for r in rows])

    async def publish_left_behind(self, older_than_s: float, limit: int = 1000) -> int:
        """Send up to ``limit`` changes queued more than ``older_than_s`` ago; how many."""
        rows = await self.outbox.unpublished(older_than_s, limit)
        await self.publish(rows)
        return len(rows)
