"""The in-band control records (streams/kafka/control.py): typed, one decoder, one tick
fan-out; and the one acknowledgement transition (alerts.models.Alert.acknowledged)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import get_args

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from alerts.models import (
    ALERT_KINDS,
    SEVERITY,
    SEVERITY_RANK,
    STATUS_RANK,
    Alert,
    AlertKind,
    AlertStatus,
    Severity,
)
from schemas.events import DEFAULT_ORG, key_text
from streams.kafka.control import (
    Ack,
    Tick,
    decode,
    partition_of,
    patient_partition,
    send_ticks,
)
from streams.kafka.producer import KeyPartitioner

AT = dt.datetime(2026, 11, 20, 12, 30, tzinfo=dt.UTC)


def test_a_tick_and_an_ack_decode_to_what_was_encoded() -> None:
    assert decode(Tick(AT).encode()) == Tick(AT)
    ack = Ack("a-1", "clinic-a", "p-1", AT, "dr-who")
    assert decode(ack.encode()) == ack
    assert ack.patient_key == ("clinic-a", "p-1")


def test_the_wire_format_is_unchanged() -> None:
    """Records written before (and replays of them) still decode; ticks and acks keep the
    bytes the worker and the gateway wrote."""
    assert Tick(AT).encode() == b'{"rtm_tick":"2026-11-20T12:30:00+00:00"}'
    assert orjson.loads(Ack("a-1", "o", "p", AT, "dr").encode()) == {
        "rtm_ack": {
            "alert_id": "a-1",
            "org_id": "o",
            "patient_id": "p",
            "at": "2026-11-20T12:30:00+00:00",
            "by": "dr",
        }
    }
    # an acknowledgement written before patients were scoped by organisation
    legacy = orjson.dumps(
        {"rtm_ack": {"alert_id": "a", "patient_id": "p", "at": AT.isoformat(), "by": "x"}}
    )
    assert decode(legacy) == Ack("a", DEFAULT_ORG, "p", AT, "x")


def test_an_event_is_not_a_control_record() -> None:
    assert decode(b'{"event_id":"e-1","type":"pain.reported"}') is None
    assert decode(b"not json at all") is None


def test_a_patient_partition_is_its_kafka_keys() -> None:
    key = ("clinic-a", "p-17")
    assert patient_partition(key, 8) == partition_of(key_text(key).encode(), 8)
    assert {patient_partition(("o", f"p{i}"), 4) for i in range(200)} == {0, 1, 2, 3}


def test_the_gateways_partitioner_is_kafkas_default_and_the_workers() -> None:
    """The gateway's producer remembers each key's hash; where a patient's events go must
    stay where aiokafka's (and Kafka's Java client's) default partitioner sends them, and
    where the worker sends that patient's ticks."""
    ours, kafkas = KeyPartitioner(), DefaultPartitioner()
    for n in (1, 3, 8, 12):
        parts = list(range(n))
        for i in range(300):
            key = key_text((f"org-{i % 3}", f"p-{i}")).encode()
            for _ in range(2):  # the second time from the remembered hash
                assert ours(key, parts, parts) == kafkas(key, parts, parts)
                assert ours(key, parts, parts) == partition_of(key, n)
    assert ours(None, [0, 1, 2], [2]) == 2  # no key: one of the available partitions


async def test_send_ticks_writes_one_tick_per_partition_and_waits_for_every_ack() -> None:
    sent: list[tuple[bytes, int]] = []
    acks: list[asyncio.Future[None]] = []

    async def send(value: bytes, partition: int) -> asyncio.Future[None]:
        sent.append((value, partition))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acks.append(fut)
        return fut

    task = asyncio.ensure_future(send_ticks(send, [2, 0, 1], AT))
    await asyncio.sleep(0)
    assert sent == [(Tick(AT).encode(), 2), (Tick(AT).encode(), 0), (Tick(AT).encode(), 1)]
    assert not task.done()  # waiting for the broker's acks
    for fut in acks:
        fut.set_result(None)
    assert await task == 3


# --- the domain's lists and the acknowledgement ---------------------------------------------


def test_the_kind_and_rank_lists_are_the_contracts() -> None:
    assert ALERT_KINDS == get_args(AlertKind) and set(ALERT_KINDS) == set(SEVERITY)
    assert list(STATUS_RANK) == list(get_args(AlertStatus))
    assert sorted(STATUS_RANK.values()) == [0, 1, 2]
    assert list(SEVERITY_RANK) == list(get_args(Severity))  # most urgent first
    assert sorted(SEVERITY_RANK.values()) == [0, 1, 2, 3]


def _alert(**over: object) -> Alert:
    fields: dict[str, object] = {
        "id": "a-1",
        "patient_id": "p-1",
        "episode_id": "ep-1",
        "clinician_id": "c-1",
        "kind": "pain_high",
        "severity": "critical",
        "fired_at": AT - dt.timedelta(hours=1),
    }
    fields.update(over)
    return Alert.model_validate(fields)


def test_an_open_alert_is_acknowledged_by_whom_and_when() -> None:
    acked = _alert().acknowledged(AT, "dr-who")
    assert (acked.status, acked.acknowledged_at, acked.acknowledged_by) == (
        "acknowledged",
        AT,
        "dr-who",
    )
    assert (
        acked.model_copy(
            update={"status": "open", "acknowledged_at": None, "acknowledged_by": None}
        )
        == _alert()
    )


def test_a_resolved_alert_keeps_its_status_and_records_the_acknowledgement() -> None:
    resolved = _alert(status="resolved", resolved_at=AT - dt.timedelta(minutes=5))
    acked = resolved.acknowledged(AT, "dr-who")
    assert (acked.status, acked.acknowledged_at, acked.acknowledged_by) == (
        "resolved",
        AT,
        "dr-who",
    )


def test_the_first_acknowledgement_counts() -> None:
    first = _alert().acknowledged(AT, "dr-who")
    assert first.acknowledged(AT + dt.timedelta(hours=1), "dr-no") is first


def test_an_acknowledgement_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _alert().acknowledged(dt.datetime(2026, 11, 20, 12), "dr-who")
