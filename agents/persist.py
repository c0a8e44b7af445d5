"""Persist step: raw events into the events hypertable, in batches, exactly once per event_id."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Awaitable, Callable, Sequence, TypeVar

from rtm.metrics import WorkerMetrics
from schemas.events import Event
from streams.store import EventStore, utc_now

log = logging.getLogger(__name__)
T = TypeVar("T")


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


async def persist_events(store: EventStore, metrics: WorkerMetrics, events: Sequence[Event]) -> None:
    """Store a batch in the events hypertable, each event_id once."""
    t0 = time.perf_counter()
    result = await write_until_done(lambda: store.insert_events(events), "persist")
    metrics.write_latency.observe(time.perf_counter() - t0)
    metrics.batch_size.observe(len(events))
    metrics.events_stored.inc(result.stored)
    metrics.duplicates.inc(result.duplicates)
    now = utc_now()
    for e in events:
        metrics.events_processed.labels(e.type).inc()
        if e.received_at is not None:
            metrics.e2e_persisted.observe((now - e.received_at).total_seconds())
