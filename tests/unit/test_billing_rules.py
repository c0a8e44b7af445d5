"""Billing rules at their boundaries (billing-rules.md), table-driven, no services."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import Any

import pytest

from billing.amend import lines_to_export, standing_lines, withdrawn_lines
from billing.config import DEFAULT_CONFIG, BillingConfig
from billing.rules import (
    ClaimLine,
    billing_at_risk,
    billing_progress,
    compute_claims,
    patient_local_date,
    progress_text,
    treatment_codes,
)
from billing.state import PatientBillingState, fold_events
from schemas.events import DEFAULT_ORG, EVENT_ADAPTER, Event

_ids = itertools.count(1)
D = dt.date.fromisoformat
FAR = "2028-01-01T00:00:00Z"  # every 2026-27 period is closed by then


def _event(
    type_: str, occurred_at: str, patient: str = "p1", eid: str | None = None, **fields: Any
) -> Event:
    obj = {
        "event_id": eid or f"e{next(_ids)}",
        "schema_version": 1,
        "type": type_,
        "patient_id": patient,
        "occurred_at": occurred_at,
        **fields,
    }
    return EVENT_ADAPTER.validate_python(obj)


def start(
    day: str = "2026-11-10",
    ep: str = "ep1",
    role: str = "PT",
    setup: bool = True,
    tz: str = "America/Denver",
    offset: str = "-07:00",
    patient: str = "p1",
    npi: str = "1234567893",
) -> Event:
    return _event(
        "episode.started",
        f"{day}T09:00:00{offset}",
        patient,
        episode_id=ep,
        clinician_id="c1",
        clinician_role=role,
        timezone=tz,
        program={"sessions_per_week": 5, "exercise_ids": ["bridge"]},
        billing={
            "rendering_npi": npi,
            "billing_npi": npi,
            "payer": "medicare",
            "member_id": "MBI1",
            "diagnosis_codes": ["M54.50", "M25.561"],
            "place_of_service": "11",
        },
        setup_education_completed=setup,
    )


def data(
    day: str,
    ep: str | None = "ep1",
    at: str = "18:00:00",
    offset: str = "-07:00",
    patient: str = "p1",
    eid: str | None = None,
) -> Event:
    extra = {"episode_id": ep} if ep else {}
    return _event(
        "exercise.completed", f"{day}T{at}{offset}", patient, eid, exercise_id="bridge", **extra
    )


def log(
    day: str,
    minutes: int,
    role: str = "PT",
    interactive: bool = True,
    ep: str | None = "ep1",
    offset: str = "-07:00",
    eid: str | None = None,
) -> Event:
    extra = {"episode_id": ep} if ep else {}
    return _event(
        "clinician.time_logged",
        f"{day}T14:00:00{offset}",
        "p1",
        eid,
        clinician_id="c1",
        clinician_role=role,
        minutes=minutes,
        activity="call" if interactive else "review",
        interactive=interactive,
        **extra,
    )


def end(day: str, ep: str = "ep1", offset: str = "-07:00") -> Event:
    return _event("episode.ended", f"{day}T12:00:00{offset}", "p1", episode_id=ep)


def days_from(first: str, n: int, step: int = 1) -> list[str]:
    d0 = D(first)
    return [(d0 + dt.timedelta(days=i * step)).isoformat() for i in range(n)]


def claims(
    events: list[Event],
    as_of: str = FAR,
    include_open: bool = False,
    config: BillingConfig = DEFAULT_CONFIG,
) -> list[ClaimLine]:
    states = fold_events(events)
    return compute_claims(states.values(), dt.datetime.fromisoformat(as_of), config, include_open)


def brief(lines: list[ClaimLine]) -> list[tuple[str, str, int, str]]:
    return [
        (ln.cpt, "+".join(ln.modifiers), ln.units, ln.date_of_service.isoformat()) for ln in lines
    ]


# --- data days -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_days", "device", "setup"),
    [
        (1, None, False),
        (2, "98985", True),
        (15, "98985", True),
        (16, "98977", True),
        (30, "98977", True),
    ],
)
def test_data_day_thresholds(n_days: int, device: str | None, setup: bool) -> None:
    lines = claims([start()] + [data(d) for d in days_from("2026-11-10", n_days)])
    dev = [ln for ln in lines if ln.cpt in ("98977", "98985")]
    assert [ln.cpt for ln in dev] == ([device] if device else [])
    if dev:
        assert dev[0].data_days == n_days
        assert (dev[0].period_start, dev[0].period_end) == (D("2026-11-10"), D("2026-12-09"))
        assert dev[0].date_of_service == D("2026-12-09")
    assert any(ln.cpt == "98975" for ln in lines) is setup


def test_events_on_first_and_last_day_of_periods() -> None:
    # period 1: 11-10..12-09, period 2: 12-10..01-08
    lines = claims(
        [start()] + [data(d) for d in ("2026-11-10", "2026-12-09", "2026-12-10", "2027-01-08")]
    )
    dev = [
        (ln.cpt, ln.period_start.isoformat(), ln.period_end.isoformat(), ln.data_days)
        for ln in lines
        if ln.cpt == "98985"
    ]
    assert dev == [
        ("98985", "2026-11-10", "2026-12-09", 2),
        ("98985", "2026-12-10", "2027-01-08", 2),
    ]


def test_data_before_start_and_after_end_do_not_count() -> None:
    events = [
        start(),
        data("2026-11-09"),
        data("2026-11-10"),
        end("2026-11-11"),
        data("2026-11-12"),
        data("2026-11-12", ep=None),
    ]
    assert brief(claims(events)) == []  # only 11-10 is inside the episode: 1 day


def test_episode_ended_mid_period_cuts_the_period() -> None:
    days = days_from("2026-11-10", 16)  # 11-10 .. 11-25
    events = [start(), *[data(d) for d in days], end("2026-11-25"), data("2026-11-26")]
    lines = claims(events)
    dev = [ln for ln in lines if ln.cpt == "98977"]
    assert len(dev) == 1
    assert (dev[0].period_end, dev[0].date_of_service, dev[0].data_days) == (
        D("2026-11-25"),
        D("2026-11-25"),
        16,
    )
    # it closes 72 h after the local midnight ending 11-25 (Denver, -07:00): 11-29 07:00Z
    assert claims(events, as_of="2026-11-29T06:59:59Z") == []
    assert {ln.cpt for ln in claims(events, as_of="2026-11-29T07:00:00Z")} == {"98975", "98977"}


def test_local_date_2330_at_utc_minus_5_counts_on_its_own_date() -> None:
    # New York in November is UTC-5; period 1 = 11-03..12-02
    ny = "-05:00"
    events = [
        start("2026-11-03", tz="America/New_York", offset=ny),
        data("2026-11-05", offset=ny),
        data("2026-12-02", at="23:30:00", offset=ny),  # 12-03 04:30 UTC
        data("2026-12-04", offset=ny),
    ]
    dev = [
        (ln.cpt, ln.period_start.isoformat(), ln.data_days)
        for ln in claims(events)
        if ln.cpt == "98985"
    ]
    assert dev == [("98985", "2026-11-03", 2)]  # period 2 has only 12-04


def test_dst_change_grace_and_days() -> None:
    # New York leaves DST on 2026-11-01. Period 1 = 10-03..11-01; it ends at local
    # midnight 11-02 00:00 EST = 05:00Z, closes 72 h later = 11-05 05:00Z.
    events = [
        start("2026-10-03", tz="America/New_York", offset="-04:00"),
        data("2026-10-31", at="20:00:00", offset="-04:00"),
        data("2026-11-01", at="20:00:00", offset="-05:00"),
    ]
    assert claims(events, as_of="2026-11-05T04:59:59Z") == []
    closed = claims(events, as_of="2026-11-05T05:00:00Z")
    assert [(ln.cpt, ln.data_days) for ln in closed] == [("98975", 2), ("98985", 2)]
    preview = claims(events, as_of="2026-11-05T04:59:59Z", include_open=True)
    assert {ln.status for ln in preview} == {"preview"}


def test_ten_events_one_day_is_one_data_day() -> None:
    events = [start()] + [data("2026-11-10", at=f"0{i}:00:00") for i in range(10)]
    assert claims(events) == []
    events.append(data("2026-11-11"))
    assert [ln.data_days for ln in claims(events) if ln.cpt == "98985"] == [2]


def test_duplicates_count_once() -> None:
    first = log("2026-11-12", 10, eid="dup-log")
    events = [
        start(),
        first,
        first,
        log("2026-11-12", 10, eid="dup-log"),
        data("2026-11-10", eid="d1"),
        data("2026-11-10", eid="d1"),
        data("2026-11-11", eid="d2"),
        data("2026-11-11", eid="d2"),
    ]
    lines = claims(events)
    assert [(ln.cpt, ln.minutes) for ln in lines if ln.minutes is not None] == [("98979", 10)]
    assert [ln.data_days for ln in lines if ln.cpt == "98985"] == [2]


# --- treatment management ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (9, []),
        (10, [("98979", 1)]),
        (19, [("98979", 1)]),
        (20, [("98980", 1)]),
        (39, [("98980", 1)]),
        (40, [("98980", 1), ("98981", 1)]),
        (60, [("98980", 1), ("98981", 2)]),
    ],
)
def test_minutes_thresholds(minutes: int, expected: list[tuple[str, int]]) -> None:
    assert treatment_codes(minutes, interactive=True) == expected
    # one interactive 5-minute call plus the rest as review, within one month
    events = [start(), log("2026-11-12", 5, interactive=True)]
    if minutes > 5:
        events.append(log("2026-11-20", minutes - 5, interactive=False))
    lines = [ln for ln in claims(events) if ln.minutes is not None]
    assert [(ln.cpt, ln.units) for ln in lines] == expected
    assert all(
        ln.minutes == minutes
        and ln.date_of_service == D("2026-11-30")
        and (ln.period_start, ln.period_end) == (D("2026-11-01"), D("2026-11-30"))
        and ln.data_days is None
        for ln in lines
    )


def test_minutes_without_interactive_log_bill_nothing() -> None:
    events = [
        start(),
        log("2026-11-12", 30, interactive=False),
        log("2026-11-13", 30, interactive=False),
        log("2026-12-01", 5, interactive=True),
    ]  # interactive, but next month
    assert [ln.cpt for ln in claims(events)] == []


def test_month_by_local_date_of_the_log() -> None:
    # 2026-11-30 23:30 -07:00 is December in UTC but November for the patient
    events = [
        start(),
        _event(
            "clinician.time_logged",
            "2026-11-30T23:30:00-07:00",
            episode_id="ep1",
            clinician_id="c1",
            clinician_role="PT",
            minutes=20,
            activity="call",
            interactive=True,
        ),
    ]
    assert brief(claims(events)) == [("98980", "GP", 1, "2026-11-30")]


@pytest.mark.parametrize(("assistant_minutes", "modifiers"), [(10, "GP"), (11, "GP+CQ")])
def test_pta_share_10_vs_11_percent(assistant_minutes: int, modifiers: str) -> None:
    events = [
        start(),
        log("2026-11-12", 100 - assistant_minutes, role="PT"),
        log("2026-11-13", assistant_minutes, role="PTA", interactive=False),
    ]
    lines = [ln for ln in claims(events) if ln.minutes is not None]
    assert [(ln.cpt, "+".join(ln.modifiers), ln.units) for ln in lines] == [
        ("98980", modifiers, 1),
        ("98981", modifiers, 4),
    ]


def test_assistant_threshold_is_configurable() -> None:
    events = [start(), log("2026-11-12", 80), log("2026-11-13", 20, role="PTA")]
    strict = BillingConfig(assistant_share_threshold_pct=20)
    assert {ln.modifiers for ln in claims(events, config=strict) if ln.minutes} == {("GP",)}
    assert {ln.modifiers for ln in claims(events) if ln.minutes} == {("GP", "CQ")}


@pytest.mark.parametrize(
    ("role", "setup_mods", "device_mods"),
    [
        ("PT", "GP", "GP"),
        ("PTA", "GP+CQ", "GP"),
        ("OT", "GO", "GO"),
        ("OTA", "GO+CO", "GO"),
        ("SLP", "GN", "GN"),
        ("MD", "", ""),
        ("NP", "", ""),
    ],
)
def test_modifiers_by_episode_role(role: str, setup_mods: str, device_mods: str) -> None:
    events = [
        start(role=role),
        data("2026-11-10"),
        data("2026-11-11"),
        log("2026-11-12", 12, role="OTA" if role == "OTA" else "PT"),
    ]
    by_cpt = {ln.cpt: "+".join(ln.modifiers) for ln in claims(events)}
    assert by_cpt["98975"] == setup_mods
    assert by_cpt["98985"] == device_mods  # never CQ/CO on device supply
    if role == "OTA":
        assert by_cpt["98979"] == "GO+CO"


def test_98975_needs_setup_education() -> None:
    events = [start(setup=False), data("2026-11-10"), data("2026-11-11")]
    assert [ln.cpt for ln in claims(events)] == ["98985"]


def test_second_episode_after_the_first_ended() -> None:
    events = [
        start("2026-11-01", ep="ep1"),
        data("2026-11-02"),
        data("2026-11-03"),
        end("2026-11-20", ep="ep1"),
        data("2026-11-25", ep=None),  # between episodes: counts nowhere
        start("2026-12-01", ep="ep2", role="PTA"),
        data("2026-12-02", ep=None),
        data("2026-12-03", ep=None),
    ]
    lines = claims(events)
    assert [
        (ln.episode_id, ln.cpt, "+".join(ln.modifiers), ln.period_end.isoformat(), ln.data_days)
        for ln in lines
    ] == [
        ("ep1", "98975", "GP", "2026-11-20", 2),
        ("ep1", "98985", "GP", "2026-11-20", 2),
        ("ep2", "98975", "GP+CQ", "2026-12-30", 2),
        ("ep2", "98985", "GP", "2026-12-30", 2),
    ]


def test_a_second_concurrent_episode_is_refused() -> None:
    events = [start("2026-11-01", ep="ep1"), start("2026-11-05", ep="ep2")]
    state = fold_events(events)[(DEFAULT_ORG, "p1")]
    assert set(state.book.episodes) == {"ep1"}
    assert list(state.rejected_episode_events) == [events[1].event_id]


def test_treatment_month_is_billed_once_across_two_episodes() -> None:
    events = [
        start("2026-11-01", ep="ep1"),
        log("2026-11-05", 15, ep="ep1"),
        end("2026-11-10", ep="ep1"),
        start("2026-11-15", ep="ep2", role="OT"),
        log("2026-11-20", 10, ep=None, interactive=False),
    ]
    tm = [
        (ln.episode_id, ln.cpt, "+".join(ln.modifiers), ln.minutes)
        for ln in claims(events)
        if ln.minutes is not None
    ]
    assert tm == [("ep2", "98980", "GO", 25)]  # summed; goes to the latest log's episode


def test_time_log_outside_any_episode_is_not_billed() -> None:
    assert claims([start(), log("2026-11-01", 30, ep=None)]) == []


# --- order independence and state ---------------------------------------------------------


def _mixed_history() -> list[Event]:
    return [
        start("2026-11-01", ep="ep1"),
        *[data(d) for d in days_from("2026-11-01", 17)],
        log("2026-11-03", 15),
        log("2026-11-20", 30, interactive=False),
        end("2026-12-05", ep="ep1"),
        start("2026-12-06", ep="ep2", role="OTA"),
        *[data(d, ep=None) for d in days_from("2026-12-06", 5, step=3)],
        log("2026-12-07", 45, role="OTA", ep=None),
    ]


def test_arrival_order_does_not_matter() -> None:
    events = _mixed_history()
    expected = claims(events)
    assert [ln.cpt for ln in expected] == [
        "98975",
        "98977",
        "98980",
        "98981",
        "98975",
        "98980",
        "98981",
        "98985",
    ]
    rng = random.Random(7)
    for _ in range(25):
        shuffled = events + rng.sample(events, 5)  # plus some re-sent events
        rng.shuffle(shuffled)
        assert claims(shuffled) == expected


def test_state_round_trips_through_json() -> None:
    state = fold_events(_mixed_history())[(DEFAULT_ORG, "p1")]
    again = PatientBillingState.model_validate_json(state.model_dump_json())
    as_of = dt.datetime.fromisoformat(FAR)
    assert compute_claims([again], as_of) == compute_claims([state], as_of)
    assert again.apply(_mixed_history()[0]) in (True, False)


def test_apply_reports_change_and_rejects_other_patient() -> None:
    state = PatientBillingState(patient_id="p1")
    ev = data("2026-11-10")
    assert state.apply(ev) is True
    assert state.apply(ev) is False
    with pytest.raises(ValueError):
        state.apply(data("2026-11-10", patient="p2"))


def test_naive_as_of_is_refused() -> None:
    with pytest.raises(ValueError):
        compute_claims([], dt.datetime(2027, 1, 1))


# --- amendments ---------------------------------------------------------------------------


def test_late_day_after_export_amends_98985_to_98977() -> None:
    days = days_from("2026-11-10", 15)
    events = [start(), *[data(d) for d in days]]
    first_export = lines_to_export([], claims(events, as_of="2026-12-20T00:00:00Z"))
    assert [(ln.cpt, ln.status) for ln in first_export] == [("98975", "new"), ("98985", "new")]

    # a phone syncs a day from 12-01 after the export
    events.append(data("2026-12-01"))
    now = claims(events, as_of="2026-12-21T00:00:00Z")
    standing = standing_lines([first_export])
    second = lines_to_export(standing, now)
    assert [(ln.cpt, ln.status, ln.data_days) for ln in second] == [("98977", "amended", 16)]
    # 98975's data_days moved 15 -> 16 but it bills the same thing: not re-exported
    assert withdrawn_lines(standing, now) == []

    # re-running the export changes nothing, and no period carries two device codes
    standing = standing_lines([first_export, second])
    assert lines_to_export(standing, now) == []
    device = [ln for ln in standing if ln.group == "device"]
    assert [ln.cpt for ln in device] == ["98977"]


def test_amendment_of_a_month_resends_the_whole_group() -> None:
    events = [start(), log("2026-11-12", 25)]
    exported = lines_to_export([], claims(events))
    events.append(log("2026-11-28", 20, interactive=False, offset="-07:00"))
    nxt = lines_to_export(standing_lines([exported]), claims(events))
    assert [(ln.cpt, ln.units, ln.status, ln.minutes) for ln in nxt] == [
        ("98980", 1, "amended", 45),
        ("98981", 1, "amended", 45),
    ]


def test_previews_pass_through_and_are_not_standing() -> None:
    events = [start(), data("2026-11-10"), data("2026-11-11")]
    preview = lines_to_export([], claims(events, as_of="2026-11-20T00:00:00Z", include_open=True))
    assert {ln.status for ln in preview} == {"preview"}
    assert standing_lines([preview]) == []


def test_withdrawn_when_a_late_end_leaves_too_few_days() -> None:
    events = [start(), data("2026-11-10"), data("2026-11-20")]
    exported = lines_to_export([], claims(events))
    events.append(end("2026-11-15"))
    now = claims(events)
    assert lines_to_export(standing_lines([exported]), now) == []
    assert [ln.cpt for ln in withdrawn_lines(standing_lines([exported]), now)] == ["98975", "98985"]


# --- progress and at-risk --------------------------------------------------------------


def test_progress_twelve_of_sixteen_nine_left() -> None:
    # period 1 = 11-10..12-09; 12 data days up to 11-30 (a data day); 9 dates after it
    dates = days_from("2026-11-10", 11, step=2) + ["2026-11-11"]
    state = fold_events(
        [start(), *[data(d) for d in dates], log("2026-11-12", 12), data("2026-12-05")]
    )[(DEFAULT_ORG, "p1")]  # a future-dated day is not "so far"
    p = billing_progress(state, D("2026-11-30"))
    assert p.period is not None
    assert p.period.summary == "12 of 16 days, 9 days left"
    assert (p.period.earned, p.period.on_track_for, p.period.days_needed) == ("98985", "98977", 4)
    assert (p.month.minutes, p.month.interactive, p.month.earned, p.month.minutes_to_next) == (
        12,
        True,
        ("98979",),
        8,
    )


def test_progress_counts_today_as_left_until_it_has_data() -> None:
    state = fold_events([start(), data("2026-11-10")])[(DEFAULT_ORG, "p1")]
    p = billing_progress(state, D("2026-12-09"))  # last day of period 1, no data yet
    assert p.period is not None and p.period.days_left == 1
    assert p.period.on_track_for == "98985" and p.period.earned is None
    assert billing_progress(state, D("2026-11-01")).period is None
    assert patient_local_date(state, dt.datetime(2026, 12, 10, 3, 0, tzinfo=dt.UTC)) == D(
        "2026-12-09"
    )


@pytest.mark.parametrize(
    ("n_data_days", "day", "at_risk"),
    [
        # day = 11-24: 15 dates of period 1 remain after it (11-25..12-09)
        (1, "2026-11-24", False),  # 1 + 15 = 16
        (0, "2026-11-24", True),  # 0 + 15 = 15
        (16, "2026-12-09", False),
        (15, "2026-12-09", True),  # last day, 15 days: 98977 out of reach
    ],
)
def test_billing_at_risk(n_data_days: int, day: str, at_risk: bool) -> None:
    events = [start(), *[data(d) for d in days_from("2026-11-10", n_data_days)]]
    state = fold_events(events)[(DEFAULT_ORG, "p1")]
    assert billing_at_risk(state, D(day)) is at_risk


def test_billing_at_risk_outside_episode_is_false() -> None:
    state = fold_events([start()])[(DEFAULT_ORG, "p1")]
    assert billing_at_risk(state, D("2026-11-01")) is False


@pytest.mark.parametrize(
    ("data_days", "days_left", "text"),
    [
        (0, 30, "0/16 toward 98977 · needs 16 in 30 days"),
        (1, 15, "1/16 toward 98977 · needs 15 in 15 days"),
        (2, 14, "98985 secured · 2/16 toward 98977 · needs 14 in 14 days"),
        (2, 13, "98985 secured · 98977 out of reach (2/16, 13 days left)"),
        (5, 16, "98985 secured · 5/16 toward 98977 · needs 11 in 16 days"),
        (15, 1, "98985 secured · 15/16 toward 98977 · needs 1 in 1 day"),
        (16, 0, "98977 met (16 data days)"),
        (22, 8, "98977 met (22 data days)"),  # never "22 of 16 days"
        (1, 1, "98977 out of reach; needs 1 for 98985 in 1 day"),
        (0, 1, "no device code reachable (0 data days, 1 day left)"),
    ],
)
def test_progress_names_the_codes_secured_reachable_and_needed(
    data_days: int, days_left: int, text: str
) -> None:
    """Issue 17: the worklist, the patient page and the billing view say what a period has
    secured and what it still needs, in codes (98985 from 2 data days, 98977 from 16)."""
    assert progress_text(data_days, days_left) == text
