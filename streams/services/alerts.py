"""Alert use cases: a clinician's acknowledgement and snooze, and publishing the rtm.alerts
outbox.

``acknowledge``: what ``POST /v1/alerts/{id}/ack`` (and the dashboard's button) does. The
alert is found in the caller's scope; an open one takes ``Alert.acknowledged`` (the one
transition, the rules use it too) and is stored at once with the clinician's disposition
and note; the audit row names the patient and the disposition; then the acknowledgement
goes to rtm.events as a control record, keyed by patient, so the rules start the kind's
cool-down in order with the patient's events. ``snooze`` (``POST /v1/alerts/{id}/snooze``
and the page's form) goes the same way with ``Alert.snoozed``.

``Publisher``: the ingest batch queues its alert changes in ``alert_publish`` in its
transaction; after the commit they are sent to rtm.alerts and deleted once Kafka
acknowledged them. A timer (agents/alerts.py) sends what a crashed worker left behind, so a
kill between commit and publish loses none.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Protocol

import orjson

from alerts.models import Alert, Disposition
from streams.access import Principal
from streams.clock import Clock
from streams.db.access import audit_principal
from streams.db.alerts import Queued, alert_in_scope
from streams.db.alerts import acknowledge as record_acknowledgement
from streams.db.alerts import snooze as record_snooze
from streams.db.pool import Pool
from streams.kafka.control import Ack, Snooze
from streams.metrics import WorkerMetrics

# --- the acknowledgement and the snooze ----------------------------------------------------


class ControlSender(Protocol):
    """rtm.events, for an acknowledgement's or a snooze's control record (the gateway's
    producer)."""

    async def send_control(self, record: Ack | Snooze) -> None: ...


async def acknowledge(
    pool: Pool,
    sender: ControlSender,
    clock: Clock,
    who: Principal,
    alert_id: str,
    disposition: Disposition,
    note: str | None,
    *,
    source: str,
) -> Alert | None:
    """Acknowledge ``alert_id`` in ``who``'s name with a disposition and an optional note;
    the alert after it (None: not in the caller's scope, or unknown). ``source`` is the
    audit row's request. An alert acknowledged already stays as it was (the first
    acknowledgement counts) and the control record is sent again (the rules take it once);
    a resolved one is only audited."""
    by = who.name
    async with pool.acquire() as conn:
        alert = await alert_in_scope(conn, who.scope(), alert_id)
        if alert is None:
            return None
        at = clock.now()
        if alert.status == "open":
            alert = alert.acknowledged(at, by, disposition, note)
            await record_acknowledgement(conn, alert, note)
        await audit_principal(
            conn,
            who,
            "acknowledge",
            source,
            [alert.patient_id],
            {"alert_id": alert_id, "disposition": disposition, "note": note},
        )
    if alert.status == "acknowledged":
        await sender.send_control(
            Ack(
                alert_id,
                alert.org_id,
                alert.patient_id,
                alert.acknowledged_at or at,
                alert.acknowledged_by or by,
                alert.disposition,
                alert.ack_note,
            )
        )
    return alert


class SnoozeRefused(Exception):
    """A snooze the alert does not allow (a red flag, not open, too long): the reason."""


async def snooze(
    pool: Pool,
    sender: ControlSender,
    clock: Clock,
    who: Principal,
    alert_id: str,
    duration: dt.timedelta,
    reason: str,
    *,
    source: str,
) -> Alert | None:
    """Snooze ``alert_id`` in ``who``'s name for ``duration`` (the caller checked it is a
    configured one) with a reason; the alert after it (None: not in the caller's scope).
    Refused (``SnoozeRefused``, nothing stored or sent) for a kind that cannot be snoozed,
    an alert that is not open, or more than 7 days. Stored at once and audited, then sent
    to rtm.events so the rules (and the stream, the webhooks) carry it; it ends by itself:
    a reader compares ``snoozed_until`` with its clock."""
    async with pool.acquire() as conn:
        alert = await alert_in_scope(conn, who.scope(), alert_id)
        if alert is None:
            return None
        at = clock.now()
        until = at + duration
        refusal = alert.snooze_refusal(at, until)
        if refusal is not None:
            raise SnoozeRefused(refusal)
        alert = alert.snoozed(at, who.name, until, reason)
        await record_snooze(conn, alert)
        await audit_principal(
            conn,
            who,
            "snooze",
            source,
            [alert.patient_id],
            {"alert_id": alert_id, "until": until.isoformat(), "reason": reason},
        )
    await sender.send_control(
        Snooze(alert_id, alert.org_id, alert.patient_id, at, who.name, until, reason)
    )
    return alert


# --- the rtm.alerts outbox -----------------------------------------------------------------


class AlertsTopic(Protocol):
    """rtm.alerts."""

    async def publish_alerts(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Send (key, value) records and return once Kafka acknowledged every one."""
        ...


class Outbox(Protocol):
    async def unpublished(self, older_than_s: float, limit: int) -> list[Queued]: ...

    async def queued(self, seqs: Sequence[int]) -> list[Queued]: ...

    async def published(self, seqs: Sequence[int]) -> None: ...


class Publisher:
    def __init__(
        self, outbox: Outbox, topic: AlertsTopic, metrics: WorkerMetrics, clock: Clock
    ) -> None:
        self.outbox = outbox
        self.topic = topic
        self.metrics = metrics
        self.clock = clock
        # the timer's sends and the refresh's (``publish_queued``) one at a time: each reads
        # what is still queued, so a change is sent by one of them
        self._sending = asyncio.Lock()

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
        async with self._sending:
            rows = await self.outbox.unpublished(older_than_s, limit)
            await self.publish(rows)
        return len(rows)

    async def publish_queued(self, seqs: Sequence[int], limit: int = 1000) -> int:
        """Send the changes of ``seqs`` that are still queued (committed by another
        process, the refresh, which has no producer: without this they would wait for the
        timer's ``older_than_s``), ``limit`` at a time; how many."""
        sent = 0
        for start in range(0, len(seqs), limit):
            async with self._sending:
                rows = await self.outbox.queued(seqs[start : start + limit])
                await self.publish(rows)
            sent += len(rows)
        return sent
