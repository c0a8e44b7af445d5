"""Kafka producer adapter: valid events to rtm.events, rejected ones to rtm.events.dead."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from schemas.events import Event, dump_event, key_text
from streams.kafka import control
from streams.kafka.transport import kafka_client_kwargs
from streams.settings import Settings


def dead_letter_payload(
    raw: Any, errors: Sequence[dict[str, str]], stage: str, index: int | None = None
) -> bytes:
    """Dead-letter record: the original input and why it was refused. Input that cannot
    be re-encoded (nested deeper than orjson's 255 levels) is kept in a safe form: its
    compact text, truncated, so the batch it came in still goes on."""
    record = {"stage": stage, "index": index, "errors": list(errors), "event": raw}
    try:
        return orjson.dumps(record, default=str)
    except (orjson.JSONEncodeError, RecursionError):
        record["event"] = None
        record["event_text"] = _flat_text(raw, DEAD_TEXT_LIMIT)
        return orjson.dumps(record, default=str)


DEAD_TEXT_LIMIT = 64 * 1024


def _flat_text(value: Any, limit: int) -> str:
    """JSON-ish text of any nesting depth, without recursion, cut at ``limit`` characters."""
    out: list[str] = []
    size = 0
    stack: list[Any] = [value]
    while stack and size < limit:
        item = stack.pop()
        if isinstance(item, _Token):
            piece = item.text
        elif isinstance(item, list):
            stack.append(_Token("]"))
            for i, v in enumerate(reversed(item)):
                stack.append(v)
                if i < len(item) - 1:
                    stack.append(_Token(","))
            piece = "["
        elif isinstance(item, dict):
            stack.append(_Token("}"))
            entries = list(item.items())
            for i, (k, v) in enumerate(reversed(entries)):
                stack.append(v)
                stack.append(_Token(orjson.dumps(str(k)).decode() + ":"))
                if i < len(entries) - 1:
                    stack.append(_Token(","))
            piece = "{"
        else:
            piece = orjson.dumps(item, default=str).decode()
        out.append(piece)
        size += len(piece)
    text = "".join(out)
    return text if len(text) <= limit and not stack else text[:limit] + "...(truncated)"


class _Token:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class KeyPartitioner:
    """aiokafka's ``DefaultPartitioner`` (murmur2 of the key over all the topic's partitions,
    as Kafka's Java client; a record without a key to a random available one), with each
    key's hash remembered (``control.key_hash``): the partition a patient's events go to is
    the one the worker computes for its ticks (``control.partition_of``)."""

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[control.key_hash(key) % len(all_partitions)]


# requests of this many events or more are produced in a record batch per partition
BATCH_FROM = 200


class EventProducer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = AIOKafkaProducer(
            **kafka_client_kwargs(settings),
            partitioner=KeyPartitioner(),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send_events(self, events: Sequence[Event]) -> None:
        """Produce and wait for every ack (acks=all) before returning. The key is
        ``<org>/<patient_id>``: a patient's events stay in order on one partition, and one
        patient_id of two organisations is two patients.

        A request of ``BATCH_FROM`` events or more goes in one record batch per partition
        (``create_batch``, in order, partitioned as ``KeyPartitioner`` does), each with one
        ack to wait for: sent one by one, every record had a future of its own, scheduled
        and gathered, about a quarter of the gateway's CPU (docs/benchmarks.md, eleventh
        round). A smaller one is sent record by record, into the batches that are filling
        (its records and those of the requests beside it leave together: a closed batch
        per request would wait behind the previous one on each partition)."""
        topic = self.settings.kafka.topic_events
        if len(events) >= BATCH_FROM:
            acks = await self._send_batched(topic, events)
        else:
            acks = [
                await self._producer.send(
                    topic, dump_event(e), key=key_text(e.patient_key).encode()
                )
                for e in events
            ]
        await asyncio.gather(*acks)

    async def _send_batched(self, topic: str, events: Sequence[Event]) -> list[Awaitable[object]]:
        """``events`` in a record batch per partition (another when one is full), queued in
        order; their acks."""
        partitions = len(await self._producer.partitions_for(topic))
        filling: dict[int, Any] = {}  # partition -> its BatchBuilder
        acks: list[Awaitable[object]] = []
        for e in events:
            key = key_text(e.patient_key).encode()
            partition = control.partition_of(key, partitions)  # as KeyPartitioner
            value = dump_event(e)
            batch = filling.get(partition)
            if batch is None:
                batch = filling[partition] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
                acks.append(await self._producer.send_batch(batch, topic, partition=partition))
                batch = filling[partition] = self._producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"an event of {len(value)} bytes exceeds a record batch")
        for partition, batch in filling.items():
            acks.append(await self._producer.send_batch(batch, topic, partition=partition))
        return acks

    async def send_dead(self, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        futures = [
            await self._producer.send(self.settings.kafka.topic_dead, value, key=key)
            for key, value in records
        ]
        await asyncio.gather(*futures)

    async def send_ticks(self, now: dt.datetime) -> int:
        """A timer tick on every partition of rtm.events (see streams/kafka/control.py)."""
        topic = self.settings.kafka.topic_events
        partitions = await self._producer.partitions_for(topic)

        async def send(value: bytes, partition: int) -> Awaitable[object]:
            ack: Awaitable[object] = await self._producer.send(topic, value, partition=partition)
            return ack

        return await control.send_ticks(send, sorted(partitions), now)

    async def send_control(self, record: control.Ack | control.Snooze) -> None:
        """A clinician's acknowledgement or snooze to the patient's partition of
        rtm.events (keyed as the patient's events), waiting for Kafka's ack."""
        fut = await self._producer.send(
            self.settings.kafka.topic_events,
            record.encode(),
            key=key_text(record.patient_key).encode(),
        )
        await fut

    async def ping(self) -> bool:
        await self._producer.client.fetch_all_metadata()
        return True
