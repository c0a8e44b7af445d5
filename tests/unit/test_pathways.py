"""Golden tables for the pathway engine (docs/pathways-and-outcomes.md, issue 19 item 3):
the primary scores, every task row and every decision row at its boundary days, the outcome
fields, the report's denominators and the adherence tertiles. Days are episode days (day 0
= the start); ``T`` is the as-of day. The expected values are worked by hand from the rules
file, not by calling the engine."""

from __future__ import annotations

import importlib.resources
import json
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from click.testing import CliRunner

from pathways.engine import EpisodeView
from pathways.model import builtin, parse_pathway
from pathways.offline import views
from pathways.outcomes import OutcomeRow, episode_row, group_row, outcome_row, report, tertiles
from rtm.cli import main
from schemas.events import Event
from tests.unit.pathway_events import (
    as_of,
    date,
    ended,
    exercise,
    fall,
    logged,
    mk,
    pain,
    paused,
    psfs,
    resumed,
    start,
    visit,
)

S = start("other")  # primary: PSFS (higher is better, MCID 2)
B1 = psfs(1, "b1", 3, 3, 3)  # baseline 3
SAME26 = psfs(26, "w26", 3, 3, 3)  # week-4 3: no change
STEP = [S, B1, SAME26, pain(22, "pain22", 7)]  # step-up on day 26


def run(events: list[Event], t: int, licensed: frozenset[str] = frozenset()) -> EpisodeView:
    eps, missing = views(events, as_of(t), builtin(), licensed)
    assert missing == []
    (view,) = eps
    return view


def task(view: EpisodeView, kind: str) -> tuple[str, str | None, str] | None:
    found = [t for t in view.tasks if t.kind == kind]
    if not found:
        return None
    (t,) = found
    return (t.due_on.isoformat(), None if t.done_on is None else t.done_on.isoformat(), t.status)


def decisions(view: EpisodeView, kind: str | None = None) -> list[tuple[str, str, str]]:
    return [
        (d.on.isoformat(), d.decision, d.reason)
        for d in view.decisions
        if kind is None or d.decision == kind
    ]


def expect(due: int, done: int | None, status: str) -> tuple[str, str | None, str]:
    return (date(due), None if done is None else date(done), status)


# --- the primary instrument and scores -------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "licensed", "instrument"),
    [
        ("low_back", frozenset(), "psfs"),
        ("low_back", frozenset({"odi"}), "odi"),
        ("neck", frozenset(), "psfs"),
        ("neck", frozenset({"ndi"}), "ndi"),
        ("shoulder", frozenset({"quickdash"}), "quickdash"),
        ("wrist_hand", frozenset({"odi"}), "psfs"),
        ("hip", frozenset(), "lefs"),
        ("knee", frozenset(), "lefs"),
        ("ankle_foot", frozenset(), "lefs"),
        ("other", frozenset(), "psfs"),
        (None, frozenset(), "psfs"),  # absent region means other
    ],
)
def test_primary_instrument(region: str | None, licensed: frozenset[str], instrument: str) -> None:
    view = run([start(region)], 3, licensed)
    assert view.instrument == instrument
    assert view.body_region == (region or "other")


@pytest.mark.parametrize(
    ("events", "baseline", "week4", "final"),
    [
        ([S, psfs(0, "a", 1, 1, 1)], Fraction(1), None, None),  # a lone baseline has no final
        ([S, psfs(7, "a", 1, 1, 1), psfs(9, "b", 2, 2, 2)], Fraction(1), None, Fraction(2)),
        ([S, psfs(8, "a", 1, 1, 1), psfs(9, "b", 2, 2, 2)], None, None, None),  # day 8: no baseline
        # the first on the baseline days, the first on days 25-35, the last after the baseline
        (
            [
                S,
                psfs(2, "b", 2, 2, 2),
                psfs(1, "a", 1, 1, 1),
                psfs(25, "c", 3, 3, 3),
                psfs(35, "d", 4, 4, 4),
                psfs(40, "e", 5, 5, 5),
            ],
            Fraction(1),
            Fraction(3),
            Fraction(5),
        ),
        ([S, B1, psfs(24, "c", 4, 4, 4), psfs(36, "d", 5, 5, 5)], Fraction(3), None, Fraction(5)),
        ([S, B1, psfs(35, "d", 5, 5, 5)], Fraction(3), Fraction(5), Fraction(5)),
        # an invalid form (2 answered of PSFS's 3) and another instrument are ignored
        (
            [
                S,
                B1,
                psfs(20, "x", 9, 9),
                mk("assessment.completed", 20, "n", instrument="nprs", answers={"nprs": 1}),
                psfs(21, "y", 4, 4, 4),
            ],
            Fraction(3),
            None,
            Fraction(4),
        ),
    ],
)
def test_primary_scores(
    events: list[Event], baseline: Fraction | None, week4: Fraction | None, final: Fraction | None
) -> None:
    view = run(events, 60)
    assert (view.baseline and view.baseline.value) == baseline
    assert (view.week4 and view.week4.value) == week4
    assert (view.final and view.final.value) == final


def test_psfs_exact_change_of_two_reaches_the_mcid() -> None:
    """PSFS 10/3 -> 16/3 is a change of exactly 2: MCID reached, printed 3.3 -> 5.3, 2.0."""
    view = run([S, psfs(1, "a", 3, 3, 4), psfs(20, "b", 5, 5, 6)], 30)
    assert view.change == 2 and view.mcid_reached is True
    row = episode_row(view)
    assert (row["baseline"], row["final"], row["change"]) == (3.3, 5.3, 2.0)


def test_change_in_the_direction_of_improvement_for_a_lower_is_better_instrument() -> None:
    """ODI (licensed, lower is better): 40 % -> 28 % is a change of +12 (MCID 10 reached)."""
    odi = {f"s{i}": 2 for i in range(1, 11)}  # 20 / 50 = 40 %
    better = {**{f"s{i}": 1 for i in range(1, 9)}, "s9": 3, "s10": 3}  # 14 / 50 = 28 %
    events = [
        start("low_back"),
        mk("assessment.completed", 1, "a", instrument="odi", answers=odi),
        mk("assessment.completed", 30, "b", instrument="odi", answers=better),
    ]
    view = run(events, 40, frozenset({"odi"}))
    assert (view.instrument, view.change, view.mcid_reached) == ("odi", 12, True)


# --- tasks: every row, at its boundary days ---------------------------------------------------

READY = [start("other", spw=7), B1, *(exercise(d, f"x{d}") for d in range(0, 21))]
READY += [psfs(20, "r20", 5, 5, 5)]  # change 2 and adherence 100 %: discharge-ready on day 20


@pytest.mark.parametrize(
    ("kind", "events", "t", "expected"),
    [
        ("baseline_prom", [S], 7, expect(7, None, "open")),
        ("baseline_prom", [S], 8, expect(7, None, "overdue")),
        ("baseline_prom", [S, psfs(7, "a", 1, 1, 1)], 8, expect(7, 7, "done")),
        ("baseline_prom", [S, psfs(8, "a", 1, 1, 1)], 9, expect(7, None, "overdue")),
        ("baseline_prom", [S, ended(7, "other")], 20, expect(7, None, "cancelled")),
        ("baseline_prom", [S, ended(6, "other")], 20, expect(7, None, "cancelled")),
        ("baseline_prom", [S, ended(8, "other")], 20, expect(7, None, "overdue")),
        ("week4_prom", [S, B1], 28, expect(28, None, "open")),
        ("week4_prom", [S, B1], 29, expect(28, None, "overdue")),
        ("week4_prom", [S, B1, psfs(24, "w", 3, 3, 3)], 29, expect(28, None, "overdue")),
        ("week4_prom", [S, B1, psfs(25, "w", 3, 3, 3)], 26, expect(28, 25, "done")),
        ("week4_prom", [S, B1, psfs(35, "w", 3, 3, 3)], 36, expect(28, 35, "done")),
        ("week4_prom", [S, B1, psfs(36, "w", 3, 3, 3)], 37, expect(28, None, "overdue")),
        ("week4_prom", [S, ended(28, "referred")], 40, expect(28, None, "cancelled")),
        ("week4_review", [S, logged(24, "l")], 29, expect(28, None, "overdue")),
        ("week4_review", [S, logged(25, "l")], 26, expect(28, 25, "done")),
        ("week4_review", [S, logged(31, "l"), logged(30, "k")], 32, expect(28, 30, "done")),
        ("in_person_visit", [S], 60, None),  # no step-up, no task
        ("in_person_visit", STEP, 29, expect(29, None, "open")),
        ("in_person_visit", STEP, 30, expect(29, None, "overdue")),
        ("in_person_visit", [*STEP, visit(26, "v")], 27, expect(29, 26, "done")),
        ("in_person_visit", [*STEP, visit(25, "v")], 30, expect(29, None, "overdue")),
        ("in_person_visit", [*STEP, visit(27, "v", "virtual")], 30, expect(29, None, "overdue")),
        ("in_person_visit", [*STEP, visit(31, "v")], 32, expect(29, 31, "done")),
        ("pause_review", [S, fall(10, "f")], 11, expect(11, None, "open")),
        ("pause_review", [S, fall(10, "f")], 12, expect(11, None, "overdue")),
        ("pause_review", [S, fall(10, "f"), resumed(12, "r")], 13, expect(11, 12, "done")),
        (
            "pause_review",
            [S, paused(10, "p"), ended(11, "other")],
            20,
            expect(11, None, "cancelled"),
        ),
        ("discharge_review", READY, 23, expect(23, None, "open")),
        ("discharge_review", READY, 24, expect(23, None, "overdue")),
        ("discharge_review", [*READY, ended(25, "goals_met")], 30, expect(23, 25, "done")),
        ("discharge_review", [S, B1], 60, None),
    ],
)
def test_task_rows(
    kind: str, events: list[Event], t: int, expected: tuple[str, str | None, str] | None
) -> None:
    assert task(run(events, t), kind) == expected


def test_the_first_three_tasks_exist_for_every_episode() -> None:
    kinds = [t.kind for t in run([S], 1).tasks]
    assert kinds == ["baseline_prom", "week4_prom", "week4_review"]  # by due date, then kind


# --- decisions: every row, at its boundary days -----------------------------------------------


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (STEP, [(date(26), "step_up", "no_mcid_pain_7")]),
        ([S, B1, SAME26, pain(20, "p", 9)], []),  # before day 21
        ([S, B1, SAME26, pain(21, "p", 7)], [(date(26), "step_up", "no_mcid_pain_7")]),
        ([S, B1, SAME26, pain(28, "p", 7)], [(date(28), "step_up", "no_mcid_pain_7")]),  # the later
        ([S, B1, SAME26, pain(29, "p", 10)], []),  # after day 28
        ([S, B1, SAME26, pain(22, "p", 6)], []),  # below 7
        (
            [S, B1, SAME26, pain(28, "q", 8), pain(27, "p", 7)],
            [(date(27), "step_up", "no_mcid_pain_7")],
        ),
        ([S, B1, psfs(26, "w", 5, 5, 5), pain(22, "p", 8)], []),  # week-4 change 2 = MCID
        (
            [S, B1, psfs(26, "w", 5, 5, 4), pain(22, "p", 8)],
            [(date(26), "step_up", "no_mcid_pain_7")],
        ),
        ([S, psfs(8, "b", 3, 3, 3), SAME26, pain(22, "p", 8)], []),  # no baseline
        ([S, B1, psfs(36, "w", 3, 3, 3), pain(22, "p", 8)], []),  # no week-4 score
    ],
)
def test_step_up_rows(events: list[Event], expected: list[tuple[str, str, str]]) -> None:
    assert decisions(run(events, 40), "step_up") == expected


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([S, fall(10, "f")], [(date(10), "pause", "fall")]),
        ([S, paused(10, "p")], [(date(10), "pause", "clinician")]),
        (
            [S, paused(10, "p"), resumed(12, "r")],
            [(date(10), "pause", "clinician"), (date(12), "resume", "clinician")],
        ),
        ([S, fall(10, "f"), fall(11, "g")], [(date(10), "pause", "fall")]),  # no new pause
        ([S, resumed(9, "r")], []),  # a resume while not paused does nothing
        ([fall(-1, "f"), S], []),  # a fall before the episode pauses nothing
        (
            [S, fall(10, "f"), resumed(12, "r"), paused(14, "p")],
            [
                (date(10), "pause", "fall"),
                (date(12), "resume", "clinician"),
                (date(14), "pause", "clinician"),
            ],
        ),
    ],
)
def test_pause_and_resume_rows(events: list[Event], expected: list[tuple[str, str, str]]) -> None:
    got = [d for d in decisions(run(events, 30)) if d[1] in ("pause", "resume")]
    assert got == expected


def ready_with(*extra: Event) -> list[Event]:
    """Baseline 3 on day 1, sessions_per_week 2 (2 sessions prescribed per full week), the
    score 5 (change 2 = MCID) on day 20, plus ``extra``."""
    return [start("other", spw=2), B1, psfs(20, "r", 5, 5, 5), *extra]


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # 1 session in days 14-20 of 2 prescribed: adherence exactly 50 %
        (ready_with(exercise(18, "x")), [(date(20), "discharge_ready", "mcid_and_adherence")]),
        (ready_with(exercise(13, "x")), []),  # outside the window: 0 %
        # the whole day counts: a session after the form, the same evening
        (
            ready_with(mk("exercise.completed", 20, "x", 23, exercise_id="b")),
            [(date(20), "discharge_ready", "mcid_and_adherence")],
        ),
        # at most once: a second qualifying score adds nothing
        (
            ready_with(exercise(18, "x"), exercise(21, "y"), psfs(22, "s", 6, 6, 6)),
            [(date(20), "discharge_ready", "mcid_and_adherence")],
        ),
        # change below the MCID on day 20; the first score that qualifies is day 22's
        (
            [
                start("other", spw=2),
                B1,
                psfs(20, "r", 5, 5, 4),
                exercise(18, "x"),
                psfs(22, "s", 5, 5, 5),
            ],
            [(date(22), "discharge_ready", "mcid_and_adherence")],
        ),
        ([start("other", spw=2), psfs(20, "r", 5, 5, 5), exercise(18, "x")], []),  # no baseline
    ],
)
def test_discharge_ready_rows(events: list[Event], expected: list[tuple[str, str, str]]) -> None:
    assert decisions(run(events, 40), "discharge_ready") == expected


@pytest.mark.parametrize(
    ("reason", "exit_reason"),
    [
        ("goals_met", "goals_met"),
        ("discharged", "discharged"),
        ("dropped_out", "dropped_out"),
        ("referred", "referred"),
        ("transferred", "transferred"),
        ("not_eligible", "not_eligible"),
        ("other", "other"),
        ("moved_house", "other"),  # unlisted
        (None, "other"),  # absent
    ],
)
def test_end_row(reason: str | None, exit_reason: str) -> None:
    view = run([S, ended(30, reason)], 40)
    assert decisions(view, "end") == [(date(30), "end", exit_reason)]
    assert episode_row(view)["exit_reason"] == exit_reason


def test_events_at_or_after_as_of_are_ignored() -> None:
    """A baseline at exactly the as-of instant is not seen; one a second earlier is."""
    events = [S, psfs(3, "a", 1, 1, 1)]  # 10:00 local on day 3
    assert run(events, 3).baseline is None  # as of 00:00 on day 3
    eps, _ = views(events, as_of(3, 10), builtin())
    assert eps[0].baseline is None
    eps, _ = views(events, as_of(3, 11), builtin())
    assert eps[0].baseline is not None


# --- outcomes per episode -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "t", "dropped_out"),
    [
        ([S, pain(5, "p", 3)], 18, False),  # T - L = 13
        ([S, pain(5, "p", 3)], 19, True),  # T - L = 14
        ([S], 14, True),  # L is the start
        ([S, psfs(10, "a", 1, 1, 1)], 14, True),  # an assessment is not patient data
        ([S, fall(5, "f")], 40, False),  # paused on T
        ([S, paused(5, "p"), resumed(10, "r")], 23, False),  # L = the resume date
        ([S, paused(5, "p"), resumed(10, "r")], 24, True),
        ([S, ended(3, "dropped_out")], 5, True),
        ([S, ended(3, "discharged")], 40, False),
    ],
)
def test_dropped_out(events: list[Event], t: int, dropped_out: bool) -> None:
    assert run(events, t).dropped_out is dropped_out


DISCHARGED = [S, B1, psfs(20, "f", 5, 5, 5), ended(30, "discharged")]


@pytest.mark.parametrize(
    ("events", "visits", "resolved"),
    [
        ([*DISCHARGED, visit(2, "v1"), visit(9, "v2"), visit(16, "v3", "virtual")], 3, True),
        ([*DISCHARGED, visit(2, "v1"), visit(9, "v2"), visit(16, "v3"), visit(23, "v4")], 4, False),
        ([S, B1, psfs(20, "f", 5, 5, 5), ended(30, "goals_met")], 0, True),
        ([S, B1, psfs(20, "f", 5, 5, 5), ended(30, "referred")], 0, False),
        ([S, B1, psfs(20, "f", 5, 5, 4), ended(30, "discharged")], 0, False),  # no MCID
        ([S, B1, psfs(20, "f", 5, 5, 5)], 0, False),  # not ended
        ([*DISCHARGED, visit(31, "late")], 0, True),  # after the end: not the episode's
    ],
)
def test_visits_and_resolution(events: list[Event], visits: int, resolved: bool) -> None:
    row = episode_row(run(events, 40))
    assert (row["visits"], row["resolved_within_3_visits"]) == (visits, resolved)


def test_episode_row_fields() -> None:
    row = episode_row(run(DISCHARGED, 40))
    assert row == {
        "episode_id": "ep-1",
        "patient_id": "p-1",
        "org_id": "default",
        "clinician_id": "c-1",
        "body_region": "other",
        "pathway": "msk-default",
        "version": 1,
        "instrument": "psfs",
        "start_date": date(0),
        "end_date": date(30),
        "exit_reason": "discharged",
        "baseline": 3.0,
        "final": 5.0,
        "change": 2.0,
        "mcid_reached": True,
        "visits": 0,
        "days_to_discharge": 30,
        "resolved_within_3_visits": True,
        "dropped_out": False,
        "adherence": 0.0,  # 7 sessions a week prescribed, none done
    }


def test_adherence_is_the_mean_over_unpaused_days() -> None:
    """Sessions on days 0-4 every day (7 a week). Up to T - 1 = day 9: days 0-4 are 100 %,
    days 5-9 are 5/6, 5/7, 4/7, 3/7, 2/7: mean 47/60 = 78.3 %. Paused from day 5 on, only
    days 0-4 count: 100 %."""
    done = [exercise(d, f"x{d}") for d in range(5)]
    assert run([S, *done], 10).adherence == Fraction(47, 60)
    assert episode_row(run([S, *done], 10))["adherence"] == 78.3
    assert run([S, *done, paused(5, "p")], 10).adherence == 1
    eps, _ = views([S], as_of(0, 12), builtin())
    assert eps[0].adherence is None  # no day before T yet: no value


# --- the report: denominators and tertiles ------------------------------------------------------


def cohort() -> list[Event]:
    """Four episodes, one patient each (sessions prescribed, none done: adherence 0 %)."""
    return [
        # c-1: MCID, discharged on day 30 with no visits (resolved)
        start("other", "e1", patient="p1"),
        psfs(1, "e1b", 3, 3, 3, patient="p1"),
        psfs(20, "e1f", 5, 5, 5, patient="p1"),
        ended(30, "discharged", "e1", "p1"),
        # c-1: no MCID, goals met on day 20
        start("other", "e2", patient="p2"),
        psfs(1, "e2b", 3, 3, 3, patient="p2"),
        psfs(15, "e2f", 4, 4, 4, patient="p2"),
        ended(20, "goals_met", "e2", "p2"),
        # c-1: active, nothing sent: dropped out by day 60
        start("other", "e3", patient="p3"),
        # c-2: a lone baseline
        start("knee", "e4", patient="p4", clinician="c-2"),
        mk(
            "assessment.completed",
            2,
            "e4b",
            patient="p4",
            instrument="lefs",
            answers={f"q{i}": 2 for i in range(1, 21)},
        ),
    ]


def test_report_by_clinician_denominators() -> None:
    eps, _ = views(cohort(), as_of(60), builtin())
    c1, c2 = report(rows(eps), "clinician")
    assert c1 == {
        "by": "clinician",
        "group": "c-1",
        "org_id": "default",
        "episodes": 3,
        "with_scores": 2,
        "mcid_rate": 50.0,
        "mcid_reached_n": 1,
        "median_days_to_discharge": 25.0,  # (20 + 30) / 2
        "discharged_n": 2,
        "resolved_within_3_visits_rate": 50.0,  # e1 of the 2 ended with scores
        "resolved_within_3_visits_n": [1, 2],
        "dropout_rate": 33.3,  # e3 of 3
        "dropped_out_n": 1,
        # e1 and e2 both at 0 %: ordered by episode_id, e1 is 0 of 2 (tertile 1), e2 is 1 of 2
        # (floor(3/2) + 1 = tertile 2)
        "mcid_rate_by_adherence_tertile": [100.0, 0.0, None],
        "mcid_by_adherence_tertile_n": [[1, 1], [0, 1], [0, 0]],
    }
    assert c2["group"] == "c-2"
    assert (c2["episodes"], c2["with_scores"], c2["dropout_rate"]) == (1, 0, 100.0)
    # every rate whose denominator is 0 is null
    assert c2["mcid_rate"] is None
    assert c2["median_days_to_discharge"] is None
    assert c2["resolved_within_3_visits_rate"] is None
    assert c2["mcid_rate_by_adherence_tertile"] == [None, None, None]


def test_report_groups() -> None:
    eps, _ = views(cohort(), as_of(60), builtin())
    assert [(r["group"], r["episodes"]) for r in report(rows(eps), "pathway")] == [
        ("msk-default@1", 4)
    ]
    assert [(r["group"], r["episodes"]) for r in report(rows(eps), "org")] == [("default", 4)]
    assert [(r["group"], r["episodes"]) for r in report(rows(eps), "body_region")] == [
        ("knee", 1),
        ("other", 3),
    ]


def test_an_empty_group_has_every_rate_null() -> None:
    row = group_row("pathway", None, "msk-default@1", [])
    rates = (
        "mcid_rate",
        "median_days_to_discharge",
        "resolved_within_3_visits_rate",
        "dropout_rate",
    )
    assert [row[k] for k in rates] == [None, None, None, None]
    assert row["mcid_rate_by_adherence_tertile"] == [None, None, None]


def rows(eps: list[EpisodeView]) -> list[OutcomeRow]:
    return [outcome_row(v) for v in eps]


def fake(episode_id: str, adherence: Fraction | None) -> OutcomeRow:
    return cast(OutcomeRow, SimpleNamespace(adherence=adherence, episode_id=episode_id))


@pytest.mark.parametrize(
    ("n", "sizes"),
    [
        (1, [1, 0, 0]),
        (2, [1, 1, 0]),
        (3, [1, 1, 1]),
        (4, [2, 1, 1]),
        (5, [2, 2, 1]),
        (6, [2, 2, 2]),
        (7, [3, 2, 2]),
    ],
)
def test_tertile_sizes(n: int, sizes: list[int]) -> None:
    """The i-th of n (from 0) is in tertile floor(3i/n) + 1."""
    got = tertiles([fake(f"e{i}", Fraction(i, n)) for i in range(n)])
    assert [len(t) for t in got] == sizes


def test_tertiles_sort_by_adherence_then_episode_id_and_skip_none() -> None:
    views_ = [
        fake("b", Fraction(1, 2)),
        fake("a", Fraction(1, 2)),
        fake("z", Fraction(0)),
        fake("n", None),
    ]
    got = tertiles(views_)
    assert [[v.episode_id for v in t] for t in got] == [["z"], ["a"], ["b"]]


# --- the pathway version as data, and the commands ------------------------------------------------


def test_msk_default_v1_is_the_designs_json() -> None:
    """The shipped version parses to exactly the design's values (copied into the test)."""
    shipped = builtin()["msk-default@1"]
    data = importlib.resources.files("pathways").joinpath("versions", "msk-default@1.json")
    assert json.loads(data.read_text()) == json.loads(DESIGN_V1)
    assert shipped == parse_pathway(DESIGN_V1)
    assert shipped.discharge_ready.threshold == Fraction(1, 2)
    with pytest.raises(Exception, match="frozen"):
        shipped.version = 2  # type: ignore[misc]


DESIGN_V1 = """{"id":"msk-default","version":1,
 "primary":{"low_back":["odi","psfs"],"neck":["ndi","psfs"],"shoulder":["quickdash","psfs"],
  "elbow":["quickdash","psfs"],"wrist_hand":["quickdash","psfs"],"hip":["lefs"],"knee":["lefs"],
  "ankle_foot":["lefs"],"other":["psfs"]},
 "timepoints":{"baseline":{"days":[0,7],"due":7},"week4":{"days":[25,35],"due":28}},
 "review":{"from_day":25,"due":28},"step_up":{"pain_at_least":7,"pain_days":[21,28],"due_in":3},
 "pause":{"on_fall":true,"due_in":1},"discharge_ready":{"adherence_at_least":0.5,"due_in":3}}"""


def test_a_version_with_an_unknown_instrument_is_refused() -> None:
    bad = json.loads(DESIGN_V1)
    bad["primary"]["knee"] = ["koos"]
    with pytest.raises(ValueError, match="unknown instrument"):
        parse_pathway(json.dumps(bad))


def write(path: Path, events: list[dict[str, Any]], extra: str = "") -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + extra)
    return path


def test_cli_evaluate_episodes_and_report(tmp_path: Path) -> None:
    """The commands print sorted JSON lines; a bad line is reported and skipped (exit 1);
    an episode on an unknown version is named on stderr and skipped."""
    lines = [e.model_dump(mode="json", exclude_none=True) for e in STEP]
    lines.append(
        start(
            "other", "ep-9", patient="p-9", pathway={"id": "msk-default", "version": 7}
        ).model_dump(mode="json", exclude_none=True)
    )
    f = write(tmp_path / "events.jsonl", lines, "not json\n")
    runner = CliRunner()
    res = runner.invoke(
        main, ["pathways", "evaluate", "--events", str(f), "--as-of", as_of(30).isoformat()]
    )
    assert res.exit_code == 1
    assert "events.jsonl:6: skipped" in res.stderr
    assert "episode ep-9: pathway msk-default@7 unknown" in res.stderr
    (line,) = res.stdout.splitlines()
    obj = json.loads(line)
    assert list(obj) == sorted(obj)
    assert obj["decisions"] == [{"decision": "step_up", "on": date(26), "reason": "no_mcid_pain_7"}]
    res = runner.invoke(
        main, ["outcomes", "episodes", "--events", str(f), "--as-of", as_of(30).isoformat()]
    )
    assert json.loads(res.stdout)["baseline"] == 3.0
    res = runner.invoke(
        main,
        [
            "outcomes",
            "report",
            "--by",
            "pathway",
            "--events",
            str(f),
            "--as-of",
            as_of(30).isoformat(),
        ],
    )
    assert json.loads(res.stdout)["group"] == "msk-default@1"
    v7 = json.loads(DESIGN_V1) | {"version": 7}
    p7 = tmp_path / "v7.json"
    p7.write_text(json.dumps(v7))
    res = runner.invoke(
        main,
        [
            "pathways",
            "evaluate",
            "--events",
            str(f),
            "--as-of",
            as_of(30).isoformat(),
            "--pathway",
            str(p7),
        ],
    )
    assert [json.loads(x)["version"] for x in res.stdout.splitlines()] == [1, 7]


def test_a_resent_event_id_counts_once_first_arrival_wins() -> None:
    """An event_id is one event per organisation: the same id again, even with other content
    or under another patient, is ignored; in another organisation it is another event."""
    first = psfs(1, "b", 3, 3, 3)
    resent = psfs(2, "b", 9, 9, 9)
    other_patient = [start("other", "ep-2", patient="p-2"), psfs(1, "b", 1, 1, 1, patient="p-2")]
    eps, _ = views([S, first, resent, *other_patient], as_of(10), builtin())
    assert [(v.episode.episode_id, v.baseline and v.baseline.value) for v in eps] == [
        ("ep-1", Fraction(3)),
        ("ep-2", None),
    ]
    eps, _ = views([S, resent, first], as_of(10), builtin())
    assert eps[0].baseline is not None and eps[0].baseline.value == 9
    elsewhere = [e.model_copy(update={"org_id": "org-b"}) for e in other_patient]
    eps, _ = views([S, first, *elsewhere], as_of(10), builtin())
    assert [(v.org_id, v.baseline and v.baseline.value) for v in eps] == [
        ("default", Fraction(3)),
        ("org-b", Fraction(1)),
    ]
