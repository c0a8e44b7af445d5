"""Ingest through the real gateway, Kafka, Faust worker and TimescaleDB."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import EventFactory
from tests.integration.conftest import Stack, alive, descendants, end_offsets, read_topic, wait_for

pytestmark = pytest.mark.integration


async def stored_ids(db: asyncpg.Connection, prefix: str) -> list[str]:
    rows = await db.fetch("SELECT event_id FROM events WHERE event_id LIKE $1", prefix + "-%")
    return [r["event_id"] for r in rows]


async def test_mixed_batch_stores_good_events_exactly_once(
    stack: Stack, factory: EventFactory, db: asyncpg.Connection
) -> None:
    p = factory.patient(1)
    good = [factory.episode_started(p)] + factory.daily_exercises(p, dt.date(2026, 11, 3), 20)
    good.append(factory.pain(p, 4, "2026-11-03T23:30:00-05:00"))
    bad = [
        factory.pain(p, 11, "2026-11-04T10:00:00-06:00"),  # out of range
        factory.pain(p, 3, "2026-11-04T10:00:00"),  # naive timestamp
        {
            "event_id": f"{factory.prefix}-x",
            "schema_version": 1,
            "type": "nope",
            "patient_id": p,
            "occurred_at": "2026-11-04T10:00:00Z",
        },
    ]
    batch = good[:5] + bad[:1] + good[5:15] + bad[1:] + good[15:]
    resp = stack.post(batch)
    assert resp.status_code == 200
    body = resp.json()
    assert body["accepted"] == len(good)
    rejected = {r["index"]: r for r in body["rejected"]}
    assert sorted(rejected) == [5, 16, 17]
    assert rejected[5]["errors"][0]["field"] == "score"
    assert rejected[16]["errors"][0]["field"] == "occurred_at"
    assert rejected[17]["errors"][0]["field"] == "type"

    want = sorted(e["event_id"] for e in good)

    async def all_stored() -> bool:
        return len(await stored_ids(db, factory.prefix)) >= len(want)

    await wait_for(all_stored, what="good events stored")
    assert sorted(await stored_ids(db, factory.prefix)) == want

    # The same batch again, then the good events shuffled: nothing new, nothing twice.
    again = stack.post(batch).json()
    assert again["accepted"] == 0 and len(again["duplicates"]) == len(good)
    shuffled = good[:]
    random.Random(7).shuffle(shuffled)
    assert stack.post(shuffled).json()["accepted"] == 0

    # Duplicates the gateway cannot see (straight re-delivery) are absorbed by the worker.
    from schemas.events import validate_event
    from streams.kafka.producer import EventProducer

    producer = EventProducer(stack.settings)
    await producer.start()
    try:
        events = [validate_event(e) for e in shuffled]
        await producer.send_events([e for e in events if not isinstance(e, list)])
    finally:
        await producer.stop()

    async def worker_saw_redelivery() -> bool:
        import httpx

        text = httpx.get(
            f"http://127.0.0.1:{stack.settings.worker.web_port}/metrics", timeout=5
        ).text
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("rtm_worker_duplicates_ignored_total")
        )
        return float(line.split()[-1]) >= len(good)

    await wait_for(worker_saw_redelivery, what="re-delivered events ignored")
    assert sorted(await stored_ids(db, factory.prefix)) == want
    local = await db.fetchval(
        "SELECT local_date FROM events WHERE event_id = $1", good[-1]["event_id"]
    )
    assert local == dt.date(2026, 11, 3)  # 23:30 at UTC-5 is the 3rd, not the 4th


async def test_rejected_events_reach_the_dead_letter_topic_with_reason(
    stack: Stack, factory: EventFactory
) -> None:
    p = factory.patient(1)
    bad = [
        factory.pain(p, 12, "2026-11-04T10:00:00-06:00"),
        factory.pain(p, 3, "2026-11-04T10:00:00", event_id=f"{factory.prefix}-naive"),
    ]
    resp = stack.post([factory.episode_started(p), *bad])
    assert len(resp.json()["rejected"]) == 2
    dead = await read_topic(stack.settings, stack.settings.kafka.topic_dead, expect=2)
    assert [d["event"]["event_id"] for d in dead if d["event"]] == [
        e["event_id"] for e in bad
    ] or sorted(d["event"]["event_id"] for d in dead) == sorted(e["event_id"] for e in bad)
    reasons = {d["event"]["event_id"]: d["errors"][0]["field"] for d in dead}
    assert reasons[bad[0]["event_id"]] == "score"
    assert reasons[bad[1]["event_id"]] == "occurred_at"
    assert all(d["stage"] == "gateway" for d in dead)


async def test_future_dated_event_is_rejected_and_the_good_one_accepted(
    stack: Stack, factory: EventFactory, db: asyncpg.Connection
) -> None:
    p = factory.patient(1)
    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=-6)))
    good = factory.pain(p, 4, (now - dt.timedelta(hours=1)).isoformat(timespec="seconds"))
    future = factory.pain(p, 8, (now + dt.timedelta(days=365)).isoformat(timespec="seconds"))
    resp = stack.post([future, good])
    assert resp.status_code == 200
    body = resp.json()
    assert body["accepted"] == 1 and body["duplicates"] == []
    (rejected,) = body["rejected"]
    assert rejected["index"] == 0 and rejected["event_id"] == future["event_id"]
    (err,) = rejected["errors"]
    assert err["field"] == "occurred_at"
    assert err["message"].startswith("occurred_at: more than 600 s ahead of received_at")

    dead = await read_topic(stack.settings, stack.settings.kafka.topic_dead, expect=1)
    assert [(d["stage"], d["event"]["event_id"]) for d in dead] == [("gateway", future["event_id"])]
    assert dead[0]["errors"] == rejected["errors"]

    async def good_stored() -> bool:
        return await stored_ids(db, factory.prefix) == [good["event_id"]]

    await wait_for(good_stored, what="the good event stored")
    assert await stored_ids(db, factory.prefix) == [good["event_id"]]


async def test_request_without_valid_key_produces_nothing(
    stack: Stack, factory: EventFactory, db: asyncpg.Connection
) -> None:
    p = factory.patient(1)
    events = [factory.episode_started(p), factory.pain(p, 3, "2026-11-04T10:00:00-06:00")]
    before = await end_offsets(stack.settings, stack.settings.kafka.topic_events)
    assert stack.post(events, key=None).status_code == 401
    assert stack.post(events, key="not-the-key").status_code == 401
    resp = stack.post([], key=None, content=b"garbage")
    assert resp.status_code == 401
    assert await end_offsets(stack.settings, stack.settings.kafka.topic_events) == before
    assert await end_offsets(stack.settings, stack.settings.kafka.topic_dead) == 0
    assert await stored_ids(db, factory.prefix) == []


async def test_oversized_requests_are_refused(stack: Stack, factory: EventFactory) -> None:
    p = factory.patient(1)
    too_many = [factory.pain(p, 1, "2026-11-04T10:00:00-06:00") for _ in range(1001)]
    assert stack.post(too_many).status_code == 413
    assert stack.post([], content=b"[" + b" " * (1024 * 1024 + 10) + b"]").status_code == 413
    assert stack.post([], content=b"[not json").status_code == 400
    # NDJSON is judged line by line: an unreadable line is one rejected event.
    resp = stack.post([], content=b"{not json")
    assert resp.status_code == 200 and resp.json()["rejected"][0]["index"] == 0


async def test_worker_killed_mid_stream_loses_nothing_and_duplicates_nothing(
    stack: Stack, factory: EventFactory, db: asyncpg.Connection
) -> None:
    patients = [factory.patient(i) for i in range(40)]
    # 50 past days: the gateway refuses an occurred_at more than 10 minutes ahead of now.
    start = dt.date.today() - dt.timedelta(days=60)
    events = [factory.episode_started(p, at=f"{start}T09:00:00-06:00") for p in patients]
    for p in patients:
        events += factory.daily_exercises(p, start, 50)
    want = len(events)
    half = want // 2
    for i in range(0, half, 500):
        assert stack.post(events[i : min(i + 500, half)]).status_code == 200

    async def some_stored() -> bool:
        return len(await stored_ids(db, factory.prefix)) > 0

    await wait_for(some_stored, what="first batches stored")
    worker = stack.workers[0]

    async def refresh_started() -> bool:
        return bool(descendants(worker.proc.pid))

    await wait_for(refresh_started, what="the worker's refresh process")
    children = descendants(worker.proc.pid)
    worker.kill()  # SIGKILL: no clean shutdown, no final commit

    async def children_gone() -> bool:
        return not [pid for pid in children if alive(pid)]

    # its refresh process ends too (it watches its parent): no orphan holds connections
    try:
        await wait_for(children_gone, 10, "the killed worker's child processes ended")
    except AssertionError:
        left = [Path(f"/proc/{p}/cmdline").read_bytes() for p in children if alive(p)]
        raise AssertionError(f"still running after the worker was killed: {left}") from None
    for i in range(half, want, 500):
        assert stack.post(events[i : i + 500]).status_code == 200
    stack.start_worker()

    async def all_stored() -> bool:
        return len(await stored_ids(db, factory.prefix)) >= want

    await wait_for(all_stored, timeout=240, what="every event stored after restart")
    ids = await stored_ids(db, factory.prefix)
    assert len(ids) == want == len(set(ids))


async def test_second_active_episode_is_dead_lettered_and_ignored(
    stack: Stack, factory: EventFactory, db: asyncpg.Connection
) -> None:
    p = factory.patient(1)
    first = factory.episode_started(p)
    second = factory.episode_started(p, at="2026-11-05T09:00:00-06:00", episode_id=f"{p}-ep2")
    pain = factory.pain(p, 9, "2026-11-06T10:00:00-06:00")
    body = stack.post([first, second, pain]).json()
    assert body["accepted"] == 3  # valid on its own; the conflict is a fact of the stream
    dead = await read_topic(stack.settings, stack.settings.kafka.topic_dead, expect=1)
    assert [d["event"]["event_id"] for d in dead] == [second["event_id"]]
    assert "active episode" in dead[0]["errors"][0]["message"]

    async def alert() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM alerts WHERE patient_id = $1", p))

    await wait_for(alert, what="pain alert on the first episode")
    episode = await db.fetchval("SELECT episode_id FROM alerts WHERE patient_id = $1", p)
    assert episode == first["episode_id"]  # the refused episode shapes nothing
