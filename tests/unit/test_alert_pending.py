"""Events before their episode, unrouted safety alerts, bounded state (pure engine)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.models import EVENT_DRIVEN_KINDS, AlertChange, AlertConfig
from alerts.rules import acknowledge, on_event, on_tick
from alerts.state import PatientState, encode_state, new_state
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
T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=-6)))


def mk(type_: str, at: dt.datetime, eid: str, **fields: Any) -> Event:
    return EVENT_ADAPTER.validate_python(
        {
            "event_id": eid,
            "schema_version": 1,
            "type": type_,
            "patient_id": P,
            "occurred_at": at.isoformat(),
            **fields,
        }
    )


def start(at: dt.datetime = T0, episode_id: str = "ep-1") -> Event:
    return mk(
        "episode.started",
        at,
        "start",
        episode_id=episode_id,
        clinician_id="c-1",
        clinician_role="PT",
        timezone="America/Chicago",
        program={"sessions_per_week": 3},
        billing=BILLING,
    )


def feed(
    events: list[Event], state: PatientState | None = None
) -> tuple[PatientState, list[AlertChange]]:
    s = state if state is not None else new_state(P)
    out: list[AlertChange] = []
    for e in events:
        s, ch = on_event(s, e)
        out += ch
    return s, out


def event_driven_history(changes: list[AlertChange]) -> dict[str, tuple[Any, ...]]:
    latest: dict[str, tuple[Any, ...]] = {}
    for c in changes:
        a = c.alert
        if a.kind in EVENT_DRIVEN_KINDS:
            latest[a.id] = (
                a.kind,
                a.event_ids,
                a.fired_at,
                a.episode_id,
                a.clinician_id,
                a.status,
                a.resolved_by_event_id,
                a.value,
                a.threshold,
            )
    return latest


# One patient's reports over two weeks: (kind, hours after T0, score / flags)
report = st.one_of(
    st.tuples(st.just("pain"), st.integers(-30, 14 * 24), st.integers(0, 10)),
    st.tuples(st.just("flag"), st.integers(-30, 14 * 24), st.sampled_from(["fever", ""])),
    st.tuples(st.just("fall"), st.integers(-30, 14 * 24), st.just(0)),
    st.tuples(st.just("ex"), st.integers(-30, 14 * 24), st.just(0)),
)


def build(reports: list[tuple[str, int, Any]], named: bool) -> list[Event]:
    out = []
    for i, (kind, hours, value) in enumerate(sorted(reports, key=lambda r: r[1])):
        at, eid = T0 + dt.timedelta(hours=hours, minutes=i), f"e{i}"
        ep = {"episode_id": "ep-1"} if named else {}
        if kind == "pain":
            out.append(mk("pain.reported", at, eid, score=value, **ep))
        elif kind == "flag":
            out.append(mk("symptom.reported", at, eid, red_flags=[value] if value else [], **ep))
        elif kind == "fall":
            out.append(mk("symptom.reported", at, eid, fall=True, **ep))
        else:
            out.append(mk("exercise.completed", at, eid, exercise_id="bridge", **ep))
    return out


@settings(max_examples=300, deadline=None)
@given(reports=st.lists(report, min_size=1, max_size=25), named=st.booleans(), data=st.data())
def test_any_arrival_of_the_episode_gives_the_alerts_of_in_order_arrival(
    reports: list[tuple[str, int, Any]], named: bool, data: st.DataObject
) -> None:
    events = build(reports, named)
    _, in_order = feed([start(), *events])
    # Pain reports keep their order among themselves (a late, older report changes no pain
    # state, by rule); everything else, the episode included, arrives anywhere.
    pains = [e for e in events if e.type == "pain.reported"]
    others = data.draw(
        st.permutations([e for e in events if e.type != "pain.reported"] + [start()])
    )
    slots = sorted(
        data.draw(st.lists(st.integers(0, len(others)), min_size=len(pains), max_size=len(pains)))
    )
    arrival: list[Event] = []
    j = 0
    for i, e in enumerate(others):
        while j < len(slots) and slots[j] == i:
            arrival.append(pains[j])
            j += 1
        arrival.append(e)
    arrival += pains[j:]
    _, shuffled = feed(arrival)
    assert event_driven_history(shuffled) == event_driven_history(in_order)


def test_pain_before_its_episode_fires_when_the_episode_arrives_with_its_own_time() -> None:
    p = mk("pain.reported", T0 + dt.timedelta(days=1), "p8", score=8)
    s, ch = feed([p])
    assert ch == [] and list(s.pending) == ["p8"]
    s, ch = feed([start()], s)
    [c] = ch
    assert (c.change, c.alert.kind, c.alert.event_ids, c.alert.fired_at) == (
        "fired",
        "pain_high",
        ("p8",),
        p.occurred_at,
    )
    assert (c.alert.clinician_id, c.alert.unrouted) == ("c-1", False) and not s.pending


def test_red_flag_with_no_episode_goes_unrouted_after_the_grace_period() -> None:
    flag = mk("symptom.reported", T0, "rf", red_flags=["saddle_anesthesia"])
    s, ch = feed([flag])
    assert ch == []
    s, ch = on_tick(s, T0 + dt.timedelta(hours=23, minutes=59))
    assert ch == [] and "rf" in s.pending
    s, ch = on_tick(s, T0 + dt.timedelta(hours=24))
    [c] = ch
    a = c.alert
    assert (a.kind, a.severity, a.unrouted, a.clinician_id, a.episode_id, a.event_ids) == (
        "red_flag",
        "critical",
        True,
        "*",
        "",
        ("rf",),
    )
    assert a.fired_at == flag.occurred_at and not s.pending
    # The episode arriving later raises no second alert for the same report.
    s, ch = feed([start()], s)
    assert [x for x in ch if x.change == "fired"] == []


def test_grace_counts_from_when_the_report_was_received() -> None:
    late = EVENT_ADAPTER.validate_python(
        {
            "event_id": "f",
            "schema_version": 1,
            "type": "symptom.reported",
            "patient_id": P,
            "occurred_at": T0.isoformat(),
            "fall": True,
            "received_at": (T0 + dt.timedelta(days=3)).isoformat(),
        }
    )
    s, _ = feed([late])
    s, ch = on_tick(s, T0 + dt.timedelta(days=3, hours=1))
    assert ch == []  # synced 3 days late: its episode may still be on the way
    s, ch = on_tick(s, T0 + dt.timedelta(days=4))
    assert [c.alert.unrouted for c in ch] == [True]


def test_named_episode_not_started_yet_waits_for_it_instead_of_another_clinician() -> None:
    second = EVENT_ADAPTER.validate_python(
        {
            **start().model_dump(mode="json", exclude_none=True),
            "event_id": "start2",
            "episode_id": "ep-2",
            "clinician_id": "c-2",
            "occurred_at": (T0 + dt.timedelta(days=20)).isoformat(),
        }
    )
    end = mk("episode.ended", T0 + dt.timedelta(days=19), "end", episode_id="ep-1")
    flag = mk(
        "symptom.reported", T0 + dt.timedelta(days=21), "rf", red_flags=["fever"], episode_id="ep-2"
    )
    s, ch = feed([start(), end, flag])
    assert ch == [] and "rf" in s.pending
    s, ch = feed([second], s)
    assert [(c.alert.kind, c.alert.clinician_id) for c in ch] == [("red_flag", "c-2")]


def test_config_grace_period() -> None:
    cfg = AlertConfig(pending_grace=dt.timedelta(hours=1))
    s, _ = feed([mk("symptom.reported", T0, "f", fall=True)])
    s, ch = on_tick(s, T0 + dt.timedelta(hours=1), cfg)
    assert [c.alert.kind for c in ch] == ["fall"]


def _year_of_history(days: int) -> list[int]:
    """Encoded state sizes at day 30, 90, 180, 365 of a patient with daily data and ticks."""
    s, _ = feed([start()])
    sizes = []
    for d in range(days):
        day = T0 + dt.timedelta(days=d)
        evs = [
            mk(
                "exercise.completed",
                day + dt.timedelta(minutes=m),
                f"x{d}-{m}",
                exercise_id="bridge",
                session_id=f"s{d}",
            )
            for m in range(3)
        ]
        evs.append(mk("pain.reported", day + dt.timedelta(hours=1), f"p{d}", score=3 + d % 5))
        if d % 30 == 7:
            evs.append(mk("symptom.reported", day + dt.timedelta(hours=2), f"f{d}", fall=True))
        s, ch = feed(evs, s)
        for c in ch:  # the clinician acknowledges falls the same day
            s, _ = acknowledge(s, c.alert.id, day + dt.timedelta(hours=3), "c-1")
        s, _ = on_tick(s, day + dt.timedelta(hours=20))
        if d + 1 in (30, 90, 180, 365):
            sizes.append(len(encode_state(s)))
    return sizes


def test_state_does_not_grow_with_history() -> None:
    at30, at90, at180, at365 = _year_of_history(365)
    assert at365 <= at90 * 1.25 and at180 <= at90 * 1.25
    assert at365 < 4_000
