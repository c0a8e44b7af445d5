"""Paused programs (docs/alert-rules.md, Paused programs): a fall or a program.paused pauses
the program from its local date, a program.resumed resumes it; on paused days adherence
counts neither sessions nor prescription, adherence_low and inactivity are suspended, and on
resume inactivity's L becomes max(L, resume date); fall stays critical."""

from __future__ import annotations

import datetime as dt
import itertools
from fractions import Fraction
from typing import Any

import pytest

from alerts.adherence import adherence_on, prescribed_on, sessions_by_day
from alerts.models import AlertChange
from alerts.pauses import Hold, compact_holds, fold_pauses
from alerts.rules import local_midnight, on_event, on_tick
from alerts.state import (
    STATE_VERSION,
    PatientState,
    decode_state,
    encode_state,
    new_state,
    state_from_dict,
    state_to_dict,
)
from schemas.episodes import ProgramPause
from schemas.events import Event, validate_event
from streams.access import Principal
from streams.http.pages.patient import program_event, program_states
from tests.unit.test_alert_rules import P, exercise, mk, start, symptom

TZ = "America/Chicago"
NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def at(day: int, hour: int = 10) -> str:
    """An instant on 2026-11-<day> in Chicago (-06:00 in November)."""
    return f"2026-11-{day:02d}T{hour:02d}:00:00-06:00"


def d(day: int) -> dt.date:
    return dt.date(2026, 11, day)


def fall(day: int, eid: str, hour: int = 10, **over: Any) -> Event:
    return mk("symptom.reported", at(day, hour), eid, fall=True, **over)


def paused(day: int, eid: str, hour: int = 10, episode_id: str = "ep-1") -> Event:
    return mk("program.paused", at(day, hour), eid, episode_id=episode_id, clinician_id="c-1")


def resumed(day: int, eid: str, hour: int = 10, episode_id: str = "ep-1") -> Event:
    return mk("program.resumed", at(day, hour), eid, episode_id=episode_id, clinician_id="c-1")


def feed(events: list[Event], state: PatientState | None = None) -> tuple[PatientState, list[Any]]:
    s = state if state is not None else new_state(P)
    out: list[AlertChange] = []
    for e in events:
        s, ch = on_event(s, e)
        out += ch
    return s, out


def pauses_of(s: PatientState, episode_id: str = "ep-1") -> tuple[ProgramPause, ...]:
    return s.book.episodes[episode_id].pauses


def spans(s: PatientState) -> list[tuple[dt.date, dt.date | None, str]]:
    return [(p.start, p.end, p.reason) for p in pauses_of(s)]


def fired(changes: list[AlertChange], kind: str) -> list[AlertChange]:
    return [c for c in changes if c.change == "fired" and c.alert.kind == kind]


# A week of one session a day (7 a week), a fall on the 6th, a session on the 7th while
# paused, resumed on the 12th, then nothing.
HISTORY = [
    start(at(2, 9), spw=7),
    *[exercise(at(day, 18), f"x{day}") for day in (2, 3, 4, 5)],
    fall(6, "fall-1"),
    exercise(at(7, 18), "x7"),
    resumed(12, "resume-1"),
]


# --- the pauses: dates, order, repeats --------------------------------------------------------


def test_pause_date_is_inclusive_and_resume_date_exclusive() -> None:
    s, _ = feed(HISTORY)
    assert spans(s) == [(d(6), d(12), "fall")]
    book = s.book
    ep = book.episodes["ep-1"]
    assert [ep.paused_on(d(day)) for day in (5, 6, 11, 12)] == [False, True, True, False]
    # adherence counts neither the prescription nor the sessions of paused days
    assert prescribed_on(book, d(5)) == Fraction(1)
    assert prescribed_on(book, d(6)) == prescribed_on(book, d(11)) == Fraction(0)
    assert prescribed_on(book, d(12)) == Fraction(1)
    counts = sessions_by_day(s.completions, book)
    assert counts == {d(2): 1, d(3): 1, d(4): 1, d(5): 1}  # not the 7th's, paused
    # the window 6..12 has one unpaused day, the 12th, with no session
    assert adherence_on(counts, book, d(12)) == Fraction(0)
    # 3..9: four prescribed days (3, 4, 5 done), the paused 6..9 count in neither part
    assert adherence_on(counts, book, d(9)) == Fraction(3, 3)
    # all seven days paused: nothing prescribed, undefined
    assert adherence_on(counts, book, d(11), length=5) is None


def test_without_the_fall_the_same_days_count() -> None:
    """The test above can fail: the same history with a fall-free check-in has no pause."""
    history = [e if e.event_id != "fall-1" else symptom(at(6), "fall-1") for e in HISTORY]
    s, _ = feed(history)
    assert pauses_of(s) == ()
    assert prescribed_on(s.book, d(6)) == Fraction(1)
    assert sessions_by_day(s.completions, s.book)[d(7)] == 1


@pytest.mark.parametrize(
    "fall_id,resume_id,expected",
    [
        # same instant: event_id order. The fall first: resumed on its own date, no paused day
        ("h-a", "h-b", [(d(6), d(6), "fall")]),
        # the resume first: nothing to resume, then the fall pauses
        ("h-b", "h-a", [(d(6), None, "fall")]),
    ],
)
def test_holds_at_one_instant_are_taken_in_event_id_order(
    fall_id: str, resume_id: str, expected: list[Any]
) -> None:
    s, _ = feed([start(at(2, 9)), fall(6, fall_id), resumed(6, resume_id)])
    assert spans(s) == expected
    # and in the other arrival order too
    s2, _ = feed([start(at(2, 9)), resumed(6, resume_id), fall(6, fall_id)])
    assert spans(s2) == expected


def test_holds_are_taken_in_occurred_at_order_whatever_the_arrival_order() -> None:
    holds = [
        fall(6, "f1"),
        resumed(8, "r1"),
        paused(10, "p1"),
        fall(11, "f2"),  # while paused: not a new pause
        resumed(13, "r2"),
        resumed(14, "r3"),  # while not paused: nothing
    ]
    expected = [(d(6), d(8), "fall"), (d(10), d(13), "clinician")]
    for order in itertools.permutations(holds):
        s, _ = feed([start(at(2, 9)), *order])
        assert spans(s) == expected, [e.event_id for e in order]


def test_a_second_fall_while_paused_is_not_a_new_pause_and_still_fires_fall() -> None:
    s, ch = feed([start(at(2, 9)), fall(6, "fall-1"), fall(9, "fall-2")])
    (pause,) = pauses_of(s)
    assert (pause.start, pause.end, pause.reason, pause.event_id) == (d(6), None, "fall", "fall-1")
    falls = fired(ch, "fall")
    assert [c.alert.event_ids for c in falls] == [("fall-1",), ("fall-2",)]
    assert {c.alert.severity for c in falls} == {"critical"}  # fall stays critical


def test_a_fall_before_the_episode_pauses_nothing() -> None:
    s, ch = feed([start(at(2, 9)), fall(1, "early-fall")])
    assert pauses_of(s) == ()
    assert len(fired(ch, "fall")) == 1  # still a critical alert, routed to the episode


def test_a_fall_that_arrives_before_its_episode_pauses_it_once_the_episode_arrives() -> None:
    s, ch = feed([fall(6, "fall-1"), start(at(2, 9))])
    assert spans(s) == [(d(6), None, "fall")]
    assert len(fired(ch, "fall")) == 1


def test_a_resume_names_its_episode_and_a_pause_outside_it_counts_for_nothing() -> None:
    s, _ = feed(
        [start(at(2, 9)), paused(6, "p1"), resumed(8, "r-other", episode_id="ep-2")]
    )  # another episode's resume does not resume this one
    assert spans(s) == [(d(6), None, "clinician")]
    s, _ = feed([start(at(2, 9)), paused(1, "p-before")])
    assert pauses_of(s) == ()


# --- the time-driven rules while paused --------------------------------------------------------


def test_inactivity_and_adherence_low_are_suspended_and_restart_from_the_resume() -> None:
    s, _ = feed(HISTORY)
    _, ch = on_tick(s, NOW)
    (inactivity,) = fired(ch, "inactivity")
    # newest data the 7th, resumed the 12th: L = max(L, 12th), fires at the start of L + 4
    assert inactivity.alert.fired_at == local_midnight(d(16), TZ)
    assert inactivity.alert.value == 3
    (low,) = fired(ch, "adherence_low")
    # day ends of the 9th (day 8) to the 11th are paused; the 12th's window has one unpaused
    # day, with no session
    assert low.alert.fired_at == local_midnight(d(13), TZ)
    assert low.alert.value == 0.0


def test_without_the_pause_inactivity_and_adherence_low_fire_earlier() -> None:
    """The counterpart that shows the test above can fail."""
    history = [e for e in HISTORY if e.event_id != "resume-1"]
    history = [e if e.event_id != "fall-1" else symptom(at(6), "fall-1") for e in history]
    s, _ = feed(history)
    _, ch = on_tick(s, NOW)
    assert fired(ch, "inactivity")[0].alert.fired_at == local_midnight(d(11), TZ)
    assert fired(ch, "adherence_low")[0].alert.fired_at == local_midnight(d(11), TZ)


def test_data_after_the_resume_moves_l_past_it() -> None:
    s, _ = feed([*HISTORY, exercise(at(13, 18), "x13")])
    _, ch = on_tick(s, NOW)
    assert fired(ch, "inactivity")[0].alert.fired_at == local_midnight(d(17), TZ)


def test_nothing_time_driven_fires_while_the_program_stays_paused() -> None:
    history = [e for e in HISTORY if e.event_id != "resume-1"]
    s, _ = feed(history)
    s, ch = on_tick(s, NOW)
    assert fired(ch, "inactivity") == [] and fired(ch, "adherence_low") == []
    # resumed later (in event time): the rules pick up from the resume date
    s, _ = feed([resumed(21, "resume-late")], s)
    _, ch = on_tick(s, dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC))
    assert fired(ch, "inactivity")[0].alert.fired_at == local_midnight(d(25), TZ)


def test_ticking_day_by_day_gives_what_one_late_tick_gives() -> None:
    s, _ = feed(HISTORY)
    _, once = on_tick(s, NOW)
    daily: list[AlertChange] = []
    t = dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC)
    while t <= NOW:
        s, ch = on_tick(s, t)
        daily += ch
        t += dt.timedelta(hours=6)
    # the same changes; the escalation ladder's steps (dated fired_at + offset) interleave
    # with the day ends differently when ticks come daily, so only the firings keep order
    assert sorted((c.change, c.alert.id) for c in daily) == sorted(
        (c.change, c.alert.id) for c in once
    )
    fired = [(c.change, c.alert.id) for c in daily if c.change != "escalated"]
    assert fired == [(c.change, c.alert.id) for c in once if c.change != "escalated"]


# --- the contract: scope and per-field errors --------------------------------------------------


def test_pause_and_resume_are_integration_events() -> None:
    app = Principal("key", "k", "org", frozenset({"producer"}))
    ehr = Principal("key", "k", "org", frozenset({"integration"}))
    for t in ("program.paused", "program.resumed"):
        assert t not in app.postable_types() and t in ehr.postable_types()


@pytest.mark.parametrize(
    "etype,fields,field",
    [
        ("program.paused", {"episode_id": "ep-1"}, "clinician_id"),
        ("program.paused", {"clinician_id": "c-1"}, "episode_id"),
        (
            "program.paused",
            {"episode_id": "ep-1", "clinician_id": "c-1", "reason": "x" * 65},
            "reason",
        ),
        ("program.resumed", {"episode_id": "ep-1", "clinician_id": "c 1"}, "clinician_id"),
        (
            "program.resumed",
            {"episode_id": "ep-1", "clinician_id": "c-1", "reason": "ok"},
            "reason",
        ),
    ],
)
def test_bad_pause_and_resume_events_name_the_field(
    etype: str, fields: dict[str, Any], field: str
) -> None:
    result = validate_event(
        {
            "event_id": "e-1",
            "schema_version": 1,
            "type": etype,
            "patient_id": P,
            "occurred_at": at(6),
            **fields,
        }
    )
    assert isinstance(result, list)
    assert [e.field for e in result] == [field]


# --- bounded state ------------------------------------------------------------------------------


def test_the_holds_round_trip_through_the_stored_form() -> None:
    s, _ = feed(
        [
            start(at(2, 9)),
            fall(6, "fall-1"),
            fall(7, "fall-ep", episode_id="ep-1"),
            resumed(12, "resume-1"),
            paused(14, "pause-1"),
        ]
    )
    raw = state_to_dict(s)
    assert raw["v"] == STATE_VERSION == 5
    assert raw["ph"] == [
        ["2026-11-06T10:00:00-06:00", "fall-1", "f"],
        ["2026-11-07T10:00:00-06:00", "fall-ep", "f", "ep-1"],
        ["2026-11-12T10:00:00-06:00", "resume-1", "r", "ep-1"],
        ["2026-11-14T10:00:00-06:00", "pause-1", "p", "ep-1"],
    ]
    back = decode_state(encode_state(s))
    assert back == s
    assert spans(back) == spans(s) == [(d(6), d(12), "fall"), (d(14), None, "clinician")]
    # a state stored before pauses existed decodes with none
    old = {k: v for k, v in raw.items() if k != "ph"} | {"v": 4}
    assert state_from_dict(old).holds == {}


def test_the_holds_stay_bounded_over_a_year_of_falls_and_resumes() -> None:
    s, _ = feed([start("2026-01-02T09:00:00-06:00", spw=7)])
    t = dt.datetime(2026, 1, 5, 10, tzinfo=dt.timezone(dt.timedelta(hours=-6)))
    sizes = []
    for week in range(50):
        day = t + dt.timedelta(weeks=week)
        s, _ = feed(
            [
                mk("symptom.reported", day.isoformat(), f"f{week}", fall=True),
                mk(
                    "symptom.reported",
                    (day + dt.timedelta(days=1)).isoformat(),
                    f"g{week}",
                    fall=True,
                ),
                mk(
                    "program.resumed",
                    (day + dt.timedelta(days=3)).isoformat(),
                    f"r{week}",
                    episode_id="ep-1",
                    clinician_id="c-1",
                ),
            ],
            s,
        )
        s, _ = on_tick(s, day + dt.timedelta(days=6))
        sizes.append(len(s.holds))
    assert max(sizes[10:]) <= 3 * 6 + 2  # about a month of holds, plus the last old pause
    # the recent pauses are what they were with every hold kept
    last = t + dt.timedelta(weeks=49)
    assert pauses_of(s)[-1].start == last.date()
    assert pauses_of(s)[-1].end == (last + dt.timedelta(days=3)).date()


def test_compact_holds_keeps_a_pause_still_running_at_the_cut() -> None:
    s, _ = feed([start(at(2, 9)), fall(3, "f1"), resumed(4, "r1"), fall(5, "f2"), fall(6, "f3")])
    kept = compact_holds(s.holds, s.book, d(10))
    assert set(kept) == {"f2"}  # the pause from the 5th still runs; f3 changed nothing
    assert fold_pauses(s.book, kept.values())["ep-1"][0].start == d(5)
    s, _ = feed([resumed(8, "r2")], s)
    kept = compact_holds(s.holds, s.book, d(10))
    assert set(kept) == {"f2", "r2"}  # the latest pause and its resume date (inactivity's L)
    assert all(isinstance(h, Hold) for h in kept.values())


# --- the patient page's form ----------------------------------------------------------------


def test_the_page_posts_a_resume_only_while_paused_and_a_repeat_is_the_same_event() -> None:
    now = dt.datetime(2026, 11, 9, 15, tzinfo=dt.UTC)
    s, _ = feed([start(at(2, 9)), fall(6, "fall-1")])
    ep = s.book.episodes["ep-1"]
    assert program_states(s.book) == [
        {
            "episode_id": "ep-1",
            "paused": True,
            "since": "2026-11-06",
            "reason": "fall",
            "resumed_on": None,
        }
    ]
    assert program_event(ep, "pause", "c-9", now) is None  # already paused
    event = program_event(ep, "resume", "c-9", now)
    assert event is not None and event == program_event(ep, "resume", "c-9", now)
    assert (event["type"], event["clinician_id"], event["episode_id"]) == (
        "program.resumed",
        "c-9",
        "ep-1",
    )
    assert event["occurred_at"] == "2026-11-09T09:00:00-06:00"  # the episode's local time
    resume = mk(
        event["type"],
        event["occurred_at"],
        event["event_id"],
        episode_id="ep-1",
        clinician_id="c-9",
    )
    s, _ = feed([resume], s)
    assert spans(s) == [(d(6), d(9), "fall")]
    assert program_event(s.book.episodes["ep-1"], "resume", "c-9", now) is None
    again = program_event(s.book.episodes["ep-1"], "pause", "c-9", now)
    assert again is not None and again["type"] == "program.paused"
