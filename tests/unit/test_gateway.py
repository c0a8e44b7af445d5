"""The ingest gateway's per-event judgement, with Kafka and the database faked (fast)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from streams.settings import Settings, hash_api_key
from schemas.events import Event
from streams.gateway import create_app

KEY = "unit-test-key"


class FakeProducer:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.dead: list[tuple[bytes | None, bytes]] = []

    async def send_events(self, events: list[Event]) -> None:
        self.events.extend(events)

    async def send_dead(self, records: list[tuple[bytes | None, bytes]]) -> None:
        self.dead.extend(records)

    async def ping(self) -> bool:
        return True


class FakeStore:
    async def known_event_ids(self, ids: list[str]) -> set[str]:
        return set()

    async def ping(self) -> bool:
        return True


def pain(event_id: str, occurred_at: dt.datetime, score: int = 4) -> dict[str, Any]:
    return {"event_id": event_id, "schema_version": 1, "type": "pain.reported",
            "patient_id": "p-1", "occurred_at": occurred_at.isoformat(), "score": score}


@pytest.fixture
def gateway(tmp_path: Path) -> tuple[FastAPI, FakeProducer, CollectorRegistry]:
    settings = Settings(state_dir=tmp_path, api_keys=f"unit={hash_api_key(KEY)}",
                        max_future_skew_s=600.0)
    producer, registry = FakeProducer(), CollectorRegistry()
    app = create_app(settings, producer=producer, store=FakeStore(),  # type: ignore[arg-type]
                     registry=registry)
    return app, producer, registry


async def post(app: FastAPI, events: list[dict[str, Any]]) -> dict[str, Any]:
    # Producer and store are injected: the lifespan has nothing to start.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway") as client:
        resp = await client.post("/v1/events", content=orjson.dumps(events),
                                 headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_future_dated_event_is_rejected_beside_accepted_ones(
    gateway: tuple[FastAPI, FakeProducer, CollectorRegistry],
) -> None:
    app, producer, registry = gateway
    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=-5)))
    batch = [
        pain("good-1", now - dt.timedelta(days=2)),
        pain("future-1", now + dt.timedelta(days=365)),
        pain("near-1", now + dt.timedelta(seconds=300)),  # within the 10 minutes
        pain("future-2", now + dt.timedelta(seconds=700)),
        pain("bad-1", now, score=11),
    ]
    body = await post(app, batch)
    assert body["accepted"] == 2
    assert sorted(e.event_id for e in producer.events) == ["good-1", "near-1"]
    assert all(e.received_at is not None for e in producer.events)
    rejected = {r["index"]: r for r in body["rejected"]}
    assert sorted(rejected) == [1, 3, 4]
    for i in (1, 3):
        assert rejected[i]["event_id"] == batch[i]["event_id"]
        (err,) = rejected[i]["errors"]
        assert err["field"] == "occurred_at"
        assert err["message"].startswith("occurred_at: more than 600 s ahead of received_at")
        assert body["received_at"] in err["message"]
    assert rejected[4]["errors"][0]["field"] == "score"
    dead = [orjson.loads(payload) for _, payload in producer.dead]
    assert [d["event"]["event_id"] for d in dead] == ["future-1", "future-2", "bad-1"]
    assert dead[0]["stage"] == "gateway" and dead[0]["index"] == 1
    assert dead[0]["errors"] == rejected[1]["errors"]
    assert all(key == b"p-1" for key, _ in producer.dead)
    assert registry.get_sample_value(
        "rtm_gateway_events_rejected_total", {"type": "pain.reported"}) == 3.0
