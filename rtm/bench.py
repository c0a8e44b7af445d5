"""`rtm bench`: floor vs pipeline throughput, latency under load, replay.

Runs on the local services (``rtm up``), in one process, in four phases. Every phase gets its
own topics, consumer group (Faust app id) and ports (the integration tests' isolation idea),
and every run namespaces its event/patient/episode ids, so the bench never touches the demo's
topics and a rerun is not a run of duplicates.

* floor     bare aiokafka producer -> bench topic -> bare aiokafka consumer -> COPY
            (asyncpg ``copy_records_to_table``) into a scratch hypertable; no validation,
            no rules. The most this Kafka + TimescaleDB can take on this machine from Python.
* pipeline  the same events through gateway + Kafka + worker (every agent) at full speed:
            first request sent -> last event persisted (worker's events_stored counter).
* latency   a steady ~1,000 events/s through the gateway with red-flag symptom reports mixed
            in: accept (gateway ``received_at``) -> persisted (events.stored_at) and -> alert
            published (the alert record's Kafka timestamp on ``topic_alerts``).
* replay    a large cohort (default 2,000 patients x 90 days) written to a JSONL file and
            backfilled through the gateway with ``rtm produce``'s poster.

Nothing here asserts a speed; it measures and reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import click
import orjson

# --- pure helpers (unit-tested) ------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; None when empty."""
    if not values:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError("q must be within [0, 100]")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50/p95/p99 and max of latencies given in seconds, reported in milliseconds."""
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000.0, 1)

    return {
        "count": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p95_ms": ms(percentile(seconds, 95)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds)) if seconds else None,
    }


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus-style quantile from cumulative buckets [(upper_bound, count), ...].

    Linear interpolation inside the bucket, like PromQL's histogram_quantile; a quantile in
    the +Inf bucket returns the largest finite bound. q in [0, 1].
    """
    bs = sorted(buckets)
    if not bs or bs[-1][1] <= 0:
        return None
    total = bs[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in bs:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def namespace_event(ev: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Prefix the ids simulate() repeats across seeds, so each run writes fresh events."""
    out = dict(ev)
    for k in ("event_id", "patient_id", "episode_id"):
        v = out.get(k)
        if isinstance(v, str):
            out[k] = prefix + v
    return out


def lane_of(patient_id: Any, lanes: int) -> int:
    """Same patient, same lane (as rtm produce): per-patient order survives concurrency."""
    return zlib.crc32(str(patient_id).encode()) % lanes


def paced_schedule(events: Sequence[dict[str, Any]], rate: float, tick_s: float,
                   lanes: int) -> list[tuple[float, int, list[dict[str, Any]]]]:
    """(send offset s, lane, events): `rate` events/s, a tick every `tick_s`, per-patient lanes."""
    per_tick = max(1, round(rate * tick_s))
    out: list[tuple[float, int, list[dict[str, Any]]]] = []
    for k, start in enumerate(range(0, len(events), per_tick)):
        split: dict[int, list[dict[str, Any]]] = {}
        for ev in events[start:start + per_tick]:
            split.setdefault(lane_of(ev.get("patient_id"), lanes), []).append(ev)
        for lane in sorted(split):
            out.append((k * tick_s, lane, split[lane]))
    return out


def parse_metrics(text: str) -> dict[str, Any]:
    """Counters summed over labels, histogram buckets as [(le, cumulative count)]."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_bucket"):
                b = out.setdefault(s.name, {})
                le = float(s.labels["le"])
                b[le] = b.get(le, 0.0) + s.value
            else:
                out[s.name] = out.get(s.name, 0.0) + s.value
    for k, v in list(out.items()):
        if isinstance(v, dict):
            out[k] = sorted(v.items())
    return out


def alert_trigger_ids(obj: Any) -> tuple[str | None, list[str]]:
    """(change, event_ids) of an alert record: an AlertChange or a bare Alert snapshot."""
    if not isinstance(obj, dict):
        return None, []
    change = obj.get("change") if isinstance(obj.get("change"), str) else None
    alert = obj.get("alert") if isinstance(obj.get("alert"), dict) else obj
    ids = alert.get("event_ids") or []
    return change, [i for i in ids if isinstance(i, str)]


# --- running ----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    settings: Any  # rtm.settings.Settings
    children: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        s = self.settings
        return f"http://{s.api_host}:{s.api_port}"

    @property
    def metrics_url(self) -> str:
        s = self.settings
        return f"http://{s.worker_web_host}:{s.worker_web_port}/metrics"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, base: Any, log: Any, profile_dir: Path | None = None) -> None:
        self.base = base
        self.log = log
        self.tag = uuid.uuid4().hex[:8]
        self.profile_dir = profile_dir
        self.workdir = Path(tempfile.mkdtemp(prefix=f"rtm-bench-{self.tag}-"))
        self.phases: list[Phase] = []
        self.key = ""

    # infrastructure ------------------------------------------------------------------------

    def phase_settings(self, name: str) -> Any:
        return self.base.model_copy(update={
            "topic_events": f"bench.{self.tag}.{name}.events",
            "topic_dead": f"bench.{self.tag}.{name}.dead",
            "topic_alerts": f"bench.{self.tag}.{name}.alerts",
            "app_id": f"bench-{self.tag}-{name}",
            "api_port": _free_port(),
            "worker_web_port": _free_port(),
        })

    def start_stack(self, name: str) -> Phase:
        from rtm.local import spawn, wait_http
        from streams.topics import ensure_topics

        ph = Phase(name, self.phase_settings(name))
        self.phases.append(ph)
        asyncio.run(ensure_topics(ph.settings))
        cwd = os.getcwd()
        os.chdir(self.workdir)  # Faust writes its <app_id>-data folder into the cwd
        try:
            worker = spawn(ph.settings, f"bench-{self.tag}-{name}-worker", ["worker"])
            ph.children.append(worker)
            gateway = spawn(ph.settings, f"bench-{self.tag}-{name}-gateway", ["api"])
            ph.children.append(gateway)
        finally:
            os.chdir(cwd)
        wait_http(ph.metrics_url, worker)
        wait_http(f"{ph.url}/readyz", gateway)
        return ph

    def stop_stack(self, ph: Phase) -> None:
        for child in reversed(ph.children):
            child.stop()
        ph.children.clear()

    def cleanup(self) -> None:
        for ph in self.phases:
            for child in ph.children:
                child.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            asyncio.run(self._delete_topics())
        with contextlib.suppress(Exception):
            asyncio.run(self._drop_scratch())

    async def _delete_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.base.bootstrap_servers)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics()
                    if t.startswith(f"bench.{self.tag}.") or t.startswith(f"bench-{self.tag}-")]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    @property
    def scratch_table(self) -> str:
        return f"bench_floor_{self.tag}"

    async def _drop_scratch(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.base.dsn)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {self.scratch_table}")
        finally:
            await conn.close()

    # worker metrics -------------------------------------------------------------------------

    async def metrics(self, client: Any, ph: Phase) -> dict[str, Any]:
        resp = await client.get(ph.metrics_url, timeout=10.0)
        return parse_metrics(resp.text)

    async def wait_stored(self, client: Any, ph: Phase, expect: int, timeout: float,
                          poll: float = 0.1) -> tuple[float, int]:
        """Poll the worker's events_stored counter; (monotonic time reached, count)."""
        deadline = time.monotonic() + timeout
        n = 0
        while True:
            with contextlib.suppress(Exception):
                m = await self.metrics(client, ph)
                n = int(m.get("rtm_worker_events_stored_total", 0))
            now = time.monotonic()
            if n >= expect or now > deadline:
                return now, n
            await asyncio.sleep(poll)

    async def warm_up(self, client: Any, ph: Phase, events: list[dict[str, Any]]) -> int:
        """A small batch end to end, so consumer-group assignment is not timed."""
        body = b"\n".join(orjson.dumps(e) for e in events)
        resp = await client.post(f"{ph.url}/v1/events", content=body, headers=self.headers)
        resp.raise_for_status()
        accepted = int(resp.json()["accepted"])
        _, n = await self.wait_stored(client, ph, accepted, timeout=90.0)
        if n < accepted:
            raise click.ClickException(f"{ph.name}: worker did not store the warm-up batch")
        return n

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/x-ndjson"}

    # profiling -------------------------------------------------------------------------------

    def start_profile(self, ph: Phase) -> list[subprocess.Popen[bytes]]:
        if self.profile_dir is None:
            return []
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            self.log("py-spy not found; skipping the profile (pip install py-spy)")
            return []
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        procs = []
        for child in ph.children:
            role = child.name.rsplit("-", 1)[-1]
            for fmt, ext in (("raw", "txt"),):
                out = self.profile_dir / f"{ph.name}-{role}.{ext}"
                procs.append(subprocess.Popen(
                    [spy, "record", "-p", str(child.proc.pid), "-r", "100", "-f", fmt,
                     "-o", str(out), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))
        return procs

    @staticmethod
    def stop_profile(procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            p.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _ids(events: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for e in events:
        seen.setdefault(e["event_id"], None)
    return list(seen)


# --- phases -------------------------------------------------------------------------------------


async def run_floor(b: Bench, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Bare producer -> topic -> bare consumer -> COPY into a scratch hypertable."""
    import asyncpg
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    s = b.base
    topic = f"bench.{b.tag}.floor.events"
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=s.topic_partitions,
                                            replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all",
                                linger_ms=5, max_batch_size=256 * 1024)
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

    conn = await asyncpg.connect(s.dsn)
    table = b.scratch_table
    await conn.execute(f"""
        CREATE TABLE {table} (event_id text NOT NULL, type text NOT NULL,
            patient_id text NOT NULL, occurred_at timestamptz NOT NULL,
            received_at timestamptz, payload jsonb NOT NULL)""")
    await conn.execute(
        f"SELECT create_hypertable('{table}', by_range('occurred_at', INTERVAL '7 days'))")
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=s.bootstrap_servers, group_id=f"bench-{b.tag}-floor",
        auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
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
                    records.append((d["event_id"], d["type"], d["patient_id"],
                                    fromiso(d["occurred_at"]), None, r.value.decode()))
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


async def run_pipeline(b: Bench, ph: Phase, path: Path, expect: int,
                       warm: list[dict[str, Any]]) -> dict[str, Any]:
    import httpx

    from rtm.produce import produce_file

    async with httpx.AsyncClient(timeout=60.0) as client:
        base = await b.warm_up(client, ph, warm)
        before = await b.metrics(client, ph)
        profs = b.start_profile(ph)
        t0 = time.monotonic()
        result = await produce_file(ph.settings, path, url=ph.url, batch_size=500, concurrency=4)
        t_posted = time.monotonic()
        t_done, n = await b.wait_stored(client, ph, base + expect, timeout=900.0)
        b.stop_profile(profs)
        after = await b.metrics(client, ph)
    stored = n - base
    elapsed = t_done - t0
    return {
        "events_posted": result.posted,
        "events_accepted": result.accepted,
        "duplicates_at_gateway": result.duplicates,
        "events_stored": stored,
        "complete": stored >= expect,
        "seconds": round(elapsed, 3),
        "post_seconds": round(t_posted - t0, 3),
        "events_per_s": round(stored / elapsed, 1) if elapsed > 0 else None,
        "gateway_accept_events_per_s": round(result.accepted / (t_posted - t0), 1),
        "worker_db_write_s_total": round(
            after.get("rtm_worker_db_write_seconds_sum", 0.0)
            - before.get("rtm_worker_db_write_seconds_sum", 0.0), 3),
        "worker_db_batches": int(after.get("rtm_worker_db_write_seconds_count", 0.0)
                                 - before.get("rtm_worker_db_write_seconds_count", 0.0)),
    }


async def run_latency(b: Bench, ph: Phase, events: list[dict[str, Any]], rate: float,
                      warm: list[dict[str, Any]]) -> dict[str, Any]:
    import asyncpg
    import httpx
    from aiokafka import AIOKafkaConsumer

    s = ph.settings
    schedule = paced_schedule(events, rate=rate, tick_s=0.1, lanes=4)
    bodies = [(off, lane, [e["event_id"] for e in evs], b"\n".join(orjson.dumps(e) for e in evs))
              for off, lane, evs in schedule]
    red_ids = {e["event_id"] for e in events
               if e["type"] == "symptom.reported" and e.get("red_flags")}
    received: dict[str, float] = {}
    alerts: list[tuple[float, str | None, list[str]]] = []

    consumer = AIOKafkaConsumer(s.topic_alerts, bootstrap_servers=s.bootstrap_servers,
                                group_id=None, auto_offset_reset="latest",
                                enable_auto_commit=False)
    await consumer.start()
    # "latest" must be resolved before anything is published
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)
    stop = asyncio.Event()

    async def read_alerts() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                for r in recs:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        change, ids = alert_trigger_ids(orjson.loads(r.value))
                        alerts.append((r.timestamp / 1000.0, change, ids))

    async with httpx.AsyncClient(timeout=60.0) as client:
        base = await b.warm_up(client, ph, warm)
        reader = asyncio.create_task(read_alerts())
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
                resp = await client.post(f"{ph.url}/v1/events", content=body,
                                         headers=b.headers)
                resp.raise_for_status()
                data = resp.json()
                at = dt.datetime.fromisoformat(data["received_at"]).timestamp()
                dup = {d["event_id"] for d in data["duplicates"]}
                for i in ids:
                    if i not in dup:
                        received.setdefault(i, at)

        t0 = time.monotonic() + 0.2
        await asyncio.gather(*(sender(items, t0) for items in lanes.values()))
        sent_s = time.monotonic() - t0
        _, n = await b.wait_stored(client, ph, base + len(received), timeout=300.0)
        # alerts follow persistence by at most a batch; give them a moment, then stop
        quiet_until = time.monotonic() + 3.0
        while time.monotonic() < quiet_until:
            await asyncio.sleep(0.2)
        stop.set()
        await reader
        m = await b.metrics(client, ph)
    await consumer.stop()

    conn = await asyncpg.connect(s.dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM stored_at - received_at)::float8 AS lag"
            " FROM events WHERE event_id = ANY($1::text[])", list(received))
    finally:
        await conn.close()
    persisted = [r["lag"] for r in rows if r["lag"] is not None]

    alert_lat: list[float] = []
    fired_for: set[str] = set()
    for ts, change, ids in alerts:
        if change not in (None, "fired"):
            continue
        for i in ids:
            if i in received and i not in fired_for:
                fired_for.add(i)
                alert_lat.append(ts - received[i])
    agent = alerts_agent_registered()
    alert_summary: dict[str, Any] = summarize_ms(alert_lat)
    if not alert_lat:
        alert_summary.update(p50_ms=None, p95_ms=None, p99_ms=None, max_ms=None)
        alert_summary["note"] = (
            "no alerts agent in this worker (agents/alerts.py absent): accept->alert not measured"
            if not agent else
            f"alerts agent present but no alert for the {len(red_ids)} red-flag events on "
            f"{s.topic_alerts} ({len(alerts)} alert records seen)")
    else:
        alert_summary["red_flag_events"] = len(red_ids)
        alert_summary["alerts_seen"] = len(alerts)
    hist = {
        name: {f"p{q}_ms": (None if (v := histogram_quantile(m.get(f"{metric}_bucket", []),
                                                                q / 100)) is None
                            else round(v * 1000, 1)) for q in (50, 95, 99)}
        for name, metric in (("persisted", "rtm_worker_accept_to_persisted_seconds"),
                             ("alert", "rtm_worker_accept_to_alert_seconds"))
    }
    return {
        "target_events_per_s": rate,
        "events_sent": sum(len(ids) for _, _, ids, _ in bodies),
        "seconds": round(sent_s, 2),
        "achieved_events_per_s": round(sum(len(ids) for _, _, ids, _ in bodies) / sent_s, 1),
        "max_send_lag_ms": round(late[0] * 1000, 1),
        "events_stored": n - base,
        "accept_to_persisted": summarize_ms(persisted),
        "accept_to_alert": alert_summary,
        "worker_histogram_estimate": hist,
    }


def alerts_agent_registered() -> bool:
    """Whether the worker registers an alerts agent (streams.worker imports agents.alerts)."""
    try:
        importlib.import_module("streams.worker")
    except Exception:
        return importlib.util.find_spec("agents.alerts") is not None
    return "agents.alerts" in sys.modules


# --- machine --------------------------------------------------------------------------------


async def machine_info(settings: Any) -> dict[str, Any]:
    import asyncpg

    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    conn = await asyncpg.connect(settings.dsn)
    try:
        pg = await conn.fetchval("SHOW server_version")
        ts = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    finally:
        await conn.close()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": settings.kafka_version,
        "postgres": pg,
        "timescaledb": ts,
    }


# --- command ------------------------------------------------------------------------------------


def _write_jsonl(events: Iterable[dict[str, Any]], path: Path) -> int:
    n = 0
    with path.open("wb", buffering=1 << 20) as fh:
        for e in events:
            fh.write(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE))
            n += 1
    return n


def _cohort(patients: int, days: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    from rtm.simulate import simulate

    return [namespace_event(e, prefix) for e in simulate(patients, days, seed)]


def _latency_events(patients: int, seed: int, prefix: str, count: int) -> list[dict[str, Any]]:
    """Arrival-ordered cohort events; every symptom report in it carries a red flag."""
    from rtm.simulate import simulate

    out: list[dict[str, Any]] = []
    for e in simulate(patients, 365, seed):
        e = namespace_event(e, prefix)
        if e["type"] == "symptom.reported" and e.get("episode_id") and not e.get("red_flags"):
            e["red_flags"] = ["fever"]
        out.append(e)
        if len(out) >= count:
            break
    return out


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}"
    return f"{v:,}{unit}"


def render_table(r: dict[str, Any]) -> str:
    lat = r["latency"]
    per, al = lat["accept_to_persisted"], lat["accept_to_alert"]
    rows = [
        ("floor (Kafka -> COPY)", f"{_fmt(r['floor_events_per_s'])} ev/s",
         f"{r['floor']['events']:,} events in {r['floor']['seconds']:.1f} s"),
        ("pipeline (gateway -> worker)", f"{_fmt(r['pipeline_events_per_s'])} ev/s",
         f"{r['pipeline']['events_stored']:,} events in {r['pipeline']['seconds']:.1f} s"),
        ("pipeline / floor", _fmt(None if r["ratio"] is None else 100 * r["ratio"], " %"), ""),
        ("latency load", f"{_fmt(lat['achieved_events_per_s'])} ev/s",
         f"{lat['events_sent']:,} events over {lat['seconds']:.1f} s"),
        ("accept -> persisted p50/p95/p99",
         f"{_fmt(per['p50_ms'])} / {_fmt(per['p95_ms'])} / {_fmt(per['p99_ms'])} ms",
         f"n={per['count']:,}"),
        ("accept -> alert p50/p95/p99",
         f"{_fmt(al['p50_ms'])} / {_fmt(al['p95_ms'])} / {_fmt(al['p99_ms'])} ms",
         al.get("note", f"n={al['count']:,}")),
        ("replay (file -> pipeline)", f"{_fmt(r['replay_events_per_s'])} ev/s",
         f"{r['replay']['events_stored']:,} events, wall {r['replay']['seconds']:.1f} s"),
    ]
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    lines = [f"{a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
    m = r["machine"]
    lines.append(f"machine: {m['cores']} cores, {m['memory_gb']} GB, {m['cpu']}; Python "
                 f"{m['python']}, Kafka {m['kafka']}, PostgreSQL {m['postgres']}, "
                 f"TimescaleDB {m['timescaledb']}")
    return "\n".join(lines)


def _skipped_latency() -> dict[str, Any]:
    empty = {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {"skipped": True, "achieved_events_per_s": None, "events_sent": 0, "seconds": 0.0,
            "accept_to_persisted": dict(empty),
            "accept_to_alert": {**empty, "note": "latency phase skipped"}}


def _skipped_replay() -> dict[str, Any]:
    return {"skipped": True, "events_per_s": None, "events_stored": 0, "seconds": 0.0}


def run_bench(settings: Any, patients: int, days: int, seed: int, replay_patients: int,
              replay_days: int, latency_seconds: float, rate: float,
              profile_dir: Path | None, log: Any) -> dict[str, Any]:
    from rtm.local import prepare

    prepare(settings, log=log)
    b = Bench(settings, log, profile_dir)
    from rtm.produce import api_key

    b.key = api_key(settings)
    t_all = time.perf_counter()
    try:
        prefix = f"b{b.tag}"
        main_events = _cohort(patients, days, seed, f"{prefix}.m.")
        main_path = b.workdir / "pipeline.jsonl"
        _write_jsonl(main_events, main_path)
        expect_main = len(_ids(main_events))
        log(f"bench {b.tag}: {len(main_events):,} events ({patients} patients x {days} days, "
            f"{expect_main:,} distinct)")
        warm = [namespace_event(e, f"{prefix}.w.") for e in _cohort(5, 3, seed, "")][:200]

        log("floor: pre-producing, then consuming + COPY ...")
        floor = asyncio.run(run_floor(b, main_events))
        log(f"floor: {floor['events_per_s']:,} ev/s")

        ph = b.start_stack("pipe")
        try:
            log("pipeline: posting through the gateway at full speed ...")
            pipe = asyncio.run(run_pipeline(b, ph, main_path, expect_main, warm))
        finally:
            b.stop_stack(ph)
        log(f"pipeline: {pipe['events_per_s']:,} ev/s")
        del main_events

        lat = _skipped_latency()
        if latency_seconds > 0:
            n_lat = int(rate * latency_seconds)
            lat_events = _latency_events(max(200, int(rate * latency_seconds / 400)),
                                         seed + 1, f"{prefix}.l.", n_lat)
            ph = b.start_stack("lat")
            try:
                log(f"latency: {len(lat_events):,} events at {rate:,.0f} ev/s ...")
                lat = asyncio.run(run_latency(b, ph, lat_events, rate,
                                              [namespace_event(e, "l") for e in warm]))
            finally:
                b.stop_stack(ph)
            del lat_events

        replay = _skipped_replay()
        if replay_patients > 0 and replay_days > 0:
            replay_path = b.workdir / "replay.jsonl"
            from rtm.simulate import simulate

            ids: set[str] = set()
            rp = f"{prefix}.r."

            def replay_events() -> Iterator[dict[str, Any]]:
                for e in simulate(replay_patients, replay_days, seed + 2):
                    e = namespace_event(e, rp)
                    ids.add(e["event_id"])
                    yield e

            n_replay = _write_jsonl(replay_events(), replay_path)
            ph = b.start_stack("replay")
            try:
                log(f"replay: {n_replay:,} events ({replay_patients} patients x {replay_days} days)"
                    " from a file ...")
                replay = asyncio.run(run_pipeline(b, ph, replay_path, len(ids),
                                                  [namespace_event(e, "r") for e in warm]))
            finally:
                b.stop_stack(ph)
            replay["file_events"] = n_replay
        machine = asyncio.run(machine_info(settings))
    finally:
        b.cleanup()

    ratio = (pipe["events_per_s"] / floor["events_per_s"]
             if pipe["events_per_s"] and floor["events_per_s"] else None)
    per, al = lat["accept_to_persisted"], lat["accept_to_alert"]
    return {
        "run": b.tag,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "parameters": {"patients": patients, "days": days, "seed": seed,
                       "replay_patients": replay_patients, "replay_days": replay_days,
                       "latency_seconds": latency_seconds, "rate": rate,
                       "partitions": settings.topic_partitions,
                       "worker_batch_size": settings.worker_batch_size},
        "floor_events_per_s": floor["events_per_s"],
        "pipeline_events_per_s": pipe["events_per_s"],
        "ratio": None if ratio is None else round(ratio, 4),
        # The latency keys are gateway accept -> alert published.
        "latency_p50_ms": al["p50_ms"],
        "latency_p95_ms": al["p95_ms"],
        "latency_p99_ms": al["p99_ms"],
        "persisted_latency_p50_ms": per["p50_ms"],
        "persisted_latency_p95_ms": per["p95_ms"],
        "persisted_latency_p99_ms": per["p99_ms"],
        "replay_events_per_s": replay["events_per_s"],
        "replay_seconds": replay["seconds"],
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "floor": floor,
        "pipeline": pipe,
        "latency": lat,
        "replay": replay,
        "machine": machine,
    }


@click.command("bench")
@click.option("--patients", type=int, default=400, show_default=True,
              help="cohort for floor and pipeline")
@click.option("--days", type=int, default=90, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--replay-patients", type=int, default=2000, show_default=True)
@click.option("--replay-days", type=int, default=90, show_default=True)
@click.option("--latency-seconds", type=float, default=25.0, show_default=True)
@click.option("--rate", type=float, default=1000.0, show_default=True,
              help="events/s posted during the latency phase")
@click.option("--profile", "profile_dir", type=click.Path(path_type=Path), default=None,
              help="py-spy the worker and gateway during pipeline/replay into this folder")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write JSON here")
@click.pass_context
def command(ctx: click.Context, patients: int, days: int, seed: int, replay_patients: int,
            replay_days: int, latency_seconds: float, rate: float, profile_dir: Path | None,
            out: Path | None) -> None:
    """Benchmark the pipeline against a bare Kafka->COPY floor (prints a table)."""
    from infra.services import ServiceError

    settings = ctx.obj
    try:
        result = run_bench(settings, patients, days, seed, replay_patients, replay_days,
                           latency_seconds, rate, profile_dir,
                           log=lambda m: click.echo(m, err=True))
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render_table(result))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        click.echo(f"wrote {out}", err=True)
