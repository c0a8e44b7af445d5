"""A bad deploy halts ingestion instead of dead-lettering the stream (issue 11 part 3).

Records that fail the contract are written straight to Kafka (as a broken producer would)
ahead of good ones. Past the limit the worker stops consuming, says so (a metric, a log
line) and does not move its offsets; a worker restarted with the cause "fixed" (here: a
higher limit) then takes every record: the bad ones to the dead-letter topic, the good ones
stored. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from streams.kafka.transport import kafka_client_kwargs
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import end_offsets, read_topic, running_stack, wait_for

pytestmark = pytest.mark.integration


def _halted(settings: Settings) -> float | None:
    try:
        text = httpx.get(
            f"http://{settings.worker.web_host}:{settings.worker.web_port}/metrics", timeout=5
        ).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("rtm_worker_ingest_halted "):
            return float(line.split()[1])
    return None


async def test_a_storm_of_bad_records_halts_ingestion_and_nothing_is_lost(
    base_settings: Settings, factory: EventFactory
) -> None:
    p = factory.patient(1)
    bad = [
        json.dumps(
            {
                "event_id": f"{factory.prefix}-bad{i}",
                "type": "pain.reported",
                "patient_id": p,
                "score": "lots",
            }
        ).encode()
        for i in range(300)
    ]
    good = [factory.episode_started(p), factory.pain(p, 4, "2026-11-03T10:00:00-06:00")]
    with running_stack(
        base_settings, dead_letter_max_consecutive=100, dead_letter_min_records=100_000
    ) as stack:
        settings = stack.settings
        producer = AIOKafkaProducer(**kafka_client_kwargs(settings))
        await producer.start()
        try:
            for value in [*bad, *(json.dumps(e).encode() for e in good)]:
                await producer.send(settings.kafka.topic_events, value, key=p.encode())
            await producer.flush()
        finally:
            await producer.stop()

        async def halted() -> bool:
            return _halted(settings) == 1.0

        await wait_for(halted, 60, "the worker to halt at the dead-letter limit")
        await asyncio.sleep(2)
        dead = await read_topic(settings, settings.kafka.topic_dead, 10**6, timeout=5)
        assert len(dead) < 100, "dead letters sent past the limit"
        conn = await asyncpg.connect(settings.db.dsn)
        try:
            stored = await conn.fetchval("SELECT count(*) FROM events WHERE patient_id = $1", p)
        finally:
            await conn.close()
        assert stored == 0, "records after the halt were consumed"
        assert stack.workers[0].proc.poll() is None, "the worker stays up (metrics, timers)"

        for child in stack.workers:
            child.stop()
        stack.workers.clear()
        stack.start_worker(dead_letter_max_consecutive=0)  # the "fix": no run limit

        async def everything() -> bool:
            conn = await asyncpg.connect(settings.db.dsn)
            try:
                n = await conn.fetchval("SELECT count(*) FROM events WHERE patient_id = $1", p)
            finally:
                await conn.close()
            return int(n) == len(good)

        await wait_for(everything, 90, "the good records stored after the restart")
        dead = await read_topic(settings, settings.kafka.topic_dead, len(bad), timeout=30)
        # the worker keeps a record it cannot decode as the text it received
        ids = {
            (json.loads(d["event"]) if isinstance(d["event"], str) else d["event"])["event_id"]
            for d in dead
        }
        assert {f"{factory.prefix}-bad{i}" for i in range(300)} <= ids
        assert await end_offsets(settings, settings.kafka.topic_events) == len(bad) + len(good)
