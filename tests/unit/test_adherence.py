"""Adherence: sessions, prescribed, trailing 7-local-day ratio; order/duplicate independence."""

from __future__ import annotations

import datetime as dt
import io
import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from alerts.adherence import AdherenceRow, daily_rows, sessions_by_day
from alerts.evaluate import run_adherence_evaluate
from alerts.rules import on_event
from alerts.state import PatientState, new_state
from schemas.events import EVENT_ADAPTER, Event

P = "p-1"
BILLING = {
    "rendering_npi": "1234567893",
    "billing_npi": "1234567893",
    "payer": "medicare",
    "member_id": "M-1",
    "diagnosis_codes": ["M54.50"],
    "place_of_service": "11",
}


def mk(type_: str, at: str, eid: str, **fields: Any) -> Event:
    obj = {
        "event_id": eid,
        "schema_version": 1,
        "type": type_,
        "patient_id": P,
        "occurred_at": at,
        **fields,
    }
    return EVENT_ADAPTER.validate_python(obj)


def start(at: str = "2026-11-02T09:00:00-06:00", spw: int = 7) -> Event:
    return mk(
        "episode.started",
        at,
        "start",
        episode_id="ep-1",
        clinician_id="c-1",
        clinician_role="PT",
        timezone="America/Chicago",
        program={"sessions_per_week": spw},
        billing=BILLING,
    )


def program(at: str, spw: int, eid: str = "prog") -> Event:
    return mk("program.updated", at, eid, episode_id="ep-1", program={"sessions_per_week": spw})


def ex(at: str, eid: str, session_id: str | None = None) -> Event:
    extra = {"session_id": session_id} if session_id else {}
    return mk("exercise.completed", at, eid, exercise_id="bridge", **extra)


def fold(events: list[Event]) -> PatientState:
    s = new_state(P)
    for e in events:
        s, _ = on_event(s, e)
    return s


def rows(events: list[Event], last: str = "2026-11-12") -> list[AdherenceRow]:
    s = fold(events)
    return daily_rows(P, s.completions, s.book, dt.date.fromisoformat(last))


def by_date(rs: list[AdherenceRow]) -> dict[str, AdherenceRow]:
    return {r.date.isoformat(): r for r in rs}


@pytest.mark.parametrize(
    "completions,expected",
    [
        ([("10:00", None), ("11:00", None)], 1),  # no session_id: one per date
        ([("10:00", "s1"), ("11:00", "s1")], 1),  # same session
        ([("10:00", "s1"), ("11:00", "s2")], 2),  # distinct sessions
        ([("10:00", "s1"), ("11:00", None), ("12:00", None)], 2),  # ids + the anonymous one
    ],
)
def test_completed_sessions(completions: list[tuple[str, str | None]], expected: int) -> None:
    evs = [ex(f"2026-11-03T{t}:00-06:00", f"x{i}", sid) for i, (t, sid) in enumerate(completions)]
    assert by_date(rows([start(), *evs]))["2026-11-03"].completed == expected


def test_local_date_and_session_across_midnight() -> None:
    evs = [
        ex("2026-11-03T23:30:00-06:00", "a", "s1"),  # 11-04 in UTC, 11-03 locally
        ex("2026-11-04T00:10:00-06:00", "b", "s1"),  # same sitting after midnight
        ex("2026-11-04T23:30:00-06:00", "c"),
    ]
    r = by_date(rows([start(), *evs]))
    assert (r["2026-11-03"].completed, r["2026-11-04"].completed) == (1, 1)


def test_trailing_window_prorated_before_day_7_then_capped() -> None:
    evs = [
        ex(f"2026-11-0{d}T10:00:00-06:00", f"x{d}{k}", f"s{d}{k}") for d in (2, 3) for k in range(3)
    ]
    r = by_date(rows([start(spw=7), *evs]))
    assert r["2026-11-02"].prescribed == Fraction(1) and r["2026-11-02"].adherence_7d == 1
    assert r["2026-11-08"].adherence_7d == Fraction(6, 7)
    assert r["2026-11-09"].adherence_7d == Fraction(3, 7)  # 11-02 left the window


def test_program_updated_takes_effect_from_its_local_date() -> None:
    evs = [start(spw=7), program("2026-11-05T23:30:00-06:00", 0)]  # 11-06 in UTC
    r = by_date(rows(evs))
    assert r["2026-11-05"].prescribed == 0 and r["2026-11-04"].prescribed == 1
    assert r["2026-11-05"].adherence_7d == 0  # 3 days prescribed
    assert r["2026-11-11"].adherence_7d is None  # nothing prescribed


def test_outside_episode_not_counted_and_csv_format() -> None:
    evs = [
        ex("2026-11-01T10:00:00-06:00", "before"),
        start(spw=5),
        ex("2026-11-02T10:00:00-06:00", "x"),
    ]
    r = rows(evs, last="2026-11-03")
    assert [x.csv() for x in r] == [
        "p-1,2026-11-02,0.7143,1,1.0000",
        "p-1,2026-11-03,0.7143,0,0.7000",
    ]


def test_late_duplicate_out_of_order_give_identical_rows() -> None:
    events = [
        start(spw=5),
        program("2026-11-06T08:00:00-06:00", 3, "prog1"),
        *(
            ex(f"2026-11-{d:02d}T{h:02d}:00:00-06:00", f"x{d}{h}", f"s{d}" if h != 23 else None)
            for d in range(2, 12)
            for h in (9, 10, 23)
            if (d * h) % 4
        ),
    ]
    reference = rows(events)
    rng = random.Random(7)
    for _ in range(20):
        shuffled = events + rng.sample(events, 5)  # duplicates
        rng.shuffle(shuffled)  # late and out of order
        assert rows(shuffled) == reference
    s = fold(events)
    assert sessions_by_day(s.completions, s.book) == sessions_by_day(
        fold(list(reversed(events))).completions, s.book
    )


def test_run_adherence_evaluate_skips_invalid_lines(tmp_path: Path) -> None:
    f = tmp_path / "e.jsonl"
    good = [start(spw=7), ex("2026-11-02T10:00:00-06:00", "x")]
    lines = [e.model_dump_json(exclude_none=True) for e in good]
    f.write_text("\n".join([lines[0], "{not json", '{"type": "pain.reported"}', "", lines[1]]))
    out, err = io.StringIO(), io.StringIO()
    assert run_adherence_evaluate(f, out, err=err) == 1
    assert out.getvalue().splitlines() == [
        "patient_id,date,prescribed,completed,adherence_7d",
        "p-1,2026-11-02,1.0000,1,1.0000",
    ]
    assert ":2: skipped: invalid JSON" in err.getvalue() and ":3: skipped:" in err.getvalue()
