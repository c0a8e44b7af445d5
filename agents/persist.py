"""Persist agent: raw events into the events hypertable, in batches, exactly once per event_id."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from pydantic import ValidationError

from rtm.settings import Settings
from schemas.events import Event, errors_of, parse_event_json
from streams.app import Topology
from streams.control import is_control
from streams.producer import dead_letter_payload
from streams.store import EventStore, utc_now

log = logging.getLogger(__name__)
T = TypeVar("T")


def decode_batch(values: Sequence[bytes]) -> tuple[list[Event], list[tuple[bytes, bytes]]]:
    """Valid events, and dead-letter records for the ones that fail the contract.

    Producers may write straight to Kafka, so the worker checks the contract again.
    """
    good: list[Event] = []
    dead: list[tuple[bytes, bytes]] = []
    for raw in values:
        if is_control(raw):
            continue
        try:
            good.append(parse_event_json(raw))
        except ValidationError as exc:
            errs = [e.model_dump() for e in errors_of(exc)]
            dead.append((b"", dead_letter_payload(raw.decode("utf-8", "replace"), errs, "worker")))
    return good, dead


async def write_until_done(op: Callable[[], Awaitable[T]], what: str) -> T:
    """Retry a database write with backoff; never let take() ack an unwritten batch.

    If the worker is stopped mid-write we finish the write first. Should it still fail,
    we exit hard so that Faust cannot commit the batch's offsets on the way out.
    """
    delay = 0.2
    while True:
        task = asyncio.ensure_future(op())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                await asyncio.wait_for(task, timeout=30)
            except Exception:
                log.critical("%s unfinished at shutdown; exiting before offsets commit", what)
                os._exit(75)
            raise
        except Exception as exc:
            log.warning("%s failed (%s); retrying in %.1fs", what, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def register(topology: Topology, store: EventStore, settings: Settings) -> Any:
    app, m = topology.app, topology.metrics

    @app.agent(topology.events, name="persist")
    async def persist(stream: Any) -> None:
        async for values in stream.take(settings.worker_batch_size, within=settings.worker_batch_within_s):
            events, dead = decode_batch(values)
            for key, value in dead:
                await topology.dead.send(key=key, value=value)
                m.dead_letters.labels("contract").inc()
            if events:
                t0 = time.perf_counter()
                result = await write_until_done(lambda: store.insert_events(events), "persist")
                m.write_latency.observe(time.perf_counter() - t0)
                m.batch_size.observe(len(events))
                m.events_stored.inc(result.stored)
                m.duplicates.inc(result.duplicates)
                now = utc_now()
                for e in events:
                    m.events_processed.labels(e.type).inc()
                    if e.received_at is not None:
                        m.e2e_persisted.observe((now - e.received_at).total_seconds())

    return persist
