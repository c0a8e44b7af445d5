"""Two workers in one consumer group split rtm.events, and a rebalance mid-stream (one of
them stopped, later restarted) changes nothing: stored events, alerts and the billing
ledger equal those of a single worker, and the offline evaluation, on the same input."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from rtm.produce import produce_file
from rtm.simulate import namespaced, simulate, write_jsonl
from streams.kafka.transport import kafka_client_kwargs
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import (
    Stack,
    free_port,
    refreshed,
    running_stack,
    stored_then_tick,
    wait_for,
)
from tests.integration.test_alerts_stream import AS_OF, offline_alerts

pytestmark = pytest.mark.integration
PATIENTS, DAYS, SEED = 60, 40, 11


@dataclass
class Outcome:
    events: list[tuple[Any, ...]]
    alerts: Counter[tuple[Any, ...]]
    data_days: list[tuple[Any, ...]]
    time_logs: list[tuple[Any, ...]]
    seconds: float


def _strip(value: Any, prefix: str) -> Any:
    if isinstance(value, str):
        return value.replace(prefix, "")
    if isinstance(value, (tuple, list)):
        return tuple(_strip(v, prefix) for v in value)
    return value


def _alert_key(kind: str, status: str, fired_at: str, event_ids: Any) -> tuple[Any, ...]:
    return (
        kind,
        status,
        dt.datetime.fromisoformat(fired_at.replace("Z", "+00:00")),
        tuple(event_ids),
    )


def assigned_partitions(settings: Settings, port: int) -> set[int]:
    """The partitions of rtm.events a worker holds, from its consumer lag gauge."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return set()
    tag = f'topic="{settings.kafka.topic_events}"'
    out = set()
    for line in text.splitlines():
        if line.startswith("rtm_worker_consumer_lag{") and tag in line:
            out.add(int(line.split('partition="', 1)[1].split('"', 1)[0]))
    return out


async def wait_split(stack: Stack, ports: list[int]) -> list[set[int]]:
    """Until every given worker holds some partitions, disjoint, together all of them."""
    every = set(range(stack.settings.kafka.topic_partitions))
    held: list[set[int]] = []

    async def split() -> bool:
        held[:] = [assigned_partitions(stack.settings, p) for p in ports]
        return all(held) and sum(len(h) for h in held) == len(every) and set().union(*held) == every

    await wait_for(split, timeout=30, what=f"partitions split between workers {ports}")
    return held


class GroupOffsets:
    """The consumer group's committed offsets against the log end, read from Kafka: once
    they meet on every partition, every batch's persist, billing and alerts are written
    (offsets are committed only after all three)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = AIOKafkaConsumer(
            **kafka_client_kwargs(settings),
            group_id=settings.worker.app_id,
            enable_auto_commit=False,
        )

    async def __aenter__(self) -> GroupOffsets:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.consumer.stop()

    async def caught_up(self) -> bool:
        tps = [
            TopicPartition(self.settings.kafka.topic_events, p)
            for p in range(self.settings.kafka.topic_partitions)
        ]
        ends = await self.consumer.end_offsets(tps)
        for tp in tps:
            if (await self.consumer.committed(tp) or 0) != ends[tp]:
                return False
        return True


async def stream_cohort(
    base: Settings,
    db: asyncpg.Connection,
    halves: tuple[Path, Path],
    prefix: str,
    n_ids: int,
    scale_out: bool,
) -> Outcome:
    t0 = time.monotonic()
    with running_stack(base, tick_interval_s=0, worker_lag_interval_s=0.5) as stack:
        if scale_out:
            port = free_port()
            stack.start_worker(worker_web_port=port)
            await wait_split(stack, [stack.settings.worker.web_port, port])
        first = await produce_file(stack.settings, halves[0], stack.url, 250, 4)
        if scale_out:
            # A clean stop (SIGTERM) in the middle of the stream: its partitions move to
            # the survivor while the second half arrives.
            t_stop = time.monotonic()
            rc = stack.workers[1].stop()
            print(f"worker 1 stopped (rc {rc}) in {time.monotonic() - t_stop:.1f}s")
        second = await produce_file(stack.settings, halves[1], stack.url, 250, 4)
        if scale_out:
            port = free_port()
            stack.start_worker(worker_web_port=port)
            # The restarted worker takes partitions back (a second rebalance).
            await wait_split(stack, [stack.settings.worker.web_port, port])
        assert first.rejected == second.rejected == 0

        await stored_then_tick(db, stack.settings, prefix, n_ids, AS_OF, 60)
        async with GroupOffsets(stack.settings) as offsets:
            await wait_for(offsets.caught_up, timeout=60, what="every record committed")
        # the care pathway's alerts: raised by the workers' refresh once the marks settle
        settings = stack.settings
        await wait_for(lambda: refreshed(settings), timeout=180, what="the pathways refreshed")

    like = prefix + "%"
    events = await db.fetch(
        "SELECT event_id, type, patient_id, episode_id, occurred_at, local_date, utc_offset_s"
        " FROM events WHERE event_id LIKE $1",
        like,
    )
    alerts = await db.fetch("SELECT payload FROM alerts WHERE patient_id LIKE $1", like)
    days = await db.fetch(
        "SELECT patient_id, local_date, episode_id, first_event_id FROM billing_data_days"
        " WHERE patient_id LIKE $1",
        like,
    )
    logs = await db.fetch(
        "SELECT event_id, patient_id, episode_id, local_date, occurred_at, utc_offset_s,"
        " minutes, clinician_role, interactive FROM billing_time_logs"
        " WHERE patient_id LIKE $1",
        like,
    )

    def rows(records: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
        return sorted((_strip(tuple(r), prefix) for r in records), key=repr)

    payloads = [orjson.loads(r["payload"]) for r in alerts]
    return Outcome(
        events=rows(events),
        alerts=Counter(
            _alert_key(a["kind"], a["status"], a["fired_at"], _strip(a["event_ids"], prefix))
            for a in payloads
        ),
        data_days=rows(days),
        time_logs=rows(logs),
        seconds=time.monotonic() - t0,
    )


async def test_two_workers_and_a_rebalance_equal_one_worker(
    base_settings: Settings, db: asyncpg.Connection, tmp_path: Path, factory: EventFactory
) -> None:
    plain = tmp_path / "cohort.jsonl"
    cohort = list(simulate(PATIENTS, DAYS, seed=SEED))
    write_jsonl(cohort, plain)
    expected = Counter(_alert_key(*v) for v in offline_alerts(plain).values())
    assert {"pain_high", "inactivity"} <= {k[0] for k in expected}
    n_ids = len({e["event_id"] for e in cohort})

    outcomes = []
    for tag, scale_out in (("one", False), ("two", True)):
        prefix = f"{factory.prefix}{tag}-"
        events = list(namespaced(iter(cohort), prefix))
        half = len(events) // 2
        halves = (tmp_path / f"{tag}-1.jsonl", tmp_path / f"{tag}-2.jsonl")
        write_jsonl(events[:half], halves[0])
        write_jsonl(events[half:], halves[1])
        outcomes.append(await stream_cohort(base_settings, db, halves, prefix, n_ids, scale_out))
    one, two = outcomes
    print(
        f"cohort {PATIENTS}x{DAYS}: {n_ids} events, {sum(expected.values())} alerts;"
        f" one worker {one.seconds:.1f}s, two workers with a rebalance {two.seconds:.1f}s"
    )

    # Scale-out first (the property under test), then both against the offline rules.
    assert two.alerts == one.alerts, (
        "two workers vs one",
        two.alerts - one.alerts,
        one.alerts - two.alerts,
    )
    assert two.events == one.events
    assert two.data_days == one.data_days and one.data_days
    assert two.time_logs == one.time_logs and one.time_logs
    assert len(one.events) == n_ids
    assert one.alerts == expected, (
        "streamed vs offline",
        one.alerts - expected,
        expected - one.alerts,
    )
