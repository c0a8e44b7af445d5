"""The bench's phases (see ``rtm.bench``): floor, pipeline, latency, history; each runs
on a ``Bench`` stack and returns its figures."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rtm.bench.cohorts import (
    HistoryCohort,
    cohort,
    cohort_start,
    distinct_ids,
    history_segments,
    namespace_event,
    paced_schedule,
    split_by_patient,
    write_history_cohort,
)
from rtm.bench.cpu import (
    CpuSnapshot,
    cpu_snapshot,
    cpu_usage,
    peak_rss_mb,
    read_split,
    reset_peak_rss,
    worker_costs,
)
from rtm.bench.harness import Bench, Phase
from rtm.bench.receiver import Receiver
from rtm.bench.stats import (
    AlertRecord,
    alert_trigger_ids,
    delivery_records,
    delta,
    first_fired,
    gc_between,
    growth,
    histogram_quantile,
    merge_metrics,
    state_cache_between,
    summarize_ms,
    webhook_summary,
)
from rtm.produce import produce_file
from rtm.simulate import write_jsonl
from schemas.events import DEFAULT_ORG, key_text
from streams.clock import clock_for
from streams.db.refresh import pending as refresh_pending
from streams.kafka.transport import kafka_client_kwargs


async def run_floor(b: Bench, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Bare producer -> topic -> bare consumer -> COPY into a scratch hypertable."""
    s = b.base
    topic = f"bench.{b.tag}.floor.events"
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(s))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=s.kafka.topic_partitions, replication_factor=1)]
        )
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        **kafka_client_kwargs(s), acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    t0 = time.perf_counter()
    try:
        futs = []
        for e in events:
            futs.append(await producer.send(topic, orjson.dumps(e), key=e["patient_id"].encode()))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    produce_s = time.perf_counter() - t0

    conn = await asyncpg.connect(s.db.owner_dsn)  # a scratch hypertable: DDL, so the owner
    table = b.scratch_table
    await conn.execute(f"""
        CREATE TABLE {table} (event_id text NOT NULL, type text NOT NULL,
            patient_id text NOT NULL, occurred_at timestamptz NOT NULL,
            received_at timestamptz, payload jsonb NOT NULL)""")
    await conn.execute(
        f"SELECT create_hypertable('{table}', by_range('occurred_at', INTERVAL '7 days'))"
    )
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_kwargs(s),
        group_id=f"bench-{b.tag}-floor",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    fromiso = dt.datetime.fromisoformat
    n = 0
    t_first: float | None = None
    try:
        while n < len(events):
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if not batch:
                continue
            if t_first is None:
                t_first = time.perf_counter()
            records = []
            for recs in batch.values():
                for r in recs:
                    d = orjson.loads(r.value)  # columns only: no validation, no rules
                    records.append(
                        (
                            d["event_id"],
                            d["type"],
                            d["patient_id"],
                            fromiso(d["occurred_at"]),
                            None,
                            r.value.decode(),
                        )
                    )
            await conn.copy_records_to_table(table, records=records)
            await consumer.commit()
            n += len(records)
        elapsed = time.perf_counter() - (t_first or time.perf_counter())
    finally:
        await consumer.stop()
        await conn.close()
    return {
        "events": n,
        "seconds": round(elapsed, 3),
        "events_per_s": round(n / elapsed, 1) if elapsed > 0 else None,
        "preproduce_events_per_s": round(len(events) / produce_s, 1),
    }


def measure_start(b: Bench, ph: Phase) -> CpuSnapshot | None:
    """A phase's measurement starts: its processes' peak memory afresh, the CPU so far (the
    worker, the gateway and the database with its backends)."""
    pids = b.pids(ph)
    for pid in pids.values():
        reset_peak_rss(pid)
    return cpu_snapshot(pids, b.servers(ph))


def measure_end(
    b: Bench,
    ph: Phase,
    start: CpuSnapshot | None,
    events: int,
    stored_by_worker: dict[str, int] | None = None,
) -> dict[str, Any]:
    """``cpu`` (per process: CPU seconds and share of a core), ``cpu_us_per_event`` (CPU
    microseconds per event stored, per process: what a second machine would add) and
    ``peak_rss_mb`` (each process's peak resident memory over the phase); with the events
    each worker stored, ``workers`` (``worker_costs``: each worker's CPU per event it
    stored and memory, and their sum)."""
    pids = b.pids(ph)
    usage = cpu_usage(start, cpu_snapshot(pids, b.servers(ph)))
    per_event = None
    if usage and events:
        per_event = {
            role: round(v["cpu_s"] / events * 1e6, 1)
            for role, v in usage.items()
            if isinstance(v, dict)
        }
    rss = {role: peak_rss_mb(pid) for role, pid in pids.items()}
    out: dict[str, Any] = {"cpu": usage, "cpu_us_per_event": per_event, "peak_rss_mb": rss}
    if stored_by_worker is not None:
        out["workers"] = worker_costs(usage, stored_by_worker, rss)
    return out


STORED = "rtm_worker_events_stored_total"
BATCHES = "rtm_worker_db_write_seconds_count"  # the worker's batches, and their seconds
WRITE_S = "rtm_worker_db_write_seconds_sum"


async def post_and_wait(
    b: Bench,
    ph: Phase,
    client: Any,
    path: Path,
    expect: int,
    timeout: float = 900.0,
    poll: float = 0.1,
) -> dict[str, Any]:
    """Post a JSONL file with `rtm produce`'s poster at full speed; first request sent ->
    the workers' events_stored counters (summed) grew by the `expect` distinct events."""
    before_w = await b.worker_metrics(client, ph)
    before = merge_metrics(list(before_w.values()))
    base = int(before.get(STORED, 0))
    cpu0 = measure_start(b, ph)
    t0 = time.monotonic()
    result = await produce_file(ph.settings, path, url=ph.url, batch_size=500, concurrency=4)
    t_posted = time.monotonic()
    if result.rejected:  # refused at the gateway: never stored, do not wait for them
        b.log(
            f"{ph.name}: the gateway rejected {result.rejected:,} events, e.g. "
            f"{result.rejections[:1]}"
        )
        expect = max(0, expect - result.rejected)
    t_done, n = await b.wait_stored(client, ph, base + expect, timeout=timeout, poll=poll)
    after_w = await b.worker_metrics(client, ph)
    after = merge_metrics(list(after_w.values()))
    stored = n - base
    by_worker = {
        role: int(m.get(STORED, 0) - before_w.get(role, {}).get(STORED, 0))
        for role, m in after_w.items()
    }
    measured = measure_end(b, ph, cpu0, stored, by_worker)
    elapsed = t_done - t0
    return {
        "events_posted": result.posted,
        "events_accepted": result.accepted,
        "events_rejected": result.rejected,
        "duplicates_at_gateway": result.duplicates,
        "events_stored": stored,
        "complete": stored >= expect,
        "seconds": round(elapsed, 3),
        "post_seconds": round(t_posted - t0, 3),
        "events_per_s": round(stored / elapsed, 1) if elapsed > 0 else None,
        "gateway_accept_events_per_s": round(result.accepted / (t_posted - t0), 1),
        "worker_db_write_s_total": round(delta(before, after, WRITE_S), 3),
        "worker_db_batches": int(delta(before, after, BATCHES)),
        "worker_gc": gc_between(before, after),
        "worker_state_cache": state_cache_between(before, after),
        **measured,
    }


async def produce_direct(settings: Any, path: Path, chunk: int = 20_000) -> tuple[int, float]:
    """Write a JSONL file straight to `settings.kafka.topic_events` (key = `<org>/<patient_id>`,
    as the gateway does; `received_at` = now), acks=all; (records, seconds)."""
    clock = clock_for(settings)
    producer = AIOKafkaProducer(
        **kafka_client_kwargs(settings),
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    n = 0
    t0 = time.monotonic()
    try:
        futs = []
        with path.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                ev = orjson.loads(line)
                ev["received_at"] = clock.now().isoformat()
                # the gateway's key: <org>/<patient> (unstamped: the default organisation)
                key = key_text((str(ev.get("org_id") or DEFAULT_ORG), str(ev["patient_id"])))
                futs.append(
                    await producer.send(
                        settings.kafka.topic_events, orjson.dumps(ev), key=key.encode()
                    )
                )
                n += 1
                if len(futs) >= chunk:
                    await asyncio.gather(*futs)
                    futs.clear()
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n, time.monotonic() - t0


async def produce_and_wait(
    b: Bench,
    ph: Phase,
    client: Any,
    path: Path,
    expect: int,
    timeout: float = 900.0,
    poll: float = 0.1,
) -> dict[str, Any]:
    """`path` straight to Kafka, the worker draining the backlog: first record sent -> the
    worker's events_stored counter grew by the `expect` distinct events."""
    before = await b.metrics(client, ph)
    base = int(before.get(STORED, 0))
    cpu0 = measure_start(b, ph)
    t0 = time.monotonic()
    sent, produce_s = await produce_direct(ph.settings, path)
    t_done, n = await b.wait_stored(client, ph, base + expect, timeout=timeout, poll=poll)
    after = await b.metrics(client, ph)
    stored = n - base
    measured = measure_end(b, ph, cpu0, stored)
    elapsed = t_done - t0
    return {
        "records_produced": sent,
        "events_stored": stored,
        "complete": stored >= expect,
        "seconds": round(elapsed, 3),
        "produce_seconds": round(produce_s, 3),
        "events_per_s": round(stored / elapsed, 1) if elapsed > 0 else None,
        "worker_db_batches": int(delta(before, after, BATCHES)),
        "worker_gc": gc_between(before, after),
        "worker_state_cache": state_cache_between(before, after),
        **measured,
    }


async def run_pipeline(
    b: Bench, ph: Phase, path: Path, expect: int, warm: list[dict[str, Any]], split: bool = False
) -> dict[str, Any]:
    """Warm-up, then `path` at full speed; with `split`, py-spy on the (first) worker
    meanwhile and the result's `cpu_split` (None without py-spy, with a `cpu_split_note`)."""
    async with httpx.AsyncClient(timeout=60.0) as client:
        await b.warm_up(client, ph, warm)
        profs, spy_out = b.start_profile(ph, split=split)
        try:
            out = await post_and_wait(b, ph, client, path, expect)
        finally:
            b.stop_profile(profs)
    out["partitions"] = ph.settings.kafka.topic_partitions
    if split:
        out["cpu_split"], out["cpu_split_note"] = read_split(spy_out)
    return out


async def prepare_history_cohort(
    b: Bench, ph: Phase, client: Any, c: HistoryCohort
) -> dict[str, Any]:
    """A cohort's history (untimed, block by block with a tick after each: ``post_history``)
    and its patients' state sizes at its end."""
    seed, tick = await post_history(b, ph, client, c)
    state = await b.state_bytes(c.patient_prefix)
    b.log(
        f"history {c.history_days} d: history processed ({seed['events_stored']:,} events in "
        f"{seed['seconds']:.1f} s), state median {state['median']} B"
    )
    return {
        "history_days": c.history_days,
        "history": {
            **seed,
            "file_events": c.seed_events,
            "newest_occurred_at": c.seed_newest.isoformat() if c.seed_newest else None,
        },
        "tick": tick,  # the last one, at the newest history event
        "state_bytes": state,
    }


async def post_history(
    b: Bench, ph: Phase, client: Any, c: HistoryCohort
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A cohort's history straight to Kafka, block after block (``history_segments``), each
    followed by a tick at its newest event (so states are pruned as the year goes, as a
    stack that grew over a year was by its daily ticks); the blocks' figures combined
    (``combine_windows``, with ``windows`` per block) and the last tick."""
    parts: list[dict[str, Any]] = []
    tick: dict[str, Any] = {}
    for path, distinct, newest in history_segments(c):
        try:
            parts.append(
                await produce_and_wait(b, ph, client, path, distinct, timeout=3600.0, poll=0.25)
            )
        finally:
            path.unlink(missing_ok=True)
        tick = await b.tick(ph, (newest or b.clock.now()) + dt.timedelta(seconds=1))
    return combine_windows(parts), tick


# The timed windows, interleaved: each cohort's new events in two halves (by patient), timed
# short, long, long, short. Both cohorts' histories are taken first, so the two cohorts are
# timed within the same minute or two on the same worker and database, and a box that slows
# or speeds up over the run weighs on both alike (an ABBA order cancels a steady drift).
HISTORY_WINDOWS = ("short", "long", "long", "short")


async def timed_window(
    b: Bench, ph: Phase, client: Any, path: Path, distinct: int, label: str = ""
) -> dict[str, Any]:
    """One timed window on a settled stack: the refresh has folded every marked patient
    (the history's, the previous window's, what earlier phases left) and the database is
    vacuumed, so that what is compared is the worker with history, not a refresh or a
    vacuum beside it; then the events straight to Kafka, the worker draining them (with
    --profile, py-spy on it meanwhile: ``<phase><label>-worker.txt``)."""
    drain_s, still_marked = await refresh_drained(b, REFRESH_DRAIN_S)
    async with b.settled() as settled:
        wal0 = await b.wal()
        profs, _ = b.start_profile(ph, label=label)
        try:
            new = await produce_and_wait(b, ph, client, path, distinct, poll=0.05)
        finally:
            b.stop_profile(profs)
        wal1 = await b.wal()
    return {
        **new,
        "refresh_drain": {"seconds": round(drain_s, 1), "still_marked": still_marked},
        "database_settle": settled,
        # what the window wrote to the log (the whole server's; only the bench writes then)
        "wal": {k: wal1[k] - wal0[k] for k in wal0} if wal0 and wal1 else None,
    }


def combine_windows(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """A cohort's timed windows (or its history's blocks) as one: events and seconds summed
    (events/s = their quotient), the worker's CPU summed over the events, peak memory the
    largest, the garbage collections summed; each window's own figures under ``windows``."""
    stored = sum(w["events_stored"] for w in windows)
    seconds = sum(w["seconds"] for w in windows)
    cpu_s = sum(((w.get("cpu") or {}).get("worker") or {}).get("cpu_s") or 0.0 for w in windows)
    rss = [(w.get("peak_rss_mb") or {}).get("worker") for w in windows]
    gc: dict[str, dict[str, float]] = {}
    cache: dict[str, int] = {}
    for w in windows:
        for g, v in (w.get("worker_gc") or {}).items():
            acc = gc.setdefault(g, {})
            for k, n in v.items():
                acc[k] = round(acc.get(k, 0) + n, 4)
        for k, n in (w.get("worker_state_cache") or {}).items():
            cache[k] = cache.get(k, 0) + n
    return {
        "events_stored": stored,
        "complete": all(w["complete"] for w in windows),
        "seconds": round(seconds, 3),
        "events_per_s": round(stored / seconds, 1) if seconds > 0 else None,
        "worker_cpu_us_per_event": round(1e6 * cpu_s / stored, 1) if cpu_s and stored else None,
        "peak_rss_mb": {"worker": max((r for r in rss if r is not None), default=None)},
        "worker_gc": gc,
        "worker_state_cache": cache or None,
        "windows": [
            {
                "events_stored": w["events_stored"],
                "seconds": w["seconds"],
                "events_per_s": w["events_per_s"],
                # measure_end's own figure (CPU microseconds per event stored)
                "worker_cpu_us_per_event": (w.get("cpu_us_per_event") or {}).get("worker"),
                "refresh_drain": w.get("refresh_drain"),
                "database_settle": w.get("database_settle"),
                "wal": w.get("wal"),
                "worker_state_cache": w.get("worker_state_cache"),
            }
            for w in windows
        ],
    }


REFRESH_DRAIN_S = 900.0  # at most, before a history cohort's timed events


async def refresh_drained(b: Bench, timeout: float, poll: float = 0.5) -> tuple[float, int]:
    """Seconds until the worker's refresh has folded every patient the batches marked
    (at most ``timeout``), and how many are still marked then."""
    t0 = time.monotonic()
    async with b.db() as conn:
        while (left := await refresh_pending(conn)) and time.monotonic() - t0 < timeout:
            await asyncio.sleep(poll)
    return time.monotonic() - t0, left


Bodies = list[tuple[float, int, list[str], bytes]]  # (send offset s, lane, event ids, body)
WEBHOOK_SECRET = "bench-receiver-secret"  # the latency phase's receiver checks signatures


async def run_latency(
    b: Bench,
    ph: Phase,
    events: list[dict[str, Any]],
    rate: float,
    warm: list[dict[str, Any]],
    prefix: str,
    webhook_wait_s: float = 60.0,
) -> dict[str, Any]:
    """`events` (patient ids starting with `prefix`) paced at `rate` through the gateway:
    accept (the gateway's received_at) -> persisted (events.stored_at), -> alert published
    (the alert record's timestamp) and -> webhook delivered (a local signed receiver, the
    organisation's webhook for the phase, records the wall-clock arrival)."""
    receiver = Receiver(secret=WEBHOOK_SECRET)
    # before the warm-up: its alerts take the delivery path first (the client, the claim
    # queries), so the timed events do not pay for that
    await b.org_webhook(receiver)
    try:
        return await _latency(b, ph, events, rate, warm, prefix, receiver, webhook_wait_s)
    finally:
        await b.org_webhook(None)  # what is still queued becomes 'no_webhook'
        receiver.close()


async def _latency(
    b: Bench,
    ph: Phase,
    events: list[dict[str, Any]],
    rate: float,
    warm: list[dict[str, Any]],
    prefix: str,
    receiver: Receiver,
    webhook_wait_s: float,
) -> dict[str, Any]:
    schedule = paced_schedule(events, rate=rate, tick_s=0.1, lanes=4)
    bodies: Bodies = [
        (off, lane, [e["event_id"] for e in evs], b"\n".join(orjson.dumps(e) for e in evs))
        for off, lane, evs in schedule
    ]
    red_ids = {
        e["event_id"] for e in events if e["type"] == "symptom.reported" and e.get("red_flags")
    }
    reader = AlertReader(ph.settings)
    await reader.start()
    async with httpx.AsyncClient(timeout=60.0) as client:
        base = await b.warm_up(client, ph, warm)
        m0 = await b.metrics(client, ph)
        reader.read()
        profs, _ = b.start_profile(ph)  # with --profile: where the paced phase's CPU goes
        try:
            received, late, sent_s = await _send_paced(client, ph.url, b.headers, bodies)
        finally:
            b.stop_profile(profs)
        _, n = await b.wait_stored(client, ph, base + len(received), timeout=300.0)
        # alerts follow persistence by at most a batch; give them a moment, then stop
        quiet_until = time.monotonic() + 3.0
        while time.monotonic() < quiet_until:
            await asyncio.sleep(0.2)
        await reader.stop_reading()
        # the webhooks follow the alerts through the outbox, one endpoint at a time: wait
        # (bounded) until every change routed for the cohort has arrived
        t_wait = time.monotonic()
        routed, undelivered = await b.wait_delivered(receiver, prefix, webhook_wait_s, poll=0.25)
        waited = time.monotonic() - t_wait
        m = await b.metrics(client, ph)
    await reader.close()
    persisted = await _persisted_lags(ph.settings.db.dsn, list(received))
    sent = sum(len(ids) for _, _, ids, _ in bodies)
    return {
        "target_events_per_s": rate,
        "events_sent": sent,
        "seconds": round(sent_s, 2),
        "achieved_events_per_s": round(sent / sent_s, 1),
        "max_send_lag_ms": round(late * 1000, 1),
        "events_stored": n - base,
        "accept_to_persisted": summarize_ms(persisted),
        "accept_to_alert": _alert_summary(
            reader.records, received, len(red_ids), ph.settings.kafka.topic_alerts
        ),
        "accept_to_webhook": _webhook_summary(
            receiver, reader.records, received, red_ids, routed, undelivered, waited
        ),
        "worker_histogram_estimate": _histogram_estimate(m),
        # what the worker did meanwhile: its batches, the seconds inside them, its
        # garbage collections (from the warm-up's end to the webhooks' arrival)
        "worker_db_batches": int(delta(m0, m, BATCHES)),
        "worker_db_write_s_total": round(delta(m0, m, WRITE_S), 3),
        "worker_gc": gc_between(m0, m),
    }


class AlertReader:
    """The alert records published on a phase's alerts topic from ``start`` on."""

    def __init__(self, settings: Any) -> None:
        self.consumer = AIOKafkaConsumer(
            settings.kafka.topic_alerts,
            **kafka_client_kwargs(settings),
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        self.records: list[AlertRecord] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        # "latest" must be resolved before anything is published
        await self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)

    def read(self) -> None:
        """Read in the background until ``stop_reading``."""
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while not self._stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                for r in recs:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        change, ids = alert_trigger_ids(orjson.loads(r.value))
                        self.records.append((r.timestamp / 1000.0, change, ids))

    async def stop_reading(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def close(self) -> None:
        await self.consumer.stop()


async def _send_paced(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], bodies: Bodies
) -> tuple[dict[str, float], float, float]:
    """Each body posted at its offset, one sender per lane; (accept instant by event id,
    duplicates left out; the largest send lag s; the seconds the sending took)."""
    received: dict[str, float] = {}
    lanes: dict[int, list[tuple[float, list[str], bytes]]] = {}
    for off, lane, ids, body in bodies:
        lanes.setdefault(lane, []).append((off, ids, body))
    late = [0.0]

    async def sender(items: list[tuple[float, list[str], bytes]], t0: float) -> None:
        for off, ids, body in items:
            delay = t0 + off - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late[0] = max(late[0], -delay)
            resp = await client.post(f"{url}/v1/events", content=body, headers=headers)
            resp.raise_for_status()
            data = resp.json()
            at = dt.datetime.fromisoformat(data["received_at"]).timestamp()
            dup = {d["event_id"] for d in data["duplicates"]}
            for i in ids:
                if i not in dup:
                    received.setdefault(i, at)

    t0 = time.monotonic() + 0.2
    await asyncio.gather(*(sender(items, t0) for items in lanes.values()))
    return received, late[0], time.monotonic() - t0


async def _persisted_lags(dsn: str, event_ids: list[str]) -> list[float]:
    """stored_at - received_at of each stored event, in seconds."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM stored_at - received_at)::float8 AS lag"
            " FROM events WHERE event_id = ANY($1::text[])",
            event_ids,
        )
    finally:
        await conn.close()
    return [r["lag"] for r in rows if r["lag"] is not None]


def _alert_summary(
    alerts: list[AlertRecord], received: dict[str, float], red_flag_events: int, topic: str
) -> dict[str, Any]:
    """accept -> alert fired, per event that triggered one (its first alert)."""
    alert_lat = list(first_fired(alerts, received).values())
    agent = alerts_agent_registered()
    alert_summary: dict[str, Any] = summarize_ms(alert_lat)
    if not alert_lat:
        alert_summary.update(p50_ms=None, p95_ms=None, p99_ms=None, max_ms=None)
        alert_summary["note"] = (
            "no alerts agent in this worker (agents/alerts.py absent): accept->alert not measured"
            if not agent
            else f"alerts agent present but no alert for the {red_flag_events} red-flag events on "
            f"{topic} ({len(alerts)} alert records seen)"
        )
    else:
        alert_summary["red_flag_events"] = red_flag_events
        alert_summary["alerts_seen"] = len(alerts)
    return alert_summary


def _webhook_summary(
    receiver: Receiver,
    alerts: list[AlertRecord],
    received: dict[str, float],
    red_ids: set[str],
    routed: set[str],
    undelivered: set[str],
    waited: float,
) -> dict[str, Any]:
    """accept -> webhook delivered per red-flag event (``webhook_summary``), and the
    deliveries: routed to the receiver for the cohort, not arrived when the wait ended,
    badly signed (none counts as delivered)."""
    out = webhook_summary(delivery_records(receiver.arrivals()), alerts, received, red_ids)
    out.update(
        red_flag_events=len(red_ids),
        deliveries_routed=len(routed),
        deliveries_undelivered=len(undelivered),
        bad_signatures=receiver.bad_signatures,
        waited_s=round(waited, 2),
    )
    if not out["count"]:
        out["note"] = (
            f"no webhook for the {len(red_ids)} red-flag events ({len(routed)} deliveries"
            f" routed to the receiver, {len(receiver.requests)} requests received)"
        )
    elif out["undelivered"] or undelivered:
        out["note"] = (
            f"{out['undelivered']} of {out['expected']} red-flag alerts not delivered,"
            f" {len(undelivered)} of {len(routed)} deliveries, after {waited:.0f} s"
        )
    return out


def _histogram_estimate(m: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """p50/p95/p99 of the worker's own accept -> persisted / alert histograms."""
    return {
        name: {
            f"p{q}_ms": (
                None
                if (v := histogram_quantile(m.get(f"{metric}_bucket", []), q / 100)) is None
                else round(v * 1000, 1)
            )
            for q in (50, 95, 99)
        }
        for name, metric in (
            ("persisted", "rtm_worker_accept_to_persisted_seconds"),
            ("alert", "rtm_worker_accept_to_alert_seconds"),
        )
    }


def alerts_agent_registered() -> bool:
    """Whether the worker registers an alerts agent (agents.worker imports agents.alerts)."""
    try:
        importlib.import_module("agents.worker")
    except Exception:  # noqa: BLE001 - a worker that does not import has no alerts agent
        return importlib.util.find_spec("agents.alerts") is not None
    return "agents.alerts" in sys.modules


HISTORY_WARM_PATIENTS, HISTORY_WARM_DAYS = 40, 60  # ~3,700 events before the histories


def run_history(
    b: Bench,
    prefix: str,
    patients: int,
    long_days: int,
    short_days: int,
    new_days: int,
    seed: int,
    warm: list[dict[str, Any]],
) -> dict[str, Any]:
    """Both history cohorts in one stack (no wall-clock timer: the bench ticks): the same
    worker, database and refresh, so that the cohorts differ only in their patients' own
    history; both prepared first, then timed in interleaved windows (``HISTORY_WINDOWS``)."""
    start = cohort_start(long_days + new_days, b.today())
    out: dict[str, Any] = {
        "patients": patients,
        "new_days": new_days,
        "start": start.isoformat(),
        "one_stack": True,
        "windows": list(HISTORY_WINDOWS),
    }
    warm_cohort = cohort(HISTORY_WARM_PATIENTS, HISTORY_WARM_DAYS, seed + 1, "", b.today())
    days = {"long": long_days, "short": short_days}  # the order the histories are posted in
    cohorts: dict[str, HistoryCohort] = {}
    parts: dict[str, list[tuple[Path, int]]] = {}
    for key, d in days.items():
        name = f"h{d}"
        c = cohorts[key] = HistoryCohort(
            name,
            d,
            f"{prefix}.{name}.",
            b.workdir / f"{name}-history.jsonl",
            b.workdir / f"{name}-new.jsonl",
        )
        write_history_cohort(c, patients, seed, start, long_days, short_days, new_days)
        parts[key] = split_by_patient(c, HISTORY_WINDOWS.count(key))
    warm_path = b.workdir / "hist-warm.jsonl"
    write_jsonl((namespace_event(e, f"{prefix}.hw.") for e in warm_cohort), warm_path)
    ph = b.start_stack("hist", tick_interval_s=0)
    try:
        out.update(
            asyncio.run(
                _history_stack(
                    b,
                    ph,
                    cohorts,
                    parts,
                    [namespace_event(e, ph.name) for e in warm],
                    warm_path,
                    len(distinct_ids(warm_cohort)),
                )
            )
        )
    finally:
        b.stop_stack(ph)
        warm_path.unlink(missing_ok=True)
        for key, c in cohorts.items():
            for path in (c.seed_path, c.new_path, *(p for p, _ in parts[key])):
                path.unlink(missing_ok=True)
    s, lg = out["short"]["events_per_s"], out["long"]["events_per_s"]
    out["ratio"] = round(lg / s, 3) if s and lg else None
    # the same question asked of the worker's CPU per event (short / long: >= 0.9 is good)
    out["cpu_ratio"] = growth(
        out["long"]["worker_cpu_us_per_event"], out["short"]["worker_cpu_us_per_event"]
    )
    # each half on its own (long / short, events/s): how far one pair of windows moves
    out["ratio_by_half"] = [
        growth(w_s["events_per_s"], w_l["events_per_s"])
        for w_s, w_l in zip(
            out["short"]["new"]["windows"], out["long"]["new"]["windows"], strict=True
        )
    ]
    return out


async def _history_stack(
    b: Bench,
    ph: Phase,
    cohorts: dict[str, HistoryCohort],
    parts: dict[str, list[tuple[Path, int]]],
    warm: list[dict[str, Any]],
    warm_path: Path,
    warm_distinct: int,
) -> dict[str, Any]:
    """A warm-up cohort (code paths run, pools filled), both histories, then the cohorts'
    halves timed in the order of ``HISTORY_WINDOWS``; per cohort its history, its windows
    combined (``combine_windows``) and its state after them."""
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=60.0) as client:
        await b.warm_up(client, ph, warm)
        await produce_and_wait(b, ph, client, warm_path, warm_distinct)
        for key, c in cohorts.items():
            b.log(
                f"history {c.history_days} d: {c.seed_events:,} history events, then "
                f"{c.new_events:,} new events timed in {HISTORY_WINDOWS.count(key)} windows ..."
            )
            out[key] = await prepare_history_cohort(b, ph, client, c)
        windows: dict[str, list[dict[str, Any]]] = {key: [] for key in cohorts}
        for key in HISTORY_WINDOWS:
            c = cohorts[key]
            path, distinct = parts[key][len(windows[key])]
            w = await timed_window(
                b, ph, client, path, distinct, f"-h{c.history_days}-window{len(windows[key]) + 1}"
            )
            windows[key].append(w)
            b.log(
                f"history {c.history_days} d, window {len(windows[key])}: "
                f"{w['events_stored']:,} events, {w['events_per_s']} ev/s (refresh drained "
                f"in {w['refresh_drain']['seconds']} s, vacuumed in "
                f"{w['database_settle']['vacuum_s']} s); worker "
                f"{(w.get('cpu_us_per_event') or {}).get('worker')} us an event; state cache "
                f"{w.get('worker_state_cache')}; WAL {w['wal']}"
            )
        for key, c in cohorts.items():
            new = combine_windows(windows[key])
            # what the patients carry after the refresh's pathway alerts and the new events'
            # batches (informative: the target is judged on the state after the history)
            out[key].update(
                events_per_s=new["events_per_s"],
                worker_cpu_us_per_event=new["worker_cpu_us_per_event"],
                new=new,
                state_bytes_after_new=await b.state_bytes(c.patient_prefix),
            )
            b.log(f"history {c.history_days} d: {new['events_per_s']} ev/s")
    return out
