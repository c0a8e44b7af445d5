"""Faust codec for the contract's pydantic models (pydantic models are not Faust records).

Registered as ``rtm_event``: a topic declared with ``value_serializer="rtm_event"`` yields
validated, frozen events. The worker's own agents take raw bytes and parse with
``parse_event_json`` instead, so that one bad record is dead-lettered, not a crash.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from schemas.events import dump_event, parse_event_json

CODEC_NAME = "rtm_event"


class EventCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return dump_event(obj)

    def _loads(self, s: bytes) -> Any:
        return parse_event_json(s)


def register() -> None:
    codecs.register(CODEC_NAME, EventCodec())
