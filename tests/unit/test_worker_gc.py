"""The worker's garbage collections are measured where it runs (rtm_worker_gc_pause_seconds)."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from agents.worker import Collector, record_gc
from streams.metrics import WorkerMetrics


def test_each_collection_is_recorded_under_its_generation() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    callback = record_gc(metrics.gc_pause, metrics.gc_collected)
    try:
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle  # garbage only a collection finds
        gc.collect(2)
        gc.collect(0)
        gc.collect(0)
    finally:
        gc.callbacks.remove(callback)

    def count(generation: str) -> float:
        value = registry.get_sample_value(
            "rtm_worker_gc_pause_seconds_count", {"generation": generation}
        )
        return value or 0.0

    assert count("2") >= 1  # young collections may also run by themselves meanwhile
    assert count("0") >= 2
    full = registry.get_sample_value("rtm_worker_gc_pause_seconds_sum", {"generation": "2"})
    assert full is not None and full > 0  # a full collection takes time, and it is counted
    found = registry.get_sample_value("rtm_worker_gc_collected_objects_total", {"generation": "2"})
    assert found is not None and found >= 1  # the cycle made above
    after = count("2")
    gc.collect(2)
    assert count("2") == after  # the callback removed: nothing more is recorded


def test_after_each_fetch_what_is_held_is_frozen_and_everything_collected_now_and_then() -> None:
    now = [0.0]
    collector = Collector(every_s=600.0, monotonic=lambda: now[0])
    full: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(1)

    gc.callbacks.append(seen)
    try:
        collector.before_fetch()
        assert not gc.isenabled()  # no collection while a fetch is recorded
        held = [[i] for i in range(1000)]  # what a fetch leaves behind (states, buffers)
        collector.after_fetch()
        assert gc.isenabled()  # between fetches the collector runs as usual
        assert gc.get_freeze_count() >= len(held)  # out of every later collection
        assert full == []  # no full collection on a fetch's way out, until ...
        now[0] = 599.0
        collector.after_fetch()
        assert full == []
        now[0] = 600.0  # ... every_s has passed: everything collected once, then frozen again
        collector.after_fetch()
        assert len(full) == 1 and gc.get_freeze_count() >= len(held)
        now[0] = 900.0
        collector.after_fetch()
        assert len(full) == 1
    finally:
        gc.callbacks.remove(seen)
        gc.enable()
        gc.unfreeze()  # the test process's own objects back under the collector
