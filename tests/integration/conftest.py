"""Integration setup: the real Kafka and TimescaleDB (started here if not running), and a
worker plus gateway per test on their own topics, consumer group and ports."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from rtm.devstack import (
    DEV_USERS_FILE,
    Child,
    ensure_dev_key,
    prepare,
    start_gateway,
    start_worker,
)
from streams.db.pool import migrate
from streams.db.refresh import pending as refresh_pending
from streams.kafka.topics import ensure_topics
from streams.kafka.transport import kafka_client_kwargs
from streams.settings import Settings

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    settings = Settings()
    prepare(settings, log=lambda m: print(m))
    return settings


def isolated_settings(base: Settings, partitions: int = 4) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return base.but(
        {
            "topic_events": f"it.{tag}.events",
            "topic_dead": f"it.{tag}.dead",
            "topic_alerts": f"it.{tag}.alerts",
            "topic_partitions": partitions,
            "app_id": f"it-{tag}",
            "api_port": free_port(),
            "worker_web_port": free_port(),
            # the tests' webhook receivers listen on loopback (refused by default)
            "webhook_allow_networks": "127.0.0.1/32",
        }
    )


@dataclass
class Stack:
    settings: Settings
    key: str
    workers: list[Child] = field(default_factory=list)
    gateway: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.gateway.host}:{self.settings.gateway.port}"

    def start_worker(self, **over: Any) -> Child:
        settings = self.settings.but(over) if over else self.settings
        child = start_worker(settings, name=f"{settings.worker.app_id}-w{len(self.workers)}")
        self.workers.append(child)
        return child

    def user_headers(self, username: str = "admin") -> dict[str, str]:
        """Cookie and CSRF headers of a signed-in dev user (`rtm up` provisions them in
        RTM_ENV=dev; passwords in <state dir>/dev-users.json). The session cookie is Secure,
        which httpx keeps for https only, so it is sent by hand."""
        from streams.access import CSRF_HEADER, SESSION_COOKIE

        users = json.loads((self.settings.state_dir / DEV_USERS_FILE).read_text())
        resp = httpx.post(
            f"{self.url}/v1/session",
            timeout=30,
            json={"username": username, "password": users[username]["password"]},
        )
        resp.raise_for_status()
        return {
            "Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}",
            CSRF_HEADER: resp.json()["csrf_token"],
        }

    def post(
        self, events: list[Any], key: str | None = "default", content: bytes | None = None
    ) -> httpx.Response:
        headers = {}
        if key is not None:
            headers["Authorization"] = f"Bearer {self.key if key == 'default' else key}"
        body = content if content is not None else orjson.dumps(events)
        return httpx.post(f"{self.url}/v1/events", content=body, headers=headers, timeout=30)


def run_in_thread(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def running_stack(base: Settings, **over: Any) -> Iterator[Stack]:
    """A worker and a gateway on their own topics, consumer group and ports."""
    settings = isolated_settings(base)
    if over:
        settings = settings.but(over)
    run_in_thread(ensure_topics(settings))
    s = Stack(settings=settings, key=ensure_dev_key(settings))
    try:
        s.start_worker()
        s.gateway = start_gateway(settings)
        yield s
    finally:
        for child in [s.gateway, *s.workers]:
            if child is not None:
                child.stop()


@pytest_asyncio.fixture
async def qdsn(base_settings: Settings) -> AsyncIterator[str]:
    """The app's DSN on a schema of its own, migrated."""
    schema = "it_schema_" + uuid.uuid4().hex[:8]
    owner = await asyncpg.connect(base_settings.db.owner_dsn)
    await owner.execute(f"CREATE SCHEMA {schema}")
    path = f"?search_path={schema}%2Cpublic"
    await migrate(base_settings.db.owner_dsn.split("?")[0] + path, base_settings.db.app_role)
    try:
        yield base_settings.db.dsn.split("?")[0] + path
    finally:
        await owner.execute(f"DROP SCHEMA {schema} CASCADE")
        await owner.close()


@pytest.fixture
def stack(base_settings: Settings) -> Iterator[Stack]:
    with running_stack(base_settings) as s:
        yield s


@pytest_asyncio.fixture
async def db(base_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(base_settings.db.dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Poll an async predicate until true; fail with a message after the timeout."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.25)


async def refreshed(settings: Settings, org_id: str | None = None) -> bool:
    """No patient (of ``org_id``) is left for the worker's refresh: the claim lines'
    readiness and the outcome rows are as of their latest events."""
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        return await refresh_pending(conn, org_id) == 0
    finally:
        await conn.close()


async def read_topic(
    settings: Settings, topic: str, expect: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Read a topic from the beginning until `expect` records arrived (or time out)."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_kwargs(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(orjson.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


async def end_offsets(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings))
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        offsets = await consumer.end_offsets(tps)
        return int(sum(offsets.values()))
    finally:
        await consumer.stop()


async def stored_then_tick(
    db: asyncpg.Connection, settings: Settings, prefix: str, n_ids: int, now: Any, timeout: float
) -> None:
    """Wait until the `n_ids` events whose ids start with `prefix` are stored, then tick
    every partition at `now` (the time-driven rules' catch-up, as the worker's clock would)."""
    from streams.kafka.producer import EventProducer

    async def stored() -> bool:
        n = await db.fetchval("SELECT count(*) FROM event_ids WHERE event_id LIKE $1", prefix + "%")
        return bool(n >= n_ids)

    await wait_for(stored, timeout=timeout, what="cohort stored")
    producer = EventProducer(settings)
    await producer.start()
    try:
        await producer.send_ticks(now)
    finally:
        await producer.stop()


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (Linux: /proc), children first."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    """Running (a zombie left for its parent to reap counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
