"""What the worker reads off rtm.events, and the in-band control records: ticks, acks and
snoozes.

A ``Record`` is one consumed record (value, partition, Kafka timestamp): the step's input.

A tick is written to every partition, so it is ordered with the events of that
partition: "evaluate the time-driven rules as of `now`, after everything before me".
That makes the streamed alerts equal the offline ones for the same events and "now", and a
replay of the topic replays the ticks. An acknowledgement is keyed by patient (``<org>/<patient
id>``, as the patient's events) so that it reaches the partition holding its alert state; it
names the organisation (a record without one, written before, is DEFAULT_ORG's), and
carries the disposition and note (absent in records written before: None). A snooze is
keyed and ordered the same way.

``Tick``, ``Ack`` and ``Snooze`` encode themselves; ``decode`` is the one decoder (None: not
a control record, i.e. an event); ``send_ticks`` is the one tick fan-out (the worker's timer
and the CLI's producer both call it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import orjson
from aiokafka.partitioner import murmur2

from alerts.models import DISPOSITIONS, Disposition
from schemas.events import DEFAULT_ORG, PatientKey, key_text

TICK_PREFIX = b'{"rtm_tick"'
ACK_PREFIX = b'{"rtm_ack"'
SNOOZE_PREFIX = b'{"rtm_snooze"'


class Record(NamedTuple):
    """One record consumed from rtm.events (a tuple: one is built per record, in the hot
    loop)."""

    value: bytes
    partition: int
    timestamp: float | None = None  # Kafka's record time, in seconds since the epoch


@dataclass(frozen=True, slots=True)
class Tick:
    """'Evaluate the time-driven rules as of ``now``' (for every patient of the partition
    it is read from)."""

    now: dt.datetime

    def encode(self) -> bytes:
        return orjson.dumps({"rtm_tick": self.now.isoformat()})


@dataclass(frozen=True, slots=True)
class Ack:
    """A clinician's acknowledgement of one alert, for the rules (its cool-down)."""

    alert_id: str
    org_id: str
    patient_id: str
    at: dt.datetime
    by: str
    disposition: Disposition | None = None
    note: str | None = None

    @property
    def patient_key(self) -> PatientKey:
        return (self.org_id, self.patient_id)

    def encode(self) -> bytes:
        ack: dict[str, str] = {
            "alert_id": self.alert_id,
            "org_id": self.org_id,
            "patient_id": self.patient_id,
            "at": self.at.isoformat(),
            "by": self.by,
        }
        if self.disposition is not None:
            ack["disposition"] = self.disposition
        if self.note is not None:
            ack["note"] = self.note
        return orjson.dumps({"rtm_ack": ack})


@dataclass(frozen=True, slots=True)
class Snooze:
    """A clinician's snooze of one open alert, from ``at`` until ``until``."""

    alert_id: str
    org_id: str
    patient_id: str
    at: dt.datetime
    by: str
    until: dt.datetime
    reason: str

    @property
    def patient_key(self) -> PatientKey:
        return (self.org_id, self.patient_id)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "rtm_snooze": {
                    "alert_id": self.alert_id,
                    "org_id": self.org_id,
                    "patient_id": self.patient_id,
                    "at": self.at.isoformat(),
                    "by": self.by,
                    "until": self.until.isoformat(),
                    "reason": self.reason,
                }
            }
        )


def decode(raw: bytes) -> Tick | Ack | Snooze | None:
    """The control record ``raw`` holds, or None when it is not one (an event)."""
    if raw.startswith(TICK_PREFIX):
        return Tick(dt.datetime.fromisoformat(orjson.loads(raw)["rtm_tick"]))
    if raw.startswith(ACK_PREFIX):
        data = orjson.loads(raw)["rtm_ack"]
        disposition = data.get("disposition")
        return Ack(
            alert_id=data["alert_id"],
            org_id=data.get("org_id", DEFAULT_ORG),
            patient_id=data["patient_id"],
            at=dt.datetime.fromisoformat(data["at"]),
            by=data["by"],
            disposition=disposition if disposition in DISPOSITIONS else None,
            note=data.get("note"),
        )
    if raw.startswith(SNOOZE_PREFIX):
        data = orjson.loads(raw)["rtm_snooze"]
        return Snooze(
            alert_id=data["alert_id"],
            org_id=data["org_id"],
            patient_id=data["patient_id"],
            at=dt.datetime.fromisoformat(data["at"]),
            by=data["by"],
            until=dt.datetime.fromisoformat(data["until"]),
            reason=data["reason"],
        )
    return None


@functools.lru_cache(maxsize=1 << 18)
def key_hash(key: bytes) -> int:
    """The (positive) murmur2 hash Kafka's default partitioner takes of a record key,
    remembered: a patient's key is hashed once, not once per event (pure-Python murmur2 was
    8 % of the gateway's CPU, docs/benchmarks.md, sixth round). 2^18 keys: about 40 MB at
    most, a health system's active patients of a day."""
    return int(murmur2(key) & 0x7FFFFFFF)


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (the gateway's producer uses the same: ``KeyPartitioner``
    in streams/kafka/producer.py)."""
    return key_hash(key) % partitions


def patient_partition(key: PatientKey, partitions: int) -> int:
    """The rtm.events partition of a patient: the one its Kafka key ``<org>/<patient>``
    hashes to (and so the one whose ticks reach its state)."""
    return partition_of(key_text(key).encode(), partitions)


# (value, partition) -> what the client's send returns: an awaitable of the broker's ack
SendTo = Callable[[bytes, int], Awaitable[Awaitable[object]]]


async def send_ticks(send: SendTo, partitions: Iterable[int], now: dt.datetime) -> int:
    """A tick at ``now`` on each of ``partitions``, waiting for every ack; how many."""
    value = Tick(now).encode()
    acks = [await send(value, p) for p in partitions]
    await asyncio.gather(*acks)
    return len(acks)
