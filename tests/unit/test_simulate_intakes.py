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
