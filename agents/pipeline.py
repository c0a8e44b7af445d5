"""The ingest agent: the one consumer of rtm.events in a worker.

Each record is decoded once (control records, contract events, or dead letters), then the
batch goes through three steps concurrently: persist, billing ledger, alerts. Every step writes
idempotently and finishes before take_events() acks the batch, so offsets are committed
only for records whose every effect is stored. (Four agents on the same topic each paid
Faust's per-record cost and pydantic's parse: see docs/benchmarks.md.)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from pydantic import ValidationError

from agents.alerts import AlertsStep, Item, register_clock
from agents.billing import record_billing
from agents.persist import persist_events
from rtm.settings import Settings
from schemas.events import Event, errors_of, parse_event_json
from streams import control
from streams.app import Topology
from streams.producer import dead_letter_payload
from streams.store import EventStore

log = logging.getLogger(__name__)


@dataclass
class Decoded:
    events: list[Event] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)  # for the alert rules, arrival order
    dead: list[tuple[bytes, bytes]] = field(default_factory=list)


def decode(records: Sequence[tuple[bytes, int]]) -> Decoded:
    """(value, partition) records to events, alert items and dead letters.

    Producers may write straight to Kafka, so the worker checks the contract again.
    """
    out = Decoded()
    for raw, partition in records:
        if raw.startswith(control.TICK_PREFIX):
            out.items.append(("tick", control.parse(raw)[1], partition))
        elif raw.startswith(control.ACK_PREFIX):
            out.items.append(("ack", control.parse(raw)[1], partition))
        else:
            try:
                event = parse_event_json(raw)
            except ValidationError as exc:
                errs = [e.model_dump() for e in errors_of(exc)]
                out.dead.append(
                    (b"", dead_letter_payload(raw.decode("utf-8", "replace"), errs, "worker")))
                continue
            out.events.append(event)
            out.items.append(("event", event, partition))
    return out


def register(topology: Topology, store: EventStore, settings: Settings) -> Any:
    app, m = topology.app, topology.metrics
    alerts = AlertsStep(topology, store, settings)
    register_clock(topology, settings)

    @app.agent(topology.events, name="ingest")
    async def ingest(stream: Any) -> None:
        async for records in stream.take_events(
            settings.worker_batch_size, within=settings.worker_batch_within_s
        ):
            batch = decode([(r.value, r.message.partition) for r in records])
            for key, value in batch.dead:
                await topology.dead.send(key=key, value=value)
                m.dead_letters.labels("contract").inc()
            # The three effects are independent (none reads another's tables), so their
            # database round trips overlap; the batch is acked only when all are written.
            steps = [alerts(batch.items)]
            if batch.events:
                steps += [persist_events(store, m, batch.events),
                          record_billing(store, m, batch.events)]
            await asyncio.gather(*steps)

    register_lag(topology, settings)
    return ingest


def register_lag(topology: Topology, settings: Settings) -> None:
    """rtm_worker_consumer_lag{topic,partition}: log end minus committed offset, for every
    partition of rtm.events this worker holds; partitions it no longer holds are dropped."""
    if not settings.worker_lag_interval_s:
        return
    app, gauge = topology.app, topology.metrics.consumer_lag
    topic = settings.topic_events
    shown: set[int] = set()

    @app.timer(settings.worker_lag_interval_s, name="consumer_lag")
    async def consumer_lag() -> None:
        try:
            tps = sorted((tp for tp in app.consumer.assignment() if tp.topic == topic),
                         key=lambda tp: tp.partition)
            ends = await app.consumer.highwaters(*tps) if tps else {}
            missing = [tp for tp in tps if app.consumer._committed_offset.get(tp) is None]
            starts = await app.consumer.earliest_offsets(*missing) if missing else {}
        except Exception as exc:  # not started, mid-rebalance, broker away: try next time
            log.debug("consumer lag not measured: %r", exc)
            return
        held = set()
        for tp in tps:
            held.add(tp.partition)
            end = ends.get(tp)
            if end is None:
                continue  # keep the last value until the next measurement
            # Faust keeps the committed offset as "next to read" (None before any commit,
            # or when it is 0): nothing committed yet means all from the log start is owed.
            position = app.consumer._committed_offset.get(tp)
            if position is None:
                position = starts.get(tp) or 0
            gauge.labels(topic, str(tp.partition)).set(max(int(end) - int(position), 0))
        for partition in shown - held:
            try:
                gauge.remove(topic, str(partition))
            except KeyError:
                pass
        shown.clear()
        shown.update(held)
