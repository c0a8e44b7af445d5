"""The bench's harness: a phase's own topics, consumer group, ports, worker(s) and gateway
(``Bench.start_stack``), the workers' counters, ticks and the wait for the consumer group,
the organisation's webhook pointed at a local receiver and the wait for its deliveries,
py-spy, the scratch objects removed at the end, and the machine it ran on."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import click
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from infra.services import kafka_pid, pg_data_path
from rtm.bench.cohorts import like_prefix
from rtm.bench.cpu import py_spy_path
from rtm.bench.receiver import Receiver
from rtm.bench.stats import group_lag, group_stable, merge_metrics, parse_metrics, size_stats
from rtm.devstack import Child, settings_env, spawn, wait_http
from streams.clock import Clock, clock_for
from streams.db.alert_states import count_states, state_sizes
from streams.db.deliveries import remove_webhook, routed_delivery_keys, set_webhook
from streams.db.maintenance import autovacuum_workers, vacuum_analyze, wal_activity
from streams.kafka.topics import ensure_topics
from streams.kafka.transport import kafka_client_kwargs
from streams.secrets import secret_box
from streams.settings import Settings


@dataclass
class Phase:
    name: str
    settings: Settings
    children: list[Child] = field(default_factory=list)
    # each worker's web port by its role ("worker", "worker2", ...): one consumer group,
    # one /metrics each
    worker_ports: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        s = self.settings
        return f"http://{s.gateway.host}:{s.gateway.port}"

    @property
    def metrics_url(self) -> str:
        """The first worker's /metrics."""
        s = self.settings
        return f"http://{s.worker.web_host}:{s.worker.web_port}/metrics"

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Every worker's /metrics by its role."""
        host = self.settings.worker.web_host
        ports = self.worker_ports or {"worker": self.settings.worker.web_port}
        return {role: f"http://{host}:{port}/metrics" for role, port in ports.items()}


def worker_role(i: int) -> str:
    """The i-th worker's role (0: "worker", as with one worker; then "worker2", ...): the
    last part of its process name, the key of its CPU, memory and counters."""
    return "worker" if i == 0 else f"worker{i + 1}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_settings(settings: Settings) -> Settings:
    """A phase's gateway runs on the wall clock: ``clock_now`` (RTM_CLOCK_NOW) fixes the
    worker's ticks (rtm chaos db_restarts), and the gateway honours it too, so at a fixed
    'now' before the cohort it would refuse every later event as future-dated."""
    return settings.but({"clock_now": None})


@contextlib.contextmanager
def in_dir(path: Path) -> Iterator[None]:
    """Processes spawned meanwhile start in ``path``: Faust writes its <app_id>-data folder
    into the cwd, so the bench's workers write theirs into its scratch folder."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class Bench:
    def __init__(self, base: Any, log: Any, profile_dir: Path | None = None) -> None:
        self.base = base
        self.log = log
        self.tag = uuid.uuid4().hex[:8]
        self.profile_dir = profile_dir
        self.workdir = Path(tempfile.mkdtemp(prefix=f"rtm-bench-{self.tag}-"))
        self.phases: list[Phase] = []
        self.key = ""
        # "now" of the run (RTM_CLOCK_NOW when set): cohort dates, ticks, received_at
        self.clock: Clock = clock_for(base)

    def today(self) -> dt.date:
        """The run's UTC date: cohorts end before it (the gateway refuses future events)."""
        return self.clock.now().date()

    # infrastructure ------------------------------------------------------------------------

    def phase_settings(self, name: str, **overrides: Any) -> Any:
        return self.base.but(
            {
                "topic_events": f"bench.{self.tag}.{name}.events",
                "topic_dead": f"bench.{self.tag}.{name}.dead",
                "topic_alerts": f"bench.{self.tag}.{name}.alerts",
                "app_id": f"bench-{self.tag}-{name}",
                "api_port": free_port(),
                "worker_web_port": free_port(),
                **overrides,
            }
        )

    def start_stack(self, name: str, workers: int = 1, **overrides: Any) -> Phase:
        """Topics, worker(s) and gateway of a phase; `overrides` are Settings fields (e.g.
        ``tick_interval_s=0``: no wall-clock timer, the bench ticks). With `workers` > 1,
        that many worker processes in the phase's one consumer group, each on its own web
        port, as a scaled-out deployment runs them; the phase's topics get at least as many
        partitions (a worker without a partition would idle), and the stack is ready when
        the group is stable with every worker in it (a rebalance is not timed)."""
        if workers > 1:
            base = overrides.get("topic_partitions", self.base.kafka.topic_partitions)
            overrides["topic_partitions"] = max(int(base), workers)
        ph = Phase(name, self.phase_settings(name, **overrides))
        self.phases.append(ph)
        asyncio.run(ensure_topics(ph.settings))
        ports = [ph.settings.worker.web_port] + [free_port() for _ in range(1, workers)]
        ph.worker_ports = {worker_role(i): port for i, port in enumerate(ports)}
        with in_dir(self.workdir):
            for role, port in ph.worker_ports.items():
                ph.children.append(
                    spawn(
                        ph.settings.but({"worker_web_port": port}),
                        f"bench-{self.tag}-{name}-{role}",
                        ["worker"],
                    )
                )
            gateway = spawn(
                gateway_settings(ph.settings), f"bench-{self.tag}-{name}-gateway", ["api"]
            )
            ph.children.append(gateway)
        for child, url in zip(ph.children, ph.metrics_urls.values(), strict=False):
            wait_http(url, child)
        wait_http(f"{ph.url}/readyz", gateway)
        if workers > 1:
            asyncio.run(wait_group(ph.settings, workers))
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

    @contextlib.asynccontextmanager
    async def db(self, owner: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A connection of its own to the run's database, as the app role (or the schema
        owner: DDL, VACUUM), closed on leaving."""
        conn = await asyncpg.connect(self.base.db.owner_dsn if owner else self.base.db.dsn)
        try:
            yield conn
        finally:
            await conn.close()

    async def _drop_scratch(self) -> None:
        async with self.db(owner=True) as conn:  # its scratch table: DDL
            await conn.execute(f"DROP TABLE IF EXISTS {self.scratch_table}")

    # worker metrics -------------------------------------------------------------------------

    async def worker_metrics(self, client: Any, ph: Phase) -> dict[str, dict[str, Any]]:
        """Each worker's counters and histograms, by its role."""
        out: dict[str, dict[str, Any]] = {}
        for role, url in ph.metrics_urls.items():
            resp = await client.get(url, timeout=10.0)
            out[role] = parse_metrics(resp.text)
        return out

    async def metrics(self, client: Any, ph: Phase) -> dict[str, Any]:
        """The phase's counters and histograms, summed over its workers (one consumer
        group: together they stored the phase's events)."""
        return merge_metrics(list((await self.worker_metrics(client, ph)).values()))

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

    async def settle_database(self, timeout: float = 300.0) -> dict[str, Any]:
        """``VACUUM (ANALYZE)`` what the owner owns, then wait (at most ``timeout``) until no
        autovacuum worker runs: a bulk-loaded history is vacuumed and analysed before
        anything is timed over it, as a database that grew to it over a year would be."""
        t0 = time.monotonic()
        async with self.db(owner=True) as conn:
            await vacuum_analyze(conn)
            vacuumed_s = time.monotonic() - t0
            while (running := await autovacuum_workers(conn)) and time.monotonic() - t0 < timeout:
                await asyncio.sleep(0.5)
        return {
            "vacuum_s": round(vacuumed_s, 1),
            "seconds": round(time.monotonic() - t0, 1),
            "autovacuum_workers_left": running,
        }

    @contextlib.asynccontextmanager
    async def settled(self) -> AsyncIterator[dict[str, Any]]:
        """A timed window on a settled database: ``settle_database`` before it, and the
        autovacuum workers found after it (``autovacuum_workers_after``), in what it yields."""
        out = await self.settle_database()
        yield out
        out["autovacuum_workers_after"] = await self.autovacuum_running()

    async def autovacuum_running(self) -> int:
        """How many autovacuum workers run now (what else may be working in a timed window)."""
        async with self.db(owner=True) as conn:
            return await autovacuum_workers(conn)

    async def wal(self) -> dict[str, int] | None:
        """The server's WAL and checkpoints so far (``wal_activity``), or None if unreadable."""
        try:
            async with self.db() as conn:
                return await wal_activity(conn)
        except (OSError, asyncpg.PostgresError):
            return None

    async def state_bytes(self, prefix: str) -> dict[str, Any]:
        """Per-patient rule-state sizes of the patients whose id starts with `prefix`."""
        try:
            async with self.db() as conn:
                sizes = await state_sizes(conn, like_prefix(prefix))
        except (OSError, asyncpg.PostgresError) as exc:
            return {**size_stats([]), "note": f"alert_state not readable: {exc}"}
        return size_stats(sizes)

    async def stored_states(self) -> int | None:
        """How many rule states are stored (of every run and phase: a tick loads every state
        of its partition, whoever's it is)."""
        try:
            async with self.db() as conn:
                return await count_states(conn)
        except (OSError, asyncpg.PostgresError):
            return None

    # webhooks -------------------------------------------------------------------------------

    async def org_webhook(self, receiver: Receiver | None) -> None:
        """The organisation-wide webhook of the dev key's organisation: the receiver, with
        its secret (every alert of the run's patients routes there), or none (removed)."""
        async with self.db() as conn:
            if receiver is None:
                await remove_webhook(conn, "*", "default")
            else:
                sealed = secret_box(self.base).seal(receiver.secret or "")
                await set_webhook(conn, "*", receiver.url, sealed, "default")

    async def wait_delivered(
        self, receiver: Receiver, prefix: str, timeout: float, poll: float = 1.0
    ) -> tuple[set[str], set[str]]:
        """Wait (at most `timeout` s) until every alert change routed to a webhook for the
        patients whose id starts with `prefix` reached the receiver, well signed (at least
        once); (the routed changes' Idempotency-Keys, those not delivered when it ended).
        The routed set is read again each round: the outbox may still be filling."""

        async def routed() -> set[str]:
            async with self.db() as conn:
                return await routed_delivery_keys(conn, like_prefix(prefix))

        want = await routed()
        deadline = time.monotonic() + timeout
        while not want <= receiver.signed and time.monotonic() < deadline:
            await asyncio.sleep(poll)
            want = await routed()
        return want, want - receiver.signed

    # CPU ------------------------------------------------------------------------------------

    @staticmethod
    def pids(ph: Phase) -> dict[str, int]:
        return {c.name.rsplit("-", 1)[-1]: c.proc.pid for c in ph.children}

    @staticmethod
    def servers(ph: Phase) -> dict[str, int]:
        """The database's postmaster (its backends are its children) and the Kafka broker,
        when they run here (an external one's CPU is not measured)."""
        out: dict[str, int] = {}
        try:
            out["database"] = int(
                (pg_data_path(ph.settings) / "postmaster.pid").read_text().split()[0]
            )
        except (OSError, ValueError, IndexError):
            pass
        if (broker := kafka_pid(ph.settings)) is not None:
            out["kafka"] = broker
        return out

    # profiling -------------------------------------------------------------------------------

    def start_profile(
        self, ph: Phase, split: bool = False, label: str = ""
    ) -> tuple[list[subprocess.Popen[bytes]], Path | None]:
        """py-spy on worker and gateway into --profile DIR (100 Hz; ``label`` after the
        phase's name in the files' names); or, with `split` only, on the worker at 50 Hz
        into the scratch folder. Returns the processes and the worker's collapsed-stack
        file (None without py-spy)."""
        if self.profile_dir is None and not split:
            return [], None
        spy = py_spy_path()
        if spy is None:
            self.log("py-spy not found; no profile / CPU split (pip install py-spy)")
            return [], None
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            targets = [
                (
                    c,
                    self.profile_dir / f"{ph.name}{label}-{c.name.rsplit('-', 1)[-1]}.txt",
                    "100",
                )
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


async def wait_consumed(settings: Any, timeout: float, poll: float = 0.5) -> int:
    """Wait until the consumer group `settings.worker.app_id` has committed every record on
    `settings.kafka.topic_events`; the records left when `timeout` passed (0 = settled)."""
    tps = [
        TopicPartition(settings.kafka.topic_events, p)
        for p in range(settings.kafka.topic_partitions)
    ]
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
            committed = await admin.list_consumer_group_offsets(
                settings.worker.app_id, partitions=tps
            )
            lag = group_lag(ends, {tp: om.offset for tp, om in committed.items()})
            if lag == 0 or time.monotonic() > deadline:
                return lag
            await asyncio.sleep(poll)
    finally:
        await consumer.stop()
        await admin.close()


async def wait_group(settings: Any, members: int, timeout: float = 120.0) -> None:
    """Wait until the worker's consumer group (`settings.worker.app_id`) is stable with
    `members` members: every worker has its partitions before anything is timed."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):  # no coordinator yet: ask again
                [resp] = await admin.describe_consumer_groups([settings.worker.app_id])
                if group_stable(resp.to_object(), settings.worker.app_id, members):
                    return
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"the consumer group {settings.worker.app_id} did not settle with"
                    f" {members} workers in {timeout:.0f} s"
                )
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def machine_info(settings: Any) -> dict[str, Any]:
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
    conn = await asyncpg.connect(settings.db.dsn)
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
        "kafka": settings.provision.kafka_version,
        "postgres": pg,
        "timescaledb": ts,
    }
