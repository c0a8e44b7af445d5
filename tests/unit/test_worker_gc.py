"""The worker's garbage collections are measured where it runs (rtm_worker_gc_pause_seconds)."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from agents.worker import record_gc
from streams.metrics import WorkerMetrics


def test_each_collection_is_recorded_under_its_generation() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    callback = record_gc(metrics.gc_pause)
    try:
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
    after = count("2")
    gc.collect(2)
    assert count("2") == after  # the callback removed: nothing more is recorded
