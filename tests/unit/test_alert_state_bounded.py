"""Bounded state over many episodes: retired episodes and cool-down entries change no alert.

The reference engine is the same code with retirement (``_retire_episodes``) and cool-down
compaction (``_to_cooldown``) switched off, i.e. keeping every episode event and every
acknowledged alert snapshot as the version-2 state did; both must give the same alert
changes and refusals for histories of many episodes with late events.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import alerts.rules as rules
from alerts.batch import AckItem, EventItem, Item, TickItem, apply_batch
from alerts.models import Alert, AlertChange
from alerts.rollup import Rollups, rollups
from alerts.rules import acknowledge, on_event, on_tick
from alerts.state import (
    STATE_VERSION,
    PatientState,
    decode_state,
    encode_state,
    new_state,
    state_to_dict,
)
from schemas.events import DEFAULT_ORG, EVENT_ADAPTER, Event, PatientKey

P = "p-1"
BILLING = {
    "rendering_npi": "1234567893",
    "billing_npi": "1234567893",
    "payer": "medicare",
    "member_id": "M-1",
    "diagnosis_codes": ["M54.50"],
    "place_of_service": "11",
}
TZ = dt.timezone(dt.timedelta(hours=-6))
T0 = dt.datetime(2025, 1, 6, 9, 0, tzinfo=TZ)


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


def start(at: dt.datetime, episode_id: str, eid: str, clinician: str = "c-1") -> Event:
    return mk(
        "episode.started",
        at,
        eid,
        episode_id=episode_id,
        clinician_id=clinician,
        clinician_role="PT",
        timezone="America/Chicago",
        program={"sessions_per_week": 3},
        billing=BILLING,
    )


@contextmanager
def full_state() -> Iterator[None]:
    """The reference: nothing retired, no cool-down entries (everything kept)."""
    saved = rules._retire_episodes, rules._to_cooldown
    rules._retire_episodes = lambda s, cut: None  # type: ignore[assignment]
    rules._to_cooldown = lambda s, a: None  # type: ignore[assignment]
    try:
        yield
    finally:
        rules._retire_episodes, rules._to_cooldown = saved


# --- a year of successive episodes -----------------------------------------------------------


def _episodes_history(
    days: int, checkpoints: tuple[int, ...], log: list[AlertChange] | None = None
) -> dict[int, PatientState]:
    """An episode of 30-60 days every ~2 months, daily sessions and pain, a fall a month
    (acknowledged), a program change, a break (inactivity), a tick every evening."""
    rng = random.Random(7)
    s = new_state(P)
    out: dict[int, PatientState] = {}
    plan: list[tuple[int, int]] = []  # (start day, end day) of each episode
    d = 0
    while d < days + 60:
        length = rng.randint(30, 60)
        plan.append((d, d + length))
        d += length + rng.randint(5, 25)
    for day in range(days):
        at = T0 + dt.timedelta(days=day)
        evs: list[Event] = []
        for k, (first, last) in enumerate(plan):
            ep = f"ep-{k}"
            if day == first:
                evs.append(start(at, ep, f"start-{k}", clinician=f"c-{k % 3}"))
            if day == first + 10:
                evs.append(
                    mk(
                        "program.updated",
                        at,
                        f"prog-{k}",
                        episode_id=ep,
                        program={"sessions_per_week": 5},
                    )
                )
            if first <= day <= last and not (first + 15 <= day < first + 20):
                evs += [
                    mk(
                        "exercise.completed",
                        at + dt.timedelta(minutes=m),
                        f"x{day}-{m}",
                        exercise_id="bridge",
                        session_id=f"s{day}",
                        episode_id=ep,
                    )
                    for m in range(3)
                ]
                evs.append(
                    mk(
                        "pain.reported",
                        at + dt.timedelta(hours=1),
                        f"p{day}",
                        score=3 + day % 5,
                        episode_id=ep,
                    )
                )
                if day % 30 == 7:
                    evs.append(
                        mk(
                            "symptom.reported",
                            at + dt.timedelta(hours=2),
                            f"f{day}",
                            fall=True,
                            episode_id=ep,
                        )
                    )
            if day == last:
                evs.append(
                    mk(
                        "episode.ended",
                        at + dt.timedelta(hours=4),
                        f"end-{k}",
                        episode_id=ep,
                        reason="discharged",
                    )
                )
        log = [] if log is None else log
        for e in evs:
            s, ch = on_event(s, e)
            log += ch
            for c in ch:  # the clinician acknowledges what fires within the hour
                if c.change == "fired":
                    s, acked = acknowledge(
                        s, c.alert.id, e.occurred_at + dt.timedelta(hours=1), "c"
                    )
                    log += acked
        s, ch = on_tick(s, at + dt.timedelta(hours=11))
        log += ch
        for c in ch:
            if c.change == "fired":
                s, acked = acknowledge(s, c.alert.id, at + dt.timedelta(hours=12), "c")
                log += acked
        if day + 1 in checkpoints:
            out[day + 1] = decode_state(encode_state(s))
    return out


def test_state_of_successive_episodes_does_not_grow_with_history() -> None:
    points = (30, 90, 180, 365, 500)
    states = _episodes_history(500, points)
    size = {d: len(encode_state(s)) for d, s in states.items()}
    at30 = size[30]
    for d in (90, 180, 365, 500):
        # ~9 episodes by day 500: each past one costs its routing facts (~120 B), for a
        # year after its end; everything else stays what one episode needs.
        assert size[d] <= at30 * 1.6, size
    assert size[500] <= size[365] * 1.15, size
    for d, s in states.items():
        assert len(s.episode_events) <= 3 and len(s.alerts) <= 6, (d, s)
        assert len(s.past) <= 8 and len(s.day_cursor) <= len(s.past) + 1
    late = states[500]
    assert late.retired_to is not None  # the oldest episodes are forgotten after a year


def test_the_year_gives_the_alerts_of_a_state_that_keeps_everything() -> None:
    full_log: list[AlertChange] = []
    compact_log: list[AlertChange] = []
    with full_state():
        full = _episodes_history(400, (400,), full_log)[400]
    compact = _episodes_history(400, (400,), compact_log)[400]
    assert compact_log == full_log and len(full_log) > 50
    assert {c.change for c in full_log} == {"fired", "acknowledged", "resolved"}
    assert len(encode_state(full)) > 2.5 * len(encode_state(compact))
    assert full.pending == compact.pending and full.pain == compact.pain
    assert {a for a, x in full.alerts.items() if x.status != "resolved"} == set(compact.alerts)


# --- random histories with late events: the same alerts as keeping everything --------------


def _history(seed: int) -> list[tuple[dt.datetime, Event]]:
    """Successive episodes, late-synced data, late episode.ended, and reports for old
    episodes arriving up to 200 days late (named, unnamed, after the episode's end)."""
    rng = random.Random(seed)
    out: list[tuple[dt.datetime, Event]] = []
    n = 0

    def add(type_: str, at: dt.datetime, arrive: dt.datetime | None = None, **f: Any) -> None:
        nonlocal n
        n += 1
        out.append((arrive or at, mk(type_, at, f"e{n}", **f)))

    day, k, gap = 0, 0, 1
    eps: list[tuple[str, int, int, dt.datetime]] = []
    while day < 200:
        k += 1
        ep, length = f"ep-{k}", rng.randint(20, 50)
        # Started on the day the previous one ended: after its end (20:00), so every
        # episode exists and a late second start inside one is refused by both engines.
        begin = T0 + dt.timedelta(days=day, hours=0 if gap else 12, minutes=rng.randint(0, 120))
        add(
            "episode.started",
            begin,
            episode_id=ep,
            clinician_id=f"c-{k}",
            clinician_role="PT",
            timezone="America/Chicago",
            program={"sessions_per_week": rng.choice([3, 5, 7])},
            billing=BILLING,
        )
        gap_from = rng.randint(5, length)
        for d in range(length + 1):
            at = T0 + dt.timedelta(days=day + d, hours=rng.randint(0, 10))
            if gap_from <= d < gap_from + rng.randint(0, 8):
                continue
            arrive = at + dt.timedelta(days=rng.randint(1, 20)) if rng.random() < 0.05 else None
            named = {"episode_id": ep} if rng.random() < 0.8 else {}
            if rng.random() < 0.85:
                add(
                    "exercise.completed",
                    at,
                    arrive,
                    exercise_id="bridge",
                    session_id=f"s{k}-{d}",
                    **named,
                )
            if rng.random() < 0.7:
                add(
                    "pain.reported",
                    at + dt.timedelta(hours=1),
                    arrive,
                    score=min(10, max(0, int(rng.gauss(4 + (d % 9 == 0) * 4, 1.5)))),
                    **named,
                )
            if rng.random() < 0.04:
                add(
                    "symptom.reported",
                    at + dt.timedelta(hours=2),
                    arrive,
                    red_flags=["fever"],
                    **named,
                )
        end_at = T0 + dt.timedelta(days=day + length, hours=11)
        late = rng.randint(1, 10) if rng.random() < 0.3 else 0
        add(
            "episode.ended",
            end_at,
            end_at + dt.timedelta(days=late) if late else None,
            episode_id=ep,
            reason="discharged",
        )
        eps.append((ep, day, day + length, begin))
        # The next start arrives after this end (else it is refused and "ep-x" below
        # could land in no episode: see the known difference in alerts.rules.prune).
        gap = max(rng.choice([0, 1, rng.randint(2, 30)]), late + 1 if late else 0)
        day += length + gap
    for _ in range(rng.randint(2, 10)):
        ep, first, last, begin = rng.choice(eps)
        at = T0 + dt.timedelta(days=rng.randint(first, last + 30), hours=rng.randint(0, 20))
        arrive = at + dt.timedelta(days=rng.randint(1, 200))
        named = {"episode_id": ep} if rng.random() < 0.6 else {}
        r = rng.random()
        if r < 0.4:
            add("symptom.reported", at, arrive, red_flags=["fever"], **named)
        elif r < 0.55:
            add("symptom.reported", at, arrive, fall=True, **named)
        elif r < 0.75:
            add("pain.reported", at, arrive, score=rng.randint(0, 10), **named)
        elif r < 0.85:  # re-sent under a new event_id
            add(
                "episode.started",
                begin,
                arrive,
                episode_id=ep,
                clinician_id=f"c-{ep[3:]}",
                clinician_role="PT",
                timezone="America/Chicago",
                program={"sessions_per_week": 3},
                billing=BILLING,
            )
        elif r < 0.92:  # a second active episode, sent late: refused
            add(
                "episode.started",
                begin + dt.timedelta(days=2),
                arrive,
                episode_id="ep-x",
                clinician_id="c-x",
                clinician_role="PT",
                timezone="America/Chicago",
                program={"sessions_per_week": 3},
                billing=BILLING,
            )
        else:
            add("episode.ended", at, arrive, episode_id=ep, reason="discharged")
    return sorted(out, key=lambda x: (x[0], x[1].event_id))


def _run(seed: int) -> tuple[list[Any], int]:
    """Daily batches (arrivals, acks of yesterday's alerts, a tick), states stored and read
    back between batches as the worker does; acks of alerts that left the state carry the
    stored snapshot (streams/services/ingest.py decide). Returns the changes, refusals and
    rollups."""
    arrivals = _history(seed)
    rng = random.Random(seed)
    states: dict[PatientKey, PatientState] = {}
    key = (DEFAULT_ORG, P)
    table: dict[str, Alert] = {}
    out: list[Any] = []
    acks: list[AckItem] = []
    biggest, i = 0, 0
    now = T0.replace(hour=23)
    while now < T0 + dt.timedelta(days=420):
        items: list[Item] = [
            a
            if key in states and a.alert_id in states[key].alerts
            else AckItem(P, a.alert_id, a.at, a.by, table[a.alert_id])
            for a in acks
        ]
        acks = []
        new: list[Event] = []
        while i < len(arrivals) and arrivals[i][0] <= now:
            new.append(arrivals[i][1])
            i += 1
        items += [EventItem(e) for e in new]
        items.append(TickItem(now, 0))
        result = apply_batch(states, items, partition_of=lambda p: 0)
        # The worklist rollups read the same post-batch states (its adherence rows too).
        out.append((now.date(), rollups(result.states, new)))
        for pid, s in result.states.items():
            raw = encode_state(s)
            biggest = max(biggest, len(raw))
            states[pid] = decode_state(raw)
            assert states[pid] == s  # the stored form loses nothing
        for c in result.changes:
            table[c.alert.id] = c.alert
            out.append((c.change, c.alert.model_dump(mode="json")))
            if c.change == "fired" and rng.random() < 0.6:
                acks.append(
                    AckItem(P, c.alert.id, now + dt.timedelta(hours=rng.randint(0, 40)), "c")
                )
        out += [("refused", e.event_id, reason) for e, reason in result.refused]
        now += dt.timedelta(days=1)
    return out, biggest


# derandomize: the same 20 generated histories every run (CI must not pass or fail by the
# draw); the one known history where the two disagree is pinned below as an expected
# failure, so a change in either direction shows.
@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10**6))
def test_retiring_episodes_and_compacting_cooldowns_change_no_alert(seed: int) -> None:
    compact, compact_max = _run(seed)
    with full_state():
        full, full_max = _run(seed)
    changes = [c for c in compact if isinstance(c[1], (dict, str))]
    assert changes == [c for c in full if isinstance(c[1], (dict, str))]
    assert any(c[0] == "fired" for c in changes)
    for (day, mine), (_, ref) in zip(
        *([r for r in x if isinstance(r[1], Rollups)] for x in (compact, full)), strict=True
    ):
        assert mine.patients == ref.patients
        # The one difference: with everything kept, the rollup goes on rewriting the last
        # days of an episode that ended more than a month ago, from completions already
        # pruned; a retired episode's rows keep the values they were written with.
        assert set(mine.days) <= set(ref.days)
        assert all((day - r.date).days > 31 for r in set(ref.days) - set(mine.days))
    assert compact_max <= full_max


# --- routing to a retired episode, refusals, the stored form ----------------------------------


def _retired_first_episode() -> PatientState:
    """ep-1 (c-1) 30 days, ended; ep-2 (c-2) running; ticked 38 days into ep-2."""
    s = new_state(P)
    end = T0 + dt.timedelta(days=30)
    for e in [
        start(T0, "ep-1", "s1"),
        mk("episode.ended", end, "end1", episode_id="ep-1"),
        start(end + dt.timedelta(days=2), "ep-2", "s2", clinician="c-2"),
    ]:
        s, _ = on_event(s, e)
    s, _ = on_tick(s, end + dt.timedelta(days=40))  # ep-1 ended a month before ep-2's cursor
    assert "ep-1" in s.past and "ep-1" not in s.book.episodes
    assert {e.episode_id for e in s.episode_events.values()} == {"ep-2"}
    return s


@pytest.mark.parametrize(
    "fields, clinician",
    [
        ({"episode_id": "ep-1"}, "c-1"),  # names the retired episode, inside its dates
        ({}, "c-1"),  # unnamed, dated inside the retired episode
    ],
)
def test_a_late_red_flag_of_a_retired_episode_goes_to_its_clinician(
    fields: dict[str, str], clinician: str
) -> None:
    s = _retired_first_episode()
    flag = mk("symptom.reported", T0 + dt.timedelta(days=10), "rf", red_flags=["fever"], **fields)
    s, ch = on_event(s, flag)
    assert [
        (c.alert.kind, c.alert.episode_id, c.alert.clinician_id) for c in ch if c.change == "fired"
    ] == [("red_flag", "ep-1", clinician)]


def test_a_report_naming_a_retired_episode_after_its_end_goes_to_the_latest_episode() -> None:
    s = _retired_first_episode()
    flag = mk("symptom.reported", T0 + dt.timedelta(days=45), "rf", fall=True, episode_id="ep-1")
    s, ch = on_event(s, flag)
    assert [
        (c.alert.kind, c.alert.episode_id, c.alert.clinician_id) for c in ch if c.change == "fired"
    ] == [("fall", "ep-2", "c-2")]
    assert not s.pending  # it exists: nothing to wait for


def test_late_starts_against_a_retired_episode() -> None:
    s = _retired_first_episode()
    # A re-send of its start under a new event_id: the first one stands, nothing kept.
    s2, ch = on_event(s, start(T0, "ep-1", "s1-again"))
    assert ch == [] and s2.episode_events == s.episode_events
    # Another episode started while ep-1 was active: refused, as the fold refuses it.
    _, reason = rules.apply_event_outcome(
        s.copy_for_update(), start(T0 + dt.timedelta(days=5), "ep-9", "s9")
    )
    assert reason == ("patient already has an active episode ep-1; end it before starting another")
    # Started after ep-1's episode.ended occurred: accepted.
    after = rules.apply_event_outcome(
        s.copy_for_update(), start(T0 + dt.timedelta(days=30, minutes=1), "ep-8", "s8")
    )
    assert after == ([], None)


def test_an_earlier_late_end_moves_a_retired_episode_end() -> None:
    s = _retired_first_episode()
    s, _ = on_event(s, mk("episode.ended", T0 + dt.timedelta(days=20), "end1b", episode_id="ep-1"))
    assert s.past["ep-1"].end_date == (T0 + dt.timedelta(days=20)).date()
    flag = mk("symptom.reported", T0 + dt.timedelta(days=25), "rf", red_flags=["fever"])
    _, ch = on_event(s, flag)
    # outside every episode now: the latest episode's clinician
    assert [(c.alert.kind, c.alert.clinician_id) for c in ch if c.change == "fired"] == [
        ("red_flag", "c-2")
    ]
    s = decode_state(encode_state(s))
    assert s.day_cursor["ep-1"] == (T0 + dt.timedelta(days=31)).date()  # kept as it was


def test_acknowledged_resolved_alert_becomes_a_cooldown_entry_that_still_silences() -> None:
    s = new_state(P)
    s, _ = on_event(s, start(T0, "ep-1", "s1"))
    s, [fired] = on_event(s, mk("pain.reported", T0 + dt.timedelta(hours=1), "p1", score=8))
    s, _ = acknowledge(s, fired.alert.id, T0 + dt.timedelta(hours=2), "c")
    s, [res] = on_event(s, mk("pain.reported", T0 + dt.timedelta(hours=3), "p2", score=2))
    assert res.change == "resolved" and fired.alert.id not in s.alerts
    assert list(s.cooldowns) == [fired.alert.id]
    # Within 24 h of the acknowledgement: silent; a second acknowledgement: no change.
    # (Same local date: no pain baseline yet, so only pain_high is in question.)
    s, ch = on_event(s, mk("pain.reported", T0 + dt.timedelta(hours=14), "p3", score=9))
    assert ch == []
    assert acknowledge(s, fired.alert.id, T0 + dt.timedelta(hours=21), "c")[1] == []
    s = decode_state(encode_state(s))
    s, ch = on_event(s, mk("pain.reported", T0 + dt.timedelta(hours=27), "p4", score=9))
    assert [c.alert.kind for c in ch] == ["pain_high"]
    s, _ = on_tick(s, T0 + dt.timedelta(days=10))
    assert not s.cooldowns  # past the cool-down and its slack


def test_version_2_states_decode_and_are_compacted_by_the_next_prune() -> None:
    with full_state():
        s = _episodes_history(120, (120,))[120]
    v2 = state_to_dict(s)
    v2["v"] = 2
    assert not {"pe", "cd", "rt"} & set(v2)
    old = decode_state(orjson.dumps(v2))
    # written before alert ids named the organisation: its alerts keep their ids
    assert old.legacy_ids and STATE_VERSION == 5
    s.legacy_ids = True
    assert old == s
    tick = T0 + dt.timedelta(days=120, hours=20)
    compacted, _ = on_tick(old, tick)
    assert compacted.past and len(encode_state(compacted)) < len(encode_state(old)) * 0.8
    # Both continue identically.
    nxt = mk("symptom.reported", T0 + dt.timedelta(days=3), "late-rf", red_flags=["fever"])
    with full_state():
        ref, ref_ch = on_event(on_tick(old, tick)[0], nxt)
    _, ch = on_event(compacted, nxt)
    assert ch == ref_ch and ch[0].alert.clinician_id == "c-0"


@pytest.mark.xfail(
    strict=True,
    reason="known difference (alerts.rules.prune, alerts/state.py docstring): with a late "
    "second start (ep-x) in the history, the keep-everything reference routes a red flag "
    "to ep-x's clinician, the retired state to ep-4's; both fire it at once to a clinician",
)
def test_known_difference_a_late_second_start_routes_a_red_flag_differently() -> None:
    test_retiring_episodes_and_compacting_cooldowns_change_no_alert.hypothesis.inner_test(  # type: ignore[attr-defined]
        seed=4958
    )
