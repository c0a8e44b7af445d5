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

from schemas.events import Event
from streams.access import Principal
from streams.http.app import create_app
from streams.http.deps import Deps
from streams.settings import Settings

KEY = "unit-test-key"
APP_KEY = Principal("key", "unitkey", "org-a", frozenset({"producer"}))


async def _as_app_key(request: Any) -> Principal | None:
    """The real Authenticator looks keys up in the database (integration-tested); here the
    request with the test key is a patient-app key of org-a."""
    ok = request.headers.get("authorization") == f"Bearer {KEY}"
    return APP_KEY if ok else None


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
    async def known_event_ids(self, org_id: str, ids: list[str]) -> set[str]:
        return set()

    async def ping(self) -> bool:
        return True


def pain(event_id: str, occurred_at: dt.datetime, score: int = 4) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "schema_version": 1,
        "type": "pain.reported",
        "patient_id": "p-1",
        "occurred_at": occurred_at.isoformat(),
        "score": score,
    }


@pytest.fixture
def gateway(tmp_path: Path) -> tuple[FastAPI, FakeProducer, CollectorRegistry]:
    settings = Settings(state_dir=tmp_path, max_future_skew_s=600.0)
    producer, registry = FakeProducer(), CollectorRegistry()
    app = create_app(
        settings,
        Deps(
            producer=producer,
            store=FakeStore(),  # type: ignore[arg-type]
            registry=registry,
            authenticate=_as_app_key,
        ),
    )
    return app, producer, registry


async def post(app: FastAPI, events: list[dict[str, Any]]) -> dict[str, Any]:
    # Producer and store are injected: the lifespan has nothing to start.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        resp = await client.post(
            "/v1/events", content=orjson.dumps(events), headers={"Authorization": f"Bearer {KEY}"}
        )
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
    assert all(key == b"org-a/p-1" for key, _ in producer.dead)  # <org>/<patient>
    assert (
        registry.get_sample_value("rtm_gateway_events_rejected_total", {"type": "pain.reported"})
        == 3.0
    )


async def test_events_are_stamped_with_the_keys_organisation_whatever_the_producer_says(
    gateway: tuple[FastAPI, FakeProducer, CollectorRegistry],
) -> None:
    app, producer, _ = gateway
    now = dt.datetime.now(dt.UTC)
    early = (now - dt.timedelta(days=3)).isoformat()
    body = await post(
        app,
        [
            pain("own-1", now),
            {**pain("claim-1", now), "org_id": "org-b"},
            {**pain("late-1", now), "received_at": early},
            {**pain("bad-org-1", now), "org_id": "org b!"},  # validated as sent: refused
        ],
    )
    assert body["accepted"] == 3
    assert [e.org_id for e in producer.events] == ["org-a", "org-a", "org-a"]
    stamp = dt.datetime.fromisoformat(body["received_at"])
    assert [e.received_at for e in producer.events] == [stamp, stamp, stamp]
    (rejected,) = body["rejected"]
    assert rejected["index"] == 3 and rejected["errors"][0]["field"] == "org_id"


async def test_a_patient_app_key_cannot_post_clinician_time_and_nothing_of_the_batch_goes(
    gateway: tuple[FastAPI, FakeProducer, CollectorRegistry],
) -> None:
    app, producer, _ = gateway
    now = dt.datetime.now(dt.UTC)
    time_log = {
        "event_id": "t-1",
        "schema_version": 1,
        "type": "clinician.time_logged",
        "patient_id": "p-1",
        "occurred_at": now.isoformat(),
        "clinician_id": "c-1",
        "clinician_role": "PT",
        "minutes": 240,
        "activity": "call",
        "interactive": True,
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        resp = await client.post(
            "/v1/events",
            content=orjson.dumps([pain("ok-1", now), time_log]),
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert resp.status_code == 403
        assert "clinician.time_logged" in resp.json()["error"]
        anonymous = await client.post("/v1/events", content=orjson.dumps([pain("ok-2", now)]))
        assert anonymous.status_code == 401
    assert producer.events == [] and producer.dead == []


async def test_an_item_nested_too_deep_to_re_encode_is_dead_lettered_and_the_batch_goes_on(
    gateway: tuple[FastAPI, FakeProducer, CollectorRegistry],
) -> None:
    app, producer, _ = gateway
    now = dt.datetime.now(dt.UTC)
    deep = "[" * 600 + '"x"' + "]" * 600  # orjson re-encodes at most 255 levels
    content = (
        "["
        + orjson.dumps(pain("ok-deep", now)).decode()
        + ',{"type":"pain.reported","extra":'
        + deep
        + "}]"
    ).encode()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        resp = await client.post(
            "/v1/events", content=content, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["accepted"] == 1 and [r["index"] for r in body["rejected"]] == [1]
    (record,) = [orjson.loads(v) for _, v in producer.dead]
    assert record["event"] is None and record["event_text"].startswith('{"type":"pain.reported"')
    assert record["event_text"].count("[") == 600


class UnavailableProducer(FakeProducer):
    """Kafka away: the producer's batch expires (aiokafka), or the ack never comes."""

    def __init__(self, hang: bool) -> None:
        super().__init__()
        self.hang = hang

    async def send_events(self, events: list[Event]) -> None:
        import asyncio

        from aiokafka.errors import KafkaTimeoutError

        if self.hang:
            await asyncio.sleep(3600)
        raise KafkaTimeoutError("Batch for TopicPartition(rtm.events, 0) expired")


@pytest.mark.parametrize("hang", [False, True], ids=["kafka-error", "no-ack-in-time"])
async def test_kafka_unavailable_is_503_with_retry_after_never_200(
    tmp_path: Path, hang: bool
) -> None:
    settings = Settings(state_dir=tmp_path, produce_timeout_s=0.5)
    app = create_app(
        settings,
        Deps(
            producer=UnavailableProducer(hang),
            store=FakeStore(),  # type: ignore[arg-type]
            registry=CollectorRegistry(),
            authenticate=_as_app_key,
        ),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        resp = await client.post(
            "/v1/events",
            content=orjson.dumps([pain("kafka-away", dt.datetime.now(dt.UTC))]),
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert resp.status_code == 503, resp.text
        assert resp.headers["retry-after"].isdigit()
        assert "Kafka unavailable" in resp.json()["error"]
        text = (await client.get("/metrics")).text
    assert "rtm_gateway_produce_failures_total 1.0" in text


async def test_another_organisations_event_ids_are_neither_duplicates_nor_told(
    tmp_path: Path,
) -> None:
    """Event ids are unique per organisation: an id org-b stored is new for org-a's key,
    and the duplicate check asks only about org-a's ids."""

    class OrgStore(FakeStore):
        def __init__(self) -> None:
            self.stored = {("org-b", "e-1"), ("org-a", "e-2")}
            self.asked: list[str] = []

        async def known_event_ids(self, org_id: str, ids: list[str]) -> set[str]:
            self.asked.append(org_id)
            return {i for i in ids if (org_id, i) in self.stored}

    producer, store = FakeProducer(), OrgStore()
    app = create_app(
        Settings(state_dir=tmp_path),
        Deps(
            producer=producer,
            store=store,  # type: ignore[arg-type]
            registry=CollectorRegistry(),
            authenticate=_as_app_key,
        ),
    )
    now = dt.datetime.now(dt.UTC)
    body = await post(app, [pain("e-1", now), pain("e-2", now)])
    assert body["accepted"] == 1 and body["duplicates"] == [{"index": 1, "event_id": "e-2"}]
    assert [e.event_id for e in producer.events] == ["e-1"] and store.asked == ["org-a"]
