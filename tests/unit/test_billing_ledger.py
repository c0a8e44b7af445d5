"""The ledger rows rebuild exactly the offline fold's states (pure, no database)."""

from __future__ import annotations

import datetime as dt
import random

import orjson

from billing.evaluate import fold_jsonl
from billing.ledger import (
    ledger_rows,
    state_differences,
    states_from_rows,
)
from billing.rules import compute_claims
from billing.state import fold_events
from rtm.simulate import simulate
from schemas.events import validate_event

AS_OF = dt.datetime(2026, 12, 15, tzinfo=dt.UTC)


def _events(patients: int = 12, days: int = 75) -> list:
    out = []
    for obj in simulate(patients, days, seed=3):
        ev = validate_event(obj)
        if not isinstance(ev, list):
            out.append(ev)
    return out


def _as_records(rows) -> tuple[list[dict], list[dict], list[dict]]:
    days = [
        dict(
            zip(
                ("org_id", "patient_id", "local_date", "episode_id", "first_event_id"),
                r,
                strict=True,
            )
        )
        for r in rows.data_days
    ]
    logs = [
        dict(
            zip(
                (
                    "org_id",
                    "event_id",
                    "patient_id",
                    "episode_id",
                    "local_date",
                    "occurred_at",
                    "utc_offset_s",
                    "minutes",
                    "clinician_role",
                    "interactive",
                    "supersedes",
                ),
                r,
                strict=True,
            )
        )
        for r in rows.time_logs
    ]
    # the database hands occurred_at back in UTC and the payload as jsonb text
    for r in logs:
        r["occurred_at"] = r["occurred_at"].astimezone(dt.UTC)
    eps = [
        {
            "org_id": r[0],
            "event_id": r[1],
            "patient_id": r[2],
            "payload": orjson.dumps(orjson.loads(r[6])).decode(),
        }
        for r in rows.episode_events
    ]
    return days, logs, eps


def test_rows_rebuild_the_offline_fold_in_any_batching_and_order() -> None:
    events = _events()
    lines = [
        orjson.dumps(validate_event_obj)
        for validate_event_obj in (e.model_dump(mode="json", exclude_none=True) for e in events)
    ]
    offline, errors = fold_jsonl(lines)
    assert not errors
    shuffled = events[:] + events[: len(events) // 3]  # re-deliveries
    random.Random(5).shuffle(shuffled)
    all_rows = [ledger_rows(shuffled[i : i + 97]) for i in range(0, len(shuffled), 97)]
    days, logs, eps = [], [], []
    for rows in all_rows:
        d, lg, ep = _as_records(rows)
        days += d
        logs += lg
        eps += ep
    # the database keeps one row per key (first wins; all copies are equal here)
    uniq_days = {(r["org_id"], r["patient_id"], r["local_date"], r["episode_id"]): r for r in days}
    uniq_logs = {(r["org_id"], r["event_id"]): r for r in logs}
    uniq_eps = {(r["org_id"], r["event_id"]): r for r in eps}
    ledger = states_from_rows(uniq_days.values(), uniq_logs.values(), uniq_eps.values())
    assert ledger.keys() == offline.keys()
    for pid in offline:
        assert state_differences(offline[pid], ledger[pid]) == []
        # field by field: BaseModel.__eq__ also compares the cached episode book
        for name in ("patient_id", "data_dates", "time_logs", "episode_events"):
            assert getattr(ledger[pid], name) == getattr(offline[pid], name)
    assert compute_claims(ledger.values(), AS_OF, include_open=True) == compute_claims(
        offline.values(), AS_OF, include_open=True
    )


def test_received_at_is_not_part_of_the_ledger() -> None:
    events = _events(3, 20)
    stamped = [e.model_copy(update={"received_at": AS_OF}) for e in events]
    assert fold_events(stamped) == fold_events(events)
    rows = ledger_rows(stamped)
    assert all(b"received_at" not in r[6].encode() for r in rows.episode_events)


def test_state_differences_name_what_is_missing() -> None:
    events = _events(2, 20)
    full = fold_events(events)
    pid = sorted(full)[0]
    partial = full[pid].model_copy(deep=True)
    day = sorted(partial.data_dates, key=lambda k: (k[0], k[1] or ""))[0]
    partial.data_dates.discard(day)
    diffs = state_differences(full[pid], partial)
    assert diffs == [f"data day {day[0]} (episode {day[1] or '-'}) missing from the ledger"]


def test_a_batchs_rows_are_one_per_fact_of_the_one_fold() -> None:
    events = _events(4, 30)
    rows = ledger_rows(events)
    assert ledger_rows([e for e in events for _ in (0, 1)]) == rows  # a re-sent event adds none
    folded = fold_events(events).values()
    assert len(rows.data_days) == sum(len(st.data_dates) for st in folded)
    assert len(rows.time_logs) == sum(len(st.time_logs) for st in folded)
    assert len(rows.episode_events) == sum(len(st.episode_events) for st in folded)
    assert rows.time_logs and rows.episode_events
