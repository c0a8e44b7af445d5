"""The worklist rollups (alerts.rollup): what the worker writes per patient and day."""

from __future__ import annotations

import datetime as dt
import typing

from alerts.adherence import daily_rows
from alerts.evaluate import fold
from alerts.rollup import pain_baselines, rollups
from schemas.events import DEFAULT_ORG, validate_event
from tests.conftest import EventFactory


def _events(raw: list[dict]) -> list:
    out = [validate_event(e) for e in raw]
    assert not any(isinstance(e, list) for e in out), out
    return out


def test_rollup_counts_open_alerts_pain_and_adherence_like_the_engine() -> None:
    f = EventFactory()
    p = f.patient(1)
    raw = [
        f.episode_started(p, at="2026-11-02T09:00:00-06:00"),
        *f.daily_exercises(p, dt.date(2026, 11, 2), 5),
        f.pain(p, 3, "2026-11-03T10:00:00-06:00"),
        f.pain(p, 4, "2026-11-04T10:00:00-06:00"),
        # >= 7: pain_high (critical); +4.5 over the baseline: pain_increase (high)
        f.pain(p, 8, "2026-11-06T10:00:00-06:00"),
        f.symptom(p, "2026-11-06T11:00:00-06:00", red_flags=["saddle_anesthesia"]),
    ]
    events = _events(raw)
    states, fired = fold(iter(events))
    r = rollups(states, events)
    (row,) = r.patients
    assert row.patient_id == p
    assert (row.open_critical, row.open_high, row.open_alerts) == (2, 1, len(fired))
    assert row.open_kinds == ("pain_high", "pain_increase", "red_flag")
    assert row.open_red_flags == ("saddle_anesthesia",)  # named, not only "red flag"
    assert row.latest_pain == 8 and row.pain_baseline == 3.5
    assert row.last_activity_at == dt.datetime.fromisoformat("2026-11-06T18:00:00-06:00")
    # the adherence rows equal the API's (daily_rows) on the days written
    state = states[(DEFAULT_ORG, p)]
    full = {d.date: d for d in daily_rows(p, state.completions, state.book, dt.date(2026, 11, 6))}
    assert [d.date for d in r.days] == sorted(full)[-len(r.days) :]
    for d in r.days:
        ref = full[d.date]
        assert d.completed == ref.completed
        assert d.adherence_7d == (None if ref.adherence_7d is None else float(ref.adherence_7d))


def test_acknowledged_alerts_are_not_open() -> None:
    from alerts.rules import acknowledge

    f = EventFactory()
    p = f.patient(1)
    events = _events(
        [
            f.episode_started(p, at="2026-11-02T09:00:00-06:00"),
            f.symptom(p, "2026-11-03T11:00:00-06:00", red_flags=["saddle_anesthesia"]),
        ]
    )
    states, fired = fold(iter(events))
    (alert_id,) = [a for _, a in fired]
    at = dt.datetime(2026, 11, 3, 18, tzinfo=dt.UTC)
    state, _ = acknowledge(states[(DEFAULT_ORG, p)], alert_id, at, "c")
    (row,) = rollups({state.key: state}, []).patients
    assert (row.open_critical, row.open_alerts, row.last_activity_at) == (0, 0, None)
    assert row.open_red_flags == ()  # an acknowledged red flag leaves the worklist's names


def test_every_open_red_flag_is_named_once() -> None:
    f = EventFactory()
    p = f.patient(1)
    events = _events(
        [
            f.episode_started(p, at="2026-11-02T09:00:00-06:00"),
            f.symptom(
                p,
                "2026-11-03T11:00:00-06:00",
                red_flags=["saddle_anesthesia", "bladder_dysfunction"],
            ),
            f.symptom(p, "2026-11-04T11:00:00-06:00", red_flags=["major_trauma"]),
            f.symptom(p, "2026-11-05T11:00:00-06:00", red_flags=["saddle_anesthesia"]),
        ]
    )
    states, _ = fold(iter(events))
    (row,) = rollups(states, events).patients
    assert row.open_red_flags == ("bladder_dysfunction", "major_trauma", "saddle_anesthesia")


def test_pain_baseline_is_the_median_of_the_week_before_each_report() -> None:
    tz = dt.timezone(dt.timedelta(hours=-6))
    at = [dt.datetime(2026, 11, d, 10, tzinfo=tz) for d in (1, 2, 3, 12)]
    assert pain_baselines(list(zip(at, [2, 4, 9, 5], strict=True))) == [None, 2.0, 3.0, None]


def test_adherence_history_is_the_api_rows_in_any_arrival_order() -> None:
    """The backfill's rows (adherence_history) are the rows of GET
    /v1/patients/{id}/adherence (daily_rows over the folded state), in any order of the
    stored events, and the stream's last days agree with them."""
    import random

    from alerts.rollup import adherence_history, daily_adherence
    from rtm.simulate import simulate

    events = _events(list(simulate(12, 60, 3, start=dt.date(2026, 8, 1))))
    states, _ = fold(iter(events))
    shuffled = list(events)
    random.Random(5).shuffle(shuffled)
    compared = 0
    for (_, pid), state in states.items():
        last = max((r.local_date for r in state.data.values()), default=None)
        want = [
            (r.date, float(r.prescribed), r.completed, r.adherence_7d)
            for r in daily_rows(pid, state.completions, state.book, last)
        ]
        got = adherence_history(pid, shuffled)
        assert [(d.date, d.prescribed, d.completed, d.adherence_7d) for d in got] == [
            (day, p, c, None if a is None else float(a)) for day, p, c, a in want
        ]
        by_day = {d.date: d for d in got}
        for d in daily_adherence(state):  # the stream's rows of its newest days
            if d.date in by_day:
                assert d == by_day[d.date]
                compared += 1
    assert compared > 0
    assert any(adherence_history(pid, events) for _, pid in states)


def test_rows_after_a_tick_are_only_days_the_pruned_state_can_compute() -> None:
    """A tick moves the day cursor and prune drops completions older than the adherence
    window before it; the rollup must not rewrite older days from that state (it used to:
    their trailing windows lost completions and the sparkline dropped to 0 %)."""
    from alerts.rules import completions_kept_from, on_tick

    f = EventFactory()
    p = f.patient(1)
    events = _events(
        [
            f.episode_started(p, at="2026-10-01T09:00:00-05:00"),
            *f.daily_exercises(p, dt.date(2026, 10, 1), 20),
        ]
    )
    states, _ = fold(iter(events))
    key = (DEFAULT_ORG, p)
    full = {
        d.date: d
        for d in daily_rows(p, states[key].completions, states[key].book, dt.date(2026, 10, 26))
    }
    state, _ = on_tick(states[key], dt.datetime(2026, 10, 26, 6, tzinfo=dt.UTC))
    kept = completions_kept_from(state)
    assert kept is not None and min(c.local_date for c in state.completions.values()) >= kept
    days = rollups({key: state}, []).days
    assert days, "the newest days are still written"
    for d in days:
        ref = full[d.date]
        assert d.completed == ref.completed, d
        assert d.adherence_7d == (None if ref.adherence_7d is None else float(ref.adherence_7d)), d


def test_triage_tier_puts_a_red_flag_or_fall_above_older_criticals() -> None:
    """A red flag posted now outranks a pain_high that fired weeks ago (both critical);
    inside a tier the oldest open alert of that tier says how long the patient waited."""
    f = EventFactory()
    old, new, fall = f.patient(1), f.patient(2), f.patient(3)
    events = _events(
        [
            f.episode_started(old, at="2026-10-01T09:00:00-06:00"),
            f.pain(old, 8, "2026-10-02T10:00:00-06:00"),  # pain_high, weeks ago
            f.episode_started(new, at="2026-10-01T09:00:00-06:00"),
            f.pain(new, 8, "2026-10-03T10:00:00-06:00"),
            f.symptom(new, "2026-11-06T11:00:00-06:00", red_flags=["saddle_anesthesia"]),
            f.episode_started(fall, at="2026-10-01T09:00:00-06:00"),
            f.symptom(fall, "2026-11-05T11:00:00-06:00", fall=True),
        ]
    )
    states, _ = fold(iter(events))
    rows = {r.patient_id: r for r in rollups(states, events).patients}
    assert (rows[old].tier, rows[new].tier, rows[fall].tier) == (1, 0, 0)
    # the red flag's own time, not the older pain_high's: the tier's oldest alert
    assert rows[new].tier_since == dt.datetime.fromisoformat("2026-11-06T11:00:00-06:00")
    assert rows[fall].tier_since < rows[new].tier_since  # the fall has waited longer
    order = sorted(rows.values(), key=lambda r: (r.tier, r.tier_since, r.patient_id))
    assert [r.patient_id for r in order] == [fall, new, old]


def test_the_tier_sql_is_the_same_mapping_as_the_domain() -> None:
    """GET /v1/worklist orders in SQL (tier_sql): every kind and severity maps as
    alert_tier does (checked with SQLite, which evaluates the same CASE)."""
    import itertools
    import sqlite3

    from alerts.models import AlertKind, Severity
    from alerts.rollup import alert_tier, tier_sql

    kinds = typing.get_args(AlertKind) + ("unknown_kind",)
    severities = typing.get_args(Severity)
    db = sqlite3.connect(":memory:")
    for kind, severity in itertools.product(kinds, severities):
        (got,) = db.execute(f"SELECT {tier_sql('?1', '?2')}", (kind, severity)).fetchone()
        assert got == alert_tier(kind, severity), (kind, severity)
