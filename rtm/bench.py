"""`rtm bench`: floor vs pipeline throughput, latency under load, replay, history.

Runs on the local services (``rtm up``), in one process, in five phases (six with
``--pages``). Every phase gets its own topics, consumer group (Faust app id) and ports (the
integration tests' isolation idea), and every run namespaces its event/patient/episode ids,
so the bench never touches the demo's topics and a rerun is not a run of duplicates.

* floor     bare aiokafka producer -> bench topic -> bare aiokafka consumer -> COPY
            (asyncpg ``copy_records_to_table``) into a scratch hypertable; no validation,
            no rules. The most this Kafka + TimescaleDB can take on this machine from Python.
* pipeline  the same events through gateway + Kafka + worker (every agent) at full speed:
            first request sent -> last event persisted (worker's events_stored counter);
            the worker's CPU (``/proc/<pid>/stat``) and, with py-spy, where it goes.
* latency   a steady ~2,000 events/s through the gateway with red-flag symptom reports mixed
            in: accept (gateway ``received_at``) -> persisted (events.stored_at) and -> alert
            published (the alert record's Kafka timestamp on ``topic_alerts``).
* replay    a large cohort (default 2,000 patients x 90 days) written to a JSONL file and
            backfilled through the gateway with ``rtm produce``'s poster; then one tick
            (untimed) and the per-patient rule-state size (``alert_state``).
* history   two cohorts of the same size whose patients already have 365 resp. 30 days of
            history (written to Kafka and processed first, untimed, then ticked), then the next
            days of new events timed for each: does the per-event cost grow with history?
* pages     (``--pages``, off by default; ``--pages-only`` alone) the dashboard over a seeded
            clinic (default 5,000 patients x 90 days straight to Kafka): the worklist's
            first page and patient pages, p50/p95 over 50 requests (rtm/bench_pages.py).

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
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def paced_schedule(
    events: Sequence[dict[str, Any]], rate: float, tick_s: float, lanes: int
) -> list[tuple[float, int, list[dict[str, Any]]]]:
    """(send offset s, lane, events): `rate` events/s, a tick every `tick_s`, per-patient lanes."""
    per_tick = max(1, round(rate * tick_s))
    out: list[tuple[float, int, list[dict[str, Any]]]] = []
    for k, start in enumerate(range(0, len(events), per_tick)):
        split: dict[int, list[dict[str, Any]]] = {}
        for ev in events[start : start + per_tick]:
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
    inner = obj.get("alert")
    alert: dict[str, Any] = inner if isinstance(inner, dict) else obj
    ids = alert.get("event_ids") or []
    return change, [i for i in ids if isinstance(i, str)]


def cohort_start(days: int, today: dt.date, margin_days: int = 7) -> dt.date:
    """First day of the month that lets a `days`-long cohort end `margin_days` before today.

    The gateway refuses events dated in the future, so every cohort lies in the past; the
    1st of a month keeps the calendar (and so the cohort) the same for a month of runs.
    """
    return (today - dt.timedelta(days=days + margin_days)).replace(day=1)


def history_blocks(
    start: dt.date, days: int, block_days: int = 90, gap_days: int = 2
) -> list[tuple[dt.date, int]]:
    """Tile `days` calendar days from `start` into simulated blocks: [(block start, days)].

    simulate() puts a patient's episodes into the first ~60 % of the days it is given, so a
    year of history is composed of back-to-back blocks of about `block_days`; each block is
    followed by `gap_days` in which the bench ends the episodes still open (see
    `OpenEpisodes`), so the next block's episode.started is not a second active episode.
    """
    if days <= 0:
        return []
    n = max(1, math.ceil(days / block_days))
    spans = [days // n + (1 if k < days % n else 0) for k in range(n)]
    out: list[tuple[dt.date, int]] = []
    at = start
    for span in spans:
        if span > gap_days:
            out.append((at, span - gap_days))
        at += dt.timedelta(days=span)
    return out


def rebase_event(ev: dict[str, Any], patient_prefix: str, id_prefix: str) -> dict[str, Any]:
    """One simulated block under a cohort's patient ids and the block's own event, episode
    and session ids (simulate() restarts them for every call)."""
    out = dict(ev)
    v = out.get("patient_id")
    if isinstance(v, str):
        out["patient_id"] = patient_prefix + v
    for k in ("event_id", "episode_id", "session_id"):
        v = out.get(k)
        if isinstance(v, str):
            out[k] = id_prefix + v
    return out


class OpenEpisodes:
    """Episodes started and not ended in a stream of events; `close()` ends them."""

    def __init__(self) -> None:
        self.open: dict[str, str] = {}  # episode_id -> patient_id

    def see(self, ev: Mapping[str, Any]) -> None:
        ep = ev.get("episode_id")
        if not isinstance(ep, str):
            return
        if ev.get("type") == "episode.started":
            self.open[ep] = str(ev["patient_id"])
        elif ev.get("type") == "episode.ended":
            self.open.pop(ep, None)

    def close(self, on: dt.date, reason: str = "discharged") -> list[dict[str, Any]]:
        """episode.ended for each open episode at 12:00 UTC on `on`: the morning of that
        local date in every US zone, after all data of the day before."""
        out = [
            {
                "event_id": f"{ep}.end",
                "schema_version": 1,
                "type": "episode.ended",
                "patient_id": pid,
                "occurred_at": f"{on.isoformat()}T12:00:00+00:00",
                "source": {"kind": "clinician_portal", "id": "portal-web"},
                "episode_id": ep,
                "reason": reason,
            }
            for ep, pid in self.open.items()
        ]
        self.open.clear()
        return out


def auto_history_patients(
    pipeline_events_per_s: float | None,
    history_days: int,
    budget_s: float = 45.0,
    events_per_patient_day: float = 1.55,
    lo: int = 100,
    hi: int = 2000,
) -> int:
    """Patients per history cohort so that posting the long cohort's history takes about
    `budget_s` at the pipeline's rate (clamped): the timed windows then last ~2 s whatever
    the worker's speed, long enough to time, short enough for the default run."""
    if not pipeline_events_per_s or history_days <= 0:
        return 300
    n = round(pipeline_events_per_s * budget_s / (events_per_patient_day * history_days))
    return max(lo, min(hi, n))


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with `prefix` (backslash escapes)."""
    return re.sub(r"([\\%_])", r"\\\1", prefix) + "%"


def size_stats(sizes: Sequence[float]) -> dict[str, Any]:
    """n, median, p99, mean and max of byte sizes (linear-interpolated percentiles)."""

    def r(v: float | None) -> int | None:
        return None if v is None else round(v)

    return {
        "n": len(sizes),
        "median": r(percentile(sizes, 50)),
        "p99": r(percentile(sizes, 99)),
        "mean": r(sum(sizes) / len(sizes)) if sizes else None,
        "max": r(max(sizes)) if sizes else None,
    }


def growth(before: float | None, after: float | None) -> float | None:
    """after / before, rounded; None when either is missing or before is 0."""
    if not before or after is None:
        return None
    return round(after / before, 3)


def group_lag(ends: Mapping[Any, int], committed: Mapping[Any, int | None]) -> int:
    """Records not yet committed by a consumer group: sum of end - committed offsets."""
    lag = 0
    for tp, end in ends.items():
        done = committed.get(tp)
        lag += max(0, end - (done if done is not None and done >= 0 else 0))
    return lag


# CPU: /proc and py-spy ------------------------------------------------------------------------


def proc_cpu_seconds(stat: str, clk_tck: int) -> float:
    """utime + stime of a /proc/<pid>/stat line (all the process's threads), in seconds."""
    rest = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and ")"
    return (int(rest[11]) + int(rest[12])) / clk_tck


def machine_cpu_ticks(stat: str) -> tuple[int, int]:
    """(busy, total) jiffies of all cores from /proc/stat's `cpu` line."""
    for line in stat.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:9]]  # user nice system idle iowait irq soft steal
            return sum(v) - v[3] - v[4], sum(v)
    raise ValueError("no cpu line in /proc/stat")


PROJECT_PACKAGES = ("agents", "streams", "alerts", "billing", "schemas", "rtm")
LIBRARY_GROUPS = {
    "faust": "faust",
    "mode": "faust",  # mode: faust's service/timer library
    "aiokafka": "aiokafka",
    "kafka": "aiokafka",
    "asyncpg": "asyncpg",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "asyncio": "asyncio",
}
ENTRY_FILES = ("rtm/cli.py",)  # the root of every stack: not an inclusive share
_FRAME_FILE = re.compile(r"\(([^()]*?)(?::\d+)?\)$")


def frame_file(frame: str) -> str | None:
    """'func (path/file.py:12)' -> 'path/file.py' (py-spy's collapsed frames)."""
    m = _FRAME_FILE.search(frame.strip())
    return m.group(1) if m else None


def module_of(path: str | None, project_root: str | None = None) -> str:
    """Group a frame's file: a project package ('alerts/'), a library group, or 'other'."""
    if not path:
        return "other"
    p = path.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/"):
        if marker in p:
            p = p.rsplit(marker, 1)[1]
            break
    else:
        if project_root and p.startswith(project_root.rstrip("/") + "/"):
            p = p[len(project_root.rstrip("/")) + 1 :]
        elif p.startswith("/"):
            m = re.search(r"/python3(?:\.\d+)?/(.*)$", p)
            p = m.group(1) if m else p.lstrip("/")
    head = p.split("/", 1)[0]
    if head in PROJECT_PACKAGES and "/" in p:
        return head + "/"
    head = head.removesuffix(".py")
    return LIBRARY_GROUPS.get(head, "other")


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy `--format raw` (collapsed stacks): [(frames root..leaf, samples)]."""
    out: list[tuple[list[str], int]] = []
    for line in text.splitlines():
        stack, _, n = line.strip().rpartition(" ")
        if stack and n.isdigit():
            out.append((stack.split(";"), int(n)))
    return out


def cpu_split(
    stacks: Iterable[tuple[list[str], int]], top: int = 10, project_root: str | None = None
) -> dict[str, Any] | None:
    """Where the samples go: `self` by the leaf frame's module (sums to 1), `inclusive` per
    project package (share of samples with a frame of it on the stack below the event
    loop; overlapping), and the `top` leaf functions."""
    selfs: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    funcs: Counter[str] = Counter()
    total = 0
    for frames, n in stacks:
        if not frames or n <= 0:
            continue
        total += n
        files = [frame_file(f) for f in frames]
        mods = [module_of(f, project_root) for f in files]
        selfs[mods[-1]] += n
        # frames before the event loop are the entry (rtm/cli.py, agents/worker.py's
        # run_worker, ...): every stack has them, they are not where the work is
        loop = next((i for i, m in enumerate(mods) if m == "asyncio"), 0)
        for mod in {
            m
            for m, f in zip(mods[loop:], files[loop:], strict=True)
            if m.endswith("/") and (f or "") not in ENTRY_FILES
        }:
            incl[mod] += n
        leaf = frames[-1].strip()
        funcs[re.sub(r":\d+\)$", ")", leaf)] += n
    if total == 0:
        return None

    def share(c: Counter[str]) -> dict[str, float]:
        return {k: round(v / total, 4) for k, v in c.most_common()}

    return {
        "samples": total,
        "self": share(selfs),
        "inclusive": share(incl),
        "top_functions": [
            {"function": f, "share": round(v / total, 4)} for f, v in funcs.most_common(top)
        ],
    }


def shares_line(shares: Mapping[str, float] | None, limit: int = 8) -> str:
    """'pydantic 21 %, faust 18 %, ...' (largest first)."""
    if not shares:
        return "n/a"
    items = sorted(shares.items(), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{k} {100 * v:.0f} %" for k, v in items)


# --- running ----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    settings: Any  # streams.settings.Settings
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

    def phase_settings(self, name: str, **overrides: Any) -> Any:
        return self.base.model_copy(
            update={
                "topic_events": f"bench.{self.tag}.{name}.events",
                "topic_dead": f"bench.{self.tag}.{name}.dead",
                "topic_alerts": f"bench.{self.tag}.{name}.alerts",
                "app_id": f"bench-{self.tag}-{name}",
                "api_port": _free_port(),
                "worker_web_port": _free_port(),
                **overrides,
            }
        )

    def start_stack(self, name: str, **overrides: Any) -> Phase:
        """Topics, worker and gateway of a phase; `overrides` are Settings fields (e.g.
        ``tick_interval_s=0``: no wall-clock timer, the bench ticks)."""
        from rtm.devstack import spawn, wait_http
        from streams.kafka.topics import ensure_topics

        ph = Phase(name, self.phase_settings(name, **overrides))
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

        from streams.kafka.transport import kafka_client_kwargs

        admin = AIOKafkaAdminClient(**kafka_client_kwargs(self.base))
        await admin.start()
        try:
            mine = [
                t
                for t in await admin.list_topics()
                if t.startswith((f"bench.{self.tag}.", f"bench-{self.tag}-"))
            ]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    @property
    def scratch_table(self) -> str:
        return f"bench_floor_{self.tag}"

    async def _drop_scratch(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.base.owner_dsn)  # its scratch table: DDL
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {self.scratch_table}")
        finally:
            await conn.close()

    # worker metrics -------------------------------------------------------------------------

    async def metrics(self, client: Any, ph: Phase) -> dict[str, Any]:
        resp = await client.get(ph.metrics_url, timeout=10.0)
        return parse_metrics(resp.text)

    async def wait_stored(
        self, client: Any, ph: Phase, expect: int, timeout: float, poll: float = 0.1
    ) -> tuple[float, int]:
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

    # ticks and settling ----------------------------------------------------------------------

    async def tick(self, ph: Phase, now: dt.datetime, timeout: float = 600.0) -> dict[str, Any]:
        """`rtm alerts tick --now` for this phase's topics, then wait until the worker's
        consumer group has committed everything on them (the tick included)."""
        from rtm.devstack import settings_env

        t0 = time.monotonic()
        now = now.astimezone(dt.UTC)
        out: dict[str, Any] = {"now": now.isoformat()}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rtm.cli",
            "alerts",
            "tick",
            "--now",
            now.isoformat(),
            env=settings_env(ph.settings),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        text, _ = await proc.communicate()
        if proc.returncode != 0:
            out.update(ok=False, error=text.decode(errors="replace")[-500:])
            self.log(f"{ph.name}: rtm alerts tick failed: {out['error']}")
            return out
        lag = await wait_consumed(ph.settings, timeout)
        out.update(ok=lag == 0, lag_left=lag, seconds=round(time.monotonic() - t0, 2))
        if lag:
            self.log(f"{ph.name}: {lag} records still not committed {timeout:.0f} s after the tick")
        return out

    async def state_bytes(self, prefix: str) -> dict[str, Any]:
        """Per-patient rule-state sizes of the patients whose id starts with `prefix`."""
        import asyncpg

        try:
            conn = await asyncpg.connect(self.base.dsn)
            try:
                rows = await conn.fetch(
                    "SELECT octet_length(state) AS n FROM alert_state WHERE patient_id LIKE $1",
                    like_prefix(prefix),
                )
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            return {**size_stats([]), "note": f"alert_state not readable: {exc}"}
        return size_stats([int(r["n"]) for r in rows if r["n"] is not None])

    # CPU ------------------------------------------------------------------------------------

    @staticmethod
    def pids(ph: Phase) -> dict[str, int]:
        return {c.name.rsplit("-", 1)[-1]: c.proc.pid for c in ph.children}

    # profiling -------------------------------------------------------------------------------

    def start_profile(
        self, ph: Phase, split: bool = False
    ) -> tuple[list[subprocess.Popen[bytes]], Path | None]:
        """py-spy on worker and gateway into --profile DIR (100 Hz); or, with `split` only,
        on the worker at 50 Hz into the scratch folder. Returns the processes and the
        worker's collapsed-stack file (None without py-spy)."""
        if self.profile_dir is None and not split:
            return [], None
        spy = py_spy_path()
        if spy is None:
            self.log("py-spy not found; no profile / CPU split (pip install py-spy)")
            return [], None
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            targets = [
                (c, self.profile_dir / f"{ph.name}-{c.name.rsplit('-', 1)[-1]}.txt", "100")
                for c in ph.children
            ]
        else:
            targets = [
                (c, self.workdir / f"{ph.name}-worker-split.txt", "50")
                for c in ph.children
                if c.name.endswith("-worker")
            ]
        procs = []
        worker_out: Path | None = None
        for child, out, rate in targets:
            if child.name.endswith("-worker"):
                worker_out = out
            procs.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "-p",
                        str(child.proc.pid),
                        "-r",
                        rate,
                        "-f",
                        "raw",
                        "-o",
                        str(out),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        return procs, worker_out

    @staticmethod
    def stop_profile(procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            p.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def py_spy_path() -> str | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return spy if Path(spy).exists() else None


async def wait_consumed(settings: Any, timeout: float, poll: float = 0.5) -> int:
    """Wait until the consumer group `settings.app_id` has committed every record on
    `settings.topic_events`; the records left when `timeout` passed (0 = settled)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.kafka.transport import kafka_client_kwargs

    tps = [TopicPartition(settings.topic_events, p) for p in range(settings.topic_partitions)]
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings), group_id=None, enable_auto_commit=False
    )
    await admin.start()
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        lag = -1
        while True:
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(settings.app_id, partitions=tps)
            lag = group_lag(ends, {tp: om.offset for tp, om in committed.items()})
            if lag == 0 or time.monotonic() > deadline:
                return lag
            await asyncio.sleep(poll)
    finally:
        await consumer.stop()
        await admin.close()


@dataclass
class CpuSnapshot:
    at: float  # time.monotonic()
    procs: dict[str, float]  # role -> CPU seconds so far
    machine: tuple[int, int]  # (busy, total) jiffies


def cpu_snapshot(pids: Mapping[str, int]) -> CpuSnapshot | None:
    try:
        clk = os.sysconf("SC_CLK_TCK")
        procs = {
            role: proc_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), clk)
            for role, pid in pids.items()
        }
        machine = machine_cpu_ticks(Path("/proc/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None  # not Linux, or a process gone
    return CpuSnapshot(time.monotonic(), procs, machine)


def cpu_usage(
    a: CpuSnapshot | None, b: CpuSnapshot | None, clk_tck: int | None = None
) -> dict[str, Any] | None:
    """Per role: CPU seconds and the share of one core over the wall time between two
    snapshots; `machine_busy_cores`: how many of the machine's cores were busy on average."""
    if a is None or b is None or b.at <= a.at:
        return None
    wall = b.at - a.at
    clk = clk_tck or os.sysconf("SC_CLK_TCK")
    out: dict[str, Any] = {"wall_s": round(wall, 3)}
    for role, cpu in b.procs.items():
        if role in a.procs:
            used = cpu - a.procs[role]
            out[role] = {"cpu_s": round(used, 2), "core_share": round(used / wall, 3)}
    out["machine_busy_cores"] = round((b.machine[0] - a.machine[0]) / clk / wall, 2)
    return out


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

    from streams.kafka.transport import kafka_client_kwargs

    s = b.base
    topic = f"bench.{b.tag}.floor.events"
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(s))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=s.topic_partitions, replication_factor=1)]
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

    conn = await asyncpg.connect(s.owner_dsn)  # a scratch hypertable: DDL, so the owner
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
    the worker's events_stored counter grew by the `expect` distinct events."""
    from rtm.produce import produce_file

    before = await b.metrics(client, ph)
    base = int(before.get("rtm_worker_events_stored_total", 0))
    cpu0 = cpu_snapshot(b.pids(ph))
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
    cpu1 = cpu_snapshot(b.pids(ph))
    after = await b.metrics(client, ph)
    stored = n - base
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
        "worker_db_write_s_total": round(
            after.get("rtm_worker_db_write_seconds_sum", 0.0)
            - before.get("rtm_worker_db_write_seconds_sum", 0.0),
            3,
        ),
        "worker_db_batches": int(
            after.get("rtm_worker_db_write_seconds_count", 0.0)
            - before.get("rtm_worker_db_write_seconds_count", 0.0)
        ),
        "cpu": cpu_usage(cpu0, cpu1),
    }


async def produce_direct(settings: Any, path: Path, chunk: int = 20_000) -> tuple[int, float]:
    """Write a JSONL file straight to `settings.topic_events` (key = `<org>/<patient_id>`,
    as the gateway does; `received_at` = now), acks=all; (records, seconds)."""
    from aiokafka import AIOKafkaProducer

    from schemas.events import DEFAULT_ORG, key_text
    from streams.kafka.transport import kafka_client_kwargs

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
                ev["received_at"] = dt.datetime.now(dt.UTC).isoformat()
                # the gateway's key: <org>/<patient> (unstamped: the default organisation)
                key = key_text((str(ev.get("org_id") or DEFAULT_ORG), str(ev["patient_id"])))
                futs.append(
                    await producer.send(settings.topic_events, orjson.dumps(ev), key=key.encode())
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
    base = int(before.get("rtm_worker_events_stored_total", 0))
    cpu0 = cpu_snapshot(b.pids(ph))
    t0 = time.monotonic()
    sent, produce_s = await produce_direct(ph.settings, path)
    t_done, n = await b.wait_stored(client, ph, base + expect, timeout=timeout, poll=poll)
    cpu1 = cpu_snapshot(b.pids(ph))
    after = await b.metrics(client, ph)
    stored = n - base
    elapsed = t_done - t0
    return {
        "records_produced": sent,
        "events_stored": stored,
        "complete": stored >= expect,
        "seconds": round(elapsed, 3),
        "produce_seconds": round(produce_s, 3),
        "events_per_s": round(stored / elapsed, 1) if elapsed > 0 else None,
        "worker_db_batches": int(
            after.get("rtm_worker_db_write_seconds_count", 0.0)
            - before.get("rtm_worker_db_write_seconds_count", 0.0)
        ),
        "cpu": cpu_usage(cpu0, cpu1),
    }


async def run_pipeline(
    b: Bench, ph: Phase, path: Path, expect: int, warm: list[dict[str, Any]], split: bool = False
) -> dict[str, Any]:
    """Warm-up, then `path` at full speed; with `split`, py-spy on the worker meanwhile and
    the result's `cpu_split` (None without py-spy, with a `cpu_split_note`)."""
    import httpx

    async with httpx.AsyncClient(timeout=60.0) as client:
        await b.warm_up(client, ph, warm)
        profs, spy_out = b.start_profile(ph, split=split)
        try:
            out = await post_and_wait(b, ph, client, path, expect)
        finally:
            b.stop_profile(profs)
    if split:
        out["cpu_split"], out["cpu_split_note"] = read_split(spy_out)
    return out


def read_split(path: Path | None) -> tuple[dict[str, Any] | None, str | None]:
    if path is None:
        return None, (
            "py-spy not found (e.g. .venv/bin/pip install py-spy): worker CPU "
            "utilisation from /proc only"
        )
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return None, f"py-spy wrote no profile: {exc}"
    root = str(Path(__file__).resolve().parent.parent)
    split = cpu_split(parse_collapsed(text), project_root=root)
    if split is None:
        return None, "py-spy recorded no samples"
    split["source"] = f"py-spy record --format raw, worker, {path.name}"
    return split, None


@dataclass
class HistoryCohort:
    """A history cohort written to two files: what is posted first (untimed) and the new
    events that are timed."""

    name: str
    history_days: int
    patient_prefix: str
    seed_path: Path
    new_path: Path
    seed_events: int = 0
    seed_distinct: int = 0
    new_events: int = 0
    new_distinct: int = 0
    seed_newest: dt.datetime | None = None
    new_newest: dt.datetime | None = None


def write_history_cohort(
    c: HistoryCohort,
    patients: int,
    seed: int,
    start: dt.date,
    long_days: int,
    short_days: int,
    new_days: int,
) -> HistoryCohort:
    """Compose `c.history_days` of history per patient, then `new_days` of new events.

    Every cohort ends with the same recent block R = simulate(patients, short_days +
    new_days) starting `long_days - short_days` after `start`: its first `short_days`
    (by patient-local date) are history, the rest the new events. A longer history is
    prepended as back-to-back simulate() blocks (same seed, so each patient keeps its
    time zone and habits), each followed by the end of the episodes it left open.
    """
    from rtm.simulate import simulate

    r_start = start + dt.timedelta(days=long_days - short_days)
    cut = (r_start + dt.timedelta(days=short_days)).isoformat()
    prepend = c.history_days - short_days
    seed_ids: set[str] = set()
    new_ids: set[str] = set()

    def newest(cur: dt.datetime | None, ev: dict[str, Any]) -> dt.datetime | None:
        at = dt.datetime.fromisoformat(ev["occurred_at"])
        return at if cur is None or at > cur else cur

    opt = orjson.OPT_APPEND_NEWLINE
    with (
        c.seed_path.open("wb", buffering=1 << 20) as seed_fh,
        c.new_path.open("wb", buffering=1 << 20) as new_fh,
    ):
        for k, (b_start, b_days) in enumerate(
            history_blocks(r_start - dt.timedelta(days=prepend), prepend)
        ):
            episodes = OpenEpisodes()
            block: Iterable[dict[str, Any]] = simulate(patients, b_days, seed, start=b_start)
            for raw in block:
                ev = rebase_event(raw, c.patient_prefix, f"{c.patient_prefix}k{k}.")
                episodes.see(ev)
                seed_fh.write(orjson.dumps(ev, option=opt))
                seed_ids.add(ev["event_id"])
                c.seed_events += 1
                c.seed_newest = newest(c.seed_newest, ev)
            for ev in episodes.close(b_start + dt.timedelta(days=b_days)):
                seed_fh.write(orjson.dumps(ev, option=opt))
                seed_ids.add(ev["event_id"])
                c.seed_events += 1
                c.seed_newest = newest(c.seed_newest, ev)
        for raw in simulate(patients, short_days + new_days, seed, start=r_start):
            ev = rebase_event(raw, c.patient_prefix, f"{c.patient_prefix}r.")
            if ev["occurred_at"][:10] < cut:  # by patient-local date
                seed_fh.write(orjson.dumps(ev, option=opt))
                seed_ids.add(ev["event_id"])
                c.seed_events += 1
                c.seed_newest = newest(c.seed_newest, ev)
            else:
                new_fh.write(orjson.dumps(ev, option=opt))
                new_ids.add(ev["event_id"])
                c.new_events += 1
                c.new_newest = newest(c.new_newest, ev)
    c.seed_distinct, c.new_distinct = len(seed_ids), len(new_ids)
    return c


async def run_history_cohort(
    b: Bench,
    ph: Phase,
    c: HistoryCohort,
    warm: list[dict[str, Any]],
    warm_path: Path,
    warm_distinct: int,
) -> dict[str, Any]:
    """A warm-up cohort (the same for every history stack, so both workers have run their
    code paths and filled their pools before anything differs), the history (untimed), one
    tick at its newest event, the state size, then the new events timed. All but the
    first warm-up batch are written straight to Kafka: the worker, not the gateway, is
    timed, draining a backlog at full speed."""
    import httpx

    async with httpx.AsyncClient(timeout=60.0) as client:
        await b.warm_up(client, ph, warm)
        await produce_and_wait(b, ph, client, warm_path, warm_distinct)
        seed = await produce_and_wait(
            b, ph, client, c.seed_path, c.seed_distinct, timeout=3600.0, poll=0.25
        )
        tick = await b.tick(
            ph, (c.seed_newest or dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=1)
        )
        state = await b.state_bytes(c.patient_prefix)
        b.log(
            f"history {c.history_days} d: history processed ({seed['events_stored']:,} events in "
            f"{seed['seconds']:.1f} s), state median {state['median']} B; timing "
            f"{c.new_distinct:,} new events ..."
        )
        new = await produce_and_wait(b, ph, client, c.new_path, c.new_distinct, poll=0.05)
    cpu_s = ((new.get("cpu") or {}).get("worker") or {}).get("cpu_s")
    return {
        "history_days": c.history_days,
        "events_per_s": new["events_per_s"],
        # CPU time per new event: less sensitive than events/s to whatever else runs
        "worker_cpu_us_per_event": (
            round(1e6 * cpu_s / new["events_stored"], 1) if cpu_s and new["events_stored"] else None
        ),
        "new": new,
        "history": {
            **seed,
            "file_events": c.seed_events,
            "newest_occurred_at": c.seed_newest.isoformat() if c.seed_newest else None,
        },
        "tick": tick,
        "state_bytes": state,
    }


async def run_latency(
    b: Bench, ph: Phase, events: list[dict[str, Any]], rate: float, warm: list[dict[str, Any]]
) -> dict[str, Any]:
    import asyncpg
    import httpx
    from aiokafka import AIOKafkaConsumer

    from streams.kafka.transport import kafka_client_kwargs

    s = ph.settings
    schedule = paced_schedule(events, rate=rate, tick_s=0.1, lanes=4)
    bodies = [
        (off, lane, [e["event_id"] for e in evs], b"\n".join(orjson.dumps(e) for e in evs))
        for off, lane, evs in schedule
    ]
    red_ids = {
        e["event_id"] for e in events if e["type"] == "symptom.reported" and e.get("red_flags")
    }
    received: dict[str, float] = {}
    alerts: list[tuple[float, str | None, list[str]]] = []

    consumer = AIOKafkaConsumer(
        s.topic_alerts,
        **kafka_client_kwargs(s),
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
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
                resp = await client.post(f"{ph.url}/v1/events", content=body, headers=b.headers)
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
            " FROM events WHERE event_id = ANY($1::text[])",
            list(received),
        )
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
            if not agent
            else f"alerts agent present but no alert for the {len(red_ids)} red-flag events on "
            f"{s.topic_alerts} ({len(alerts)} alert records seen)"
        )
    else:
        alert_summary["red_flag_events"] = len(red_ids)
        alert_summary["alerts_seen"] = len(alerts)
    hist = {
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
    """Whether the worker registers an alerts agent (agents.worker imports agents.alerts)."""
    try:
        importlib.import_module("agents.worker")
    except Exception:  # noqa: BLE001 - a worker that does not import has no alerts agent
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
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        )
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


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _cohort(patients: int, days: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    from rtm.simulate import simulate

    start = cohort_start(days, _today())
    return [namespace_event(e, prefix) for e in simulate(patients, days, seed, start=start)]


def _latency_events(patients: int, seed: int, prefix: str, count: int) -> list[dict[str, Any]]:
    """Arrival-ordered cohort events; every symptom report in it carries a red flag."""
    from rtm.simulate import simulate

    out: list[dict[str, Any]] = []
    for e in simulate(patients, 365, seed, start=cohort_start(365, _today())):
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


def _fmt2(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def check(value: float | None, op: str, threshold: float) -> bool | None:
    """value >= / <= / < threshold; None when there is no value."""
    if value is None:
        return None
    if op == ">=":
        return value >= threshold
    if op == "<=":
        return value <= threshold
    if op == "<":
        return value < threshold
    raise ValueError(f"unknown operator {op!r}")


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "not met")


# Targets of issue 8 ("Speed targets"); the state ones read "about 2 KB median" and "do
# not grow with history".
TARGET_PIPELINE_EV_S = 20_000.0
TARGET_RATIO = 0.40
TARGET_REPLAY_S = 60.0
TARGET_ALERT_P99_MS = 250.0
TARGET_ALERT_RATE = 2_000.0
TARGET_HISTORY_RATIO = 0.9
TARGET_STATE_MEDIAN_B = 2_560  # "about 2 KB"
TARGET_STATE_GROWTH = 1.1  # 365 d / 90 d, median and p99


def render_table(r: dict[str, Any]) -> str:
    lat = r["latency"]
    per, al = lat["accept_to_persisted"], lat["accept_to_alert"]
    par = r.get("parameters", {})
    rows: list[tuple[str, str, str, str, str]] = [
        (
            "floor (Kafka -> COPY)",
            f"{_fmt(r['floor_events_per_s'])} ev/s",
            "",
            "",
            f"{r['floor']['events']:,} events in {r['floor']['seconds']:.1f} s",
        ),
        (
            "pipeline (gateway -> worker)",
            f"{_fmt(r['pipeline_events_per_s'])} ev/s",
            f">= {TARGET_PIPELINE_EV_S:,.0f} ev/s",
            _verdict(check(r["pipeline_events_per_s"], ">=", TARGET_PIPELINE_EV_S)),
            f"{r['pipeline']['events_stored']:,} events in {r['pipeline']['seconds']:.1f} s",
        ),
        (
            "pipeline / floor",
            _fmt(None if r["ratio"] is None else 100 * r["ratio"], " %"),
            f">= {100 * TARGET_RATIO:.0f} %",
            _verdict(check(r["ratio"], ">=", TARGET_RATIO)),
            "",
        ),
    ]
    cpu = r["pipeline"].get("cpu") or {}
    if cpu.get("worker"):
        gw = cpu.get("gateway") or {}
        detail = (
            f"gateway {100 * gw.get('core_share', 0.0):.0f} %, machine "
            f"{cpu.get('machine_busy_cores', 0.0):.1f} of {r['machine'].get('cores')}"
            " cores busy"
        )
        rows.append(
            (
                "worker CPU (pipeline)",
                f"{100 * cpu['worker']['core_share']:.0f} % of a core",
                "",
                "",
                detail,
            )
        )
    rate = lat.get("target_events_per_s") or par.get("rate")
    alert_ok = check(al["p99_ms"], "<", TARGET_ALERT_P99_MS)
    if alert_ok is not None and (
        not rate or rate < TARGET_ALERT_RATE or (lat["achieved_events_per_s"] or 0) < 0.95 * rate
    ):
        alert_ok = False if not alert_ok else None  # met only under the target's load
    rows += [
        (
            "latency load",
            f"{_fmt(lat['achieved_events_per_s'])} ev/s",
            "" if not rate else f"{rate:,.0f} ev/s",
            "",
            f"{lat['events_sent']:,} events over {lat['seconds']:.1f} s",
        ),
        (
            "accept -> persisted p50/p95/p99",
            f"{_fmt(per['p50_ms'])} / {_fmt(per['p95_ms'])} / {_fmt(per['p99_ms'])} ms",
            "",
            "",
            f"n={per['count']:,}",
        ),
        (
            "accept -> alert p50/p95/p99",
            f"{_fmt(al['p50_ms'])} / {_fmt(al['p95_ms'])} / {_fmt(al['p99_ms'])} ms",
            f"p99 < {TARGET_ALERT_P99_MS:.0f} ms at {TARGET_ALERT_RATE:,.0f} ev/s",
            _verdict(alert_ok),
            al.get("note", f"n={al['count']:,}"),
        ),
    ]
    rp, rd = par.get("replay_patients"), par.get("replay_days")
    rep = r["replay"]
    rep_ok = check(r["replay_seconds"] if not rep.get("skipped") else None, "<", TARGET_REPLAY_S)
    rows.append(
        (
            f"replay {_fmt(rp)} x {_fmt(rd)} d (file -> pipeline)",
            "n/a" if rep.get("skipped") else f"{rep['seconds']:.1f} s",
            f"< {TARGET_REPLAY_S:.0f} s (2,000 x 90 d)",
            _verdict(rep_ok) if (rp, rd) == (2000, 90) else "",
            ""
            if rep.get("skipped")
            else f"{_fmt(r['replay_events_per_s'])} ev/s, {rep['events_stored']:,} events",
        )
    )
    h = r.get("history") or {}
    if h and not h.get("skipped"):
        for key in ("short", "long"):
            c = h[key]
            detail = (
                f"{c['new']['events_stored']:,} new events, {h['patients']:,} patients; "
                f"history {c['history']['events_stored']:,} events"
            )
            rows.append(
                (
                    f"history {c['history_days']} d (+{h['new_days']} d new)",
                    f"{_fmt(c['events_per_s'])} ev/s",
                    "",
                    "",
                    detail,
                )
            )
        rows.append(
            (
                f"history {h['long']['history_days']} d / {h['short']['history_days']} d",
                _fmt2(h.get("ratio")),
                f">= {TARGET_HISTORY_RATIO}",
                _verdict(check(h.get("ratio"), ">=", TARGET_HISTORY_RATIO)),
                f"events/s ratio; worker CPU per event {_fmt2(h.get('cpu_ratio'))}",
            )
        )
    for label, st in sorted(
        (r.get("state_bytes") or {}).items(), key=lambda kv: kv[1].get("days", 0)
    ):
        value = f"{_fmt(st.get('median'))} / {_fmt(st.get('p99'))} B"
        rows.append(
            (
                f"state bytes {label} median / p99",
                value,
                "median ~2 KB",
                _verdict(check(st.get("median"), "<=", TARGET_STATE_MEDIAN_B)),
                st.get("note") or f"n={st['n']:,} patients ({st.get('source', '')})",
            )
        )
    g = r.get("state_growth")
    if g:
        worst = (
            None if g["median_x"] is None or g["p99_x"] is None else max(g["median_x"], g["p99_x"])
        )
        rows.append(
            (
                f"state growth {g['from']} -> {g['to']}",
                f"x{_fmt2(g['median_x'])} / x{_fmt2(g['p99_x'])}",
                f"not growing (<= x{TARGET_STATE_GROWTH})",
                _verdict(check(worst, "<=", TARGET_STATE_GROWTH)),
                "median / p99",
            )
        )
    pages = r.get("pages") or {"skipped": True}
    if not pages.get("skipped"):
        from rtm.bench_pages import pages_rows

        rows.extend(pages_rows(pages))
    lines = _table_lines(rows)
    split = r.get("cpu_split")
    if split:
        lines.append(f"worker CPU by module (py-spy, self): {shares_line(split['self'])}")
        lines.append(
            f"worker CPU by project package (inclusive): {shares_line(split['inclusive'])}"
        )
        lines.append(
            "top functions (self): "
            + "; ".join(
                f"{f['function']} {100 * f['share']:.0f} %" for f in split["top_functions"][:5]
            )
        )
    elif r.get("cpu_split_note"):
        lines.append(f"worker CPU split: {r['cpu_split_note']}")
    lines.append(_machine_line(r["machine"]))
    return "\n".join(lines)


def _table_lines(rows: Sequence[tuple[str, str, str, str, str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d:<{widths[3]}}  {e}".rstrip()
        for a, b, c, d, e in rows
    ]


def _machine_line(m: Mapping[str, Any]) -> str:
    return (
        f"machine: {m['cores']} cores, {m['memory_gb']} GB, {m['cpu']}; Python "
        f"{m['python']}, Kafka {m['kafka']}, PostgreSQL {m['postgres']}, "
        f"TimescaleDB {m['timescaledb']}"
    )


def render_pages_table(r: dict[str, Any]) -> str:
    """The table of a ``--pages-only`` run."""
    from rtm.bench_pages import pages_rows

    return "\n".join([*_table_lines(list(pages_rows(r["pages"]))), _machine_line(r["machine"])])


@dataclass(frozen=True)
class PagesOptions:
    patients: int = 5000
    days: int = 90
    requests: int = 50


def _run_pages(b: Bench, prefix: str, o: PagesOptions, seed: int) -> dict[str, Any]:
    from rtm.bench_pages import run_pages

    return run_pages(b, prefix, o.patients, o.days, seed, o.requests)


def run_pages_only(settings: Any, o: PagesOptions, seed: int, log: Any) -> dict[str, Any]:
    """Only the pages phase (``rtm bench --pages-only``)."""
    from rtm.bench_pages import pages_keys
    from rtm.devstack import prepare
    from rtm.produce import api_key

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
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "parameters": {
            "pages_patients": o.patients,
            "pages_days": o.days,
            "pages_requests": o.requests,
            "seed": seed,
            "partitions": settings.topic_partitions,
            "worker_batch_size": settings.worker_batch_size,
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
    }


def _skipped_replay() -> dict[str, Any]:
    return {"skipped": True, "events_per_s": None, "events_stored": 0, "seconds": 0.0}


HISTORY_WARM_PATIENTS, HISTORY_WARM_DAYS = 40, 60  # ~3,700 events before each history


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
    """Both history cohorts, each in its own stack (no wall-clock timer: the bench ticks)."""
    start = cohort_start(long_days + new_days, _today())
    out: dict[str, Any] = {"patients": patients, "new_days": new_days, "start": start.isoformat()}
    warm_cohort = _cohort(HISTORY_WARM_PATIENTS, HISTORY_WARM_DAYS, seed + 1, "")
    for key, days in (("short", short_days), ("long", long_days)):
        name = f"h{days}"
        c = HistoryCohort(
            name,
            days,
            f"{prefix}.{name}.",
            b.workdir / f"{name}-history.jsonl",
            b.workdir / f"{name}-new.jsonl",
        )
        write_history_cohort(c, patients, seed, start, long_days, short_days, new_days)
        warm_path = b.workdir / f"{name}-warm.jsonl"
        _write_jsonl((namespace_event(e, f"{prefix}.{name}w.") for e in warm_cohort), warm_path)
        ph = b.start_stack(name, tick_interval_s=0)
        try:
            b.log(
                f"history {days} d: {c.seed_events:,} history events ({patients} patients), "
                f"then {c.new_events:,} new events ({new_days} d) timed ..."
            )
            out[key] = asyncio.run(
                run_history_cohort(
                    b,
                    ph,
                    c,
                    [namespace_event(e, name) for e in warm],
                    warm_path,
                    len(_ids(warm_cohort)),
                )
            )
        finally:
            b.stop_stack(ph)
        for path in (c.seed_path, c.new_path, warm_path):
            path.unlink(missing_ok=True)
        b.log(f"history {days} d: {out[key]['events_per_s']} ev/s")
    s, lg = out["short"]["events_per_s"], out["long"]["events_per_s"]
    out["ratio"] = round(lg / s, 3) if s and lg else None
    # the same question asked of the worker's CPU per event (short / long: >= 0.9 is good)
    out["cpu_ratio"] = growth(
        out["long"]["worker_cpu_us_per_event"], out["short"]["worker_cpu_us_per_event"]
    )
    return out


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
) -> dict[str, Any]:
    from rtm.devstack import prepare

    if history_patients != 0 and not 0 < history_short_days < history_days:
        raise click.BadParameter("need 0 < --history-short-days < --history-days")
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
        log(
            f"bench {b.tag}: {len(main_events):,} events ({patients} patients x {days} days, "
            f"{expect_main:,} distinct)"
        )
        warm = [namespace_event(e, f"{prefix}.w.") for e in _cohort(5, 3, seed, "")][:200]

        log("floor: pre-producing, then consuming + COPY ...")
        floor = asyncio.run(run_floor(b, main_events))
        log(f"floor: {floor['events_per_s']:,} ev/s")

        ph = b.start_stack("pipe")
        try:
            log("pipeline: posting through the gateway at full speed ...")
            pipe = asyncio.run(run_pipeline(b, ph, main_path, expect_main, warm, split=split))
        finally:
            b.stop_stack(ph)
        log(f"pipeline: {pipe['events_per_s']:,} ev/s")
        del main_events

        lat = _skipped_latency()
        if latency_seconds > 0:
            n_lat = int(rate * latency_seconds)
            lat_events = _latency_events(
                max(200, int(rate * latency_seconds / 400)), seed + 1, f"{prefix}.l.", n_lat
            )
            ph = b.start_stack("lat")
            try:
                log(f"latency: {len(lat_events):,} events at {rate:,.0f} ev/s ...")
                lat = asyncio.run(
                    run_latency(b, ph, lat_events, rate, [namespace_event(e, "l") for e in warm])
                )
            finally:
                b.stop_stack(ph)
            del lat_events

        replay = _skipped_replay()
        state: dict[str, dict[str, Any]] = {}
        if replay_patients > 0 and replay_days > 0:
            replay_path = b.workdir / "replay.jsonl"
            from rtm.simulate import simulate

            ids: set[str] = set()
            newest: list[dt.datetime] = []
            rp = f"{prefix}.r."

            def replay_events() -> Iterator[dict[str, Any]]:
                top: dt.datetime | None = None
                for e in simulate(
                    replay_patients,
                    replay_days,
                    seed + 2,
                    start=cohort_start(replay_days, _today()),
                ):
                    e = namespace_event(e, rp)
                    ids.add(e["event_id"])
                    at = dt.datetime.fromisoformat(e["occurred_at"])
                    top = at if top is None or at > top else top
                    yield e
                newest.extend([top] if top else [])

            n_replay = _write_jsonl(replay_events(), replay_path)
            # No wall-clock timer: a tick at today's date over a cohort that ended weeks ago
            # would call every patient inactive. One tick at the end instead (untimed).
            ph = b.start_stack("replay", tick_interval_s=0)
            try:
                log(
                    f"replay: {n_replay:,} events ({replay_patients} patients x {replay_days} days)"
                    " from a file ..."
                )
                replay = asyncio.run(
                    run_pipeline(
                        b, ph, replay_path, len(ids), [namespace_event(e, "r") for e in warm]
                    )
                )

                async def settle() -> tuple[dict[str, Any], dict[str, Any]]:
                    when = newest[0] if newest else dt.datetime.now(dt.UTC)
                    tick = await b.tick(ph, when + dt.timedelta(seconds=1))
                    return tick, await b.state_bytes(rp)

                replay["final_tick"], st = asyncio.run(settle())
                state[f"{replay_days}d"] = {**st, "days": replay_days, "source": "replay"}
            finally:
                b.stop_stack(ph)
            replay["file_events"] = n_replay
            replay_path.unlink(missing_ok=True)

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
        pages_out = _run_pages(b, prefix, pages, seed + 5) if pages is not None else None
        machine = asyncio.run(machine_info(settings))
    finally:
        b.cleanup()

    ratio = (
        pipe["events_per_s"] / floor["events_per_s"]
        if pipe["events_per_s"] and floor["events_per_s"]
        else None
    )
    per, al = lat["accept_to_persisted"], lat["accept_to_alert"]
    worker_cpu = ((pipe.get("cpu") or {}).get("worker") or {}).get("core_share")
    result: dict[str, Any] = {
        "run": b.tag,
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
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
            "partitions": settings.topic_partitions,
            "worker_batch_size": settings.worker_batch_size,
        },
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
    }
    if not history.get("skipped"):
        s_days, l_days = history["short"]["history_days"], history["long"]["history_days"]
        result[f"history_events_per_s_{s_days}d"] = history["short"]["events_per_s"]
        result[f"history_events_per_s_{l_days}d"] = history["long"]["events_per_s"]
        result[f"history_ratio_{l_days}_{s_days}"] = history["ratio"]
    for label, st in state.items():
        result[f"state_bytes_{label}"] = {k: st.get(k) for k in ("median", "p99", "n")}
    result["state_bytes"] = state
    result["state_growth"] = _state_growth(state, replay_days, history_days)
    result["worker_cpu_utilisation"] = worker_cpu
    result["cpu_split"] = pipe.get("cpu_split")
    if result["cpu_split"] is None:
        result["cpu_split_note"] = pipe.get("cpu_split_note") or "CPU split off (--no-cpu-split)"
    if pages_out is not None:
        from rtm.bench_pages import pages_keys

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


@click.command("bench")
@click.option(
    "--patients", type=int, default=400, show_default=True, help="cohort for floor and pipeline"
)
@click.option("--days", type=int, default=90, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--replay-patients", type=int, default=2000, show_default=True)
@click.option("--replay-days", type=int, default=90, show_default=True)
@click.option("--latency-seconds", type=float, default=25.0, show_default=True)
@click.option(
    "--rate",
    type=float,
    default=2000.0,
    show_default=True,
    help="events/s posted during the latency phase",
)
@click.option(
    "--history-patients",
    type=int,
    default=None,
    help="patients per history cohort; default: sized from the pipeline rate "
    "(about 45 s of history posting, 100-2000); 0 skips the phase",
)
@click.option(
    "--history-days",
    type=int,
    default=365,
    show_default=True,
    help="days of history of the long cohort",
)
@click.option(
    "--history-short-days",
    type=int,
    default=30,
    show_default=True,
    help="days of history of the short cohort",
)
@click.option(
    "--history-new-days",
    type=int,
    default=14,
    show_default=True,
    help="days of new events timed after each cohort's history",
)
@click.option(
    "--cpu-split/--no-cpu-split",
    "split",
    default=True,
    show_default=True,
    help="py-spy (if installed) on the worker during the pipeline phase, 50 Hz",
)
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="py-spy the worker and gateway during pipeline/replay into this folder",
)
@click.option(
    "--pages/--no-pages",
    "pages",
    default=False,
    show_default=True,
    help="also time the dashboard (worklist, patient page) over a seeded clinic (5-10 min)",
)
@click.option(
    "--pages-only", is_flag=True, default=False, help="run only the pages phase (implies --pages)"
)
@click.option("--pages-patients", type=int, default=5000, show_default=True)
@click.option("--pages-days", type=int, default=90, show_default=True)
@click.option(
    "--pages-requests",
    type=int,
    default=50,
    show_default=True,
    help="timed requests per page and user (patient pages: as many distinct patients)",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write JSON here")
@click.pass_context
def command(
    ctx: click.Context,
    patients: int,
    days: int,
    seed: int,
    replay_patients: int,
    replay_days: int,
    latency_seconds: float,
    rate: float,
    history_patients: int | None,
    history_days: int,
    history_short_days: int,
    history_new_days: int,
    split: bool,
    profile_dir: Path | None,
    pages: bool,
    pages_only: bool,
    pages_patients: int,
    pages_days: int,
    pages_requests: int,
    out: Path | None,
) -> None:
    """Benchmark the pipeline against a bare Kafka->COPY floor (prints a table)."""
    from infra.services import ServiceError

    settings = ctx.obj

    def log(message: str) -> None:
        click.echo(message, err=True)

    opts = PagesOptions(pages_patients, pages_days, pages_requests)
    if (pages or pages_only) and min(pages_patients, pages_days, pages_requests) < 1:
        raise click.BadParameter("--pages-patients, --pages-days, --pages-requests must be >= 1")
    if pages_only:
        try:
            result = run_pages_only(settings, opts, seed, log)
        except ServiceError as exc:
            raise click.ClickException(str(exc)) from None
        _emit(render_pages_table(result), result, out)
        return
    try:
        result = run_bench(
            settings,
            patients,
            days,
            seed,
            replay_patients,
            replay_days,
            latency_seconds,
            rate,
            profile_dir,
            log=log,
            history_patients=history_patients,
            history_days=history_days,
            history_short_days=history_short_days,
            history_new_days=history_new_days,
            split=split,
            pages=opts if pages else None,
        )
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(render_table(result), result, out)


def _emit(table: str, result: dict[str, Any], out: Path | None) -> None:
    click.echo(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        click.echo(f"wrote {out}", err=True)
