"""The worker stores an event's JSON as it was received (it passed the contract) instead of
serialising the model again: the stored payload reads back as the same event."""

from __future__ import annotations

import orjson

from schemas.events import parse_event_json
from streams.db.events import EVENT_COLUMNS, event_row
from tests.conftest import EventFactory

PAYLOAD = EVENT_COLUMNS.index("payload")


def test_the_received_json_is_the_stored_payload_and_reads_back_as_the_same_event(
    factory: EventFactory,
) -> None:
    p = factory.patient(1)
    doc = {**factory.pain(p, 6, "2026-11-03T10:00:00-06:00"), "org_id": "clinic-a"}
    raw = orjson.dumps({**doc, "episode_id": None})  # an explicit null, as a producer may send
    event = parse_event_json(raw)

    stored = event_row(event, raw)[PAYLOAD]
    assert stored == raw.decode()
    assert parse_event_json(stored) == event


def test_an_event_without_its_received_json_is_serialised_from_the_model(
    factory: EventFactory,
) -> None:
    event = parse_event_json(
        orjson.dumps(factory.pain(factory.patient(2), 3, "2026-11-03T11:00:00-06:00"))
    )
    stored = event_row(event)[PAYLOAD]
    assert "null" not in stored  # absent fields are left out, not written as null
    assert parse_event_json(stored) == event
