"""Intakes in the simulated cohort (issue 18, item 6): opt-in, valid against the contract,
every route, contacts on time, late and never, deterministic per seed, and the rest of the
cohort unchanged (rtm/simulate_intakes.py)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from rtm.cli import main
from rtm.demo import intake_summary
from rtm.simulate import simulate, write_jsonl
from schemas.events import validate_event

START = dt.date(2026, 9, 1)
AS_OF = "2026-10-20T00:00:00Z"  # after the 45-day window: nothing pending is in the future


def cohort(seed: int = 1, share: float = 0.5, patients: int = 120) -> list[dict[str, Any]]:
    return list(simulate(patients, 45, seed, start=START, intakes=share))


def intake_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"].startswith("intake.")]


def evaluate_file(tmp_path: Path, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    path = tmp_path / "cohort.jsonl"
    write_jsonl(events, path)
    out = CliRunner().invoke(main, ["intake", "evaluate", "--events", str(path), "--as-of", AS_OF])
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_every_simulated_intake_event_is_valid() -> None:
    events = cohort()
    intakes = intake_events(events)
    assert {e["type"] for e in intakes} == {"intake.submitted", "intake.contacted"}
    for e in intakes + [e for e in events if "intake_id" in e]:
        assert not isinstance(validate_event(e), list), (e, validate_event(e))
    # low-back screens carry STarT Back answers, which the contract refuses elsewhere
    submitted = [e for e in intakes if e["type"] == "intake.submitted"]
    assert any("sbst" in e["answers"] for e in submitted)
    assert all(e["body_region"] == "low_back" for e in submitted if "sbst" in e["answers"])


def test_a_share_of_the_cohort_is_screened_once_before_its_first_episode() -> None:
    events = cohort()
    submitted = [e for e in events if e["type"] == "intake.submitted"]
    patients = {e["patient_id"] for e in events}
    assert 0.15 * len(patients) <= len(submitted) <= 0.45 * len(patients)
    assert len({e["patient_id"] for e in submitted}) == len(submitted)
    first_start = {}
    for e in events:
        if e["type"] == "episode.started":
            first_start.setdefault(e["patient_id"], dt.datetime.fromisoformat(e["occurred_at"]))
    for e in submitted:
        assert dt.datetime.fromisoformat(e["occurred_at"]) < first_start[e["patient_id"]]


def test_evaluate_over_a_simulated_file_gives_every_route_and_breaches(tmp_path: Path) -> None:
    lines = evaluate_file(tmp_path, cohort())
    assert len(lines) == len(intake_events_of_type(cohort(), "intake.submitted"))
    assert Counter(r["route"] for r in lines).keys() == {
        "urgent",
        "physician_review",
        "in_person_pt",
        "digital_pt",
    }
    on_time = [r for r in lines if not r["breached"]]
    late = [r for r in lines if r["breached"] and r["first_contact_at"] is not None]
    never = [r for r in lines if r["first_contact_at"] is None]
    assert len(on_time) > len(late) + len(never)  # most on time
    assert late and never
    assert all(r["breached"] for r in never)  # as of after the window, all overdue
    # urgent through an emergency red flag; low-back PT routes through STarT Back
    assert all(
        any(x.startswith("red_flag:") for x in r["reasons"])
        for r in lines
        if r["route"] == "urgent"
    )
    assert any(r["sbst"] is not None and r["route"] == "in_person_pt" for r in lines)
    assert any(r["sbst"] is not None and r["route"] == "digital_pt" for r in lines)


def intake_events_of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def test_contacts_come_by_intake_contacted_and_by_the_episode_naming_the_intake(
    tmp_path: Path,
) -> None:
    events = cohort()
    by_episode = {
        (e["patient_id"], e["intake_id"])
        for e in events
        if e["type"] == "episode.started" and "intake_id" in e
    }
    contacted = {
        (e["patient_id"], e["intake_id"]) for e in events if e["type"] == "intake.contacted"
    }
    assert by_episode and contacted and not by_episode & contacted
    lines = evaluate_file(tmp_path, events)
    firsts = {(r["patient_id"], r["intake_id"]): r for r in lines}
    assert any(firsts[k]["breached"] for k in by_episode)  # an episode started too late
    assert any(not firsts[k]["breached"] for k in by_episode)


def test_intakes_are_deterministic_per_seed(tmp_path: Path) -> None:
    a = evaluate_file(tmp_path, cohort(seed=5))
    assert a == evaluate_file(tmp_path, cohort(seed=5))
    assert a != evaluate_file(tmp_path, cohort(seed=6))


def test_intakes_are_opt_in_and_leave_the_rest_of_the_cohort_unchanged() -> None:
    plain = list(simulate(120, 45, 1, start=START, invalid_ratio=0.01))
    assert not [e for e in plain if e["type"].startswith("intake.") or "intake_id" in e]
    screened = list(simulate(120, 45, 1, start=START, invalid_ratio=0.01, intakes=0.5))
    rest = []
    for e in screened:
        if e["type"].startswith("intake."):
            continue
        rest.append({k: v for k, v in e.items() if k != "intake_id"})
    assert rest == plain


def test_rtm_simulate_intakes_option(tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    args = ["simulate", "--patients", "60", "--days", "45", "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert b"intake." not in out.read_bytes()
    assert CliRunner().invoke(main, [*args, "--intakes", "0.5"]).exit_code == 0
    assert b'"intake.submitted"' in out.read_bytes()
    assert CliRunner().invoke(main, [*args, "--intakes", "1.5"]).exit_code != 0


def _intake(pid: str, at: str, flags: list[str], nprs: int = 3) -> dict[str, Any]:
    return {
        "event_id": f"{pid}-i1",
        "schema_version": 1,
        "type": "intake.submitted",
        "patient_id": pid,
        "occurred_at": at,
        "intake_id": "in-1",
        "timezone": "America/New_York",
        "body_region": "knee",
        "red_flags": flags,
        "answers": {"nprs": nprs},
    }


def _contact(pid: str, at: str) -> dict[str, Any]:
    return {
        "event_id": f"{pid}-i2",
        "schema_version": 1,
        "type": "intake.contacted",
        "patient_id": pid,
        "occurred_at": at,
        "intake_id": "in-1",
        "channel": "phone",
    }


def test_the_demo_summary_of_the_front_door(tmp_path: Path) -> None:
    path = tmp_path / "posted.jsonl"
    write_jsonl(
        [
            _intake("p-1", "2026-11-02T10:00:00-05:00", ["saddle_anesthesia"]),
            _contact("p-1", "2026-11-02T10:30:00-05:00"),  # urgent, on time after 0.5 h
            _intake("p-2", "2026-11-02T10:00:00-05:00", [], nprs=9),
            _contact("p-2", "2026-11-06T10:00:00-05:00"),  # in person, late after 96 h
            _intake("p-3", "2026-11-02T10:00:00-05:00", []),  # digital, never contacted
            _intake("p-4", "2026-11-09T10:00:00-05:00", []),  # digital, not due yet
            {"event_id": "bad", "type": "intake.submitted"},  # refused: not counted
        ],
        path,
    )
    summary = intake_summary(path, dt.datetime(2026, 11, 10, tzinfo=dt.UTC))
    assert summary["intakes_by_route"] == {
        "urgent": "1 (0 breached)",
        "physician_review": "0 (0 breached)",
        "in_person_pt": "1 (1 breached)",
        "digital_pt": "2 (1 breached)",
    }
    assert summary["intakes"] == {
        "screened": 4,
        "contacted": 2,
        "median_to_first_contact": "48.2 h",
        "breaches": "2 (1 contacted late, 1 never contacted)",
        "not_contacted_yet": 2,
    }


def test_the_demo_summary_of_a_simulated_cohort(tmp_path: Path) -> None:
    path = tmp_path / "cohort.jsonl"
    events = cohort()
    write_jsonl(events, path)
    summary = intake_summary(path, dt.datetime(2026, 10, 20, tzinfo=dt.UTC))
    screened = len(intake_events_of_type(events, "intake.submitted"))
    assert summary["intakes"]["screened"] == screened
    assert sum(int(v.split()[0]) for v in summary["intakes_by_route"].values()) == screened
    assert all(not v.startswith("0 ") for v in summary["intakes_by_route"].values())
    assert not summary["intakes"]["breaches"].startswith("0 ")
