"""A worker's bounded state cache (``RTM_WORKER_STATE_CACHE``) on PostgreSQL: a patient it
dropped is read back from the table at their stored revision, and a batch over more
patients than the cache holds (a tick over a partition) is handed every one of them."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from alerts.state import encode_state
from schemas.events import PatientKey
from streams.db.batch import BatchWrite, PgIngestStore, Wanted
from streams.db.pool import Pool

pytestmark = pytest.mark.integration

A, B, C = ("o1", "a"), ("o1", "b"), ("o1", "c")


def at(day: int) -> dt.datetime:
    return dt.datetime(2026, 11, day, tzinfo=dt.UTC)


async def write(store: PgIngestStore, keys: tuple[PatientKey, ...], day: int) -> None:
    """One batch: each patient's state read, its clock moved to ``day``, written."""
    async with store.session() as s:
        states = await s.load(Wanted(patients=keys))
        moved = {k: dataclasses.replace(st, clock=at(day)) for k, st in states.items()}
        await s.write(BatchWrite(states=moved, partitions=dict.fromkeys(moved, 0)))


async def test_a_dropped_patient_is_read_back_at_the_stored_revision(qdsn: str) -> None:
    pool = Pool(qdsn, max_size=2)
    store = PgIngestStore(pool, lambda key: 0, state_cache=2)
    try:
        await write(store, (A, B, C), 1)  # three states written; the cache keeps two
        assert len(store.cache) == 2 and store.cache.dropped == 1
        dropped = next(k for k in (A, B, C) if k not in store.cache)
        await write(store, (dropped,), 2)  # read back at rev 1, written over it: rev 2
        async with store.session() as s:
            states = await s.load(Wanted(patients=(A, B, C)))
            assert states[dropped].clock == at(2)
            assert all(states[k].clock == at(1) for k in (A, B, C) if k != dropped)
        assert store.cache[dropped][0] == 2
    finally:
        await pool.close()


async def test_a_tick_over_more_patients_than_the_cache_holds_gets_them_all(
    qdsn: str,
) -> None:
    pool = Pool(qdsn, max_size=2)
    store = PgIngestStore(pool, lambda key: 0, state_cache=1)
    try:
        await write(store, (A, B, C), 1)
        async with store.session() as s:  # a tick's read: every stored state of partition 0
            states = await s.load(Wanted(partitions=(0,)))
            assert sorted(states) == [A, B, C]
            assert all(st.clock == at(1) for st in states.values())
            moved = {k: dataclasses.replace(st, clock=at(3)) for k, st in states.items()}
            await s.write(BatchWrite(states=moved, partitions=dict.fromkeys(moved, 0)))
        assert len(store.cache) == 1
        unbounded = PgIngestStore(pool, lambda key: 0)
        async with unbounded.session() as s:  # what the table holds: all three, moved
            stored = await s.load(Wanted(patients=(A, B, C)))
        assert {k: encode_state(v) for k, v in stored.items()} == {
            k: encode_state(v) for k, v in moved.items()
        }
    finally:
        await pool.close()
