"""The worker's "now" is its process clock (streams.clock.clock_for): ``RTM_CLOCK_NOW``, when
set, is what its ticks carry, what its step measures with and what webhook signatures are
stamped with."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents import delivery
from agents.delivery import Deliverer, Destinations, send_ping, signed_headers
from agents.pipeline import build_step
from streams.clock import FixedClock, SystemClock
from streams.db.pool import Pool
from streams.kafka.app import build_app
from streams.kafka.control import Tick, decode
from streams.settings import Settings

FIXED = dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)


def settings(tmp_path: Path, **over: Any) -> Settings:
    return Settings(state_dir=tmp_path, database_url="postgresql://x:y@127.0.0.1:1/none", **over)


class Events:
    """rtm.events as the Faust topic the clock timer sends to."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int]] = []

    async def send(self, key: Any = None, value: bytes = b"", partition: int = 0) -> Any:
        self.sent.append((value, partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _timer(topology: Any, name: str) -> Any:
    for fn in topology.app._app_tasks:  # Faust's timers and tasks, as it runs them
        while getattr(fn, "__wrapped__", None) is not None:
            fn = fn.__wrapped__
        if fn.__name__ == name:
            return fn
    raise AssertionError(f"no timer {name}")


async def test_the_clock_timer_ticks_every_partition_at_rtm_clock_now(tmp_path: Path) -> None:
    s = settings(tmp_path, clock_now=FIXED, tick_interval_s=60.0, topic_partitions=3)
    topology = build_app(s)
    step = build_step(topology, Pool(s.db.dsn), s)
    events = Events()
    topology.events = events  # type: ignore[misc]
    await _timer(topology, "clock")()
    assert sorted(events.sent, key=lambda r: r[1]) == [(Tick(FIXED).encode(), p) for p in range(3)]
    assert {decode(v) for v, _ in events.sent} == {Tick(FIXED)}
    assert step.clock.now() == FIXED  # the step's latency metrics use the same clock


def test_without_rtm_clock_now_the_worker_reads_the_wall(tmp_path: Path) -> None:
    s = settings(tmp_path)
    step = build_step(build_app(s), Pool(s.db.dsn), s)
    assert isinstance(step.clock, SystemClock)


def test_webhook_signatures_are_stamped_with_the_workers_clock(tmp_path: Path) -> None:
    s = settings(tmp_path, clock_now=FIXED)
    deliverer = Deliverer(Pool(s.db.dsn), s, build_app(s).metrics)
    assert deliverer.clock.now() == FIXED
    headers = signed_headers("s3cret", b"{}", "a1:fired", FixedClock(FIXED))
    assert headers["X-RTM-Timestamp"] == str(int(FIXED.timestamp()))


async def test_a_ping_says_when_it_was_sent_by_the_clock_it_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies: list[dict[str, Any]] = []

    async def post(client: Any, url: str, secret: str, body: bytes, *rest: Any) -> str | None:
        bodies.append(orjson.loads(body))
        return "destination refused"

    monkeypatch.setattr(delivery, "post_signed", post)
    ok = await send_ping("https://h.example/x", "s", 1.0, Destinations(), FixedClock(FIXED))
    assert not ok
    assert [b["sent_at"] for b in bodies] == ["2026-03-01T08:00:00Z"]
