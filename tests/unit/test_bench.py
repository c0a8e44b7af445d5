"""Pure helpers of `rtm bench`: percentiles, histogram quantiles, id namespacing, pacing,
history cohorts, state sizes, CPU split, the workers' counters and costs, the webhook
latency's matching, the table."""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agents.delivery import signed_headers
from rtm.bench.cohorts import (
    HistoryCohort,
    OpenEpisodes,
    auto_history_patients,
    cohort_start,
    history_blocks,
    history_segments,
    like_prefix,
    namespace_event,
    paced_schedule,
    rebase_event,
    split_by_patient,
    write_history_cohort,
)
from rtm.bench.cpu import (
    CpuSnapshot,
    cpu_split,
    cpu_usage,
    frame_file,
    machine_cpu_ticks,
    module_of,
    parse_collapsed,
    proc_cpu_seconds,
    shares_line,
    tick_costs,
    tree_cpu_seconds,
    worker_costs,
)
from rtm.bench.harness import Phase, worker_role
from rtm.bench.pages import pages_keys, spread, write_pages_cohort
from rtm.bench.phases import combine_windows
from rtm.bench.receiver import Receiver
from rtm.bench.report import render_pages_table, render_table
from rtm.bench.stats import (
    alert_trigger_ids,
    check,
    delivery_records,
    first_fired,
    gc_between,
    group_lag,
    group_stable,
    growth,
    histogram_quantile,
    merge_metrics,
    parse_metrics,
    percentile,
    size_stats,
    summarize_ms,
    webhook_summary,
)
from streams.settings import Settings


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
    ev = {
        "event_id": "p-1-1",
        "patient_id": "p-1",
        "episode_id": "ep-1",
        "type": "x",
        "clinician_id": "c-1",
    }
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
    assert m['rtm_worker_events_processed_total{type="b"}'] == 3.0  # each label on its own too
    assert m["h_bucket"] == [(0.1, 1.0), (math.inf, 2.0)]


def test_gc_between_reads_the_workers_collections_by_generation() -> None:
    def reading(young: int, full: int, full_s: float) -> dict[str, Any]:
        text = (
            "# TYPE rtm_worker_gc_pause_seconds histogram\n"
            + "".join(
                f'rtm_worker_gc_pause_seconds_{k}{{generation="{g}"}} {v}\n'
                for g, n, s in (("0", young, 0.0005 * young), ("2", full, full_s))
                for k, v in (("count", n), ("sum", s))
            )
            + "# TYPE rtm_worker_gc_collected_objects counter\n"
            + (f'rtm_worker_gc_collected_objects_total{{generation="2"}} {5 + 7 * (full - 3)}\n')
        )
        return parse_metrics(text)

    got = gc_between(reading(100, 3, 0.2), reading(240, 4, 0.316))
    assert got["0"] == {"collections": 140, "seconds": 0.07, "garbage": 0}
    assert got["1"] == {"collections": 0, "seconds": 0.0, "garbage": 0}  # zero, not missing
    assert got["2"] == {"collections": 1, "seconds": 0.116, "garbage": 7}


def test_alert_trigger_ids_reads_change_or_snapshot() -> None:
    change = {"change": "fired", "alert": {"id": "a", "event_ids": ["e1"]}}
    assert alert_trigger_ids(change) == ("fired", ["e1"])
    assert alert_trigger_ids({"id": "a", "event_ids": ["e2"]}) == (None, ["e2"])
    assert alert_trigger_ids([1, 2]) == (None, [])


# --- history cohorts ------------------------------------------------------------------------


def test_cohort_start_lies_in_the_past_on_a_month_start() -> None:
    today = dt.date(2026, 12, 1)
    start = cohort_start(90, today)
    assert start == dt.date(2026, 8, 1)
    assert start + dt.timedelta(days=90 + 7) <= today
    assert cohort_start(379, today) == dt.date(2025, 11, 1)
    assert cohort_start(3, dt.date(2026, 1, 5)) == dt.date(2025, 12, 1)


def test_history_blocks_tile_the_days_with_gaps() -> None:
    start = dt.date(2025, 11, 1)
    blocks = history_blocks(start, 335, block_days=90, gap_days=2)
    assert [d for _, d in blocks] == [82, 82, 82, 81]  # spans 84, 84, 84, 83
    assert blocks[0][0] == start
    assert blocks[1][0] == start + dt.timedelta(days=84)
    end = blocks[-1][0] + dt.timedelta(days=blocks[-1][1] + 2)
    assert end == start + dt.timedelta(days=335)
    assert history_blocks(start, 0) == []
    assert history_blocks(start, 40) == [(start, 38)]


def test_rebase_event_keeps_patient_apart_from_block_ids() -> None:
    ev = {
        "event_id": "p-1-3",
        "patient_id": "p-1",
        "episode_id": "ep-1-1",
        "session_id": "p-1-s2",
        "clinician_id": "c-001",
        "type": "exercise.completed",
    }
    out = rebase_event(ev, "bX.h365.", "bX.h365.k0.")
    assert out["patient_id"] == "bX.h365.p-1"
    assert out["event_id"] == "bX.h365.k0.p-1-3"
    assert out["episode_id"] == "bX.h365.k0.ep-1-1"
    assert out["session_id"] == "bX.h365.k0.p-1-s2"
    assert out["clinician_id"] == "c-001"
    assert ev["patient_id"] == "p-1"


def test_open_episodes_closes_only_the_unended() -> None:
    eps = OpenEpisodes()
    for ev in (
        {"type": "episode.started", "patient_id": "a", "episode_id": "ea"},
        {"type": "episode.started", "patient_id": "b", "episode_id": "eb"},
        {"type": "pain.reported", "patient_id": "a", "episode_id": "ea"},
        {"type": "episode.ended", "patient_id": "b", "episode_id": "eb"},
        {"type": "pain.reported", "patient_id": "c"},
    ):
        eps.see(ev)
    ends = eps.close(dt.date(2026, 2, 3))
    assert len(ends) == 1
    end = ends[0]
    assert end["type"] == "episode.ended" and end["episode_id"] == "ea"
    assert end["patient_id"] == "a" and end["event_id"] == "ea.end"
    assert end["occurred_at"] == "2026-02-03T12:00:00+00:00"
    assert eps.close(dt.date(2026, 2, 4)) == []


def test_closing_events_pass_the_contract() -> None:
    from schemas.events import parse_event_json  # the gateway's and worker's parser

    eps = OpenEpisodes()
    eps.see(
        {
            "type": "episode.started",
            "patient_id": "b1.h365.p-000001",
            "episode_id": "b1.h365.k0.ep-000001-1",
        }
    )
    ev = parse_event_json(orjson.dumps(eps.close(dt.date(2026, 2, 3))[0]))
    assert ev.type == "episode.ended"


def _cohorts(
    tmp_path: Path, patients: int, start: dt.date, long_days: int, short_days: int, new_days: int
) -> dict[int, HistoryCohort]:
    """The short and the long history cohort of a run (prefix bT), written, by days."""
    out = {}
    for days in (short_days, long_days):
        c = HistoryCohort(
            f"h{days}",
            days,
            f"bT.h{days}.",
            tmp_path / f"{days}-h.jsonl",
            tmp_path / f"{days}-n.jsonl",
        )
        out[days] = write_history_cohort(c, patients, 7, start, long_days, short_days, new_days)
    return out


def test_history_cohorts_share_their_new_events(tmp_path: Path) -> None:
    start, long_days, short_days, new_days = dt.date(2025, 1, 1), 100, 20, 5
    cohorts = _cohorts(tmp_path, 4, start, long_days, short_days, new_days)
    short, long_ = cohorts[short_days], cohorts[long_days]

    def read(path: Path) -> list[dict]:
        return [orjson.loads(line) for line in path.read_bytes().splitlines()]

    cut = (start + dt.timedelta(days=long_days)).isoformat()
    new_s, new_l = read(short.new_path), read(long_.new_path)
    assert new_s and len(new_s) == short.new_events == long_.new_events
    assert [e["occurred_at"] for e in new_s] == [e["occurred_at"] for e in new_l]
    assert all(e["occurred_at"][:10] >= cut for e in new_s)
    assert {e["patient_id"].split(".", 2)[2] for e in new_s} <= {f"p-{i:06d}" for i in range(1, 5)}
    hist_s, hist_l = read(short.seed_path), read(long_.seed_path)
    assert all(e["occurred_at"][:10] < cut for e in hist_s + hist_l)
    assert len(hist_l) == long_.seed_events > 3 * len(hist_s)
    assert min(e["occurred_at"][:10] for e in hist_s) >= "2025-03-22"  # the last 20 days
    assert min(e["occurred_at"][:10] for e in hist_l) < "2025-01-10"
    assert all(e["patient_id"].startswith("bT.h100.") for e in hist_l)
    assert long_.seed_distinct == len({e["event_id"] for e in hist_l})
    assert long_.seed_newest is not None and long_.seed_newest.isoformat()[:10] < cut
    # episodes never overlap per patient across blocks: each start finds none open
    open_of: dict[str, set[str]] = {}
    for e in hist_l + new_l:
        eps = open_of.setdefault(e["patient_id"], set())
        if e["type"] == "episode.started":
            assert not eps, (e["event_id"], eps)
            eps.add(e["episode_id"])
        elif e["type"] == "episode.ended":
            eps.discard(e["episode_id"])
    assert any(e["event_id"].endswith(".end") for e in hist_l)  # a block left one open


def test_a_long_history_is_posted_block_by_block(tmp_path: Path) -> None:
    """The history's blocks, each ticked after it: together they are the history file in
    order; each ends after the episodes it closed and before the next block starts; the
    short history is one block."""
    start, long_days, short_days, new_days = dt.date(2025, 1, 1), 200, 20, 5
    segs = {}
    for days, c in _cohorts(tmp_path, 6, start, long_days, short_days, new_days).items():
        parts = history_segments(c)
        blocks = [[orjson.loads(ln) for ln in p.read_bytes().splitlines()] for p, _, _ in parts]
        whole = [orjson.loads(ln) for ln in c.seed_path.read_bytes().splitlines()]
        assert [e for blk in blocks for e in blk] == whole
        assert [n for _, n, _ in parts] == [len({e["event_id"] for e in blk}) for blk in blocks]
        for blk, (_, _, newest), nxt in zip(blocks, parts, blocks[1:] + [None], strict=True):
            assert newest is not None
            assert max(dt.datetime.fromisoformat(e["occurred_at"]) for e in blk) == newest
            if nxt is not None:  # the tick after a block comes before the next one's events
                assert min(dt.datetime.fromisoformat(e["occurred_at"]) for e in nxt) > newest
        assert parts[-1][2] == c.seed_newest
        segs[days] = parts
    assert len(segs[short_days]) == 1
    assert len(segs[long_days]) == 3  # 180 days in two blocks of ~90, then the last 20


def test_auto_history_patients_scales_with_the_pipeline_rate() -> None:
    assert auto_history_patients(3_700, 365) == round(3_700 * 120 / (1.55 * 365))
    assert auto_history_patients(8_000, 365) == 1697
    assert auto_history_patients(20_000, 365) == 2000  # clamped
    assert auto_history_patients(50, 365) == 100  # clamped
    assert auto_history_patients(1e6, 365) == 2000
    assert auto_history_patients(None, 365) == 300


# --- state sizes ----------------------------------------------------------------------------


def test_size_stats_median_and_p99() -> None:
    sizes = [float(v) for v in range(1, 101)]
    st = size_stats(sizes)
    assert st == {"n": 100, "median": 50, "p99": 99, "mean": 50, "max": 100}
    assert size_stats([2048]) == {"n": 1, "median": 2048, "p99": 2048, "mean": 2048, "max": 2048}
    assert size_stats([]) == {"n": 0, "median": None, "p99": None, "mean": None, "max": None}


def test_like_prefix_escapes_wildcards() -> None:
    assert like_prefix("b1a2.h365.") == "b1a2.h365.%"
    assert like_prefix("a_b%c\\") == "a\\_b\\%c\\\\%"


def test_growth_and_check() -> None:
    assert growth(2000, 2100) == 1.05
    assert growth(None, 5) is None and growth(0, 5) is None and growth(5, None) is None
    assert check(0.95, ">=", 0.9) is True
    assert check(240.0, "<", 250) is True and check(250.0, "<", 250) is False
    assert check(None, ">=", 1) is None
    with pytest.raises(ValueError):
        check(1, "==", 1)


def test_group_lag_counts_uncommitted_records() -> None:
    ends = {0: 10, 1: 5, 2: 0, 3: 7}
    assert group_lag(ends, {0: 10, 1: 5, 2: None, 3: 7}) == 0
    assert group_lag(ends, {0: 8, 1: -1}) == 2 + 5 + 7  # -1 / missing: nothing committed


# --- CPU ------------------------------------------------------------------------------------


def test_proc_cpu_seconds_reads_utime_and_stime() -> None:
    stat = (
        "4242 (python -m rtm.cli (x)) S 1 4242 4242 0 -1 4194304 125 0 0 0 "
        "1500 250 0 0 20 0 9 0 65017 3133440 393"
    )
    assert proc_cpu_seconds(stat, 100) == pytest.approx(17.5)


def test_machine_cpu_ticks_and_usage() -> None:
    stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n"
    assert machine_cpu_ticks(stat) == (150, 1000)
    a = CpuSnapshot(10.0, {"worker": 5.0, "gateway": 1.0}, (150, 1000))
    b = CpuSnapshot(20.0, {"worker": 14.5, "gateway": 2.0}, (150 + 1700, 3000))
    u = cpu_usage(a, b, clk_tck=100)
    assert u == {
        "wall_s": 10.0,
        "worker": {"cpu_s": 9.5, "core_share": 0.95},
        "gateway": {"cpu_s": 1.0, "core_share": 0.1},
        "machine_busy_cores": 1.7,
    }
    assert cpu_usage(None, b) is None


COLLAPSED = """\
<module> (rtm/cli.py:5);run (faust/worker.py:10);_execute (agents/pipeline.py:40);step (alerts/rules.py:88) 30
<module> (rtm/cli.py:5);run (faust/worker.py:10);_execute (agents/pipeline.py:40);save (streams/db/events.py:20);model_dump_json (pydantic/main.py:477) 20
<module> (rtm/cli.py:5);run (faust/worker.py:10);_execute (agents/pipeline.py:40);insert (streams/db/events.py:30);_execute (asyncpg/connection.py:1795) 10
<module> (rtm/cli.py:5);_run_once (asyncio/base_events.py:1922) 15
<module> (rtm/cli.py:5);run (faust/worker.py:10);on_message (faust/transport/consumer.py:1200) 20
<module> (rtm/cli.py:5);getmany (/work/main/.venv/lib/python3.11/site-packages/aiokafka/consumer/consumer.py:1200) 5
<module> (rtm/cli.py:5);run_worker (agents/worker.py:24);run_forever (asyncio/base_events.py:607);_run_once (asyncio/base_events.py:1922);step (agents/pipeline.py:41);loads (schemas/events.py:9) 10

garbage line
"""


def test_parse_collapsed_and_frame_files() -> None:
    stacks = parse_collapsed(COLLAPSED)
    assert len(stacks) == 7
    assert stacks[0][1] == 30 and stacks[0][0][-1] == "step (alerts/rules.py:88)"
    assert frame_file("step (alerts/rules.py:88)") == "alerts/rules.py"
    assert frame_file("<module> (spytest.py:12)") == "spytest.py"
    assert frame_file("no file") is None


def test_module_of_groups_project_and_libraries() -> None:
    assert module_of("alerts/rules.py") == "alerts/"
    assert module_of("/work/main/streams/db/events.py", "/work/main") == "streams/"
    assert module_of("/x/.venv/lib/python3.11/site-packages/pydantic_core/core.py") == "pydantic"
    assert module_of("mode/services.py") == "faust"
    assert module_of("kafka/codec.py") == "aiokafka"
    assert module_of("asyncio/events.py") == "asyncio"
    assert module_of("/usr/lib/python3.11/asyncio/events.py") == "asyncio"
    assert module_of("threading.py") == "other"
    assert module_of("rtm.py") == "other"  # a top-level file, not the rtm package
    assert module_of(None) == "other"


def test_cpu_split_self_inclusive_and_top_functions() -> None:
    split = cpu_split(parse_collapsed(COLLAPSED), top=3)
    assert split is not None
    assert split["samples"] == 110
    assert split["self"] == {
        "alerts/": 0.2727,
        "pydantic": 0.1818,
        "faust": 0.1818,
        "asyncio": 0.1364,
        "asyncpg": 0.0909,
        "schemas/": 0.0909,
        "aiokafka": 0.0455,
    }
    assert sum(split["self"].values()) == pytest.approx(1.0, abs=1e-3)
    # inclusive: share of samples with the package on the stack below the event loop; the
    # entry (rtm/cli.py, agents/worker.py before asyncio) does not count
    assert split["inclusive"] == {
        "agents/": 0.6364,
        "streams/": 0.2727,
        "alerts/": 0.2727,
        "schemas/": 0.0909,
    }
    assert split["top_functions"][0] == {"function": "step (alerts/rules.py)", "share": 0.2727}
    assert len(split["top_functions"]) == 3
    assert cpu_split([]) is None
    assert shares_line(split["self"], limit=2) == "alerts/ 27 %, pydantic 18 %"
    assert shares_line(None) == "n/a"


# --- table ----------------------------------------------------------------------------------


def _result() -> dict:
    lat_sum = {"count": 613, "p50_ms": 77.7, "p95_ms": 138.8, "p99_ms": 242.0, "max_ms": 300.0}
    return {
        "parameters": {"rate": 2000.0, "replay_patients": 2000, "replay_days": 90},
        "floor_events_per_s": 73489.6,
        "pipeline_events_per_s": 3748.5,
        "ratio": 0.051,
        "replay_events_per_s": 1659.2,
        "replay_seconds": 160.5,
        "floor": {"events": 54118, "seconds": 0.7},
        "pipeline": {
            "events_stored": 53564,
            "seconds": 14.3,
            "cpu": {
                "wall_s": 14.3,
                "worker": {"cpu_s": 14.0, "core_share": 0.98},
                "gateway": {"cpu_s": 2.0, "core_share": 0.14},
                "machine_busy_cores": 1.7,
            },
        },
        "latency": {
            "target_events_per_s": 2000.0,
            "achieved_events_per_s": 1998.0,
            "events_sent": 50000,
            "seconds": 25.0,
            "accept_to_persisted": dict(lat_sum, count=49000),
            "accept_to_alert": lat_sum,
        },
        "replay": {"seconds": 160.5, "events_stored": 266366},
        "history": {
            "patients": 300,
            "new_days": 14,
            "ratio": 0.42,
            "cpu_ratio": 0.4,
            "short": {
                "history_days": 30,
                "events_per_s": 3500.0,
                "new": {"events_stored": 8500},
                "history": {"events_stored": 17000},
            },
            "long": {
                "history_days": 365,
                "events_per_s": 1470.0,
                "new": {"events_stored": 8500},
                "history": {"events_stored": 169000},
            },
        },
        "state_bytes": {
            "90d": {"n": 2000, "median": 33000, "p99": 61000, "days": 90, "source": "replay"},
            "30d": {"n": 300, "median": 12000, "p99": 20000, "days": 30, "source": "history"},
            "365d": {"n": 300, "median": 130000, "p99": 200000, "days": 365, "source": "history"},
        },
        "state_growth": {"from": "90d", "to": "365d", "median_x": 3.939, "p99_x": 3.279},
        "cpu_split": {
            "samples": 100,
            "self": {"pydantic": 0.21, "faust": 0.18},
            "inclusive": {"agents/": 0.8, "alerts/": 0.36},
            "top_functions": [{"function": "f (alerts/rules.py)", "share": 0.1}],
        },
        "machine": {
            "cores": 2,
            "memory_gb": 23.5,
            "cpu": "AMD EPYC",
            "python": "3.11.7",
            "kafka": "3.9.1",
            "postgres": "15.20",
            "timescaledb": "2.19.3",
        },
    }


def test_render_table_shows_every_target() -> None:
    text = render_table(_result())
    lines = {ln.split("  ")[0]: ln for ln in text.splitlines()}
    assert ">= 20,000 ev/s" in lines["pipeline (gateway -> worker)"]
    assert "not met" in lines["pipeline (gateway -> worker)"]
    assert ">= 40 %" in lines["pipeline / floor"]
    assert "p99 < 250 ms at 2,000 ev/s" in lines["accept -> alert p50/p95/p99"]
    assert lines["accept -> alert p50/p95/p99"].split("ev/s")[1].split()[0] == "met"
    assert "< 30 s" in lines["replay 2,000 x 90 d (file -> pipeline)"]
    assert "160.5 s" in lines["replay 2,000 x 90 d (file -> pipeline)"]
    assert "1,470.0 ev/s" in lines["history 365 d (+14 d new)"]
    assert ">= 0.9" in lines["history 365 d / 30 d"] and "not met" in lines["history 365 d / 30 d"]
    assert "0.42" in lines["history 365 d / 30 d"]
    assert "worker CPU per event 0.40" in lines["history 365 d / 30 d"]
    assert "33,000 / 61,000 B" in lines["state bytes 90d median / p99"]
    assert "median <= 3 KB after 365 d" in lines["state bytes 365d median / p99"]
    assert "median ~2 KB" in lines["state bytes 90d median / p99"]
    assert "x3.94 / x3.28" in lines["state growth 90d -> 365d"]
    assert "not growing" in lines["state growth 90d -> 365d"]
    assert "98 % of a core" in lines["worker CPU (pipeline)"]
    state_rows = [ln for ln in text.splitlines() if ln.startswith("state bytes")]
    assert [r.split()[2] for r in state_rows] == ["30d", "90d", "365d"]
    assert "worker CPU by module (py-spy, self): pydantic 21 %, faust 18 %" in text
    assert "inclusive): agents/ 80 %, alerts/ 36 %" in text
    assert text.splitlines()[-1].startswith("machine: 2 cores")


def test_the_state_after_a_year_is_held_to_three_kilobytes() -> None:
    r = _result()
    r["state_bytes"] = {
        "90d": {"n": 2000, "median": 2770, "p99": 5000, "days": 90, "source": "replay"},
        "365d": {"n": 700, "median": 2770, "p99": 5560, "days": 365, "source": "history"},
    }
    lines = {ln.split("  ")[0]: ln for ln in render_table(r).splitlines()}
    year, quarter = lines["state bytes 365d median / p99"], lines["state bytes 90d median / p99"]
    assert year.split("365 d")[1].split()[0] == "met"  # issue 21: <= 3 KB after 365 days
    assert "not met" in quarter  # after 90 days, about 2 KB
    r["state_bytes"]["365d"]["median"] = 3100
    lines = {ln.split("  ")[0]: ln for ln in render_table(r).splitlines()}
    assert "not met" in lines["state bytes 365d median / p99"]


def _window(stored: int, rate: float, drain: float, marked: int, after: int) -> dict[str, Any]:
    return {
        "events_stored": stored,
        "seconds": round(stored / rate, 3),
        "events_per_s": rate,
        "worker_cpu_us_per_event": 90.0,
        "refresh_drain": {"seconds": drain, "still_marked": marked},
        "database_settle": {
            "vacuum_s": 4.5,
            "seconds": 4.6,
            "autovacuum_workers_left": 0,
            "autovacuum_workers_after": after,
        },
    }


def test_history_rows_say_what_settled_before_each_window() -> None:
    r = _result()
    r["history"] = {
        **r["history"],
        "windows": ["short", "long", "long", "short"],
        "ratio_by_half": [0.88, 0.93],
        "one_stack": True,
    }
    r["history"]["short"]["new"] = {
        **r["history"]["short"]["new"],
        "windows": [_window(4200, 3400.0, 47.7, 0, 1), _window(4300, 3600.0, 6.1, 0, 0)],
    }
    gc = {"0": {"collections": 140, "seconds": 0.0712}, "2": {"collections": 1, "seconds": 0.116}}
    r["history"]["long"]["new"] = {
        **r["history"]["long"]["new"],
        "worker_gc": gc,
        "windows": [_window(4200, 1500.0, 900.2, 1234, 0), _window(4300, 1440.0, 5.0, 0, 0)],
    }
    lines = {ln.split("  ")[0]: ln for ln in render_table(r).splitlines()}
    short, long_ = lines["history 30 d (+14 d new)"], lines["history 365 d (+14 d new)"]
    assert "worker gc in the timing gen 0: 140 (71.2 ms), gen 2: 1 (116.0 ms)" in long_
    assert "worker gc" not in short  # not measured (an older result): not shown
    assert "2 windows: 4,200 at 3,400.0 ev/s, 4,300 at 3,600.0 ev/s" in short
    assert "refresh drained in <= 47.7 s, vacuumed in <= 4.5 s" in short
    assert "not drained" not in short and "autovacuum workers after a window: 1" in short
    assert "(not drained: 1,234 still marked)" in long_  # a timeout is said, not hidden
    ratio = lines["history 365 d / 30 d"]
    assert "refresh" not in ratio and "windows S L L S, each half's ratio 0.88 / 0.93" in ratio
    assert "both cohorts in one stack" in ratio
    assert "peak memory (history)" not in lines  # an older result: not measured, not shown
    r["history"]["short"]["history"]["peak_rss_mb"] = {"worker": 380.5}
    r["history"]["long"]["history"]["peak_rss_mb"] = {"worker": 512.25}
    r["history"]["long"]["new"]["peak_rss_mb"] = {"worker": 430.0}
    lines = {ln.split("  ")[0]: ln for ln in render_table(r).splitlines()}
    memory = lines["peak memory (history)"]
    assert "worker 512.2 MB" in memory and "<= 500 MB" in memory and "not met" in memory
    assert "taking the histories 512.2 MB, in the windows 430.0 MB (600 patients)" in memory
    plain = {ln.split("  ")[0]: ln for ln in render_table(_result()).splitlines()}
    assert "refresh" not in plain["history 30 d (+14 d new)"]  # older results: nothing made up
    assert "windows" not in plain["history 365 d / 30 d"]
    assert "one stack" not in plain["history 365 d / 30 d"]


def test_the_windows_combine_into_one_rate_per_cohort() -> None:
    """A cohort's events/s is its events over its windows' seconds (not a mean of rates);
    the worker's CPU and its state reads are summed; memory is the largest window's."""
    a = {
        **_window(4000, 2000.0, 5.0, 0, 0),
        "complete": True,
        "cpu": {"worker": {"cpu_s": 0.4}},
        "cpu_us_per_event": {"worker": 100.0},
        "peak_rss_mb": {"worker": 300.0},
        "worker_gc": {"0": {"collections": 3, "seconds": 0.01, "garbage": 0}},
        "worker_state_cache": {"reads": 40, "dropped": 0},
    }
    b = {
        **_window(1000, 500.0, 5.0, 0, 0),
        "complete": True,
        "cpu": {"worker": {"cpu_s": 0.2}},
        "cpu_us_per_event": {"worker": 200.0},
        "peak_rss_mb": {"worker": 320.0},
        "worker_gc": {"0": {"collections": 2, "seconds": 0.02, "garbage": 1}},
        "worker_state_cache": {"reads": 7, "dropped": 3},
    }
    out = combine_windows([a, b])
    assert out["events_stored"] == 5000 and out["seconds"] == 4.0
    assert out["events_per_s"] == 1250.0  # 5,000 events in 4 s, not (2,000 + 500) / 2
    assert out["worker_cpu_us_per_event"] == 120.0  # 0.6 s over 5,000 events
    assert out["peak_rss_mb"] == {"worker": 320.0}
    assert out["worker_gc"] == {"0": {"collections": 5, "seconds": 0.03, "garbage": 1}}
    assert [w["worker_cpu_us_per_event"] for w in out["windows"]] == [100.0, 200.0]
    # the states read from the table (cache misses) and dropped at the cache's limit
    assert out["worker_state_cache"] == {"reads": 47, "dropped": 3}
    assert out["complete"]
    assert not combine_windows([a, {**b, "complete": False}])["complete"]


def test_split_by_patient_splits_every_cohort_alike(tmp_path: Path) -> None:
    """The timed halves: each patient's new events whole in one part, nothing lost or
    repeated, and the short and long cohorts split the same patients the same way."""
    long_days, short_days, new_days = 60, 30, 14
    start = cohort_start(long_days + new_days, dt.date(2026, 12, 6))
    splits: dict[int, list[list[dict[str, Any]]]] = {}
    for days, c in _cohorts(tmp_path, 12, start, long_days, short_days, new_days).items():
        parts = split_by_patient(c, 2)
        events = [[orjson.loads(ln) for ln in p.read_bytes().splitlines()] for p, _ in parts]
        assert [n for _, n in parts] == [len({e["event_id"] for e in evs}) for evs in events]
        whole = [orjson.loads(ln) for ln in c.new_path.read_bytes().splitlines()]
        assert sorted(e["event_id"] for evs in events for e in evs) == sorted(
            e["event_id"] for e in whole
        )
        by_part = [{e["patient_id"] for e in evs} for evs in events]
        assert by_part[0] and by_part[1] and not by_part[0] & by_part[1]
        splits[days] = events
    for k in (0, 1):  # the same patients (under the cohort's prefix) and as many events
        short_ids = {e["patient_id"].split(".", 2)[2] for e in splits[short_days][k]}
        long_ids = {e["patient_id"].split(".", 2)[2] for e in splits[long_days][k]}
        assert short_ids == long_ids
        assert len(splits[short_days][k]) == len(splits[long_days][k])


def test_the_ticks_after_the_replay_are_shown_with_the_midnight_cost_per_patient() -> None:
    usage = {
        "wall_s": 9.0,
        "worker": {"cpu_s": 6.0, "core_share": 0.67},
        "gateway": {"cpu_s": 0.02, "core_share": 0.0},
        "database": {"cpu_s": 1.5, "core_share": 0.17},
        "machine_busy_cores": 1.1,
    }
    day = {"seconds": 9.4, **tick_costs(usage, 2000)}
    assert day["cpu_us_per_patient"] == {"worker": 3000.0, "gateway": 10.0, "database": 750.0}
    assert tick_costs(None, 2000)["cpu_us_per_patient"] == {}  # not measured: nothing made up
    two = {**usage, "worker2": {"cpu_s": 2.0, "core_share": 0.2}}  # each patient is one's
    assert tick_costs(two, 2000)["cpu_us_per_patient"]["worker"] == 4000.0
    r = _result()
    r["replay"] = {**r["replay"], "final_tick": {"seconds": 19.3}, "next_day_tick": day}
    lines = {ln.split("  ")[0]: ln for ln in render_table(r).splitlines()}
    assert "19.3 s" in lines["tick after the replay"]
    midnight = lines["tick, next day (2,000 patients)"]
    assert "9.4 s" in midnight and "CPU per patient 3,000.0 / 750.0 us" in midnight
    assert "tick" not in render_table(_result())  # a replay without ticks: no such rows


def test_render_table_without_new_phases() -> None:
    r = _result()
    del r["history"], r["state_bytes"], r["state_growth"], r["cpu_split"]
    r["cpu_split_note"] = "py-spy not found"
    r["latency"]["target_events_per_s"] = 1000.0
    text = render_table(r)
    assert "history" not in text and "state bytes" not in text
    assert "worker CPU split: py-spy not found" in text
    alert = next(ln for ln in text.splitlines() if ln.startswith("accept -> alert"))
    assert " met " not in alert  # under the target only at 2,000 ev/s


def _pages(worklist_p95: float, patient_p95: float) -> dict[str, object]:
    def s(p95: float) -> dict[str, object]:
        return {"count": 50, "p50_ms": p95 / 2, "p95_ms": p95, "mean_bytes": 37_000}

    return {
        "patients": 5000,
        "days": 90,
        "clinician": {"worklist": s(worklist_p95), "patient": s(patient_p95)},
        "admin": {
            "worklist": s(worklist_p95 + 1),
            "patient": s(patient_p95 + 1),
            "outcomes": s(2000.0),
        },
        "refresh_after_tick_s": 41.5,
    }


def test_pages_rows_judge_each_page_against_its_goal() -> None:
    r = _result()
    r["pages"] = _pages(100.9, 150.0)  # 150 is not < 150
    lines = {ln.split("  ")[0]: ln for ln in render_table(r).splitlines()}
    wl = lines["worklist page 1 p50/p95 (clinician)"]
    assert "50.5 / 100.9 ms" in wl and "p95 < 300 ms" in wl and " met " in wl
    assert "5,000 x 90 d, n=50, 37,000 B" in wl
    pt = lines["patient page p50/p95 (clinician)"]
    assert "p95 < 150 ms" in pt and "not met" in pt
    assert "patient page p50/p95 (admin)" in lines
    report = lines["outcome report p50/p95 (admin)"]
    assert "p95 < 2000 ms" in report and "not met" in report and "41.5 s after" in report
    assert pages_keys(r["pages"]) == {
        "outcome_report_p95_ms": 2000.0,
        "worklist_p50_ms": 50.45,
        "worklist_p95_ms": 100.9,
        "patient_page_p50_ms": 75.0,
        "patient_page_p95_ms": 150.0,
    }
    only = render_pages_table({"pages": _pages(400.0, 20.0), "machine": r["machine"]})
    assert only.splitlines()[0].startswith("worklist page 1") and "not met" in only.splitlines()[0]
    assert only.splitlines()[-1].startswith("machine: 2 cores")
    assert "pages" not in render_table(_result())  # off by default: no rows


def test_spread_picks_distinct_patients_across_the_cohort() -> None:
    items = [f"p{i}" for i in range(5000)]
    picked = spread(items, 50)
    assert len(set(picked)) == 50 and picked[0] == "p0" and picked[1] == "p100"
    assert spread(items[:3], 50) == items[:3]


def test_pages_cohort_names_its_clinicians_and_patients(tmp_path: Path) -> None:
    c = write_pages_cohort(tmp_path / "c.jsonl", 20, 15, 1, dt.date(2026, 9, 1), "bX.pg.")
    lines = [orjson.loads(x) for x in (tmp_path / "c.jsonl").read_bytes().splitlines()]
    assert c.events == len(lines) and c.distinct == len({e["event_id"] for e in lines})
    assert all(e["patient_id"].startswith("bX.pg.") for e in lines)
    started = [e for e in lines if e["type"] == "episode.started"]
    assert c.clinicians == {e["clinician_id"] for e in started}
    assert all(x.startswith("bX.pg.") for x in c.clinicians)
    assert set(c.patients) == {e["patient_id"] for e in started}
    assert c.newest == max(dt.datetime.fromisoformat(e["occurred_at"]) for e in lines)


def _stat(pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    fields = ["S", str(ppid), *["0"] * 9, str(utime), str(stime), str(cutime), str(cstime)]
    return f"{pid} (postgres: a (b)) " + " ".join([*fields, *["0"] * 30])


def test_the_database_cpu_is_the_postmaster_its_ended_and_its_live_backends(
    tmp_path: Path,
) -> None:
    """tree_cpu_seconds: the postmaster's own time and that of the backends it has reaped
    (cutime, cstime), plus each live child; other processes are not counted."""
    for pid, stat in (
        (10, _stat(10, 1, 100, 50, cutime=300, cstime=20)),
        (11, _stat(11, 10, 40, 10)),  # a live backend
        (12, _stat(12, 10, 5, 5)),
        (13, _stat(13, 1, 999, 999)),  # not the database's
    ):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat)
    (tmp_path / "self").mkdir()
    assert proc_cpu_seconds(_stat(10, 1, 100, 50, 300, 20), 100) == pytest.approx(1.5)
    assert tree_cpu_seconds(10, 100, tmp_path) == pytest.approx((150 + 320 + 50 + 10) / 100)


def test_render_table_shows_cpu_per_event_and_peak_memory() -> None:
    r = _result()
    r["replay"]["cpu_us_per_event"] = {
        "worker": 95.2,
        "gateway": 1.0,
        "database": 60.4,
        "kafka": 12.5,
    }
    r["replay"]["peak_rss_mb"] = {"worker": 612.0, "gateway": 90.5}
    lines = {ln.split("  ")[0]: ln for ln in render_table(r).splitlines()}
    assert "95.2 / 1.0 / 60.4 / 12.5 us" in lines["CPU per event (replay)"]
    assert "/ Kafka broker" in lines["CPU per event (replay)"]
    assert "worker 612.0 MB" in lines["peak memory (replay)"]
    assert "not met" in lines["peak memory (replay)"]  # the goal is 500 MB


# --- several workers --------------------------------------------------------------------------


def _metrics(stored: float, fast: float, total: float) -> dict:
    return parse_metrics(
        "# TYPE rtm_worker_events_stored_total counter\n"
        f"rtm_worker_events_stored_total {stored}\n"
        "# TYPE h histogram\n"
        f'h_bucket{{le="0.1"}} {fast}\n'
        f'h_bucket{{le="+Inf"}} {total}\n'
        f"h_count {total}\n"
    )


def test_merge_metrics_sums_the_workers_counters_and_buckets() -> None:
    a, b = _metrics(30.0, 1.0, 4.0), _metrics(12.0, 5.0, 6.0)
    m = merge_metrics([a, b])
    assert m["rtm_worker_events_stored_total"] == 42.0
    assert m["h_count"] == 10.0
    assert m["h_bucket"] == [(0.1, 6.0), (math.inf, 10.0)]
    assert histogram_quantile(m["h_bucket"], 0.5) == pytest.approx(
        histogram_quantile([(0.1, 6.0), (math.inf, 10.0)], 0.5)
    )
    assert merge_metrics([a]) == a  # one worker: its own figures
    assert merge_metrics([]) == {}


def test_group_stable_needs_every_worker_and_no_rebalance() -> None:
    def described(state: str, members: int, group: str = "bench-x-pipe") -> dict:
        return {"groups": [{"group": group, "state": state, "members": [{}] * members}]}

    assert group_stable(described("Stable", 2), "bench-x-pipe", 2)
    assert not group_stable(described("Stable", 1), "bench-x-pipe", 2)
    assert not group_stable(described("PreparingRebalance", 2), "bench-x-pipe", 2)
    assert not group_stable(described("Stable", 2, "other"), "bench-x-pipe", 2)
    assert not group_stable({}, "bench-x-pipe", 1)


def test_worker_costs_per_worker_and_summed() -> None:
    usage = {
        "wall_s": 10.0,
        "worker": {"cpu_s": 3.0, "core_share": 0.3},
        "worker2": {"cpu_s": 1.0, "core_share": 0.1},
        "gateway": {"cpu_s": 9.0, "core_share": 0.9},
    }
    c = worker_costs(
        usage, {"worker": 30_000, "worker2": 5_000}, {"worker": 120.0, "worker2": 99.5}
    )
    assert c["count"] == 2 and c["events_stored"] == 35_000
    assert c["per_worker"]["worker"]["cpu_us_per_event"] == pytest.approx(3.0 / 30_000 * 1e6)
    assert c["per_worker"]["worker2"]["cpu_us_per_event"] == pytest.approx(1.0 / 5_000 * 1e6)
    assert c["cpu_s"] == 4.0  # the gateway is not a worker
    assert c["cpu_us_per_event"] == pytest.approx(round(4.0 / 35_000 * 1e6, 1))
    assert c["peak_rss_mb_max"] == 120.0
    # a worker that stored nothing has no cost per event; no /proc: no CPU figures
    idle = worker_costs(usage, {"worker": 10, "worker2": 0}, {})
    assert idle["per_worker"]["worker2"]["cpu_us_per_event"] is None
    assert idle["peak_rss_mb_max"] is None
    blind = worker_costs(None, {"worker": 10}, {"worker": 1.0})
    assert blind["cpu_s"] is None and blind["cpu_us_per_event"] is None


def test_a_phase_names_and_reaches_each_worker() -> None:
    assert [worker_role(i) for i in range(3)] == ["worker", "worker2", "worker3"]
    s = Settings(worker_web_port=23066)
    ph = Phase("pipe", s)
    assert ph.metrics_urls == {"worker": ph.metrics_url}  # one worker, as before
    ph.worker_ports = {"worker": 23066, "worker2": 23067}
    assert ph.metrics_urls["worker2"].endswith(":23067/metrics")
    assert ph.metrics_urls["worker"] == ph.metrics_url


# --- accept -> webhook delivered ----------------------------------------------------------------


def _change(change: str, *ids: str) -> dict:
    return {"change": change, "alert": {"id": "a-" + "-".join(ids), "event_ids": list(ids)}}


def test_first_fired_takes_each_events_earliest_fired_change() -> None:
    accepted = {"e1": 100.0, "e2": 100.5}
    records = [
        (101.0, "fired", ["e1"]),
        (100.2, "fired", ["e1", "x"]),  # earlier, though read later (a retry order)
        (100.1, "resolved", ["e2"]),  # not the alert coming
        (100.9, None, ["e2"]),  # a bare snapshot counts as fired
        (100.3, "fired", ["e9"]),  # not an accepted event
    ]
    lags = first_fired(records, accepted)
    assert lags == pytest.approx({"e1": 0.2, "e2": 0.4})


def test_webhook_summary_counts_what_was_not_delivered() -> None:
    accepted = {"r1": 10.0, "r2": 10.0, "r3": 10.0, "r4": 10.0, "n1": 10.0}
    red = {"r1", "r2", "r3", "r4"}
    published = [(10.05, "fired", ["r1"]), (10.05, "fired", ["r2"]), (10.05, "fired", ["r3"])]
    published.append((10.05, "fired", ["n1"]))  # not a red flag: not this figure's
    delivered = delivery_records(
        [
            (10.1, _change("fired", "r1")),
            (10.7, _change("fired", "r1")),  # delivered again (at least once): the first
            (10.3, _change("fired", "r2")),
            (10.2, _change("resolved", "r3")),  # r3's alert never came as fired
            (10.4, _change("fired", "r4")),  # its alert record was missed: still expected
            (10.2, _change("fired", "n1")),
        ]
    )
    s = webhook_summary(delivered, published, accepted, red)
    assert (s["expected"], s["delivered"], s["undelivered"]) == (4, 3, 1)
    assert s["count"] == 3
    lags = sorted([0.1, 0.3, 0.4])
    assert s["p50_ms"] == pytest.approx(1000 * percentile(lags, 50), abs=0.05)
    assert s["max_ms"] == pytest.approx(400.0, abs=0.05)
    empty = webhook_summary([], published, accepted, red)
    assert empty["p99_ms"] is None and empty["undelivered"] == 3


def test_receiver_records_the_wall_clock_and_keeps_only_well_signed_arrivals() -> None:
    receiver = Receiver(secret="s3cret")
    try:
        good = orjson.dumps(_change("fired", "e1"))
        bad = orjson.dumps(_change("fired", "e2"))
        before = time.time()
        httpx.post(receiver.url, content=good, headers=signed_headers("s3cret", good, "a:fired"))
        httpx.post(receiver.url, content=bad, headers=signed_headers("other", bad, "b:fired"))
        after = time.time()
        [(wall, payload)] = receiver.arrivals()
        assert before <= wall <= after
        assert payload["alert"]["event_ids"] == ["e1"]
        assert receiver.signed == {"a:fired"} and receiver.bad_signatures == 1
        assert len(receiver.delivered()) == 2  # what was answered 200, signed or not
        assert delivery_records(receiver.arrivals()) == [(wall, "fired", ["e1"])]
    finally:
        receiver.close()


def _latency_with_webhook(p99: float | None, delivered: int, expected: int) -> dict:
    r = _result()
    r["latency"]["accept_to_webhook"] = {
        "count": delivered,
        "p50_ms": None if p99 is None else p99 / 3,
        "p95_ms": None if p99 is None else p99 / 2,
        "p99_ms": p99,
        "max_ms": p99,
        "expected": expected,
        "delivered": delivered,
        "undelivered": expected - delivered,
    }
    return r


def test_render_table_judges_the_webhook_latency() -> None:
    def row(r: dict) -> str:
        return next(ln for ln in render_table(r).splitlines() if ln.startswith("accept -> webhook"))

    ok = row(_latency_with_webhook(420.0, 100, 100))
    assert "140.0 / 210.0 / 420.0 ms" in ok and "p99 < 500 ms at 2,000 ev/s" in ok
    assert ok.split("ev/s")[1].split()[0] == "met"
    assert "100 of 100 red-flag alerts delivered" in ok
    assert "not met" in row(_latency_with_webhook(520.0, 100, 100))
    assert "not met" in row(_latency_with_webhook(100.0, 99, 100))  # one never came
    slow_load = _latency_with_webhook(420.0, 100, 100)
    slow_load["latency"]["achieved_events_per_s"] = 1000.0
    assert " met " not in row(slow_load) + " "  # met only under the target's load
    none = _latency_with_webhook(None, 0, 0)
    none["latency"]["accept_to_webhook"]["note"] = "no webhook for the 0 red-flag events"
    assert "no webhook" in row(none) and "met" not in row(none)
    assert "accept -> webhook" not in render_table(_result())  # recorded before issue 21


def test_render_table_shows_each_worker() -> None:
    r = _result()
    pipe = r["pipeline"]
    pipe["cpu"]["worker2"] = {"cpu_s": 12.0, "core_share": 0.84}
    pipe["cpu_us_per_event"] = {"worker": 261.4, "worker2": 224.0, "gateway": 37.3}
    pipe["peak_rss_mb"] = {"worker": 130.0, "worker2": 510.0, "gateway": 90.0}
    pipe["workers"] = worker_costs(
        pipe["cpu"], {"worker": 28_000, "worker2": 25_564}, pipe["peak_rss_mb"]
    )
    lines = {ln.split("  ")[0]: ln for ln in render_table(r).splitlines()}
    assert "2 workers" in lines["pipeline (gateway -> worker)"]
    assert "98 % + 84 % of a core" in lines["2 workers' CPU (pipeline)"]
    per = lines["CPU per event per worker (pipeline)"]
    assert f"{14.0 / 28_000 * 1e6:,.1f} / {12.0 / 25_564 * 1e6:,.1f} us" in per
    assert "28,000 / 25,564 events" in per
    summed = lines["CPU per event (pipeline)"]
    assert f"{pipe['workers']['cpu_us_per_event']:,.1f} / 37.3 / n/a / n/a us" in summed
    assert "2 workers summed" in summed
    mem = lines["peak memory (pipeline)"]
    assert "workers 130.0 / 510.0 MB" in mem and "not met" in mem  # one worker over 500 MB
    assert "CPU per event per worker" not in render_table(_result())  # one worker
