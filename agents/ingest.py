"""The ingest consumer: rtm.events in whole fetches through the batch step.

Why not a Faust agent: Faust hands a stream one record at a time (``Conductor.on_message``,
a queue per topic, ``Stream`` iteration, an ack per record), and on this box that per-record
path cost about half of the worker's CPU before the step did any work (docs/benchmarks.md).
The step works on batches anyway, so this follows getsentry/arroyo's model instead: a plain
Kafka consumer-group member (aiokafka) takes what a fetch returns (up to
``RTM_WORKER_BATCH_SIZE`` records, waiting at most ``RTM_WORKER_BATCH_WITHIN_S``), runs the
step (one database transaction), and only then commits the batch's offsets. Kafka's group
protocol still assigns the partitions (nothing home-made); Faust keeps the timers, the
web server, ticks and the producer.

Rebalance: a partition is given up only between batches (``on_partitions_revoked`` waits for
the batch in flight, whose offsets are then committed), so a batch is never half-owned.
A SIGKILL anywhere re-delivers from the last commit; the step's effects are all or nothing
and idempotent (streams/services/ingest.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from streams.kafka.control import Record
from streams.kafka.transport import kafka_client_kwargs
from streams.metrics import WorkerMetrics
from streams.services.ingest import DeadLetterLimit
from streams.settings import Settings

log = logging.getLogger(__name__)

# One fetch's records, in partition order then offset order (streams.services.ingest).
Step = Callable[[Sequence[Record]], Awaitable[None]]


def group_id(settings: Settings) -> str:
    """The consumer group of rtm.events: the worker's app id (the one operators and the
    tests read committed offsets of)."""
    return settings.worker.app_id


def record(r: ConsumerRecord[Any, Any]) -> Record:
    """aiokafka's record as the step takes it (Kafka's time in seconds)."""
    ts = r.timestamp / 1000.0 if r.timestamp is not None else None
    return Record(r.value, r.partition, ts)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: IngestConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # wait for the batch in flight: its transaction commits, then its offsets
        async with self.owner.lock:
            for tp in revoked:
                self.owner.committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("ingest: %d partitions assigned", len(assigned))


class FetchCollector(Protocol):
    """The process's garbage collection around each fetch (``agents.worker.Collector``)."""

    def before_fetch(self) -> None: ...

    def after_fetch(self) -> None: ...


class IngestConsumer:
    def __init__(
        self,
        settings: Settings,
        step: Step,
        metrics: WorkerMetrics | None = None,
        collector: FetchCollector | None = None,
    ) -> None:
        self.settings = settings
        self.step = step
        self.metrics = metrics
        self.collector = collector  # the process's garbage collection around each fetch
        self.lock = asyncio.Lock()
        self.committed: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self.consumer: AIOKafkaConsumer | None = None
        self.last_poll: float | None = None  # monotonic time the loop last came round
        self.halted: str | None = None

    def _make_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            **kafka_client_kwargs(s),
            group_id=group_id(s),
            client_id=f"{s.worker.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.worker.batch_size,
            # what aiokafka reads ahead while a batch is decided and written: a batch of
            # 20,000 records is ~10 MB; 64 MB (8 a partition) held a backlog's worker
            # 160-190 MB higher while it took a year of history, at the same speed
            # (docs/benchmarks.md, fifteenth round)
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=2 * 1024 * 1024,
            # a worker that dies is noticed in seconds, so its partitions move quickly
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            # the longest a batch may take (a database outage retries inside the step)
            max_poll_interval_ms=30 * 60 * 1000,
        )

    async def run(self) -> None:
        """Consume until cancelled. A failure (broker away at start, a commit refused
        mid-rebalance) restarts the consumer from its last committed offsets after a
        backoff: the batch re-delivered is idempotent, and the worker never sits alive
        with ingestion silently stopped."""
        delay = 0.5
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except DeadLetterLimit as exc:
                # Stay up (metrics, timers) but consume nothing until an operator restarts
                # the worker with the cause fixed: the records are still in Kafka.
                log.critical(
                    "ingest halted at the dead-letter limit: %s; fix the producer "
                    "or the deploy, then restart the worker",
                    exc,
                )
                self.halted = str(exc)
                if self.metrics is not None:
                    self.metrics.ingest_halted.set(1)
                await asyncio.Event().wait()
            except Exception as exc:
                log.warning(
                    "ingest consumer stopped (%s); restarting in %.1f s", type(exc).__name__, delay
                )
                self.committed.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _consume(self) -> None:
        consumer = self.consumer = self._make_consumer()
        consumer.subscribe([self.settings.kafka.topic_events], listener=_Rebalance(self))
        await consumer.start()
        window_ms = max(int(self.settings.worker.batch_within_s * 1000), 1)
        try:
            while True:
                self.last_poll = time.monotonic()
                fetched = await consumer.getmany(
                    timeout_ms=window_ms, max_records=self.settings.worker.batch_size
                )
                if not fetched:
                    continue
                if self.collector is not None:
                    self.collector.before_fetch()
                try:
                    await self._record(consumer, fetched)
                finally:
                    if self.collector is not None:
                        self.collector.after_fetch()
        finally:
            await consumer.stop()

    async def _record(
        self,
        consumer: AIOKafkaConsumer,
        fetched: dict[TopicPartition, list[ConsumerRecord[Any, Any]]],
    ) -> None:
        """One fetch: recorded by the step, then its offsets committed."""
        async with self.lock:
            # records of partitions revoked while we waited are not ours any more
            owned = consumer.assignment()
            fetched = {tp: rs for tp, rs in fetched.items() if tp in owned and rs}
            if not fetched:
                return
            await self.step([record(r) for rs in fetched.values() for r in rs])
            offsets = {tp: rs[-1].offset + 1 for tp, rs in fetched.items()}
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
            self.committed.update(offsets)

    def health(self, stale_after_s: float) -> dict[str, Any]:
        """For /readyz: consuming (the loop came round lately), partitions held, halted."""
        consumer = self.consumer
        age = None if self.last_poll is None else time.monotonic() - self.last_poll
        return {
            "consuming": self.halted is None and age is not None and age < stale_after_s,
            "last_poll_age_s": None if age is None else round(age, 1),
            "partitions": len(consumer.assignment()) if consumer is not None else 0,
            "halted": self.halted,
        }

    async def lag(self) -> dict[int, int] | None:
        """Log end minus committed offset per assigned partition (None before assignment)."""
        consumer = self.consumer
        if consumer is None:
            return None
        tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        if not tps:
            return {}
        ends = await consumer.end_offsets(tps)
        missing = [tp for tp in tps if tp not in self.committed]
        starts: dict[TopicPartition, int] = {}
        for tp in missing:
            committed = await consumer.committed(tp)
            if committed is not None:
                self.committed.setdefault(tp, committed)
            else:
                starts[tp] = (await consumer.beginning_offsets([tp]))[tp]
        return {
            tp.partition: max(int(ends[tp]) - int(self.committed.get(tp, starts.get(tp, 0))), 0)
            for tp in tps
        }
