"""`rtm worker`: the Faust worker process with every agent registered."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import Counter, Histogram

from agents import delivery, pipeline
from agents.ingest import FetchCollector, IngestConsumer
from streams.db.events import EventStore
from streams.kafka.app import Topology, build_app
from streams.settings import Settings

# A batch may legitimately take long (a database outage is retried inside it); past this
# the worker is not ready (a page, not a restart: /healthz stays ok).
STALE_POLL_S = 120.0

# The cyclic garbage collector's thresholds for the worker (CPython's default: 700, 10, 10).
# The worker keeps a large, long-lived heap (every partition's decoded patient states) and
# allocates hundreds of objects per event; at the default, full collections over that heap
# took about a fifth of the step's CPU (docs/benchmarks.md, "The garbage collector"). Young
# collections every 20,000 allocations, full ones a hundred times rarer; the objects of the
# start-up (modules, the app) are frozen out of every collection.
GC_THRESHOLDS = (20_000, 50, 100)
GcCallback = Callable[[str, dict[str, int]], None]


def tune_gc() -> None:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# While a fetch is recorded the cyclic collector is off, and once it is, what the worker
# still holds (the decoded states it keeps, the clients' buffers) is frozen out of later
# collections (gc.freeze: constant time). At the thresholds above the collections re-read
# each new state two or three times: 8-12 % of the worker's CPU in a replay or a history
# window, and one of them (100-150 ms) falling in a short window or not swung what it
# timed. They found nothing: none of the 294 collections of a bench run's pipeline and
# replay found any cyclic garbage (rtm_worker_gc_collected_objects_total; docs/benchmarks.md,
# tenth round). What a library may leave in cycles is reclaimed by a full collection of
# everything every FULL_COLLECTION_EVERY_S, and between fetches the collector runs as usual.
FULL_COLLECTION_EVERY_S = 600.0


class Collector:
    """The worker's collection policy around each fetch (``before_fetch``, ``after_fetch``:
    the second always follows the first, whatever the fetch raised)."""

    def __init__(
        self,
        every_s: float = FULL_COLLECTION_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s = every_s
        self.monotonic = monotonic
        self.last_full = monotonic()

    def before_fetch(self) -> None:
        gc.disable()

    def after_fetch(self) -> None:
        gc.enable()
        now = self.monotonic()
        if now - self.last_full >= self.every_s:
            gc.unfreeze()
            gc.collect()  # everything, once: cycles a library left meanwhile
            self.last_full = now
        gc.freeze()


def record_gc(pause: Histogram, collected: Counter) -> GcCallback:
    """Every collection of this process into ``pause`` (rtm_worker_gc_pause_seconds) and
    what it found unreachable into ``collected`` (rtm_worker_gc_collected_objects_total),
    by generation: what the policy above costs and what cyclic garbage there is, seen where
    the worker runs. Returns the callback (in ``gc.callbacks`` until removed)."""
    pauses = [pause.labels(str(g)) for g in range(3)]
    found = [collected.labels(str(g)) for g in range(3)]
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].observe(time.perf_counter() - started[0])
            found[info["generation"]].inc(info["collected"])

    gc.callbacks.append(callback)
    return callback


def build_worker_topology(
    settings: Settings, collector: FetchCollector | None = None
) -> tuple[Topology, EventStore]:
    """The worker's app; ``collector``: the process's collection policy around each fetch
    (``Collector``: only ``run_worker`` sets it)."""
    topology = build_app(settings)
    store = EventStore(settings.db.dsn, max_size=8)
    if settings.worker.restarts:  # set by the process restarter (rtm worker --restart)
        topology.metrics.restarts.inc(settings.worker.restarts)
    # rtm.events: the batch step
    consumer = pipeline.register(topology, store, settings, collector)
    delivery.register(topology, store, settings)  # the webhook outbox
    register_health(topology, store, consumer)
    return topology, store


def register_health(topology: Topology, store: EventStore, consumer: IngestConsumer) -> None:
    app = topology.app

    @app.page("/healthz")
    async def healthz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json({"status": "ok"})  # the process answers: nothing to restart

    @app.page("/readyz")
    async def readyz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """Ready: the database answers, the ingest loop comes round, not halted.
        ``tasks_failing`` names the timers and tasks whose last run raised (error type,
        failures in a row); they are retried, so they report without making the worker
        unready (a timer that failed during an outage stays listed until its next run)."""
        checks: dict[str, Any] = dict(consumer.health(STALE_POLL_S))
        checks["tasks_failing"] = topology.supervisor.failing()
        try:
            await asyncio.wait_for(store.ping(), timeout=2.0)
            checks["database"] = "ok"
        except Exception as exc:  # readiness reports, it does not crash
            checks["database"] = f"unavailable: {type(exc).__name__}"
        ok = checks["database"] == "ok" and bool(checks["consuming"])
        return web.json({"ready": ok, **checks}, status=200 if ok else 503)


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    topology, _store = build_worker_topology(settings, Collector())
    tune_gc()
    record_gc(topology.metrics.gc_pause, topology.metrics.gc_collected)
    worker = faust.Worker(topology.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
