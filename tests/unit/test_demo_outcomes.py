"""`rtm demo`'s outcome report (issue 19 item 7; rtm.demo.outcome_summary): by clinician and
by pathway version over the demo's cohort file, the same figures `rtm outcomes report
--by clinician|pathway` prints over that file, with the planted effect visible (the busiest
PT's MCID rate above the cohort's)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from rtm.cli import main
from rtm.demo import _render, outcome_summary
from rtm.simulate import simulate, write_jsonl

AS_OF = dt.datetime(2026, 10, 20, tzinfo=dt.UTC)  # the cohort runs 2026-09-01 for 45 days
LINE = re.compile(
    r"(\d+) episodes?, (\d+) with scores, MCID (n/a|[\d.]+%) \((\d+)/(\d+)\),"
    r" drop-out (n/a|[\d.]+%) \((\d+)/(\d+)\)"
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "cohort.jsonl"
    start = dt.date(2026, 9, 1)
    write_jsonl(simulate(120, 45, 5, start=start, invalid_ratio=0.01, outcomes=True), path)
    return path


def _report(path: Path, by: str) -> dict[str, dict[str, object]]:
    args = ["outcomes", "report", "--events", str(path), "--as-of", AS_OF.isoformat(), "--by", by]
    result = CliRunner().invoke(main, args)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return {str(r["group"]): r for r in rows}


def _figures(row: dict[str, object]) -> tuple[str, ...]:
    def pct(rate: object) -> str:
        return "n/a" if rate is None else f"{rate}%"

    return (
        str(row["episodes"]),
        str(row["with_scores"]),
        pct(row["mcid_rate"]),
        str(row["mcid_reached_n"]),
        str(row["with_scores"]),
        pct(row["dropout_rate"]),
        str(row["dropped_out_n"]),
        str(row["episodes"]),
    )


def test_the_demo_prints_the_report_of_the_offline_command(cohort: Path) -> None:
    path = cohort
    summary = outcome_summary(path, AS_OF)
    for by in ("clinician", "pathway"):
        printed = summary[f"outcomes_by_{by}"]
        expected = _report(path, by)
        assert list(printed) == list(expected)
        for group, line in printed.items():
            found = LINE.fullmatch(line)
            assert found is not None, line
            assert found.groups() == _figures(expected[group])
    assert "outcomes_by_clinician:" in _render(summary)


def test_the_planted_effect_shows_by_clinician(cohort: Path) -> None:
    path = cohort
    by_clinician = _report(path, "clinician")
    (whole,) = _report(path, "pathway").values()
    # the simulator's star (simulate.star_clinician): the most episodes, the lowest id of a tie
    busiest = min(by_clinician.values(), key=lambda r: (-int(str(r["episodes"])), r["group"]))
    assert isinstance(busiest["mcid_rate"], float) and isinstance(whole["mcid_rate"], float)
    assert busiest["mcid_rate"] > whole["mcid_rate"]
    printed = outcome_summary(path, AS_OF)["outcomes_by_clinician"][busiest["group"]]
    assert f"MCID {busiest['mcid_rate']}%" in printed


def test_no_episodes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert outcome_summary(empty, AS_OF) == {
        "outcomes_by_clinician": {"no episodes": 0},
        "outcomes_by_pathway": {"no episodes": 0},
    }
