"""A time log's correction (``clinician.time_logged`` with ``supersedes``) replaces the log
it names in the month's minutes, whatever the arrival order, in the one fold
(``PatientBillingState.apply``), in the ledger's rows and in the claims (issue 17)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from billing.ledger import ledger_rows, states_from_rows
from billing.rules import billing_progress, compute_claims, month_totals
from billing.state import fold_events
from schemas.events import DEFAULT_ORG, Event, validate_event
from tests.unit.test_billing_rules import FAR, brief, claims, start

AS_OF = dt.datetime.fromisoformat(FAR)


def tlog(
    eid: str,
    minutes: int,
    interactive: bool = True,
    supersedes: str | None = None,
    day: str = "2026-11-20",
    patient: str = "p1",
) -> Event:
    obj: dict[str, Any] = {
        "event_id": eid,
        "schema_version": 1,
        "type": "clinician.time_logged",
        "patient_id": patient,
        "occurred_at": f"{day}T14:00:00-07:00",
        "episode_id": "ep1",
        "clinician_id": "c1",
        "clinician_role": "PT",
        "minutes": minutes,
        "activity": "call" if interactive else "review",
        "interactive": interactive,
    }
    if supersedes is not None:
        obj["supersedes"] = supersedes
    event = validate_event(obj)
    assert not isinstance(event, list), event
    return event


def minutes(events: list[Event]) -> int:
    (state,) = fold_events(events).values()
    (totals,) = month_totals(state).values()
    return totals.minutes


def test_a_correction_counts_instead_of_the_entry_it_supersedes() -> None:
    original = tlog("t1", 15)
    other = tlog("t2", 5, interactive=False)
    fix = tlog("t3", 25, supersedes="t1")
    # 15 + 5 before; the correction: 25 + 5, not 15 + 25 + 5
    assert minutes([start(), original, other]) == 20
    assert minutes([start(), original, other, fix]) == 30
    # 45 minutes counted twice would add a 98981
    assert brief(claims([start(), original, other, fix])) == [("98980", "GP", 1, "2026-11-30")]


def test_a_correction_can_take_the_code_away() -> None:
    # the live call was logged by mistake: corrected to a review, no interactive log left
    events = [start(), tlog("t1", 25), tlog("t2", 25, interactive=False, supersedes="t1")]
    (state,) = fold_events(events).values()
    (totals,) = month_totals(state).values()
    assert (totals.minutes, totals.interactive) == (25, False)
    assert brief(claims(events)) == []


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_any_arrival_order_gives_the_same_month_incl_the_correction_first(
    order: tuple[int, ...],
) -> None:
    # a chain: t1 corrected by t3, t3 corrected by t4; t2 stands
    events = [tlog("t1", 15), tlog("t2", 5), tlog("t3", 12, supersedes="t1")]
    events.append(tlog("t4", 18, supersedes="t3"))
    arrived = [start(), *(events[i] for i in order)]
    assert minutes(arrived) == 23
    assert brief(claims(arrived)) == brief(claims([start(), *events]))


def test_a_correction_alone_counts_and_its_original_then_adds_nothing() -> None:
    (state,) = fold_events([start(), tlog("t3", 25, supersedes="t1")]).values()
    assert billing_progress(state, dt.date(2026, 11, 25)).month.minutes == 25
    assert state.apply(tlog("t1", 15)) is True  # stored: the correction names it
    assert billing_progress(state, dt.date(2026, 11, 25)).month.minutes == 25
    assert state.apply(tlog("t1", 15)) is False  # a duplicate


def test_a_correction_naming_another_patients_entry_or_itself_replaces_nothing() -> None:
    events = [
        start(),
        start(patient="p2"),
        tlog("t1", 15),
        tlog("t9", 10, patient="p2", supersedes="t1"),
        tlog("t8", 5, supersedes="t8"),
    ]
    states = fold_events(events)
    assert [t.minutes for t in month_totals(states[(DEFAULT_ORG, "p1")]).values()] == [20]
    assert [t.minutes for t in month_totals(states[(DEFAULT_ORG, "p2")]).values()] == [10]


def test_the_ledger_rows_load_back_into_the_folds_states_with_the_correction() -> None:
    events = [start(), tlog("t3", 25, supersedes="t1"), tlog("t1", 15), tlog("t2", 5)]
    rows = ledger_rows(events)
    names = (
        "org_id event_id patient_id episode_id local_date occurred_at utc_offset_s minutes"
        " clinician_role interactive supersedes"
    ).split()
    logs = [dict(zip(names, r, strict=True)) for r in rows.time_logs]
    eps = [
        {"org_id": r[0], "event_id": r[1], "patient_id": r[2], "payload": r[6]}
        for r in rows.episode_events
    ]
    back = states_from_rows([], logs, eps)
    folded = fold_events(events)
    assert back[(DEFAULT_ORG, "p1")].time_logs == folded[(DEFAULT_ORG, "p1")].time_logs
    assert back[(DEFAULT_ORG, "p1")].time_logs["t3"].supersedes == "t1"
    assert compute_claims(back.values(), AS_OF) == compute_claims(folded.values(), AS_OF)
