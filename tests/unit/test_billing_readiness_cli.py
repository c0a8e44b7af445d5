"""`rtm billing readiness` (issue 20 part 3): the rows, order and columns of `rtm billing
evaluate` (KX in modifiers), then readiness,checks; exit 2 on unreadable or invalid input,
an --as-of without offset, an ambiguous locality or a therapy line without fee (named).
Offline: files only, no services."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from rtm.cli import main
from tests.unit.test_billing_readiness import (
    BASE,
    consent,
    ok_facts,
    procedure,
    spend,
    started,
)
from tests.unit.test_billing_readiness import data_days as days

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXAMPLE = FIXTURES / "examples" / "billing-example.jsonl"
EXPECTED = FIXTURES / "examples" / "billing-example.expected.csv"
FEES = FIXTURES / "billing" / "fee-schedule.synthetic.csv"
AS_OF = "2027-02-01T00:00:00Z"
UNKNOWN = "CONSENT_UNKNOWN+POC_UNKNOWN+PROCEDURE_UNKNOWN+RPM_UNKNOWN+SPEND_UNKNOWN"


def readiness(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["billing", "readiness", *map(str, args)])


def write_events(tmp_path: Path, events: list[dict[str, Any]], name: str = "ev.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def test_the_rows_of_evaluate_then_readiness_and_checks() -> None:
    result = readiness("--events", EXAMPLE, "--as-of", AS_OF, "--fees", FEES)
    assert result.exit_code == 0, result.stderr
    expected = EXPECTED.read_text(encoding="utf-8").splitlines()
    got = result.stdout.splitlines()
    assert got[0] == expected[0] + ",readiness,checks"
    assert got[1:] == [row + f",warn,{UNKNOWN}" for row in expected[1:]]
    assert result.stderr == ""


def test_the_same_as_evaluate_with_include_open(tmp_path: Path) -> None:
    as_of = "2026-12-20T00:00:00-07:00"
    evaluate = CliRunner().invoke(
        main,
        ["billing", "evaluate", "--events", str(EXAMPLE), "--as-of", as_of, "--include-open"],
    )
    result = readiness(
        "--events", EXAMPLE, "--as-of", as_of, "--fees", FEES, "--include-open", "--locality",
        "TEST-01",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert [r[:-2] for r in rows] == list(csv.reader(io.StringIO(evaluate.stdout)))
    assert any(r[16] == "preview" for r in rows[1:])


def test_kx_in_modifiers_and_blocked_lines(tmp_path: Path) -> None:
    events = BASE + ok_facts(spend=True, consent=True) + [spend("2417.40"), consent("2026-03-02")]
    path = write_events(tmp_path, events)
    result = readiness("--events", path, "--as-of", "2026-06-01T00:00:00-04:00", "--fees", FEES)
    assert result.exit_code == 0, result.stderr
    rows = {r["cpt"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["98975"]["modifiers"] == "GP"
    assert (rows["98975"]["readiness"], rows["98975"]["checks"]) == (
        "blocked",
        "CONSENT_AFTER_DOS",
    )
    assert rows["98977"]["modifiers"] == "GP+KX"
    assert (rows["98977"]["readiness"], rows["98977"]["checks"]) == ("warn", "KX_REQUIRED")


def test_as_of_drops_later_facts(tmp_path: Path) -> None:
    # a surgery on 03-31 (12:00 UTC): the day after the 98977's DOS, inside a 90-day global
    # period's P-1; before it occurred it is no fact yet
    path = write_events(tmp_path, BASE + ok_facts() + [procedure("2026-03-31", 90)])
    before = readiness(
        "--events", path, "--as-of", "2026-03-31T11:00:00Z", "--fees", FEES, "--include-open"
    )
    after = readiness("--events", path, "--as-of", "2026-06-01T00:00:00Z", "--fees", FEES)
    assert before.exit_code == after.exit_code == 0, before.stderr + after.stderr

    def checks(r: Result) -> list[tuple[str, str, str]]:
        rows = csv.DictReader(io.StringIO(r.stdout))
        return [(row["cpt"], row["status"], row["checks"]) for row in rows]

    assert checks(before) == [("98975", "preview", ""), ("98977", "preview", "")]
    assert checks(after) == [("98975", "new", ""), ("98977", "new", "GLOBAL_PERIOD")]


# --- exit 2 ------------------------------------------------------------------------------------


def test_exit_2_as_of_without_offset_or_unreadable() -> None:
    naive = readiness("--events", EXAMPLE, "--as-of", "2027-02-01T00:00:00", "--fees", FEES)
    assert naive.exit_code == 2 and "UTC offset" in naive.stderr and naive.stdout == ""
    garbage = readiness("--events", EXAMPLE, "--as-of", "next tuesday", "--fees", FEES)
    assert garbage.exit_code == 2 and "--as-of" in garbage.stderr


def test_exit_2_unreadable_files(tmp_path: Path) -> None:
    missing = readiness("--events", tmp_path / "nope.jsonl", "--as-of", AS_OF, "--fees", FEES)
    assert missing.exit_code == 2 and "cannot read" in missing.stderr and missing.stdout == ""
    no_fees = readiness("--events", EXAMPLE, "--as-of", AS_OF, "--fees", tmp_path / "nope.csv")
    assert no_fees.exit_code == 2 and "cannot read" in no_fees.stderr


def test_exit_2_invalid_events_each_named(tmp_path: Path) -> None:
    bad = BASE + [{**started(dx=("M54.50",)), "event_id": "bad-1", "timezone": "Mars/Base"}]
    path = write_events(tmp_path, bad)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    result = readiness("--events", path, "--as-of", AS_OF, "--fees", FEES)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"line {len(bad)} (event_id bad-1): timezone" in result.stderr
    assert f"line {len(bad) + 1}: not JSON" in result.stderr


def test_exit_2_a_code_that_does_not_exist(tmp_path: Path) -> None:
    ev = started()
    ev["billing"] = {**ev["billing"], "diagnosis_codes": ["M54.9X9"]}
    path = write_events(tmp_path, [ev, *days()])
    result = readiness("--events", path, "--as-of", AS_OF, "--fees", FEES)
    assert result.exit_code == 2
    assert "billing.diagnosis_codes.0: 'M54.9X9' is not an ICD-10-CM code" in result.stderr


def test_exit_2_invalid_fee_file(tmp_path: Path) -> None:
    fees = tmp_path / "fees.csv"
    fees.write_text("version,cpt,locality,effective_from,effective_to,amount\nv,98977,L,x,,1\n")
    result = readiness("--events", EXAMPLE, "--as-of", AS_OF, "--fees", fees)
    assert result.exit_code == 2 and "row 2" in result.stderr


def _fees(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "fees.csv"
    path.write_text(
        "version,cpt,locality,effective_from,effective_to,amount\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )
    return path


def test_exit_2_ambiguous_or_unknown_locality(tmp_path: Path) -> None:
    two = _fees(
        tmp_path,
        [f"2026-01-01,{c},{loc},2026-01-01,,10.00" for c in ("98975", "98977") for loc in "AB"],
    )
    path = write_events(tmp_path, BASE)
    ambiguous = readiness("--events", path, "--as-of", AS_OF, "--fees", two)
    assert ambiguous.exit_code == 2 and "locality ambiguous" in ambiguous.stderr
    assert "A, B" in ambiguous.stderr
    chosen = readiness("--events", path, "--as-of", AS_OF, "--fees", two, "--locality", "B")
    assert chosen.exit_code == 0, chosen.stderr
    unknown = readiness("--events", path, "--as-of", AS_OF, "--fees", two, "--locality", "C")
    assert unknown.exit_code == 2 and "locality C is not in" in unknown.stderr


def test_exit_2_a_therapy_line_without_fee_named(tmp_path: Path) -> None:
    only_setup = _fees(tmp_path, ["2026-01-01,98975,L,2026-01-01,,19.50"])
    path = write_events(tmp_path, BASE)
    result = readiness("--events", path, "--as-of", AS_OF, "--fees", only_setup)
    assert result.exit_code == 2 and result.stdout == ""
    assert "no fee for therapy line p-1 ep-1 98977 2026-03-30" in result.stderr
    assert "98975" not in result.stderr


@pytest.mark.parametrize("role", ["MD", "NP"])
def test_physicians_lines_need_no_fee(tmp_path: Path, role: str) -> None:
    only_setup = _fees(tmp_path, ["2026-01-01,98975,L,2026-01-01,,19.50"])
    path = write_events(tmp_path, [started(role=role), *days()])
    result = readiness("--events", path, "--as-of", AS_OF, "--fees", only_setup)
    assert result.exit_code == 0, result.stderr
    checks = [r["checks"] for r in csv.DictReader(io.StringIO(result.stdout))]
    assert checks == ["CONSENT_UNKNOWN+PROCEDURE_UNKNOWN+RPM_UNKNOWN"] * 2


def test_a_refused_second_episode_is_reported_not_fatal(tmp_path: Path) -> None:
    second = started(episode="ep-2", on="2026-03-05T09:00:00Z")
    second["event_id"] = "second-start"
    path = write_events(tmp_path, [*BASE, second])
    result = readiness("--events", path, "--as-of", AS_OF, "--fees", FEES)
    assert result.exit_code == 0
    assert "skipped line" in result.stderr and "second-start" in result.stderr


# --- --streams: the modes `rtm billing streams set` stores (issue 20 item 1) -------------------


def test_streams_file_not_sent_warns_instead_of_blocking(tmp_path: Path) -> None:
    # consent is sent (one after the DOS of the set-up line), so auto blocks that line ...
    path = write_events(tmp_path, BASE + ok_facts(consent=True) + [consent("2026-03-02")])
    auto = readiness("--events", path, "--as-of", "2026-06-01T00:00:00Z", "--fees", FEES)
    # ... and an organisation that says it never sends consent gets the warning instead
    modes = tmp_path / "streams.json"
    modes.write_text('{"default": {"consent": "not_sent"}}', encoding="utf-8")
    switched = readiness(
        "--events", path, "--as-of", "2026-06-01T00:00:00Z", "--fees", FEES, "--streams", modes
    )
    assert auto.exit_code == switched.exit_code == 0, auto.stderr + switched.stderr

    def rows(r: Result) -> dict[str, tuple[str, str]]:
        return {
            row["cpt"]: (row["readiness"], row["checks"])
            for row in csv.DictReader(io.StringIO(r.stdout))
        }

    assert rows(auto)["98975"] == ("blocked", "CONSENT_AFTER_DOS")
    assert rows(switched) == {
        "98975": ("warn", "CONSENT_UNKNOWN"),
        "98977": ("warn", "CONSENT_UNKNOWN"),
    }


def test_streams_file_sent_without_facts_blocks(tmp_path: Path) -> None:
    modes = tmp_path / "streams.json"
    modes.write_text('{"default": {"consent": "sent"}}', encoding="utf-8")
    path = write_events(tmp_path, BASE)
    result = readiness("--events", path, "--as-of", AS_OF, "--fees", FEES, "--streams", modes)
    assert result.exit_code == 0, result.stderr
    checks = [r["checks"] for r in csv.DictReader(io.StringIO(result.stdout))]
    assert checks and all(c.startswith("CONSENT_MISSING+") for c in checks)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"default": {"consent": "never"}}', "default.consent"),
        ('{"default": {"letters": "sent"}}', "default.letters"),
        ("not json", "--streams"),
    ],
)
def test_exit_2_invalid_streams_file(tmp_path: Path, text: str, named: str) -> None:
    modes = tmp_path / "streams.json"
    modes.write_text(text, encoding="utf-8")
    result = readiness("--events", EXAMPLE, "--as-of", AS_OF, "--fees", FEES, "--streams", modes)
    assert result.exit_code == 2
    assert named in result.stderr and result.stdout == ""
