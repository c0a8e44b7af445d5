"""Risk rules of design/alert-rules.md, table-driven over the pure engine (no services)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from collections.abc import Iterable
from typing import Any

import pytest

from alerts.models import DEFAULT_CONFIG, AlertChange, AlertConfig, alert_id
from alerts.rules import _latest_episode, _resolve, acknowledge, local_midnight, on_event, on_tick
from alerts.state import (
    PastEpisode,
    PatientState,
    decode_state,
    encode_state,
    new_state,
    state_from_dict,
    state_to_dict,
)
from schemas.events import DEFAULT_ORG, EVENT_ADAPTER, Event

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


def start(
    at: str = "2026-11-02T09:00:00-06:00",
    tz: str = "America/Chicago",
    spw: int = 5,
    eid: str = "start",
    episode_id: str = "ep-1",
) -> Event:
    return mk(
        "episode.started",
        at,
        eid,
        episode_id=episode_id,
        clinician_id="c-1",
        clinician_role="PT",
        timezone=tz,
        program={"sessions_per_week": spw},
        billing=BILLING,
    )


def pain(at: str, eid: str, score: int) -> Event:
    return mk("pain.reported", at, eid, score=score)


def symptom(at: str, eid: str, red_flags: tuple[str, ...] = (), fall: bool = False) -> Event:
    return mk("symptom.reported", at, eid, red_flags=list(red_flags), fall=fall)


def exercise(at: str, eid: str, session_id: str | None = None) -> Event:
    extra = {"session_id": session_id} if session_id else {}
    return mk("exercise.completed", at, eid, exercise_id="bridge", **extra)


def ended(at: str, eid: str = "end", episode_id: str = "ep-1") -> Event:
    return mk("episode.ended", at, eid, episode_id=episode_id)


def feed(
    events: Iterable[Event], state: PatientState | None = None, config: AlertConfig = DEFAULT_CONFIG
) -> tuple[PatientState, list[AlertChange]]:
    s = state if state is not None else new_state(P)
    out: list[AlertChange] = []
    for e in events:
        s, ch = on_event(s, e, config)
        out += ch
    return s, out


def fired(changes: list[AlertChange], kind: str | None = None) -> list[AlertChange]:
    return [c for c in changes if c.change == "fired" and (kind is None or c.alert.kind == kind)]


def ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


def history(changes: list[AlertChange]) -> dict[str, Any]:
    """What a consumer of the changes sees: each alert's latest snapshot, in firing order
    (resolved alerts leave the bounded state, not the history)."""
    out: dict[str, Any] = {}
    for c in changes:
        out[c.alert.id] = c.alert
    return out


# --- pain_high / pain_increase edges ------------------------------------------------------


@pytest.mark.parametrize("score,fires", [(6, False), (7, True), (10, True)])
def test_pain_high_threshold_edge(score: int, fires: bool) -> None:
    _, ch = feed([start(), pain("2026-11-03T10:00:00-06:00", "p", score)])
    assert bool(fired(ch, "pain_high")) is fires
    if fires:
        a = fired(ch, "pain_high")[0].alert
        assert (a.severity, a.value, a.threshold, a.event_ids) == ("critical", score, 7, ("p",))
        assert (a.episode_id, a.clinician_id, a.status) == ("ep-1", "c-1", "open")
        assert a.fired_at == ts("2026-11-03T10:00:00-06:00")


@pytest.mark.parametrize(
    "baseline_scores,score,fires,threshold",
    [
        ([3, 3], 5, True, 5.0),  # exactly +2 fires
        ([3, 3], 4, False, None),  # +1 does not
        ([2, 3], 4, False, None),  # even count: median 2.5, needs 4.5
        ([2, 3], 5, True, 4.5),
        ([9, 1, 2], 4, True, 4.0),  # median 2, not mean 4
    ],
)
def test_pain_increase_median_baseline(
    baseline_scores: list[int], score: int, fires: bool, threshold: float | None
) -> None:
    prior = [
        pain(f"2026-11-0{3 + i}T10:00:00-06:00", f"b{i}", s) for i, s in enumerate(baseline_scores)
    ]
    _, ch = feed([start(), *prior, pain("2026-11-08T10:00:00-06:00", "new", score)])
    got = fired(ch, "pain_increase")
    assert bool(got) is fires
    if fires:
        assert got[0].alert.threshold == threshold and got[0].alert.event_ids == ("new",)
        assert got[0].alert.severity == "high"


@pytest.mark.parametrize(
    "prior",
    [
        [],  # no reports at all
        [("2026-11-05T10:00:00-06:00", 1)],  # one report
        [("2026-11-05T10:00:00-06:00", 1), ("2026-11-12T08:00:00-06:00", 1)],  # 2nd same day
        [("2026-11-04T10:00:00-06:00", 1), ("2026-11-05T10:00:00-06:00", 1)],  # 1st is d-8
    ],
)
def test_pain_increase_needs_two_reports_in_d7_to_d1(prior: list[tuple[str, int]]) -> None:
    events = [start(), *(pain(at, f"b{i}", s) for i, (at, s) in enumerate(prior))]
    _, ch = feed([*events, pain("2026-11-12T10:00:00-06:00", "new", 6)])
    assert not fired(ch, "pain_increase")


def test_pain_increase_fewer_than_two_neither_fires_nor_resolves() -> None:
    base = [
        start(),
        pain("2026-11-03T10:00:00-06:00", "a", 2),
        pain("2026-11-04T10:00:00-06:00", "b", 2),
        pain("2026-11-05T10:00:00-06:00", "c", 6),
    ]  # 6 >= 2+2: fires
    s, ch = feed(base)
    assert len(fired(ch, "pain_increase")) == 1
    # 2026-11-20: window 11-13..11-19 is empty, so the low score cannot resolve it.
    s, ch = feed([pain("2026-11-20T10:00:00-06:00", "d", 1)], s)
    assert [a.status for a in s.alerts.values() if a.kind == "pain_increase"] == ["open"]


def test_local_date_not_utc_for_baseline() -> None:
    # 23:30 at -06:00 on 11-02 is 11-03 in UTC; by local date it is outside 11-03..11-09.
    events = [
        start("2026-11-01T09:00:00-06:00"),
        pain("2026-11-02T23:30:00-06:00", "late-evening", 3),
        pain("2026-11-05T10:00:00-06:00", "b", 3),
        pain("2026-11-10T10:00:00-06:00", "new", 5),
    ]
    _, ch = feed(events)
    assert not fired(ch, "pain_increase")  # only one report in the local window


# --- late reports, duplicates, newest decides ----------------------------------------------


def test_late_report_older_than_newest_changes_no_pain_state_but_counts_in_baseline() -> None:
    s, ch = feed(
        [
            start(),
            pain("2026-11-05T10:00:00-06:00", "newest", 3),
            pain("2026-11-04T10:00:00-06:00", "late-high", 9),
        ]
    )
    assert not fired(ch)  # 9 is older than the newest report: no pain_high
    s, ch = feed([pain("2026-11-06T10:00:00-06:00", "n2", 8)], s)
    # The late 9 is in the baseline: median(3, 9) = 6, so 8 is an increase (without it
    # there would be a single report and no baseline at all).
    assert {c.alert.kind: c.alert.threshold for c in fired(ch)} == {
        "pain_high": 7,
        "pain_increase": 8.0,
    }
    # a late low report resolves neither
    s, ch = feed([pain("2026-11-05T12:00:00-06:00", "late-low", 0)], s)
    assert ch == [] and {a.status for a in s.alerts.values()} == {"open"}


def test_duplicates_are_ignored() -> None:
    ev = pain("2026-11-03T10:00:00-06:00", "p", 8)
    s, ch = feed([start(), ev])
    s2, ch2 = feed([ev, start()], s)
    assert len(fired(ch)) == 1 and ch2 == [] and s2 == s


def test_replay_into_fresh_state_gives_same_ids() -> None:
    events = [
        start(),
        pain("2026-11-03T10:00:00-06:00", "p", 8),
        symptom("2026-11-03T11:00:00-06:00", "s", ("fever",), fall=True),
    ]
    _, a = feed(events)
    _, b = feed(events)
    assert [c.alert.id for c in a] == [c.alert.id for c in b]
    assert a[0].alert.id == alert_id(P, "pain_high", "p")


# --- one open per kind, cool-down, auto-resolve, always-fire ------------------------------


def test_one_open_alert_per_kind_and_auto_resolve_with_clearing_event() -> None:
    s, ch = feed(
        [
            start(),
            pain("2026-11-03T10:00:00-06:00", "a", 8),
            pain("2026-11-03T12:00:00-06:00", "b", 9),
        ]
    )
    assert len(fired(ch, "pain_high")) == 1
    s, ch = feed([pain("2026-11-03T14:00:00-06:00", "c", 6)], s)
    assert [(c.change, c.alert.resolved_by_event_id) for c in ch] == [("resolved", "c")]
    assert ch[0].alert.resolved_at == ts("2026-11-03T14:00:00-06:00")
    s, ch = feed([pain("2026-11-03T16:00:00-06:00", "d", 7)], s)  # fires again: no ack
    assert len(fired(ch, "pain_high")) == 1


@pytest.mark.parametrize("hours_after_ack,fires", [(23.9, False), (24, True)])
def test_cooldown_after_acknowledgement(hours_after_ack: float, fires: bool) -> None:
    s, ch = feed([start(), pain("2026-11-03T10:00:00-06:00", "a", 8)])
    aid = ch[0].alert.id
    ack_at = ts("2026-11-03T11:00:00-06:00")
    s, ack = acknowledge(s, aid, ack_at, "c-1")
    assert ack[0].alert.status == "acknowledged" and ack[0].alert.acknowledged_by == "c-1"
    s, ch = feed([pain("2026-11-03T12:00:00-06:00", "b", 2)], s)  # clears: resolved
    assert ch[0].change == "resolved"
    later = (ack_at + dt.timedelta(hours=hours_after_ack)).isoformat()
    s, ch = feed([pain(later, "c", 9)], s)
    assert bool(fired(ch, "pain_high")) is fires


def test_acknowledge_is_idempotent_and_unknown_id_raises() -> None:
    s, ch = feed([start(), pain("2026-11-03T10:00:00-06:00", "a", 8)])
    at = ts("2026-11-03T11:00:00Z")
    s1, c1 = acknowledge(s, ch[0].alert.id, at, "c-1")
    s2, c2 = acknowledge(s1, ch[0].alert.id, at + dt.timedelta(hours=1), "c-2")
    assert len(c1) == 1 and c2 == [] and s2 == s1
    assert s.alerts[ch[0].alert.id].status == "open"  # input state untouched
    with pytest.raises(KeyError):
        acknowledge(s, "nope", at, "c-1")


def test_red_flags_and_falls_always_fire_and_only_ack_closes_them() -> None:
    s, ch = feed([start(), symptom("2026-11-03T10:00:00-06:00", "s1", ("fever",), fall=True)])
    assert sorted(c.alert.kind for c in fired(ch)) == ["fall", "red_flag"]
    red = next(c.alert for c in ch if c.alert.kind == "red_flag")
    assert red.details == ("fever",) and red.severity == "critical"
    s, _ = acknowledge(s, red.id, ts("2026-11-03T11:00:00-06:00"), "c-1")
    s, ch = feed(
        [
            symptom("2026-11-03T12:00:00-06:00", "s2", ("saddle_anesthesia",)),
            symptom("2026-11-03T13:00:00-06:00", "s3", (), fall=True),
            symptom("2026-11-03T14:00:00-06:00", "s4"),
        ],
        s,
    )  # empty: check-in
    assert [c.alert.kind for c in fired(ch)] == ["red_flag", "fall"]  # no cool-down
    assert all(a.status != "resolved" for a in s.alerts.values())


def test_no_episode_no_pain_alert_but_red_flag_goes_to_latest_episode() -> None:
    s, ch = feed([pain("2026-11-01T10:00:00-06:00", "early", 9)])
    assert ch == []
    s, ch = feed(
        [
            start(),
            ended("2026-11-10T10:00:00-06:00"),
            symptom("2026-11-12T10:00:00-06:00", "after", ("fever",)),
        ],
        s,
    )
    assert [(c.alert.kind, c.alert.episode_id) for c in fired(ch)] == [("red_flag", "ep-1")]


# --- time-driven: inactivity ----------------------------------------------------------------


@pytest.mark.parametrize(
    "now,fires",
    [
        ("2026-11-08T23:59:59-06:00", False),  # 11-06, 11-07 full; 11-08 still running
        ("2026-11-09T00:00:00-06:00", True),  # 3 full days 11-06..11-08 passed: L + 4
    ],
)
def test_inactivity_three_vs_four_days(now: str, fires: bool) -> None:
    s, _ = feed([start(), exercise("2026-11-05T10:00:00-06:00", "x")])
    s, ch = on_tick(s, ts(now))
    got = fired(ch, "inactivity")
    assert bool(got) is fires
    if fires:
        a = got[0].alert
        assert a.fired_at == ts("2026-11-09T00:00:00-06:00") and a.event_ids == ()
        assert (a.value, a.threshold, a.severity) == (3, 3, "medium")


def test_inactivity_from_episode_start_and_across_dst() -> None:
    # America/Chicago leaves DST on 2026-11-01: start Oct 29, L+4 = Nov 2 00:00 CST = 06:00Z.
    s, _ = feed([start("2026-10-29T09:00:00-05:00")])
    s, ch = on_tick(s, ts("2026-11-02T05:59:00Z"))  # 23:59 CST on Nov 1
    assert ch == []
    s, ch = on_tick(s, ts("2026-11-02T06:00:00Z"))
    assert fired(ch, "inactivity")[0].alert.fired_at == ts("2026-11-02T00:00:00-06:00")


def test_tick_is_idempotent_and_inactivity_fires_once_per_gap() -> None:
    s, _ = feed([start(), exercise("2026-11-05T10:00:00-06:00", "x")])
    now = ts("2026-11-09T08:00:00-06:00")
    s, ch1 = on_tick(s, now)
    s2, ch2 = on_tick(s, now)
    _, ch3 = on_tick(s2, now + dt.timedelta(days=2))
    assert len(fired(ch1, "inactivity")) == 1 and ch2 == [] and s2 == s
    assert not fired(ch3, "inactivity")  # still the same gap: no second alert


def test_inactivity_resolved_by_patient_data_then_new_gap_fires_again() -> None:
    s, _ = feed([start(), exercise("2026-11-05T10:00:00-06:00", "x")])
    s, ch = on_tick(s, ts("2026-11-09T08:00:00-06:00"))
    s, ch = feed([symptom("2026-11-09T09:00:00-06:00", "checkin")], s)
    assert [(c.change, c.alert.resolved_by_event_id) for c in ch] == [("resolved", "checkin")]
    s, ch = on_tick(s, ts("2026-11-13T00:00:00-06:00"))
    assert fired(ch, "inactivity")[0].alert.fired_at == ts("2026-11-13T00:00:00-06:00")


def test_catch_up_tick_agrees_with_a_timer_that_ran_all_along() -> None:
    events = [
        start(spw=3),
        exercise("2026-11-03T10:00:00-06:00", "x1"),
        pain("2026-11-08T10:00:00-06:00", "p1", 2),  # gap 11-04..11-07
        exercise("2026-11-09T10:00:00-06:00", "x2", "s1"),
        exercise("2026-11-10T10:00:00-06:00", "x3", "s2"),
    ]
    as_of = ts("2026-11-20T12:00:00-06:00")
    # Streaming with on-time arrival: a tick every hour, events as they occur.
    live = new_state(P)
    clock = ts("2026-11-02T09:00:00-06:00")
    pending = list(events)
    live_ch: list[AlertChange] = []
    while clock <= as_of:
        while pending and pending[0].occurred_at <= clock:
            live, ch = on_event(live, pending.pop(0))
            live_ch += ch
        live, ch = on_tick(live, clock)
        live_ch += ch
        clock += dt.timedelta(hours=1)
    live, ch = on_tick(live, as_of)
    live_ch += ch
    # Offline: all events, then one tick.
    offline, off_ch = feed(events)
    offline, ch = on_tick(offline, as_of)
    off_ch += ch
    assert live.alerts == offline.alerts
    assert history(live_ch) == history(off_ch)
    kinds = [(a.kind, a.status) for a in history(off_ch).values()]
    assert ("inactivity", "resolved") in kinds and ("adherence_low", "open") in kinds


# --- time-driven: adherence_low -------------------------------------------------------------


@pytest.mark.parametrize(
    "spw,sessions,fires",
    [
        (4, 2, False),  # exactly 50% is not low
        (4, 1, True),
        (7, 3, True),  # 3/7 < 50%
        (7, 4, False),
        (0, 0, False),
    ],  # nothing prescribed: never low
)
def test_adherence_low_threshold_edge(spw: int, sessions: int, fires: bool) -> None:
    ex = [exercise(f"2026-11-0{3 + i}T10:00:00-06:00", f"x{i}") for i in range(sessions)]
    s, _ = feed([start(spw=spw), *ex])
    s, ch = on_tick(s, ts("2026-11-10T00:00:00-06:00"))  # end of day 8 (11-09)
    got = fired(ch, "adherence_low")
    assert bool(got) is fires
    if fires:
        a = got[0].alert
        assert a.fired_at == ts("2026-11-10T00:00:00-06:00") and a.threshold == 0.5
        assert a.value == round(sessions / spw, 4) and a.event_ids == ()


def test_adherence_low_only_from_day_8_and_resolves_at_a_day_end() -> None:
    s, _ = feed([start(spw=7)])
    s, ch = on_tick(s, ts("2026-11-09T00:00:00-06:00"))  # end of day 7: not evaluated
    assert not fired(ch, "adherence_low")
    s, ch = on_tick(s, ts("2026-11-10T00:00:00-06:00"))  # end of day 8
    assert len(fired(ch, "adherence_low")) == 1
    ex = [exercise(f"2026-11-10T{10 + i}:00:00-06:00", f"x{i}", f"s{i}") for i in range(4)]
    s, ch = feed(ex, s)
    assert not [c for c in ch if c.alert.kind == "adherence_low"]  # decided at day end
    s, ch = on_tick(s, ts("2026-11-11T00:00:00-06:00"))
    res = [c for c in ch if c.change == "resolved" and c.alert.kind == "adherence_low"]
    assert res and res[0].alert.resolved_at == ts("2026-11-11T00:00:00-06:00")


def test_episode_end_resolves_course_alerts_and_stops_ticks() -> None:
    s, _ = feed([start(spw=7)])
    s, ch = on_tick(s, ts("2026-11-10T00:00:00-06:00"))
    assert {c.alert.kind for c in fired(ch)} == {"inactivity", "adherence_low"}
    s, ch = feed([ended("2026-11-10T09:00:00-06:00")], s)
    assert sorted(c.alert.kind for c in ch if c.change == "resolved") == [
        "adherence_low",
        "inactivity",
    ]
    s, ch = on_tick(s, ts("2026-12-31T00:00:00-06:00"))
    assert ch == []


def test_thresholds_and_cooldown_are_configuration() -> None:
    cfg = AlertConfig(pain_high_threshold=8, inactivity_days=2, cooldown=dt.timedelta(hours=1))
    s, ch = feed([start(), pain("2026-11-03T10:00:00-06:00", "a", 7)], config=cfg)
    assert not fired(ch, "pain_high")
    s, ch = feed([pain("2026-11-03T11:00:00-06:00", "b", 8)], s, cfg)
    s, _ = acknowledge(s, ch[0].alert.id, ts("2026-11-03T11:30:00-06:00"), "c-1")
    s, _ = feed([pain("2026-11-03T12:00:00-06:00", "c", 1)], s, cfg)
    s, ch = feed([pain("2026-11-03T12:31:00-06:00", "d", 9)], s, cfg)  # cool-down of 1 h over
    assert len(fired(ch, "pain_high")) == 1
    s, ch = on_tick(s, ts("2026-11-06T00:00:00-06:00"), cfg)  # L = 11-03, 2 full days
    assert fired(ch, "inactivity")[0].alert.threshold == 2
    with pytest.raises(ValueError):
        AlertConfig(pain_high_threshold=11)


# --- state serialisation --------------------------------------------------------------------


def test_state_round_trips_through_json_and_continues_identically() -> None:
    s, _ = feed(
        [
            start(),
            pain("2026-11-03T23:30:00-06:00", "a", 3),
            pain("2026-11-04T10:00:00-06:00", "b", 3),
            exercise("2026-11-04T10:00:00-06:00", "x", "s1"),
            symptom("2026-11-04T11:00:00-06:00", "s", ("fever",)),
        ]
    )
    s, _ = on_tick(s, ts("2026-11-09T12:00:00Z"))
    restored = state_from_dict(json.loads(json.dumps(state_to_dict(s))))
    assert restored == s
    nxt = [pain("2026-11-10T10:00:00-06:00", "c", 8)]
    before = state_to_dict(s)
    a, ca = feed(nxt, s)
    assert state_to_dict(s) == before  # pure: the input state is never modified
    b, cb = feed(nxt, restored)
    assert ca == cb and a == b
    # the patient-local date survives the round trip (offset kept)
    assert restored.pain["a"].local_date == dt.date(2026, 11, 3)


def test_stored_instants_are_written_as_isoformat_writes_them() -> None:
    """The stored form leaves instants to orjson: each one must read back as the string
    ``isoformat()`` gives (the patient's offset kept, microseconds only when there are
    any), or states stored before and after would differ for the same facts."""
    s, _ = feed(
        [
            start(),
            pain("2026-11-03T23:30:00.000250-06:00", "a", 3),
            pain("2026-11-04T10:00:00+05:30", "b", 9),
            exercise("2026-11-04T10:00:00.5-06:00", "x", "s1"),
        ]
    )
    stored = json.loads(encode_state(s))
    assert [at for _, at, _ in stored["pn"]] == [r.occurred_at.isoformat() for r in s.pain.values()]
    assert [at for at, *_ in stored["c"]] == [
        c.occurred_at.isoformat() for c in s.completions.values()
    ]
    assert "2026-11-03T23:30:00.000250-06:00" in [at for _, at, _ in stored["pn"]]
    assert "2026-11-04T10:00:00+05:30" in [at for _, at, _ in stored["pn"]]
    assert state_from_dict(stored) == s


def test_an_alert_changed_after_decoding_is_stored_as_it_is_now() -> None:
    """Each encoding keeps the stored form of the alerts and episode events it wrote (and a
    decoding the forms it read) while the state holds the same objects: a changed alert
    (a new object) must be written as it is now, and the bytes must be those of a state
    that kept no forms."""
    s, ch = feed([start(), pain("2026-11-03T10:00:00-06:00", "a", 9)])
    (alert,) = [c.alert for c in fired(ch, "pain_high")]
    stored = encode_state(s)
    decoded = decode_state(stored)
    assert encode_state(decoded) == stored
    acked, _ = acknowledge(decoded, alert.id, ts("2026-11-03T11:00:00-06:00"), "c-1")
    again = encode_state(acked)
    assert again != stored
    assert again == encode_state(dataclasses.replace(acked, _forms={}))
    assert decode_state(again) == acked
    assert decode_state(again).alerts[alert.id].acknowledged_by == "c-1"
    assert encode_state(s) == stored  # the state it came from still writes what it did


def test_event_for_another_patient_is_refused() -> None:
    with pytest.raises(ValueError):
        on_event(new_state("p-2"), pain("2026-11-03T10:00:00-06:00", "a", 3))


# --- time-driven: billing_at_risk -------------------------------------------------------------
# Episode start 2026-11-02 (Chicago, CST all along): period 1 = 11-02..12-01,
# period 2 = 12-02..12-31, period 3 = 2027-01-01..01-30.


def day_end(day: str, tz: str = "America/Chicago") -> dt.datetime:
    """The boundary ending local ``day``: 00:00 of the next day."""
    return local_midnight(dt.date.fromisoformat(day) + dt.timedelta(days=1), tz)


def data_on(days: Iterable[str], prefix: str = "d") -> list[Event]:
    return [exercise(f"{d}T10:00:00-06:00", f"{prefix}{d}") for d in days]


def dates(first: str, n: int) -> list[str]:
    d0 = dt.date.fromisoformat(first)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range(n)]


def billing_changes(changes: list[AlertChange]) -> list[AlertChange]:
    return [c for c in changes if c.alert.kind == "billing_at_risk"]


def period_alert_id(k: int, episode_id: str = "ep-1") -> str:
    return alert_id(P, "billing_at_risk", f"{episode_id}:period-{k}")


@pytest.mark.parametrize(
    "data_days,day,value",
    [
        ([], "2026-11-15", None),  # 0 + 16 days left: still reachable
        ([], "2026-11-16", 15),  # 0 + 15: exactly out of reach
        (dates("2026-11-02", 5), "2026-11-20", None),  # 5 + 11 = 16
        (dates("2026-11-02", 5), "2026-11-21", 15),  # 5 + 10 = 15
        (dates("2026-11-02", 15), "2026-11-30", None),  # 15 + 1 = 16
        # 15 data days and none on the last date: the end of 12-01 is the period's end,
        # 98977 is already lost and nothing can be done: no alert there (it would resolve
        # at the instant it fired).
        (dates("2026-11-02", 15), "2026-12-01", None),
        (dates("2026-11-02", 16), "2026-12-01", None),  # reached
    ],
)
def test_billing_at_risk_at_a_day_end(data_days: list[str], day: str, value: int | None) -> None:
    s, _ = feed([start(), *data_on(data_days)])
    s, ch = on_tick(s, day_end(day) - dt.timedelta(seconds=1))  # catches up to the day before
    assert not fired(ch, "billing_at_risk")
    s, ch = on_tick(s, day_end(day))
    got = fired(ch, "billing_at_risk")
    assert [c.alert.value for c in got] == ([] if value is None else [value])
    if value is not None:
        a = got[0].alert
        assert a.id == period_alert_id(1) and a.fired_at == day_end(day)
        assert (a.threshold, a.severity, a.status, a.event_ids) == (16, "low", "open", ())
        assert (a.episode_id, a.clinician_id) == ("ep-1", "c-1")
        # Once per period: the rest of the period's day ends add nothing.
        s, ch = on_tick(s, day_end("2026-11-30"))
        assert billing_changes(ch) == []


def test_billing_at_risk_resolves_at_the_period_end_and_next_period_fires_separately() -> None:
    s, _ = feed([start()])
    s, ch = on_tick(s, day_end("2026-12-01") - dt.timedelta(seconds=1))
    [first] = fired(ch, "billing_at_risk")
    assert first.alert.fired_at == day_end("2026-11-16")
    s, ch = on_tick(s, day_end("2026-12-01"))  # period 1 is over
    [res] = billing_changes(ch)
    assert res.change == "resolved" and res.alert.id == period_alert_id(1)
    assert res.alert.resolved_at == ts("2026-12-02T00:00:00-06:00")
    assert res.alert.resolved_by_event_id is None
    s, ch = on_tick(s, day_end("2026-12-15"))  # period 2: 0 + 16 left
    assert billing_changes(ch) == []
    s, ch = on_tick(s, day_end("2026-12-16"))
    [second] = fired(ch, "billing_at_risk")
    assert second.alert.id == period_alert_id(2) != period_alert_id(1)
    assert (second.alert.value, second.alert.status) == (15, "open")
    assert period_alert_id(1) not in s.alerts  # resolved: it leaves the bounded state


def test_billing_at_risk_discharge_alone_never_fires_it() -> None:
    # Episode ended on 11-12 (day 11 of period 1), no data. Judged with hindsight, the cut
    # period (11-02..11-12) was out of reach from the end of 11-02; but each day end is
    # judged on the period as it stood then (no end known: 30 days), and the end of the
    # end date is the period's end. Streaming could not have done otherwise.
    s, _ = feed([start(), ended("2026-11-12T09:00:00-06:00")])
    s, ch = on_tick(s, ts("2026-12-31T00:00:00-06:00"))
    assert billing_changes(ch) == [] and s.day_cursor["ep-1"] == dt.date(2026, 11, 13)
    s2, ch = on_tick(s, ts("2027-03-01T00:00:00-06:00"))
    assert ch == [] and s2 is s  # nothing left to evaluate


def test_billing_at_risk_open_alert_resolves_at_the_end_of_the_episode_end_date() -> None:
    s, _ = feed([start()])
    s, ch = on_tick(s, day_end("2026-11-16"))
    assert fired(ch, "billing_at_risk")
    s, _ = feed([ended("2026-11-20T09:00:00-06:00")], s)  # period 1 cut to 11-02..11-20
    assert s.alerts[period_alert_id(1)].status == "open"  # not resolved by the event
    s, ch = on_tick(s, day_end("2026-11-20") - dt.timedelta(seconds=1))
    assert billing_changes(ch) == []
    s, ch = on_tick(s, ts("2027-01-31T00:00:00-06:00"))
    [res] = billing_changes(ch)  # and no period 2
    assert res.change == "resolved" and res.alert.resolved_at == day_end("2026-11-20")


def test_billing_at_risk_days_left_count_to_the_end_date_once_the_end_occurred() -> None:
    # Ended at 02:00Z on 11-21 = 20:00 on 11-20 in Chicago; its own date (11-21, UTC) is
    # the end date. At the end of 11-20 the end has occurred: 5 data days + 1 day left.
    s, _ = feed([start(), *data_on(dates("2026-11-02", 5)), ended("2026-11-21T02:00:00Z")])
    s, ch = on_tick(s, day_end("2026-11-19"))
    assert billing_changes(ch) == []  # 5 + 12 (end not yet known)
    s, ch = on_tick(s, day_end("2026-11-20"))
    [f] = fired(ch, "billing_at_risk")
    assert f.alert.value == 6 and f.alert.details[0] == "period 1: 2026-11-02..2026-11-21"
    s, ch = on_tick(s, day_end("2026-11-21"))
    assert [c.change for c in billing_changes(ch)] == ["resolved"]


def test_billing_at_risk_counts_data_days_once_and_late_data_before_the_tick() -> None:
    on_time = data_on(["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"])
    events = [
        start(),
        *on_time,
        on_time[0],  # re-sent: same event_id
        pain("2026-11-02T20:00:00-06:00", "p-same-day", 2),  # second event, same date
        exercise("2026-11-01T10:00:00-06:00", "before"),  # before the episode: not counted
        exercise("2026-11-06T23:30:00-06:00", "late"),  # arrives late, before the tick
    ]
    s, _ = feed(events)
    s, ch = on_tick(s, day_end("2026-11-20"))
    assert billing_changes(ch) == []  # 5 + 11 = 16
    s, ch = on_tick(s, day_end("2026-11-21"))
    assert [c.alert.value for c in fired(ch, "billing_at_risk")] == [15]


def test_billing_at_risk_fires_on_the_first_day_billing_says_at_risk() -> None:
    from billing.rules import billing_at_risk
    from billing.state import fold_events

    events = [
        start(),
        *data_on(
            ["2026-11-03", "2026-11-04", "2026-11-09", "2026-11-15", "2026-11-16", "2026-11-20"]
        ),
    ]
    bstate = fold_events(events)[(DEFAULT_ORG, P)]
    first_at_risk = next(
        d for d in dates("2026-11-02", 29) if billing_at_risk(bstate, dt.date.fromisoformat(d))
    )
    s, _ = feed(events)
    fired_days = []
    for d in dates("2026-11-02", 29):
        s, ch = on_tick(s, day_end(d))
        fired_days += [d for _ in fired(ch, "billing_at_risk")]
    assert fired_days == [first_at_risk] == ["2026-11-22"]  # 6 + 9 = 15


def test_billing_at_risk_hourly_ticks_agree_with_one_final_tick() -> None:
    events = [
        start(spw=3),
        *data_on(["2026-11-03", "2026-11-05", "2026-11-20"]),  # period 1 fires
        *data_on(dates("2026-12-02", 8)),  # period 2 later
        ended("2027-01-20T09:00:00-06:00"),
    ]  # period 3 cut
    events.sort(key=lambda e: e.occurred_at)
    as_of = ts("2027-01-25T12:00:00-06:00")
    live = new_state(P)
    clock = ts("2026-11-02T09:00:00-06:00")
    pending = list(events)
    live_ch: list[AlertChange] = []
    while clock <= as_of:
        while pending and pending[0].occurred_at <= clock:
            live, ch = on_event(live, pending.pop(0))
            live_ch += ch
        live, ch = on_tick(live, clock)
        live_ch += ch
        again, ch = on_tick(live, clock)  # a repeated tick changes nothing
        assert ch == [] and again is live
        clock += dt.timedelta(hours=1)
    live, ch = on_tick(live, as_of)
    live_ch += ch
    offline, off_ch = feed(events)
    offline, ch = on_tick(offline, as_of)
    off_ch += ch
    assert live.alerts == offline.alerts
    assert history(live_ch) == history(off_ch)
    # The course alerts the catch-up fired before the discharge are closed by it, as the
    # episode.ended closed them on arrival in the live run.
    course = {
        (a.kind, a.status, a.resolved_by_event_id)
        for a in history(off_ch).values()
        if a.kind in ("inactivity", "adherence_low")
    }
    assert ("adherence_low", "resolved", "end") in course
    assert ("inactivity", "resolved", "end") in course
    billing = [
        (a.id, a.fired_at, a.value, a.resolved_at)
        for a in history(off_ch).values()
        if a.kind == "billing_at_risk"
    ]
    assert billing == [
        (period_alert_id(1), day_end("2026-11-18"), 15, day_end("2026-12-01")),  # 2 + 13
        (period_alert_id(2), day_end("2026-12-24"), 15, day_end("2026-12-31")),  # 8 + 7
        (period_alert_id(3), day_end("2027-01-15"), 15, day_end("2027-01-20")),  # 0 + 15
    ]


def test_the_latest_retired_episode_is_the_first_of_its_date_in_the_folds_order() -> None:
    """A report outside every episode goes to the latest episode, one without an episode id
    to the latest that covers its day; of retired ones that started on one date, the first
    the fold took (start instant, then the start's event id), wherever it sits among a
    year of others."""
    day = dt.date(2026, 3, 2)

    def past(eid: str, start: dt.datetime, start_event_id: str) -> PastEpisode:
        return PastEpisode(
            eid, "c-1", start.date() + dt.timedelta(days=30), start, start_event_id, start
        )

    at = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
    tied = [past("late", at + dt.timedelta(hours=2), "a"), past("b", at, "b"), past("a", at, "a")]
    older = [past(f"old{i}", at - dt.timedelta(days=40 * i), "z") for i in range(1, 10)]
    rng = random.Random(7)
    for _ in range(20):
        routes = [*tied, *older]
        rng.shuffle(routes)
        s = dataclasses.replace(new_state("p1"), past={e.episode_id: e for e in routes})
        latest = _latest_episode(s)
        covering = _resolve(s, None, day + dt.timedelta(days=5))
        assert latest is not None and covering is not None
        assert latest.episode_id == covering.episode_id == "a"
        old = _resolve(s, None, (at - dt.timedelta(days=80)).date())
        assert old is not None and old.episode_id == "old2"
