"""Pure helpers of `rtm bench`: percentiles, histogram quantiles, id namespacing, pacing."""

from __future__ import annotations

import math

import pytest

from rtm.bench import (
    alert_trigger_ids,
    histogram_quantile,
    namespace_event,
    paced_schedule,
    parse_metrics,
    percentile,
    summarize_ms,
)


def test_percentile_interpolates_like_numpy() -> None:
    xs = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 100.0
    assert percentile(xs, 50) == pytest.approx(50.5)
    assert percentile(xs, 99) == pytest.approx(99.01)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_ms_converts_seconds() -> None:
    s = summarize_ms([0.1, 0.2, 0.3])
    assert s["count"] == 3
    assert s["p50_ms"] == 200.0
    assert s["max_ms"] == 300.0
    assert summarize_ms([])["p99_ms"] is None


def test_histogram_quantile_like_promql() -> None:
    buckets = [(0.1, 50.0), (0.25, 90.0), (0.5, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 0.7) == pytest.approx(0.175)
    assert histogram_quantile(buckets, 0.95) == pytest.approx(0.375)
    assert histogram_quantile([(0.1, 0.0), (math.inf, 0.0)], 0.5) is None
    assert histogram_quantile([(0.1, 0.0), (math.inf, 4.0)], 0.5) == 0.1  # in +Inf


def test_namespace_event_prefixes_ids_only() -> None:
    ev = {"event_id": "p-1-1", "patient_id": "p-1", "episode_id": "ep-1", "type": "x",
          "clinician_id": "c-1"}
    out = namespace_event(ev, "b1234.m.")
    assert out["event_id"] == "b1234.m.p-1-1"
    assert out["patient_id"] == "b1234.m.p-1"
    assert out["episode_id"] == "b1234.m.ep-1"
    assert out["clinician_id"] == "c-1"
    assert ev["event_id"] == "p-1-1"  # not mutated
    assert "episode_id" not in namespace_event({"event_id": "e"}, "x.")


def test_paced_schedule_keeps_rate_and_patient_lanes() -> None:
    events = [{"event_id": f"e{i}", "patient_id": f"p{i % 7}"} for i in range(1000)]
    sched = paced_schedule(events, rate=1000, tick_s=0.1, lanes=4)
    assert sum(len(evs) for _, _, evs in sched) == 1000
    assert max(off for off, _, _ in sched) == pytest.approx(0.9)
    lanes_of_patient: dict[str, set[int]] = {}
    for _, lane, evs in sched:
        for e in evs:
            lanes_of_patient.setdefault(e["patient_id"], set()).add(lane)
    assert all(len(v) == 1 for v in lanes_of_patient.values())
    # per-patient order is preserved inside a lane
    seen = [e["event_id"] for _, lane, evs in sched for e in evs if e["patient_id"] == "p3"]
    assert seen == [f"e{i}" for i in range(1000) if i % 7 == 3]


def test_parse_metrics_sums_labels_and_keeps_buckets() -> None:
    text = (
        "# TYPE rtm_worker_events_stored_total counter\n"
        "rtm_worker_events_stored_total 42.0\n"
        "# TYPE rtm_worker_events_processed_total counter\n"
        'rtm_worker_events_processed_total{type="a"} 2.0\n'
        'rtm_worker_events_processed_total{type="b"} 3.0\n'
        "# TYPE h histogram\n"
        'h_bucket{le="0.1"} 1.0\n'
        'h_bucket{le="+Inf"} 2.0\n'
        "h_count 2.0\n"
        "h_sum 0.3\n"
    )
    m = parse_metrics(text)
    assert m["rtm_worker_events_stored_total"] == 42.0
    assert m["rtm_worker_events_processed_total"] == 5.0
    assert m["h_bucket"] == [(0.1, 1.0), (math.inf, 2.0)]


def test_alert_trigger_ids_reads_change_or_snapshot() -> None:
    change = {"change": "fired", "alert": {"id": "a", "event_ids": ["e1"]}}
    assert alert_trigger_ids(change) == ("fired", ["e1"])
    assert alert_trigger_ids({"id": "a", "event_ids": ["e2"]}) == (None, ["e2"])
    assert alert_trigger_ids([1, 2]) == (None, [])
