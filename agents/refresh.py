"""The refresh off the ingest path (``streams.services.refresh``) wired into the worker: the
whole of it (its reads, its pure part, its writes) runs in a process of its own at a lower
priority, with its own connections; the worker's timer only asks it to run and records what
it did, and it yields while ingestion is busy. Measured with ``rtm bench``
(docs/benchmarks.md): in a thread of the worker the alert p99 at 2,000 ev/s was 706 ms, with
only the pure part in a process 319 ms, all of it in a process 288 ms, against 124-140
without the refresh."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import multiprocessing
import os
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from schemas.events import PatientKey
from streams.clock import SYSTEM_CLOCK, FixedClock
from streams.db.pool import Pool
from streams.db.refresh_store import PgRefreshStore
from streams.kafka.app import Topology, timer
from streams.kafka.control import patient_partition
from streams.services.alerts import Publisher
from streams.services.refresh import Committed, Tuning, lower_priority, refresh_due
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class _Child:
    """What the refresh process keeps between runs: its loop and its store (one pool)."""

    loop: asyncio.AbstractEventLoop
    store: PgRefreshStore


_child: list[_Child] = []  # the refresh process's own, made on its first run


def run_refresh(
    dsn: str, partitions: int, clock_now: dt.datetime | None, tuning: Tuning, busy: bool
) -> tuple[int, int, Committed]:
    """In the refresh process: one timer run (``refresh_due``); returns the patients
    refreshed, those still to do and what it committed that the worker acts on
    (``partitions``: rtm.events', the rule states')."""
    if not _child:

        def partition_of(key: PatientKey) -> int:
            return patient_partition(key, partitions)

        store = PgRefreshStore(Pool(dsn, max_size=2), partition_of)
        _child.append(_Child(asyncio.new_event_loop(), store))
    c = _child[0]
    return c.loop.run_until_complete(_run(c.store, clock_now, tuning, busy))


async def _run(
    store: PgRefreshStore, clock_now: dt.datetime | None, tuning: Tuning, busy: bool
) -> tuple[int, int, Committed]:
    clock = FixedClock(clock_now) if clock_now is not None else SYSTEM_CLOCK  # as clock_for
    committed = Committed()
    done = await refresh_due(store, clock, tuning, busy, committed)
    return done, await store.pending(), committed


def _executor() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=lower_priority,
        initargs=(os.getpid(),),
    )


def register_refresh(
    topology: Topology,
    settings: Settings,
    idle_for: Callable[[], float],
    publisher: Publisher,
    warm_states: Callable[[Sequence[PatientKey]], Awaitable[int]],
) -> None:
    """Every RTM_WORKER_REFRESH_INTERVAL_S (0: never), a run of the refresh process; while
    the worker's ingestion has been idle for less than RTM_WORKER_REFRESH_IDLE_S it takes
    only the marks older than RTM_WORKER_REFRESH_MAX_WAIT_S (``idle_for``: the step's).
    The alert changes a run committed are sent to rtm.alerts right after it (``publisher``),
    not when the outbox's timer finds them left behind; the rule states it wrote are taken
    into the step's state cache (``warm_states``), so that the patients' next batch does
    not read them back (a run after a tick writes hundreds)."""
    w = settings.worker
    if not w.refresh_interval_s:
        return
    tuning = Tuning(
        settle=dt.timedelta(seconds=w.refresh_settle_s),
        max_wait=dt.timedelta(seconds=w.refresh_max_wait_s),
    )
    m = topology.metrics.refresh
    pool = [_executor()]
    dsn, partitions = settings.db.dsn, settings.kafka.topic_partitions

    @timer(topology, w.refresh_interval_s, name="refresh")
    async def refresh() -> None:
        loop = asyncio.get_running_loop()
        try:
            busy = idle_for() < w.refresh_idle_s
            done, pending, committed = await loop.run_in_executor(
                pool[0], run_refresh, dsn, partitions, settings.clock_now, tuning, busy
            )
        except BrokenProcessPool:  # the process died (killed, out of memory): a new one
            pool[0] = _executor()
            raise
        m.refreshed.inc(done)
        m.pending.set(pending)
        # broker away: the supervisor logs it, and the outbox's timer sends them later
        await publisher.publish_queued(committed.seqs)
        await warm_states(committed.states)
