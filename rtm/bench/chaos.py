"""`rtm chaos`: fault injection through the real services, with a report (issue 11 part 1).

Each scenario streams a fresh simulated cohort (its own ids, topics, consumer group and
ports: a `Bench` phase) through the real gateway into the real worker while a fault is
injected, then compares what was stored with what clients were told and with the offline
evaluators:

- ``worker_kills``: the worker SIGKILLed N times mid-stream, at random points;
- ``db_outage``: PostgreSQL stopped for S seconds while events stream, then started;
- ``kafka_outage``: the broker stopped while the poster posts, then started (the gateway
  must answer 503 with Retry-After meanwhile, never 200 for an event Kafka has not acked);
- ``gateway_kills``: the gateway SIGKILLed with requests in flight, the client re-posting
  the same batches;
- ``rebalance``: a second worker joins mid-stream and one of the two is killed during the
  rebalance;
- ``db_restarts``: PostgreSQL restarted N times at random moments while the rule clock
  ticks every second and every alert change is delivered to a local signed webhook
  receiver (the faults that used to kill the worker through its delivery timer); every
  routed alert change must reach the receiver;
- ``kafka_sigkill``: the broker SIGKILLed (no clean shutdown), then started again.

Figures per scenario: events acknowledged but never stored (must be 0), events stored
twice, alerts missing / extra / differing against ``alerts.evaluate`` (after one tick at
the cohort's as-of on every partition), billing differences (``rtm billing reconcile``),
the time to catch up after the last fault, and the gateway's answers while the broker was
down. Stopping PostgreSQL or Kafka affects everything on those services: run it on
services of your own (RTM_STATE_DIR and the RTM_*_PORT variables).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import os
import platform
import random
import signal
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from alerts.evaluate import run_alerts_evaluate
from infra import services
from pathways.alerting import pathway_alerts
from rtm.bench.chaos_report import (
    COHORT_START,
    SCENARIO_CODES,
    ChaosConfig,
    Figures,
    Log,
)
from rtm.bench.harness import Bench, Phase, free_port, gateway_settings, in_dir, wait_consumed
from rtm.bench.receiver import Receiver
from rtm.cli.billing import reconcile
from rtm.devstack import Child, ensure_dev_key, prepare, spawn, wait_http
from rtm.simulate import namespaced, simulate, write_jsonl
from streams.kafka.producer import EventProducer
from streams.settings import Settings

RECEIVER_SECRET = "chaos-receiver-secret"  # the db_restarts scenario's webhook secret


class Poster:
    """Posts a cohort through the gateway like `rtm produce` (NDJSON batches, one lane per
    patient hash so each patient's order survives), paced over ``duration_s``, re-posting a
    batch until the gateway answers 200 (a transport error, a 5xx: the same batch again,
    after Retry-After when given). Records which event ids a 200 acknowledged."""

    def __init__(
        self,
        url: str,
        key: str,
        events: Sequence[dict[str, Any]],
        batch_size: int,
        lanes: int,
        duration_s: float,
        deadline_s: float = 900.0,
    ) -> None:
        self.url, self.duration_s, self.deadline_s = url, duration_s, deadline_s
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
        per_lane: list[list[dict[str, Any]]] = [[] for _ in range(lanes)]
        for e in events:
            per_lane[zlib.crc32(str(e["patient_id"]).encode()) % lanes].append(e)
        self.lanes = [
            [lane[i : i + batch_size] for i in range(0, len(lane), batch_size)] for lane in per_lane
        ]
        self.total = len(events)
        self.acked: set[str] = set()
        self.rejected: list[dict[str, Any]] = []
        self.statuses: dict[int, int] = {}
        self.http_503 = self.retry_after_missing = self.transport_errors = 0
        self.http_5xx_other = 0
        self.ok_while_broker_down = 0
        self.broker_down = False  # set by the scenario between stop and start
        self.finished_at: float | None = None
        self.posted = 0

    async def run(self) -> None:
        t0 = time.monotonic()
        rate = self.total / self.duration_s if self.duration_s > 0 else 0.0
        async with httpx.AsyncClient(timeout=60.0) as client:
            await asyncio.gather(*(self._lane(client, lane, t0, rate) for lane in self.lanes))
        self.finished_at = time.monotonic()

    async def _lane(
        self, client: httpx.AsyncClient, batches: list[list[dict[str, Any]]], t0: float, rate: float
    ) -> None:
        for batch in batches:
            if rate:
                wait = t0 + self.posted / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            await self._post(client, batch, t0)
            self.posted += len(batch)

    async def _post(
        self, client: httpx.AsyncClient, batch: list[dict[str, Any]], t0: float
    ) -> None:
        body = b"\n".join(orjson.dumps(e) for e in batch)
        while True:
            if time.monotonic() - t0 > self.deadline_s:
                raise RuntimeError("the gateway kept failing; stopping without skipping events")
            down_before = self.broker_down
            try:
                resp = await client.post(
                    f"{self.url}/v1/events", content=body, headers=self.headers
                )
            except httpx.TransportError:
                self.transport_errors += 1
                await asyncio.sleep(0.5)
                continue
            self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
            if resp.status_code == 503:
                self.http_503 += 1
                after = resp.headers.get("retry-after")
                if after is None:
                    self.retry_after_missing += 1
                await asyncio.sleep(min(float(after or 1), 5.0))
                continue
            if resp.status_code >= 500:
                self.http_5xx_other += 1  # a crash, not "try again": never expected
                await asyncio.sleep(1.0)
                continue
            if resp.status_code != 200:
                raise RuntimeError(f"gateway answered {resp.status_code}: {resp.text[:300]}")
            data = resp.json()
            if down_before and self.broker_down and data["accepted"]:
                self.ok_while_broker_down += 1  # a 200 for events no broker could ack
            refused = {r["index"] for r in data["rejected"]}
            self.rejected.extend(data["rejected"])
            self.acked.update(e["event_id"] for i, e in enumerate(batch) if i not in refused)
            return


class Run:
    def __init__(self, settings: Settings, config: ChaosConfig, log: Log) -> None:
        self.base, self.config, self.log = settings, config, log
        self.rng = random.Random(config.seed)
        self.bench = Bench(settings, log)
        self.bench.key = ensure_dev_key(settings)
        self.ports: dict[str, int] = {}  # web ports of extra workers, by name

    # processes ---------------------------------------------------------------------------

    def start(self, name: str) -> Phase:
        if name == "db_restarts":
            # ticks every second, at a 'now' before the cohort's first day: the timer, the
            # broker and the worker's tick path all run, the rules' outcome stays the
            # offline evaluator's (one tick at as-of, in settle); webhooks to the local
            # receiver on loopback
            return self.bench.start_stack(
                name,
                tick_interval_s=1.0,
                clock_now=dt.datetime(
                    COHORT_START.year, COHORT_START.month, COHORT_START.day, tzinfo=dt.UTC
                ),
                webhook_allow_networks="127.0.0.1/32",
                webhook_backoff_s=0.2,
                webhook_max_delay_critical_s=2.0,
                webhook_max_delay_high_s=2.0,
                webhook_max_delay_medium_s=2.0,
                webhook_max_delay_low_s=2.0,
                webhook_retry_interval_s=2.0,
            )
        if name in ("kafka_outage", "kafka_sigkill"):
            # the gateway gives up on Kafka's acks after 3 s (default 15): every broker
            # outage of the run outlasts it, so the 503 with Retry-After is always seen, not
            # only when the broker happened to take long to come back
            return self.bench.start_stack(name, tick_interval_s=0, produce_timeout_s=3.0)
        return self.bench.start_stack(name, tick_interval_s=0)

    def worker(self, ph: Phase) -> Child:
        child: Child = next(c for c in ph.children if c.name.endswith("-worker"))
        return child

    def restart(self, ph: Phase, child: Child) -> Child:
        """The same process again (same settings, name, port and log)."""
        port = self.ports.get(child.name)
        settings = ph.settings
        if port is not None:
            settings = settings.but({"worker_web_port": port})
        is_worker = "worker" in child.name.rsplit("-", 1)[-1]
        with in_dir(self.bench.workdir):
            if is_worker:
                new = spawn(settings, child.name, ["worker"])
            else:
                new = spawn(gateway_settings(settings), child.name, ["api"])
        ph.children[ph.children.index(child)] = new
        if is_worker:
            url = f"http://{settings.worker.web_host}:{settings.worker.web_port}/metrics"
        else:
            url = f"{ph.url}/readyz"
        wait_http(url, new, timeout=120)
        return new

    def exits(self, ph: Phase) -> int:
        """Children found dead that no one killed: counted, then started again."""
        n = 0
        for child in list(ph.children):
            if child.proc.poll() is not None:
                n += 1
                self.log(f"{child.name} exited ({child.proc.returncode}); see {child.log_path}")
                self.restart(ph, child)
        return n

    # the cohort and the comparison ---------------------------------------------------------

    def cohort(self, ph: Phase) -> tuple[list[dict[str, Any]], Path, str]:
        # a code per scenario (not the name's first letters: db_outage and db_restarts
        # would share patient and event ids, and the second would replay the first's)
        prefix = f"ch{self.bench.tag}{SCENARIO_CODES[ph.name]}-"
        c = self.config
        events = list(namespaced(simulate(c.patients, c.days, c.seed, start=COHORT_START), prefix))
        path = self.bench.workdir / f"{ph.name}.jsonl"
        write_jsonl(events, path)
        return events, path, prefix

    async def stored(self, prefix: str) -> tuple[set[str], int]:
        conn = await asyncpg.connect(self.base.db.dsn)
        try:
            rows = await conn.fetch(
                "SELECT event_id, count(*) AS n FROM events WHERE patient_id LIKE $1"
                " GROUP BY event_id",
                prefix + "%",
            )
        finally:
            await conn.close()
        return {r["event_id"] for r in rows}, sum(int(r["n"]) - 1 for r in rows)

    async def alerts(self, prefix: str) -> dict[str, tuple[Any, ...]]:
        conn = await asyncpg.connect(self.base.db.dsn)
        try:
            rows = await conn.fetch(
                "SELECT payload FROM alerts WHERE patient_id LIKE $1", prefix + "%"
            )
        finally:
            await conn.close()
        return _alert_keys(orjson.loads(r["payload"]) for r in rows)

    def offline_alerts(self, path: Path) -> dict[str, tuple[Any, ...]]:
        buf = io.StringIO()
        run_alerts_evaluate(path, self.config.as_of, buf, err=io.StringIO(), after=pathway_alerts)
        return _alert_keys(json.loads(line) for line in buf.getvalue().splitlines())

    async def settle(
        self, ph: Phase, fig: Figures, poster: Poster, path: Path, prefix: str, fault_end: float
    ) -> None:
        """Wait for every acknowledged event to be stored, tick once at as-of, compare."""
        c = self.config
        fig.events, fig.acked = (
            len({e for lane in poster.lanes for b in lane for e in _ids(b)}),
            len(poster.acked),
        )
        fig.http_503, fig.retry_after_missing = poster.http_503, poster.retry_after_missing
        fig.ok_while_broker_down = poster.ok_while_broker_down
        fig.transport_errors = poster.transport_errors
        fig.http_5xx_other = poster.http_5xx_other
        if poster.rejected:
            fig.notes.append(f"{len(poster.rejected)} events rejected: {poster.rejected[:2]}")
        since = max(fault_end, poster.finished_at or fault_end)
        deadline = time.monotonic() + c.settle_timeout_s
        ids, twice = await self.stored(prefix)
        while not poster.acked <= ids and time.monotonic() < deadline:
            fig.unexpected_exits += await asyncio.to_thread(self.exits, ph)
            await asyncio.sleep(0.5)
            ids, twice = await self.stored(prefix)
        fig.catch_up_s = round(time.monotonic() - since, 1) if poster.acked <= ids else None
        fig.acked_not_stored = len(poster.acked - ids)

        producer = EventProducer(ph.settings)
        await producer.start()
        try:
            await producer.send_ticks(c.as_of)
        finally:
            await producer.stop()
        lag = await wait_consumed(ph.settings, c.settle_timeout_s)
        if lag:
            fig.notes.append(f"{lag} records not committed after the tick")
        want = self.offline_alerts(path)
        got = await self.alerts(prefix)
        t_end = time.monotonic() + 60
        # the outbox and tick settle, and the refresh raises the care pathway's alerts once
        # its marks settle (5 s) and ingestion is idle (2 s)
        while got != want and time.monotonic() < t_end:
            await asyncio.sleep(1.0)
            got = await self.alerts(prefix)
        fig.alerts_expected = len(want)
        fig.alerts_missing = len(want.keys() - got.keys())
        fig.alerts_extra = len(got.keys() - want.keys())
        fig.alerts_differing = sum(1 for k in want.keys() & got.keys() if want[k] != got[k])
        ids, twice = await self.stored(prefix)
        fig.stored_twice = twice
        fig.acked_not_stored = len(poster.acked - ids)
        out = io.StringIO()
        fig.billing_differences = await reconcile(self.base.db.dsn, c.as_of, prefix, out=out)
        if fig.billing_differences:
            fig.notes.append(out.getvalue()[-500:])
        fig.unexpected_exits += await asyncio.to_thread(self.exits, ph)

    # the scenarios -------------------------------------------------------------------------

    async def scenario(self, name: str) -> Figures:
        fig = Figures(name)
        t0 = time.monotonic()
        ph = await asyncio.to_thread(self.start, name)
        receiver: Receiver | None = None
        try:
            events, path, prefix = self.cohort(ph)
            if name == "db_restarts":
                receiver = Receiver(secret=RECEIVER_SECRET)
                await self.bench.org_webhook(receiver)
            fault = getattr(self, f"_{name}")
            duration = self._duration(name)
            poster = Poster(
                ph.url,
                self.bench.key,
                events,
                self.config.batch_size,
                self.config.lanes,
                duration,
            )
            posting = asyncio.create_task(poster.run())
            try:
                fig.faults = await fault(ph, poster, posting)
            finally:
                fault_end = time.monotonic()
                await posting
            await self.settle(ph, fig, poster, path, prefix, fault_end)
            if receiver is not None:
                await self.delivered(fig, receiver, prefix)
            fig.task_failures = await asyncio.to_thread(self.task_failures, ph)
        finally:
            if receiver is not None:
                receiver.close()
                await self.bench.org_webhook(None)
            await asyncio.to_thread(self.bench.stop_stack, ph)
        fig.elapsed_s = round(time.monotonic() - t0, 1)
        return fig

    def _duration(self, name: str) -> float:
        c = self.config
        return {
            "worker_kills": 6.0 + 4.0 * c.worker_kills,
            "db_outage": c.db_outage_s + 8.0,
            "kafka_outage": c.kafka_outage_s + 8.0,
            "gateway_kills": 6.0 + 4.0 * c.gateway_kills,
            "rebalance": 16.0,
            "db_restarts": 6.0 + 3.0 * c.db_restarts,
            "kafka_sigkill": c.kafka_outage_s + 8.0,
        }[name]

    async def _worker_kills(self, ph: Phase, poster: Poster, posting: asyncio.Task[None]) -> str:
        n = 0
        for _ in range(self.config.worker_kills):
            await asyncio.sleep(self.rng.uniform(0.3, 3.0))
            w = self.worker(ph)
            w.kill()
            n += 1
            self.log(f"worker_kills: SIGKILL {n} at {poster.posted}/{poster.total} posted")
            await asyncio.to_thread(self.restart, ph, w)
        return f"{n} worker SIGKILLs"

    async def _db_outage(self, ph: Phase, poster: Poster, posting: asyncio.Task[None]) -> str:
        await asyncio.sleep(3.0)
        await asyncio.to_thread(services._pg_down, self.base, self.log)
        try:
            await asyncio.sleep(self.config.db_outage_s)
        finally:
            await asyncio.to_thread(services._pg_up, self.base, self.log)
        return f"PostgreSQL down {self.config.db_outage_s:.0f} s"

    async def _kafka_outage(self, ph: Phase, poster: Poster, posting: asyncio.Task[None]) -> str:
        await asyncio.sleep(3.0)
        await asyncio.to_thread(services._kafka_stop, self.base, self.log)
        t_down = time.monotonic()
        poster.broker_down = True
        try:
            await asyncio.sleep(self.config.kafka_outage_s)
        finally:
            poster.broker_down = False
            pid = await asyncio.to_thread(services._kafka_start, self.base, self.log)
            if pid is not None:
                await asyncio.to_thread(services._kafka_wait_ready, self.base, pid, self.log)
        return f"Kafka down {time.monotonic() - t_down:.0f} s"

    async def _gateway_kills(self, ph: Phase, poster: Poster, posting: asyncio.Task[None]) -> str:
        n = 0
        for _ in range(self.config.gateway_kills):
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            gw = next(c for c in ph.children if c.name.endswith("gateway"))
            gw.kill()
            n += 1
            self.log(f"gateway_kills: SIGKILL {n} at {poster.posted}/{poster.total} posted")
            await asyncio.sleep(0.5)  # the client meets a dead port, then re-posts
            await asyncio.to_thread(self.restart, ph, gw)
        return f"{n} gateway SIGKILLs"

    async def _rebalance(self, ph: Phase, poster: Poster, posting: asyncio.Task[None]) -> str:
        await asyncio.sleep(3.0)
        port = free_port()
        settings = ph.settings.but({"worker_web_port": port})
        with in_dir(self.bench.workdir):
            second = spawn(settings, f"{self.worker(ph).name}2", ["worker"])
        self.ports[second.name] = port
        ph.children.append(second)
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/metrics", second, 120.0)
        await asyncio.sleep(self.rng.uniform(0.5, 3.0))  # the group is rebalancing now
        victim = self.rng.choice([self.worker(ph), second])
        victim.kill()
        ph.children.remove(victim)
        self.log(f"rebalance: SIGKILL {victim.name} at {poster.posted}/{poster.total} posted")
        return f"2nd worker joined, {'2nd' if victim is second else '1st'} killed mid-rebalance"

    async def _db_restarts(self, ph: Phase, poster: Poster, posting: asyncio.Task[None]) -> str:
        n = 0
        for _ in range(self.config.db_restarts):
            await asyncio.sleep(self.rng.uniform(0.3, 2.5))
            await asyncio.to_thread(services._pg_down, self.base, self.log)
            await asyncio.sleep(self.rng.uniform(0.0, 1.5))
            await asyncio.to_thread(services._pg_up, self.base, self.log)
            n += 1
            self.log(f"db_restarts: restart {n} at {poster.posted}/{poster.total} posted")
        return f"{n} PostgreSQL restarts, ticks every 1 s, webhooks delivered"

    async def _kafka_sigkill(self, ph: Phase, poster: Poster, posting: asyncio.Task[None]) -> str:
        await asyncio.sleep(3.0)
        pid = services.kafka_pid(self.base)
        if pid is None:
            raise RuntimeError("kafka_sigkill: no broker running")
        os.kill(pid, signal.SIGKILL)
        t_down = time.monotonic()
        poster.broker_down = True
        try:
            while services._pid_alive(pid):
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.config.kafka_outage_s)
        finally:
            poster.broker_down = False
            (services._kafka_dir(self.base) / "kafka.pid").unlink(missing_ok=True)
            new = await asyncio.to_thread(services._kafka_start, self.base, self.log)
            if new is not None:
                await asyncio.to_thread(services._kafka_wait_ready, self.base, new, self.log)
        return f"Kafka SIGKILLed, down {time.monotonic() - t_down:.0f} s"

    # webhooks ------------------------------------------------------------------------------

    async def delivered(self, fig: Figures, receiver: Receiver, prefix: str) -> None:
        """Every alert change of the cohort routed to the receiver reached it (at least
        once, signed); waits for the outbox to drain."""
        want, missing = await self.bench.wait_delivered(receiver, prefix, timeout=120)
        fig.webhooks_expected = len(want)
        fig.webhooks_undelivered = len(missing)
        if receiver.bad_signatures:
            fig.notes.append(f"{receiver.bad_signatures} deliveries with a bad signature")
            fig.webhooks_undelivered += receiver.bad_signatures

    def task_failures(self, ph: Phase) -> int:
        """Supervised failures the worker(s) counted (informative: each was retried)."""
        total = 0
        for child in ph.children:
            if not child.name.endswith(("-worker", "-worker2")) or child.proc.poll() is not None:
                continue
            port = self.ports.get(child.name, ph.settings.worker.web_port)
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            for line in text.splitlines():
                if line.startswith("rtm_worker_task_failures_total{"):
                    total += int(float(line.rsplit(" ", 1)[1]))
        return total


def _ids(batch: Sequence[dict[str, Any]]) -> list[str]:
    return [str(e["event_id"]) for e in batch]


def _alert_keys(alerts: Any) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for a in alerts:
        fired = dt.datetime.fromisoformat(str(a["fired_at"]).replace("Z", "+00:00"))
        out[a["id"]] = (a["kind"], a["status"], fired, tuple(a["event_ids"]))
    return out


def run_chaos(settings: Settings, config: ChaosConfig, log: Log) -> dict[str, Any]:
    prepare(settings, log)
    run = Run(settings, config, log)
    results: list[Figures] = []
    t0 = time.monotonic()
    try:
        for name in config.scenarios:
            log(f"--- {name}")
            results.append(asyncio.run(run.scenario(name)))
            log(json.dumps(results[-1].as_dict(), default=str))
    finally:
        run.bench.cleanup()
    return {
        "config": {**asdict(config), "as_of": config.as_of.isoformat()},
        "machine": {
            "cpus": _cpus(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "elapsed_s": round(time.monotonic() - t0, 1),
        "scenarios": [f.as_dict() for f in results],
        "ok": all(f.ok for f in results),
    }


def _cpus() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} x {model}".strip()
