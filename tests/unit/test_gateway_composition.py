"""How the gateway is put together (streams/http/app.py, streams/http/deps.py): the parts
a test injects (a FixedClock included) are the ones the routes use, the lifespan opens
only what was not injected, and the HTTP room keeps its shape (create_app composes; only
deps.py reads the application's state)."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

import streams.http
from streams.access import Principal
from streams.clock import FixedClock, SystemClock
from streams.http import deps
from streams.http.app import create_app
from streams.http.auth import remembered
from streams.http.deps import Deps, Gateway
from streams.http.pages.common import elapsed
from streams.http.pages.worklist import pain_text
from streams.settings import Settings
from tests.unit.test_gateway import KEY, FakeProducer, FakeStore, _as_app_key, pain

HTTP_DIR = Path(streams.http.__file__).parent
NOW = dt.datetime(2027, 1, 15, 9, 30, tzinfo=dt.UTC)


# --- the injected clock ---------------------------------------------------------------------


async def test_received_at_and_the_future_skew_come_from_the_injected_clock(
    tmp_path: Path,
) -> None:
    clock, producer = FixedClock(NOW), FakeProducer()
    app = create_app(
        Settings(state_dir=tmp_path, max_future_skew_s=600.0),
        Deps(
            producer=producer,
            store=FakeStore(),  # type: ignore[arg-type]
            registry=CollectorRegistry(),
            authenticate=_as_app_key,
            clock=clock,
        ),
    )
    batch = [
        pain("near", NOW + dt.timedelta(minutes=9)),  # ahead of the clock, within 600 s
        pain("far", NOW + dt.timedelta(minutes=11)),  # beyond it: refused
    ]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        first = await client.post(
            "/v1/events", content=orjson.dumps(batch), headers={"Authorization": f"Bearer {KEY}"}
        )
        clock.advance(dt.timedelta(minutes=5))  # now "far" is within the skew
        second = await client.post(
            "/v1/events",
            content=orjson.dumps(batch[1:]),
            headers={"Authorization": f"Bearer {KEY}"},
        )
    body = first.json()
    assert body["received_at"] == NOW.isoformat()
    assert body["accepted"] == 1 and [r["event_id"] for r in body["rejected"]] == ["far"]
    assert second.json()["accepted"] == 1
    assert second.json()["received_at"] == (NOW + dt.timedelta(minutes=5)).isoformat()
    assert [e.received_at for e in producer.events] == [NOW, NOW + dt.timedelta(minutes=5)]


def test_the_gateway_clock_is_the_settings_clock_unless_injected(tmp_path: Path) -> None:
    fixed = Settings(state_dir=tmp_path, clock_now=NOW)
    assert Gateway(fixed, Deps()).clock.now() == NOW  # RTM_CLOCK_NOW
    assert isinstance(Gateway(Settings(state_dir=tmp_path), Deps()).clock, SystemClock)
    injected = FixedClock(NOW - dt.timedelta(days=1))
    assert Gateway(fixed, Deps(clock=injected)).clock is injected


# --- the lifespan ---------------------------------------------------------------------------


class _Part:
    opened: list[str] = []
    closed: list[str] = []


class _KafkaProducer(FakeProducer):
    def __init__(self, settings: Settings) -> None:
        super().__init__()

    async def start(self) -> None:
        _Part.opened.append("producer")

    async def stop(self) -> None:
        _Part.closed.append("producer")


class _Store(FakeStore):
    @classmethod
    async def connect(cls, dsn: str, max_size: int = 5) -> _Store:
        _Part.opened.append(f"store max_size={max_size}")
        return cls()

    async def close(self) -> None:
        _Part.closed.append("store")


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch) -> type[_Part]:
    monkeypatch.setattr(deps, "EventProducer", _KafkaProducer)
    monkeypatch.setattr(deps, "EventStore", _Store)
    monkeypatch.setattr(_Part, "opened", [])
    monkeypatch.setattr(_Part, "closed", [])
    return _Part


async def test_the_lifespan_opens_and_closes_what_was_not_injected(
    tmp_path: Path, parts: type[_Part]
) -> None:
    app = create_app(Settings(state_dir=tmp_path), Deps(registry=CollectorRegistry()))
    async with app.router.lifespan_context(app):
        assert parts.opened == ["producer", "store max_size=10"]
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True, "kafka": "ok", "database": "ok"}
        assert parts.closed == []
    assert parts.closed == ["producer", "store"]


async def test_the_lifespan_leaves_injected_parts_alone(tmp_path: Path, parts: type[_Part]) -> None:
    producer = _KafkaProducer(Settings(state_dir=tmp_path))
    app = create_app(Settings(state_dir=tmp_path), Deps(producer=producer))
    async with app.router.lifespan_context(app):
        assert parts.opened == ["store max_size=10"]
    assert parts.closed == ["store"]


def test_a_part_asked_for_before_the_lifespan_ran_says_so(tmp_path: Path) -> None:
    gateway = Gateway(Settings(state_dir=tmp_path), Deps())
    for part in ("store", "producer"):
        with pytest.raises(RuntimeError, match="lifespan"):
            getattr(gateway, part)


def test_the_denial_audit_reads_only_a_remembered_principal() -> None:
    who = Principal("user", "ann", "org-a", frozenset({"clinician"}))
    assert remembered({"type": "http", "state": {"principal": who}}) is who
    assert remembered({"type": "http", "state": {"principal": "ann"}}) is None
    assert remembered({"type": "http"}) is None


# --- the pages' relative times --------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "waiting", "last_activity"),
    [
        (None, "—", "no activity"),
        (dt.timedelta(minutes=-5), "0 min", "within the hour"),  # a clock a little ahead
        (dt.timedelta(seconds=59), "0 min", "within the hour"),
        (dt.timedelta(minutes=59, seconds=59), "59 min", "within the hour"),
        (dt.timedelta(hours=1), "1 h", "1 h ago"),
        (dt.timedelta(hours=47, minutes=59), "47 h", "47 h ago"),
        (dt.timedelta(hours=48), "2 days", "2 days ago"),
        (dt.timedelta(days=33, hours=23), "33 days", "33 days ago"),
    ],
)
def test_one_relative_time_helper_says_waiting_and_last_activity(
    delta: dt.timedelta | None, waiting: str, last_activity: str
) -> None:
    at = None if delta is None else NOW - delta
    assert elapsed(at, NOW, absent="—") == waiting
    assert (
        elapsed(at, NOW, absent="no activity", within_hour="within the hour", suffix=" ago")
        == last_activity
    )


# --- the room's shape -----------------------------------------------------------------------


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_create_app_only_composes() -> None:
    tree = ast.parse((HTTP_DIR / "app.py").read_text())
    (create,) = [f for f in _functions(tree) if f.name == "create_app"]
    assert create.end_lineno is not None and create.end_lineno - create.lineno + 1 <= 80
    assert _functions(create) == [create]  # no closures
    assert not [n for n in ast.walk(create) if isinstance(n, ast.Import | ast.ImportFrom)]


def _reads_app_state(node: Any) -> bool:
    """``<x>.app.state`` or ``app.state`` read (not assigned)."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "state"
        and isinstance(node.ctx, ast.Load)
        and (
            (isinstance(node.value, ast.Name) and node.value.id == "app")
            or (isinstance(node.value, ast.Attribute) and node.value.attr == "app")
        )
    )


def test_only_deps_reads_the_application_state() -> None:
    readers = {}
    for path in sorted(HTTP_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text())
        lines = sorted(
            n.lineno
            for n in ast.walk(tree)
            if _reads_app_state(n)
            # app.state.gateway = ... in app.py is the one write
            and not any(
                isinstance(a, ast.Assign)
                and any(isinstance(t, ast.Attribute) and t.value is n for t in a.targets)
                for a in ast.walk(tree)
            )
        )
        if lines:
            readers[str(path.relative_to(HTTP_DIR))] = lines
    assert list(readers) == ["deps.py"], readers


def test_pain_trend_counts_from_the_mcid() -> None:
    """Issue 17: '9/10, falling' after six weeks of 9-10 misled; a change counts from 2."""

    def text(latest: int | None, baseline: float | None) -> str:
        return pain_text({"latest_pain": latest, "pain_baseline": baseline})

    assert text(9, 10) == "9/10, steady (baseline 10)"
    assert text(8, 10) == "8/10, falling (baseline 10)"
    assert text(7, 5) == "7/10, rising (baseline 5)"
    assert text(6, 5.5) == "6/10, steady (baseline 5.5)"
    assert text(4, None) == "4/10" and text(None, None) == "—"
