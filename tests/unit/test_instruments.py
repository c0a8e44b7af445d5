"""Golden vectors for every instrument of the registry (docs/pathways-and-outcomes.md,
Instruments), each validity rule at its boundary, the reason order, exact thresholds, the
rounding, ``rtm assessments score`` and the new events of the contract (issue 19 items 1-2).
The expected scores are worked by hand from the rules file's formulas."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from outcomes.instruments import INSTRUMENTS, change, mcid_reached, round_1, score_form
from rtm.cli import main
from schemas.events import FieldError, validate_event


def items(prefix: str, values: list[int | None]) -> dict[str, int | None]:
    return {f"{prefix}{i}": v for i, v in enumerate(values, 1)}


@pytest.mark.parametrize(
    ("instrument", "answers", "score", "reason"),
    [
        # NPRS: the value, 0-10, lower is better
        ("nprs", {"nprs": 7}, Fraction(7), None),
        ("nprs", {"nprs": 0}, Fraction(0), None),
        ("nprs", {"nprs": 11}, None, "out_of_range"),
        ("nprs", {"nprs": None}, None, "too_many_missing"),
        # PSFS: the mean of a1-a5, valid with at least 3 answered
        ("psfs", items("a", [3, 3, 4]), Fraction(10, 3), None),
        ("psfs", items("a", [2, 4, 6, 8, 10]), Fraction(6), None),
        ("psfs", items("a", [3, 3, None, None, None]), None, "too_many_missing"),
        ("psfs", items("a", [0, 0, 0]), Fraction(0), None),
        # LEFS: the sum of q1-q20 (0-4 each), every item (convention)
        ("lefs", items("q", [4] * 20), Fraction(80), None),
        ("lefs", items("q", [2] * 19 + [None]), None, "too_many_missing"),
        ("lefs", items("q", [5] + [0] * 19), None, "out_of_range"),
        # ODI: sum / (5 x answered) x 100, at most one missing
        ("odi", items("s", [2] * 10), Fraction(40), None),
        ("odi", items("s", [3] * 9 + [None]), Fraction(60), None),
        ("odi", items("s", [3] * 8 + [None, None]), None, "too_many_missing"),
        ("odi", items("s", [6] + [0] * 9), None, "out_of_range"),
        # NDI: sum x 10 / answered (0-50), at most one missing
        ("ndi", items("q", [1] * 10), Fraction(10), None),
        ("ndi", items("q", [5] * 8 + [4, None]), Fraction(440, 9), None),
        ("ndi", items("q", [1] * 8), None, "too_many_missing"),
        # QuickDASH: (mean - 1) x 25, 1-5 each, at least 10 answered
        ("quickdash", items("q", [1] * 11), Fraction(0), None),
        ("quickdash", items("q", [5] * 11), Fraction(100), None),
        ("quickdash", items("q", [3] * 10 + [None]), Fraction(50), None),
        ("quickdash", items("q", [1] * 10 + [2]), Fraction(25, 11), None),
        ("quickdash", items("q", [2] * 9 + [None, None]), None, "too_many_missing"),
        ("quickdash", items("q", [0] + [1] * 10), None, "out_of_range"),
        # the reason order: unknown_instrument, unknown_item, out_of_range, too_many_missing
        ("koos", {"q1": 1}, None, "unknown_instrument"),
        ("psfs", {"a1": 99, "zz": 1}, None, "unknown_item"),
        ("psfs", {"a1": 11}, None, "out_of_range"),
    ],
)
def test_golden_vectors(
    instrument: str, answers: dict[str, int | None], score: Fraction | None, reason: str | None
) -> None:
    got = score_form(instrument, answers)
    assert (got.score, got.reason, got.valid) == (score, reason, reason is None)


def test_the_registry_says_direction_mcid_licence_and_code() -> None:
    summary = {
        i.id: (i.better, i.mcid, i.licence, i.code_system.endswith("loinc.org"))
        for i in INSTRUMENTS.values()
    }
    assert summary == {
        "nprs": ("lower", Fraction(2), "free", True),
        "psfs": ("higher", Fraction(2), "free", False),
        "lefs": ("higher", Fraction(9), "free", False),
        "odi": ("lower", Fraction(10), "required", False),
        "ndi": ("lower", Fraction(5), "required", False),
        "quickdash": ("lower", Fraction(159, 10), "required", False),
    }
    assert INSTRUMENTS["nprs"].code == "72514-3"


def test_thresholds_compare_exact_values() -> None:
    # PSFS 10/3 -> 16/3 is a change of exactly 2: the MCID is reached (no float rounding)
    assert change("psfs", Fraction(10, 3), Fraction(16, 3)) == 2
    assert mcid_reached("psfs", Fraction(10, 3), Fraction(16, 3))
    assert not mcid_reached("psfs", Fraction(10, 3), Fraction(16, 3) - Fraction(1, 10**9))
    # lower is better: ODI 50 -> 40 improves by 10, the MCID
    assert change("odi", Fraction(50), Fraction(40)) == 10 and mcid_reached("odi", 50, 40)
    assert change("nprs", Fraction(3), Fraction(6)) == -3


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        (Fraction(625, 100), 6.3),
        (Fraction(-625, 100), -6.3),
        (Fraction(5, 100), 0.1),
        (Fraction(10, 3), 3.3),
        (Fraction(440, 9), 48.9),
        (Fraction(224999, 100000), 2.2),
    ],
)
def test_rounding_is_half_away_from_zero_to_one_decimal(value: Fraction, rounded: float) -> None:
    assert round_1(value) == rounded


def assessment(eid: str, at: str, instrument: str, answers: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": eid,
        "schema_version": 1,
        "type": "assessment.completed",
        "patient_id": "p-1",
        "occurred_at": at,
        "instrument": instrument,
        "answers": answers,
    }


def test_rtm_assessments_score(tmp_path: Path) -> None:
    """One object per assessment, sorted by event_id; a resent id counts once (the first
    wins); events at or after as-of are ignored; invalid forms have no score."""
    lines = [
        assessment("e3", "2026-11-03T09:00:00-06:00", "psfs", items("a", [3, 3, 4])),
        assessment("e1", "2026-11-02T09:00:00-06:00", "odi", items("s", [3] * 9 + [None])),
        assessment("e1", "2026-11-02T09:00:00-06:00", "odi", items("s", [0] * 10)),  # resent
        assessment("e2", "2026-11-02T10:00:00-06:00", "lefs", items("q", [4] * 19)),
        assessment("e4", "2026-11-10T09:00:00-06:00", "nprs", {"nprs": 2}),  # after as-of
        {"event_id": "bad", "type": "assessment.completed"},
    ]
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = CliRunner().invoke(
        main, ["assessments", "score", "--events", str(path), "--as-of", "2026-11-05T00:00:00Z"]
    )
    assert out.exit_code == 1  # one line skipped (named on stderr)
    assert "skipped" in out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows == [
        {"event_id": "e1", "patient_id": "p-1", "instrument": "odi", "score": 60.0,
         "valid": True, "reason": None},
        {"event_id": "e2", "patient_id": "p-1", "instrument": "lefs", "score": None,
         "valid": False, "reason": "too_many_missing"},
        {"event_id": "e3", "patient_id": "p-1", "instrument": "psfs", "score": 3.3,
         "valid": True, "reason": None},
    ]  # fmt: skip


def _fields(obj: dict[str, Any]) -> list[str]:
    result = validate_event(obj)
    assert isinstance(result, list), result
    return [e.field for e in result if isinstance(e, FieldError)]


def test_the_new_events_refuse_bad_fields_naming_them() -> None:
    ok = assessment("e1", "2026-11-02T09:00:00-06:00", "psfs", {"a1": 3})
    assert not isinstance(validate_event(ok), list)
    assert not isinstance(validate_event({**ok, "instrument": "not_known_yet"}), list)
    assert _fields({**ok, "answers": {"a1": "three"}}) == ["answers.a1"]
    assert _fields({**ok, "answers": {}}) == ["answers"]
    assert _fields({**ok, "instrument": "PSFS!"}) == ["instrument"]
    visit = {
        "event_id": "v1",
        "schema_version": 1,
        "type": "visit.completed",
        "patient_id": "p-1",
        "occurred_at": "2026-11-02T09:00:00-06:00",
        "episode_id": "ep-1",
        "mode": "in_person",
    }
    assert not isinstance(validate_event(visit), list)
    assert _fields({**visit, "mode": "phone"}) == ["mode"]
