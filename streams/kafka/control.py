"""In-band control records on rtm.events: timer ticks and acknowledgements.

A tick is written to every partition, so it is ordered with the events of that
partition: "evaluate the time-driven rules as of `now`, after everything before me".
That makes the streamed alerts equal the offline ones for the same events and "now", and a
replay of the topic replays the ticks. An acknowledgement is keyed by patient (``<org>/<patient
id>``, as the patient's events) so that it reaches the partition holding its alert state; it
names the organisation (a record without one, written before, is DEFAULT_ORG's).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

TICK_PREFIX = b'{"rtm_tick"'
ACK_PREFIX = b'{"rtm_ack"'


def tick(now: dt.datetime) -> bytes:
    return orjson.dumps({"rtm_tick": now.isoformat()})


def ack(alert_id: str, org_id: str, patient_id: str, at: dt.datetime, by: str) -> bytes:
    return orjson.dumps(
        {
            "rtm_ack": {
                "alert_id": alert_id,
                "org_id": org_id,
                "patient_id": patient_id,
                "at": at.isoformat(),
                "by": by,
            }
        }
    )


def parse(raw: bytes) -> tuple[str, Any]:
    """('tick', now) or ('ack', dict)."""
    obj = orjson.loads(raw)
    if "rtm_tick" in obj:
        return "tick", dt.datetime.fromisoformat(obj["rtm_tick"])
    data = obj["rtm_ack"]
    data["at"] = dt.datetime.fromisoformat(data["at"])
    return "ack", data
