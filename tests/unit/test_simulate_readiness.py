"""`rtm simulate --readiness-facts` (issue 20 item 7): consent and plan-of-care facts for
most episodes, the planted problems each found by the gates, the cohort otherwise as it
was, deterministic per seed."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from rtm.cli import main
from rtm.simulate import DEFAULT_START, simulate
from rtm.simulate_readiness import HEADER_CODE, PLANTED, add_readiness_facts
from schemas.events import validate_event

FEES = Path(__file__).resolve().parents[1] / "fixtures" / "billing" / "fee-schedule.synthetic.csv"
FACT_TYPES = {
    "consent.recorded",
    "plan_of_care.certified",
    "procedure.recorded",
    "rpm.enrolled",
    "therapy_spend.reported",
}
PATIENTS, DAYS, SEED = 60, 60, 3
END = DEFAULT_START + dt.timedelta(days=DAYS - 1)


def test_only_facts_are_added_and_only_planted_episodes_change() -> None:
    base = list(simulate(PATIENTS, DAYS, SEED))
    withfacts = list(add_readiness_facts(base, SEED, END))
    kept = [e for e in withfacts if e["type"] not in FACT_TYPES]
    assert len(kept) == len(base)
    changed = [(a, b) for a, b in zip(base, kept, strict=True) if a != b]
    assert changed and all(
        b["type"] == "episode.started" and b["billing"]["diagnosis_codes"] == [HEADER_CODE]
        for _, b in changed
    )
    facts = [e for e in withfacts if e["type"] in FACT_TYPES]
    assert all(not isinstance(validate_event(e), list) for e in facts)
    assert all(dt.datetime.fromisoformat(e["occurred_at"]).date() <= END for e in facts)
    episodes = sum(e["type"] == "episode.started" for e in base)
    consents = sum(e["type"] == "consent.recorded" for e in facts)
    assert episodes * 0.9 <= consents < episodes  # most episodes, not all (planted)
    assert list(add_readiness_facts(base, SEED, END)) == withfacts  # deterministic


def test_every_planted_problem_is_caught_and_most_lines_are_not_blocked(tmp_path: Path) -> None:
    out = tmp_path / "cohort.jsonl"
    res = CliRunner().invoke(
        main,
        [
            "simulate",
            "--patients",
            str(PATIENTS),
            "--days",
            str(DAYS),
            "--seed",
            str(SEED),
            "--out",
            str(out),
            "--readiness-facts",
        ],  # fmt: skip
    )
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        main,
        [
            "billing",
            "readiness",
            "--events",
            str(out),
            "--as-of",
            "2026-11-15T00:00:00Z",
            "--fees",
            str(FEES),
            "--include-open",
        ],  # fmt: skip
    )
    assert res.exit_code == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    codes = Counter(c for r in rows for c in r["checks"].split("+") if c)
    assert set(PLANTED.values()) <= set(codes)
    # every stream is sent, so nothing is unknown; blocked lines are the planted few
    assert not [c for c in codes if c.endswith("_UNKNOWN")]
    by = Counter(r["readiness"] for r in rows)
    assert 0 < by["blocked"] < by["ready"] / 3
