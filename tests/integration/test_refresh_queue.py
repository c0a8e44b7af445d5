"""The refresh queue in PostgreSQL (migration 038, ``streams/db/refresh.py``), in a schema of
its own: a mark settles before it is claimed (a replay's patient is folded once it pauses)
unless its first mark is old; a patient marked again while a refresher works on it stays to
do; organisations take turns; a claim whose refresher died is claimed again; two claims at
once never share a patient (the loser of a race takes fewer)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from alerts.state import encode_state
from streams.db.alert_states import STATE_WRITERS_LOCK, StateStore, refresh_writes_states
from streams.db.batch import BatchWrite, PgIngestStore, Wanted, write_batch
from streams.db.pool import Pool
from streams.db.refresh import claim, done, mark, pending, release
from streams.settings import Settings

pytestmark = pytest.mark.integration

S = dt.timedelta(seconds=1)
NEVER = dt.timedelta(days=1)


@pytest_asyncio.fixture
async def qdb(qdsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(qdsn, min_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def age(pool: asyncpg.Pool, seconds: float, column: str = "last_marked") -> None:
    """Move every mark's ``column`` back by ``seconds`` (time passing, for the queue)."""
    await pool.execute(
        f"UPDATE refresh_queue SET {column} = {column} - $1::interval",
        dt.timedelta(seconds=seconds),
    )


async def test_a_mark_settles_unless_its_first_mark_is_old(qdb: asyncpg.Pool) -> None:
    await mark(qdb, [("o1", "p1")])
    assert await claim(qdb, 10, S, NEVER, NEVER) == ([], None)  # still being marked
    await age(qdb, 2)
    got, stamp = await claim(qdb, 10, S, NEVER, NEVER)
    assert got == [("o1", "p1")] and stamp is not None
    # a patient marked every batch of a long replay: due once its first mark is old
    await mark(qdb, [("o1", "p2")])
    await age(qdb, 40, "first_marked")
    assert (await claim(qdb, 10, S, dt.timedelta(seconds=30), NEVER))[0] == [("o1", "p2")]


async def test_a_mark_made_while_claimed_keeps_the_patient_to_do(qdb: asyncpg.Pool) -> None:
    await mark(qdb, [("o1", "p1"), ("o1", "p2")])
    await age(qdb, 2)
    got, stamp = await claim(qdb, 10, S, NEVER, NEVER)
    assert got == [("o1", "p1"), ("o1", "p2")] and stamp is not None
    await mark(qdb, [("o1", "p2")])  # a batch with new events of p2, mid-refresh
    async with qdb.acquire() as conn, conn.transaction():
        await done(conn, got, stamp)
    assert await pending(qdb) == 1  # p2 is to do again, p1 is served
    await age(qdb, 2)
    assert (await claim(qdb, 10, S, NEVER, NEVER))[0] == [("o1", "p2")]


async def test_a_released_claim_is_due_again_at_once_and_only_its_own_rows(
    qdb: asyncpg.Pool,
) -> None:
    """A refresh that lost its write gives its claim back: its patients are claimable at
    once (not after the stale time), and a row claimed again by another refresher since
    keeps that claim."""
    await mark(qdb, [("o1", "p1"), ("o1", "p2")])
    await age(qdb, 2)
    got, stamp = await claim(qdb, 10, S, NEVER, NEVER)
    assert got == [("o1", "p1"), ("o1", "p2")] and stamp is not None
    assert (await claim(qdb, 10, S, NEVER, NEVER))[0] == []  # held
    # p2's claim lapsed and another refresher holds it now (a later claimed_at)
    await qdb.execute(
        "UPDATE refresh_queue SET claimed_at = claimed_at + interval '1 s' WHERE patient_id = 'p2'"
    )
    async with qdb.acquire() as conn:
        await release(conn, got, stamp)
    assert (await claim(qdb, 10, S, NEVER, NEVER))[0] == [("o1", "p1")]  # p2 is still held
    assert await pending(qdb) == 2  # released, not done


async def test_organisations_take_turns_and_a_dead_claim_is_claimed_again(
    qdb: asyncpg.Pool,
) -> None:
    await mark(qdb, [("big", f"p{i}") for i in range(6)])
    await age(qdb, 10, "first_marked")
    await mark(qdb, [("small", "p1")])
    await age(qdb, 2)
    got, _ = await claim(qdb, 3, S, NEVER, NEVER)
    assert ("small", "p1") in got and len(got) == 3  # not behind all of big's backlog
    # the refresher of those died: after ``stale`` its patients are claimed again
    assert set(got).isdisjoint((await claim(qdb, 10, S, NEVER, NEVER))[0])
    await age(qdb, 600, "claimed_at")
    again, _ = await claim(qdb, 10, S, NEVER, dt.timedelta(minutes=5))
    assert set(got) <= set(again)


async def test_two_claims_at_once_never_share_a_patient(qdb: asyncpg.Pool) -> None:
    await mark(qdb, [(f"o{i % 3}", f"p{i}") for i in range(60)])
    await age(qdb, 2)
    results = await asyncio.gather(*(claim(qdb, 25, S, NEVER, NEVER) for _ in range(3)))
    claimed = [k for got, _ in results for k in got]
    assert len(claimed) == len(set(claimed))  # a loser of a race takes fewer, never the same
    rest, _ = await claim(qdb, 60, S, NEVER, NEVER)
    assert sorted([*claimed, *rest]) == sorted({(f"o{i % 3}", f"p{i}") for i in range(60)})


async def test_a_refresh_writes_states_only_between_ingest_batches(
    base_settings: Settings,
) -> None:
    """The state writers' lock (streams/db/alert_states.py): while an ingest batch's session
    is open (from its first read to its commit) the refresh's write of states waits, and it
    goes on once the batch is done; so a long batch (a tick over every patient) is never
    refused because the refresh wrote a state it had read."""
    pool = Pool(base_settings.db.dsn, max_size=2)
    store = PgIngestStore(pool, lambda key: 0)
    other = await asyncpg.connect(base_settings.db.dsn)

    async def refresh_write() -> None:
        async with other.transaction():
            await refresh_writes_states(other)

    try:
        async with store.session() as session:
            held = await session.conn.fetchval(
                "SELECT mode FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                " AND objid = $1",
                STATE_WRITERS_LOCK,
            )
            assert held == "ShareLock"
            waiting = asyncio.ensure_future(refresh_write())
            await asyncio.sleep(0.5)
            assert not waiting.done()  # the batch is in flight: the refresh waits
        await asyncio.wait_for(waiting, 5)  # the batch is done: the refresh writes
    finally:
        await other.close()
        await pool.close()


async def test_the_worker_takes_the_states_the_refresh_wrote_into_its_cache(qdsn: str) -> None:
    """The refresh writes rule states in a process of its own; the worker reads them into
    its cache after the run (``warm_states``), so the patients' next batch uses them
    without reading them back. Only states it holds at an older revision: a patient it
    never saw, or one it holds as stored, is left alone."""
    pool = Pool(qdsn, max_size=2)
    store = PgIngestStore(pool, lambda key: 0)
    seen, refreshed, unseen = ("o1", "p1"), ("o1", "p2"), ("o1", "p3")
    try:
        async with store.session() as s:  # a batch writes two states: the cache holds rev 1
            states = await s.load(Wanted(patients=(seen, refreshed)))
            await s.write(BatchWrite(states=states, partitions=dict.fromkeys(states, 0)))
        assert {k: store.cache[k][0] for k in store.cache} == {seen: 1, refreshed: 1}
        # the refresh, on its own connection and state store, writes two of them again
        refresh = StateStore()
        async with pool.acquire() as conn:
            loaded = await refresh.load(conn, [refreshed, unseen])
            at = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
            changed = {k: dataclasses.replace(st, clock=at) for k, st in loaded.items()}
            await write_batch(
                conn, refresh, BatchWrite(states=changed, partitions=dict.fromkeys(changed, 0))
            )
        assert await store.warm_states([seen, refreshed, unseen]) == 1
        assert unseen not in store.cache  # left to its next batch
        rev, _, warmed = store.cache[refreshed]
        assert rev == 2 and encode_state(warmed) == encode_state(changed[refreshed])
        assert await store.warm_states([refreshed]) == 0  # held as stored
        async with store.session() as s:  # the next batch is handed the warmed state
            assert (await s.load(Wanted(patients=(refreshed,))))[refreshed] is warmed
    finally:
        await pool.close()
