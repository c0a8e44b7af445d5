"""Overlap (issue 21): the worker decides the next fetch while the one before commits
(``Ingest.begin``), on top of that one's states, and writes it only after that one committed
with that same decision. Driven as the ingest consumer drives it (begin, wait for
``decided``, then the one before's end), on the in-memory store with each write held until
the test lets it go, so the next fetch really is decided while the one before has not
written: what is stored and published equals recording the fetches one at a time; a fetch
decided on one whose write failed is decided again after it; one decided on a fetch that
was never recorded is not written."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from rtm.simulate import simulate
from schemas.events import DEFAULT_ORG, PatientKey
from streams.clock import FixedClock
from streams.db.batch import BatchWrite, Written
from streams.db.memory import MemoryIngestStore
from streams.kafka.control import Record, patient_partition
from streams.metrics import WorkerMetrics
from streams.services.alerts import Publisher
from streams.services.ingest import DeadLetterGuard, Ingest, PredecessorFailed, Started
from tests.unit.test_step_in_process import PARTITIONS, Topics

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
COHORT = list(simulate(12, 30, 5, start=dt.date(2026, 9, 1)))
FETCH = 40  # records per fetch: consecutive fetches share patients


@dataclass
class HeldStore(MemoryIngestStore):
    """The in-memory store whose writes wait until the test lets them go (``hold``; each
    write is known by its first event's id), and whose ``fail``-numbered write calls raise
    as a database going away would."""

    hold: bool = False
    fail: set[int] = field(default_factory=set)
    waiting: dict[str, asyncio.Event] = field(default_factory=dict)
    calls: int = 0

    async def write(self, batch: BatchWrite, loaded: dict[PatientKey, int]) -> Written:
        n = self.calls
        self.calls += 1
        if self.hold and batch.events:
            gate = self.waiting[batch.events[0].event_id] = asyncio.Event()
            await gate.wait()
        if n in self.fail:
            raise ConnectionError("the database went away")
        return await super().write(batch, loaded)

    def let_go(self, fetch: Sequence[Record]) -> None:
        """Let the writes of this fetch's events go (and those to come)."""
        ids = {orjson.loads(r.value)["event_id"] for r in fetch}
        for first in [k for k in self.waiting if k in ids]:
            self.waiting.pop(first).set()


def make(store: MemoryIngestStore) -> tuple[Ingest, Topics]:
    clock = FixedClock(NOW)
    store.clock = clock
    topics = Topics()
    metrics = WorkerMetrics(CollectorRegistry())
    ingest = Ingest(
        store,
        topics,
        Publisher(store, topics, metrics, clock),
        metrics,
        clock,
        partitions=PARTITIONS,
        max_future_skew_s=300.0,
        guard=DeadLetterGuard(100, 1.0, 60.0, 1000),
    )
    return ingest, topics


def fetches(events: Sequence[dict[str, Any]]) -> list[list[Record]]:
    records = [
        Record(orjson.dumps(e), patient_partition((DEFAULT_ORG, e["patient_id"]), PARTITIONS))
        for e in events
    ]
    return [records[i : i + FETCH] for i in range(0, len(records), FETCH)]


async def one_at_a_time() -> tuple[MemoryIngestStore, Topics]:
    store = MemoryIngestStore()
    ingest, topics = make(store)
    for fetch in fetches(COHORT):
        await ingest.record_batch(fetch)
    return store, topics


async def finish(started: Started, fetch: Sequence[Record], store: HeldStore) -> None:
    while not started.task.done():
        store.let_go(fetch)
        await asyncio.wait([started.task], timeout=0.01)
    await started.task


async def as_the_consumer(ingest: Ingest, store: HeldStore) -> int:
    """Begin each fetch once the one before has decided (or is done: one recorded one at a
    time waits for the one before, whose write is then let go); the one before's write is
    let go only after that. Returns how many fetches were decided before the one before
    had written."""
    overlapped = 0
    before: tuple[Started, list[Record]] | None = None
    for fetch in fetches(COHORT):
        started = ingest.begin(fetch)
        while not (started.decided.done() or started.task.done()):
            await asyncio.wait([started.decided, started.task], timeout=0.01)
            if before is not None and not started.decided.done():
                store.let_go(before[1])
        if before is not None:
            overlapped += not before[0].task.done()
            await finish(*before, store)
        before = (started, fetch)
    assert before is not None
    await finish(*before, store)
    return overlapped


def stored(store: MemoryIngestStore, topics: Topics) -> dict[str, Any]:
    """What a clinician and a biller rely on (alert ids are derived from what fired them,
    so the two runs' ids agree)."""
    return {
        "events": sorted(store.events),
        "alerts": store.alerts,
        "published": [(c["change"], c["alert"]["id"]) for c in topics.alerts],
        "days": store.data_days,
        "states": {k: (rev, state) for k, (rev, _, state) in store.states.items()},
        "rollups": store.rollups,
        "adherence": store.adherence,
        "deliveries": {k: d.status for k, d in store.deliveries.items()},
    }


async def test_the_next_fetch_is_decided_while_one_commits_and_the_result_is_the_same() -> None:
    serial_store, serial_topics = await one_at_a_time()
    store = HeldStore(hold=True)
    ingest, topics = make(store)
    overlapped = await as_the_consumer(ingest, store)
    n = len(fetches(COHORT))
    # most fetches were decided on top of one not yet written (some wait: an intake the one
    # before changed, an episode refused)
    assert overlapped >= n // 2, (overlapped, n)
    assert stored(store, topics) == stored(serial_store, serial_topics)
    assert len(store.alerts) > 0 and store.outbox == {}


async def test_a_fetch_decided_on_one_whose_write_failed_is_decided_again_after_it() -> None:
    serial_store, serial_topics = await one_at_a_time()
    store = HeldStore(hold=True, fail={0, 3})  # the first write, and a later one, fail once
    ingest, topics = make(store)
    await as_the_consumer(ingest, store)
    # the two failed writes were made again (and the fetches after them decided again)
    assert store.calls > len(fetches(COHORT)) + 2
    assert stored(store, topics) == stored(serial_store, serial_topics)


async def test_a_fetch_decided_on_one_never_recorded_is_not_written() -> None:
    store = HeldStore(hold=True)
    ingest, topics = make(store)
    first, second = fetches(COHORT)[:2]
    one = ingest.begin(first)
    await asyncio.wait([one.decided], timeout=5)
    assert one.decided.done() and not one.task.done()  # its write is held
    two = ingest.begin(second)
    await asyncio.wait([two.decided], timeout=5)
    assert two.decided.done()  # decided on top of the first, which has not written
    one.task.cancel()  # the first is never recorded (the worker stops, say)
    with pytest.raises(asyncio.CancelledError):
        await one.task
    store.let_go(second)
    with pytest.raises(PredecessorFailed):
        await asyncio.wait_for(two.task, timeout=5)
    assert store.events == {} and store.alerts == {} and topics.alerts == []
