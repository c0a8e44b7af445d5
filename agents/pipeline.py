"""The ingest step: what the worker does with each batch of rtm.events (agents/ingest.py
consumes the topic in whole fetches and calls it).

Per batch, in ONE database transaction:
1. new events into the events table (``INSERT ... ON CONFLICT DO NOTHING RETURNING``): only
   the ids it returns are new, and only new events feed the ledger and the rules;
2. the billing ledger rows of the new events;
3. the alert rules: states loaded, ``alerts.batch.apply_batch`` (pure), touched states,
   alerts, the webhook outbox and the rtm.alerts outbox written;
then the commit, then Faust commits the offsets (after the agent body returns), then the
rtm.alerts outbox rows of the batch are published. A SIGKILL anywhere loses nothing (the
batch is re-delivered and its effects were all or nothing) and doubles nothing (the events
table says which events are new; the outbox re-sends, consumers dedupe by id + change).

A patient is (organisation, patient_id): the gateway's stamp (``org_id``; a record written
straight to Kafka without one is DEFAULT_ORG's) and the patient id together key the state,
the events (an event id is unique per organisation), the ledger, alerts and rollups, so two
organisations sending one patient_id never meet. The Kafka key is ``<org>/<patient_id>``.

Dead letters (``rtm.events.dead``, with the reason): records the contract refuses, events
dated more than ``RTM_MAX_FUTURE_SKEW_S`` after their receipt, records the database refuses
for their content (the batch goes on without them) and a second active ``episode.started``.
They are sent before the commit, so a crash can repeat one but never lose one.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from agents.alerts import Publisher, partition_of, register_clock, register_publisher
from agents.ingest import DeadLetterGuard, DeadLetterLimit, IngestConsumer
from agents.persist import write_until_done
from alerts.batch import AckItem, BatchResult, EventItem, Item, TickItem, apply_batch
from alerts.models import DEFAULT_CONFIG
from billing.ledger import ledger_rows
from schemas.events import (
    DEFAULT_ORG,
    EpisodeStarted,
    Event,
    FieldError,
    PatientKey,
    errors_of,
    future_skew_error,
    key_text,
    parse_event_json,
)
from streams.db.access import record_patient_clinicians, record_patients
from streams.db.alerts import (
    StateStore,
    alerts_by_id,
    queue_deliveries,
    queue_publish,
    upsert_alerts,
)
from streams.db.events import (
    CONTENT_ERRORS,
    EventStore,
    event_key,
    insert_new_events,
    refused_for_content,
    utc_now,
)
from streams.db.ledger import write_ledger
from streams.db.rollups import write_rollups
from streams.kafka import control
from streams.kafka.app import Topology, task, timer
from streams.kafka.producer import dead_letter_payload
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Decoded:
    items: list[Item] = field(default_factory=list)  # arrival order
    dead: list[tuple[bytes, bytes, str]] = field(default_factory=list)  # key, payload, reason
    dead_flags: list[bool] = field(default_factory=list)  # per event record, in record order

    @property
    def events(self) -> list[Event]:
        return [i.event for i in self.items if isinstance(i, EventItem)]

    def dead_runs(self) -> tuple[int, int, int]:
        """Dead letters before the first good record, the longest run between good ones,
        and after the last good one (DeadLetterGuard.check's ``runs``)."""
        runs: list[int] = [0]
        for is_dead in self.dead_flags:
            if is_dead:
                runs[-1] += 1
            else:
                runs.append(0)
        inner = max(runs[1:-1], default=0)
        return runs[0], inner, runs[-1] if len(runs) > 1 else 0


def decode(records: Sequence[tuple[bytes, int, float | None]], max_skew_s: float) -> Decoded:
    """(value, partition, Kafka timestamp in s) records to typed items and dead letters.

    Producers may write straight to Kafka, so the worker checks the contract again, and the
    future-date rule against the gateway's received_at or, without one, the record's time.
    """
    out = Decoded()
    for raw, partition, kafka_ts in records:
        if raw.startswith(control.TICK_PREFIX):
            out.items.append(TickItem(control.parse(raw)[1], partition))
            continue
        if raw.startswith(control.ACK_PREFIX):
            ack = control.parse(raw)[1]
            out.items.append(
                AckItem(
                    ack["patient_id"],
                    ack["alert_id"],
                    ack["at"],
                    ack["by"],
                    org_id=ack.get("org_id", DEFAULT_ORG),
                )
            )
            continue
        try:
            event = parse_event_json(raw)
        except ValidationError as exc:
            out.dead.append(_dead(raw, errors_of(exc), "contract"))
            out.dead_flags.append(True)
            continue
        reference = event.received_at
        if reference is None and kafka_ts is not None:
            reference = dt.datetime.fromtimestamp(kafka_ts, dt.UTC)
        if reference is not None:
            err = future_skew_error(event, reference, max_skew_s)
            if err is not None:
                out.dead.append(_dead(raw, [err], "future"))
                out.dead_flags.append(True)
                continue
        out.items.append(EventItem(event))
        out.dead_flags.append(False)
    return out


def _dead(
    raw: bytes | dict[str, Any], errors: list[FieldError], reason: str
) -> tuple[bytes, bytes, str]:
    body: Any = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    key = ""
    if isinstance(raw, dict):
        key = key_text((str(raw.get("org_id") or DEFAULT_ORG), str(raw.get("patient_id", ""))))
    return (
        key.encode(),
        dead_letter_payload(body, [e.model_dump() for e in errors], "worker"),
        reason,
    )


class IngestStep:
    """One batch through persist, billing and alerts in one transaction."""

    def __init__(
        self, topology: Topology, store: EventStore, settings: Settings, publisher: Publisher
    ) -> None:
        self.topology = topology
        self.store = store
        self.settings = settings
        self.partitions = settings.topic_partitions
        self.states = StateStore()
        self.config = DEFAULT_CONFIG
        self.publisher = publisher
        self.guard = DeadLetterGuard(
            settings.dead_letter_max_consecutive,
            settings.dead_letter_max_ratio,
            settings.dead_letter_window_s,
            settings.dead_letter_min_records,
        )
        self.partitions_assigned = False  # states stored without one (013) given theirs

    def partition_of(self, key: PatientKey) -> int:
        """The rtm.events partition of a patient: the one its Kafka key hashes to."""
        return partition_of(key_text(key).encode(), self.partitions)

    async def __call__(self, records: Sequence[tuple[bytes, int, float | None]]) -> None:
        batch = decode(records, self.settings.max_future_skew_s)
        if batch.dead:
            # before a dead letter is sent or an offset moves: a bad deploy halts here
            n_events = len(batch.events) + len(batch.dead)
            reason = self.guard.check(
                time.monotonic(), n_events, len(batch.dead), batch.dead_runs()
            )
            if reason is not None:
                raise DeadLetterLimit(reason)
        elif batch.events:
            self.guard.check(time.monotonic(), len(batch.events), 0)
        await self._send_dead(batch.dead)
        if not batch.items:
            return
        t0 = time.perf_counter()
        outcome = await write_until_done(lambda: self._write(batch), "batch")
        m = self.topology.metrics
        m.write_latency.observe(time.perf_counter() - t0)
        new_events, result, seqs = outcome
        events = batch.events
        m.batch_size.observe(len(events))
        m.events_stored.inc(len(new_events))
        m.duplicates.inc(len(events) - len(new_events))
        now = utc_now()
        received: dict[str, dt.datetime] = {}  # by event_id, for the alert latency only
        for e in events:
            m.events_processed.labels(e.type).inc()  # taken, new or re-delivered
        for e in new_events:
            if e.received_at is not None:
                m.e2e_persisted.observe((now - e.received_at).total_seconds())
                received[e.event_id] = e.received_at
        for ch in result.changes:
            if ch.change == "fired":
                m.alerts_fired.labels(ch.alert.kind, ch.alert.severity).inc()
                if ch.alert.unrouted:
                    m.alerts_unrouted.labels(ch.alert.kind).inc()
        rows = [
            (seq, key_text((ch.alert.org_id, ch.alert.patient_id)), ch.model_dump_json())
            for seq, ch in zip(seqs, result.changes, strict=True)
        ]
        try:
            await self.publisher.publish(rows, received)
        except Exception as exc:  # committed and queued: the outbox timer sends them
            log.warning("alert changes left in the outbox (%s)", type(exc).__name__)

    async def _write(self, batch: Decoded) -> tuple[list[Event], BatchResult, list[int]]:
        items = batch.items
        while True:
            try:
                return await self._transaction(items)
            except CONTENT_ERRORS:
                self.states.forget()
                async with self.store.acquire() as conn:
                    refused = await refused_for_content(
                        conn, [i.event for i in items if isinstance(i, EventItem)]
                    )
                if not refused:
                    raise  # not one event's content: a fault of the batch, retried
                await self._send_dead(
                    [
                        _dead(
                            orjson.loads(i.event.model_dump_json()),
                            [FieldError(field="", message=f"refused by the database: {why}")],
                            "database",
                        )
                        for i in items
                        if isinstance(i, EventItem) and (why := refused.get(event_key(i.event)))
                    ]
                )
                items = [
                    i
                    for i in items
                    if not (isinstance(i, EventItem) and event_key(i.event) in refused)
                ]
            except BaseException:
                self.states.forget()  # the cache may hold states the rollback undid
                raise

    async def _transaction(
        self, items: Sequence[Item]
    ) -> tuple[list[Event], BatchResult, list[int]]:
        events = [i.event for i in items if isinstance(i, EventItem)]
        async with self.store.acquire() as conn:
            async with conn.transaction():
                if not self.partitions_assigned:
                    await self.states.assign_partitions(conn, self.partition_of)
                new_keys = await insert_new_events(conn, events)
                new_events: list[Event] = []
                fresh: list[Item] = []
                for item in items:
                    if isinstance(item, EventItem):
                        key = event_key(item.event)
                        if key not in new_keys:
                            continue  # re-delivered: its effects are stored already
                        new_keys.discard(key)  # a repeat inside the batch counts once
                        new_events.append(item.event)
                    fresh.append(item)
                await record_patients(conn, (e.patient_key for e in new_events))
                await record_patient_clinicians(
                    conn,
                    (
                        (*e.patient_key, e.clinician_id)
                        for e in new_events
                        if isinstance(e, EpisodeStarted)
                    ),
                )
                rows = ledger_rows(new_events)
                if len(rows):
                    days, _, _ = await write_ledger(conn, rows)
                    self.topology.metrics.billing_days.inc(days)
                keys = {i.key for i in fresh if not isinstance(i, TickItem)}
                for part in {i.partition for i in fresh if isinstance(i, TickItem)}:
                    keys.update(await self.states.patients_of_partition(conn, part))
                states = await self.states.load(conn, sorted(keys))
                fresh = await self._with_stored_alerts(conn, fresh, states)
                result = apply_batch(states, fresh, self.config, self.partition_of)
                await upsert_alerts(conn, result.changes)
                await write_rollups(conn, result.states, new_events)  # the worklist's rows
                await queue_deliveries(conn, result.changes)
                seqs = await queue_publish(conn, result.changes)
                await self.states.save(
                    conn, result.states, {p: self.partition_of(p) for p in result.states}
                )
                # events.md: a second active episode is rejected (409-style) with a clear
                # reason; the log keeps the event, every derived number ignores it.
                await self._send_dead(
                    [
                        _dead(
                            orjson.loads(ev.model_dump_json()),
                            [
                                FieldError(
                                    field="episode_id", message=f"episode_id: {reason} (conflict)"
                                )
                            ],
                            "episode_conflict",
                        )
                        for ev, reason in result.refused
                    ]
                )
        self.states.commit_saved()
        self.partitions_assigned = True
        return new_events, result, seqs

    async def _with_stored_alerts(
        self, conn: Any, items: list[Item], states: dict[PatientKey, Any]
    ) -> list[Item]:
        """Acks of alerts no longer in the state (resolved) carry the stored snapshot."""
        missing = [
            i.alert_id
            for i in items
            if isinstance(i, AckItem) and i.alert_id not in states[i.key].alerts
        ]
        if not missing:
            return items
        stored = await alerts_by_id(conn, missing)
        return [
            AckItem(i.patient_id, i.alert_id, i.at, i.by, stored.get(i.alert_id), i.org_id)
            if isinstance(i, AckItem) and i.alert_id in stored
            else i
            for i in items
        ]

    async def _send_dead(self, dead: Sequence[tuple[bytes, bytes, str]]) -> None:
        m = self.topology.metrics
        for key, value, reason in dead:
            await self.topology.dead.send(key=key, value=value)
            m.dead_letters.labels(reason).inc()


def register(topology: Topology, store: EventStore, settings: Settings) -> Any:
    publisher = register_publisher(topology, store, settings)
    step = IngestStep(topology, store, settings, publisher)
    register_clock(topology, settings)
    consumer = IngestConsumer(settings, step, topology.metrics)

    @task(topology)
    async def ingest() -> None:
        """rtm.events, whole fetches at a time (agents/ingest.py says why not an agent)."""
        await consumer.run()

    register_lag(topology, settings, consumer)
    return consumer


def register_lag(topology: Topology, settings: Settings, consumer: IngestConsumer) -> None:
    """rtm_worker_consumer_lag{topic,partition}: log end minus committed offset, for every
    partition of rtm.events this worker holds; partitions it no longer holds are dropped."""
    if not settings.worker_lag_interval_s:
        return
    gauge = topology.metrics.consumer_lag
    topic = settings.topic_events
    shown: set[int] = set()

    @timer(topology, settings.worker_lag_interval_s, name="consumer_lag")
    async def consumer_lag() -> None:
        try:
            lags = await consumer.lag()
        except Exception as exc:  # not started, mid-rebalance, broker away: try next time
            log.debug("consumer lag not measured: %r", exc)
            return
        if lags is None:
            return
        for partition, value in lags.items():
            gauge.labels(topic, str(partition)).set(value)
        for partition in shown - set(lags):
            try:
                gauge.remove(topic, str(partition))
            except KeyError:
                pass
        shown.clear()
        shown.update(lags)
