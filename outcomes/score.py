"""``rtm assessments score`` (docs/pathways-and-outcomes.md, Offline commands), pure: the
assessment events of a JSONL file in, one object per assessment out, sorted by event_id:
``{"event_id", "patient_id", "instrument", "score", "valid", "reason"}`` (the score rounded
half away from zero to one decimal, null when invalid). Events at or after as-of are
ignored; a resent event_id counts once (the first arrival wins)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

from outcomes.instruments import round_1, score_form
from schemas.events import AssessmentCompleted, Event


def score_rows(
    events: Iterable[Event], as_of: dt.datetime | None = None
) -> list[dict[str, object]]:
    """The scored assessments of ``events`` (any order), sorted by (event_id, patient_id)."""
    if as_of is not None and (as_of.tzinfo is None or as_of.utcoffset() is None):
        raise ValueError("as_of must be timezone-aware")
    first: dict[tuple[str, str], AssessmentCompleted] = {}
    for event in events:
        if not isinstance(event, AssessmentCompleted):
            continue
        if as_of is not None and event.occurred_at >= as_of:
            continue
        first.setdefault((event.patient_key[0], event.event_id), event)
    rows: list[dict[str, object]] = []
    for (_, event_id), e in sorted(first.items(), key=lambda kv: (kv[0][1], kv[1].patient_id)):
        scored = score_form(e.instrument, e.answers)
        rows.append(
            {
                "event_id": event_id,
                "patient_id": e.patient_id,
                "instrument": e.instrument,
                "score": round_1(scored.score) if scored.score is not None else None,
                "valid": scored.valid,
                "reason": scored.reason,
            }
        )
    return rows


def render(row: dict[str, object]) -> str:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False)
