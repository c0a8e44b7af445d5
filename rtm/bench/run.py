"""`rtm bench`'s runs: every phase in turn on the local services (``run_bench``), or the
pages phase alone (``run_pages_only``); one result dict, rendered by ``rtm.bench.report``."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from rtm.bench.cohorts import (
    auto_history_patients,
    cohort,
    cohort_start,
    distinct_ids,
    latency_events,
    namespace_event,
)
from rtm.bench.cpu import cpu_snapshot, cpu_usage, tick_costs
from rtm.bench.harness import Bench, machine_info
from rtm.bench.pages import pages_keys, run_pages
from rtm.bench.phases import run_floor, run_history, run_latency, run_pipeline
from rtm.bench.stats import growth
from rtm.devstack import prepare
from rtm.produce import api_key
from rtm.simulate import simulate, write_jsonl


@dataclass(frozen=True)
class PagesOptions:
    patients: int = 5000
    days: int = 90
    requests: int = 50


def _run_pages(b: Bench, prefix: str, o: PagesOptions, seed: int) -> dict[str, Any]:
    return run_pages(b, prefix, o.patients, o.days, seed, o.requests)


def run_pages_only(settings: Any, o: PagesOptions, seed: int, log: Any) -> dict[str, Any]:
    """Only the pages phase (``rtm bench --pages-only``)."""
    prepare(settings, log=log)
    b = Bench(settings, log)
    b.key = api_key(settings)
    t_all = time.perf_counter()
    try:
        pages = _run_pages(b, f"b{b.tag}", o, seed + 5)
        machine = asyncio.run(machine_info(settings))
    finally:
        b.cleanup()
    return {
        "run": b.tag,
        "started_at": b.clock.now().isoformat(),
        "parameters": {
            "pages_patients": o.patients,
            "pages_days": o.days,
            "pages_requests": o.requests,
            "seed": seed,
            "partitions": settings.kafka.topic_partitions,
            "worker_batch_size": settings.worker.batch_size,
        },
        **pages_keys(pages),
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "pages": pages,
        "machine": machine,
    }


def _skipped_latency() -> dict[str, Any]:
    empty = {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "skipped": True,
        "achieved_events_per_s": None,
        "events_sent": 0,
        "seconds": 0.0,
        "accept_to_persisted": dict(empty),
        "accept_to_alert": {**empty, "note": "latency phase skipped"},
        "accept_to_webhook": {
            **empty,
            "expected": 0,
            "delivered": 0,
            "undelivered": 0,
            "note": "latency phase skipped",
        },
    }


def _skipped_replay() -> dict[str, Any]:
    return {"skipped": True, "events_per_s": None, "events_stored": 0, "seconds": 0.0}


def run_bench(
    settings: Any,
    patients: int,
    days: int,
    seed: int,
    replay_patients: int,
    replay_days: int,
    latency_seconds: float,
    rate: float,
    profile_dir: Path | None,
    log: Any,
    history_patients: int | None = None,
    history_days: int = 365,
    history_short_days: int = 30,
    history_new_days: int = 14,
    split: bool = True,
    pages: PagesOptions | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Every phase in turn (floor, pipeline, latency, replay, history, pages), then one
    result: the headline figures, each phase's own, the parameters and the machine.
    Pipeline and replay run `workers` worker processes in one consumer group."""
    if history_patients != 0 and not 0 < history_short_days < history_days:
        raise click.BadParameter("need 0 < --history-short-days < --history-days")
    if workers < 1:
        raise click.BadParameter("need --workers >= 1")
    prepare(settings, log=log)
    b = Bench(settings, log, profile_dir)
    b.key = api_key(settings)
    t_all = time.perf_counter()
    try:
        prefix = f"b{b.tag}"
        floor, pipe, warm = _floor_and_pipeline(b, prefix, patients, days, seed, split, workers)
        lat = _latency_phase(b, prefix, seed, rate, latency_seconds, warm)
        replay, state = _replay_phase(b, prefix, replay_patients, replay_days, seed, warm, workers)
        history: dict[str, Any] = {"skipped": True}
        if history_patients != 0:
            n_hist = history_patients or auto_history_patients(pipe["events_per_s"], history_days)
            history = run_history(
                b,
                prefix,
                n_hist,
                history_days,
                history_short_days,
                history_new_days,
                seed + 4,
                warm,
            )
            history["patients_auto"] = history_patients is None
            for key in ("short", "long"):
                c = history[key]
                state.setdefault(
                    f"{c['history_days']}d",
                    {**c["state_bytes"], "days": c["history_days"], "source": "history"},
                )
                state.setdefault(
                    f"{c['history_days']}d+{history_new_days}d",
                    {
                        **c["state_bytes_after_new"],
                        "days": c["history_days"] + history_new_days,
                        "source": "history, after the timed new events",
                        "informative": True,
                    },
                )
        pages_out = _run_pages(b, prefix, pages, seed + 5) if pages is not None else None
        machine = asyncio.run(machine_info(settings))
    finally:
        b.cleanup()
    result: dict[str, Any] = {
        "run": b.tag,
        "started_at": b.clock.now().isoformat(),
        "parameters": {
            "patients": patients,
            "days": days,
            "seed": seed,
            "replay_patients": replay_patients,
            "replay_days": replay_days,
            "latency_seconds": latency_seconds,
            "rate": rate,
            "history_patients": history.get("patients", 0),
            "history_days": history_days,
            "history_short_days": history_short_days,
            "history_new_days": history_new_days,
            "cpu_split": split,
            "workers": workers,
            # the pipeline's and replay's topics get at least one partition per worker
            "partitions": max(settings.kafka.topic_partitions, workers),
            "worker_batch_size": settings.worker.batch_size,
            "worker_lanes": settings.worker.lanes,
            "worker_lane_min_items": settings.worker.lane_min_items,
            "worker_state_cache": settings.worker.state_cache,
        },
        **_headline(floor, pipe, lat, replay),
    }
    result.update(_history_and_state(history, state, replay_days, history_days))
    result["worker_cpu_utilisation"] = ((pipe.get("cpu") or {}).get("worker") or {}).get(
        "core_share"
    )
    result["cpu_split"] = pipe.get("cpu_split")
    if result["cpu_split"] is None:
        result["cpu_split_note"] = pipe.get("cpu_split_note") or "CPU split off (--no-cpu-split)"
    if pages_out is not None:
        result.update(pages_keys(pages_out))
    result.update(
        {
            "total_seconds": round(time.perf_counter() - t_all, 1),
            "pages": pages_out or {"skipped": True},
            "floor": floor,
            "pipeline": pipe,
            "latency": lat,
            "replay": replay,
            "history": history,
            "machine": machine,
        }
    )
    return result


def _floor_and_pipeline(
    b: Bench, prefix: str, patients: int, days: int, seed: int, split: bool, workers: int = 1
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The same cohort through the floor, then through the pipeline; (floor, pipeline, the
    warm-up events every later phase starts with)."""
    main_events = cohort(patients, days, seed, f"{prefix}.m.", b.today())
    main_path = b.workdir / "pipeline.jsonl"
    write_jsonl(main_events, main_path)
    expect_main = len(distinct_ids(main_events))
    b.log(
        f"bench {b.tag}: {len(main_events):,} events ({patients} patients x {days} days, "
        f"{expect_main:,} distinct)"
    )
    warm = [namespace_event(e, f"{prefix}.w.") for e in cohort(5, 3, seed, "", b.today())][:200]

    b.log("floor: pre-producing, then consuming + COPY ...")
    floor = asyncio.run(run_floor(b, main_events))
    b.log(f"floor: {floor['events_per_s']:,} ev/s")

    ph = b.start_stack("pipe", workers=workers)
    try:
        b.log(
            "pipeline: posting through the gateway at full speed"
            + (f" ({workers} workers) ..." if workers > 1 else " ...")
        )
        pipe = asyncio.run(run_pipeline(b, ph, main_path, expect_main, warm, split=split))
    finally:
        b.stop_stack(ph)
    b.log(f"pipeline: {pipe['events_per_s']:,} ev/s")
    return floor, pipe, warm


def _latency_phase(
    b: Bench, prefix: str, seed: int, rate: float, latency_seconds: float, warm: list[Any]
) -> dict[str, Any]:
    if latency_seconds <= 0:
        return _skipped_latency()
    n_lat = int(rate * latency_seconds)
    lat_events = latency_events(
        max(200, int(rate * latency_seconds / 400)), seed + 1, f"{prefix}.l.", n_lat, b.today()
    )
    # the worker may post to the phase's webhook receiver on loopback (refused by default)
    ph = b.start_stack("lat", webhook_allow_networks="127.0.0.1/32")
    try:
        b.log(f"latency: {len(lat_events):,} events at {rate:,.0f} ev/s ...")
        return asyncio.run(
            run_latency(
                b, ph, lat_events, rate, [namespace_event(e, "l") for e in warm], f"{prefix}.l."
            )
        )
    finally:
        b.stop_stack(ph)


def _replay_phase(
    b: Bench,
    prefix: str,
    replay_patients: int,
    replay_days: int,
    seed: int,
    warm: list[Any],
    workers: int = 1,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the replay's figures, the state sizes after it by '<days>d')."""
    state: dict[str, dict[str, Any]] = {}
    if replay_patients <= 0 or replay_days <= 0:
        return _skipped_replay(), state
    replay_path = b.workdir / "replay.jsonl"
    ids: set[str] = set()
    newest: list[dt.datetime] = []
    rp = f"{prefix}.r."

    def replay_events() -> Iterator[dict[str, Any]]:
        top: dt.datetime | None = None
        for e in simulate(
            replay_patients,
            replay_days,
            seed + 2,
            start=cohort_start(replay_days, b.today()),
        ):
            e = namespace_event(e, rp)
            ids.add(e["event_id"])
            at = dt.datetime.fromisoformat(e["occurred_at"])
            top = at if top is None or at > top else top
            yield e
        newest.extend([top] if top else [])

    n_replay = write_jsonl(replay_events(), replay_path)
    # No wall-clock timer: a tick at today's date over a cohort that ended weeks ago
    # would call every patient inactive. One tick at the end instead (untimed).
    ph = b.start_stack("replay", workers=workers, tick_interval_s=0)
    try:

        async def timed() -> dict[str, Any]:
            # what the earlier phases left to vacuum is done before the timing, not inside
            # it (as before the history phase's timed windows)
            async with b.settled() as settled:
                b.log(
                    f"replay: the database vacuumed in {settled['vacuum_s']:.0f} s; "
                    f"{n_replay:,} events ({replay_patients} patients x {replay_days} days)"
                    " from a file ..."
                )
                out = await run_pipeline(
                    b, ph, replay_path, len(ids), [namespace_event(e, "r") for e in warm]
                )
            return {**out, "database_settle": settled}

        replay = asyncio.run(timed())

        async def settle() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            when = newest[0] if newest else b.clock.now()
            tick = await b.tick(ph, when + dt.timedelta(seconds=1))
            sizes = await b.state_bytes(rp)
            # A local midnight: one more tick, a day later, moves every patient's day by
            # one (the daily rules, the adherence rows); what it costs per patient sizes the
            # midnight bursts of a health system (docs/scaling.md). A tick loads every state
            # of its partition, so its patients are every stored state, earlier runs' too.
            patients = await b.stored_states() or replay_patients
            start = cpu_snapshot(b.pids(ph), b.servers(ph))
            day = await b.tick(ph, when + dt.timedelta(days=1, seconds=1))
            usage = cpu_usage(start, cpu_snapshot(b.pids(ph), b.servers(ph)))
            return tick, {**day, **tick_costs(usage, patients)}, sizes

        replay["final_tick"], replay["next_day_tick"], st = asyncio.run(settle())
        state[f"{replay_days}d"] = {**st, "days": replay_days, "source": "replay"}
    finally:
        b.stop_stack(ph)
    replay["file_events"] = n_replay
    replay_path.unlink(missing_ok=True)
    return replay, state


def _headline(
    floor: Mapping[str, Any], pipe: Mapping[str, Any], lat: Mapping[str, Any], replay: Any
) -> dict[str, Any]:
    """The top-level figures: floor and pipeline rates, their ratio, the latencies (the
    issue's latency keys are gateway accept -> alert published; then -> persisted and ->
    webhook delivered), the replay."""
    ratio = (
        pipe["events_per_s"] / floor["events_per_s"]
        if pipe["events_per_s"] and floor["events_per_s"]
        else None
    )
    per, al = lat["accept_to_persisted"], lat["accept_to_alert"]
    hook = lat.get("accept_to_webhook") or {}
    return {
        "floor_events_per_s": floor["events_per_s"],
        "pipeline_events_per_s": pipe["events_per_s"],
        "ratio": None if ratio is None else round(ratio, 4),
        "latency_p50_ms": al["p50_ms"],
        "latency_p95_ms": al["p95_ms"],
        "latency_p99_ms": al["p99_ms"],
        "persisted_latency_p50_ms": per["p50_ms"],
        "persisted_latency_p95_ms": per["p95_ms"],
        "persisted_latency_p99_ms": per["p99_ms"],
        "webhook_latency_p50_ms": hook.get("p50_ms"),
        "webhook_latency_p95_ms": hook.get("p95_ms"),
        "webhook_latency_p99_ms": hook.get("p99_ms"),
        "replay_events_per_s": replay["events_per_s"],
        "replay_seconds": replay["seconds"],
    }


def _history_and_state(
    history: Mapping[str, Any],
    state: dict[str, dict[str, Any]],
    replay_days: int,
    history_days: int,
) -> dict[str, Any]:
    """The history rates and ratio, and the state sizes with their growth."""
    out: dict[str, Any] = {}
    if not history.get("skipped"):
        s_days, l_days = history["short"]["history_days"], history["long"]["history_days"]
        out[f"history_events_per_s_{s_days}d"] = history["short"]["events_per_s"]
        out[f"history_events_per_s_{l_days}d"] = history["long"]["events_per_s"]
        out[f"history_ratio_{l_days}_{s_days}"] = history["ratio"]
    for label, st in state.items():
        out[f"state_bytes_{label}"] = {k: st.get(k) for k in ("median", "p99", "n")}
    out["state_bytes"] = state
    out["state_growth"] = _state_growth(state, replay_days, history_days)
    return out


def _state_growth(
    state: Mapping[str, Mapping[str, Any]], from_days: int, to_days: int
) -> dict[str, Any] | None:
    """median and p99 state bytes after `to_days` over those after `from_days`."""
    a, b = state.get(f"{from_days}d"), state.get(f"{to_days}d")
    if not a or not b or from_days == to_days:
        return None
    return {
        "from": f"{from_days}d",
        "to": f"{to_days}d",
        "median_x": growth(a.get("median"), b.get("median")),
        "p99_x": growth(a.get("p99"), b.get("p99")),
    }
