"""The pure decisions of an export and a submission (billing/submission.py), the one X12
writer (billing/x12.py), and the house rules around them: one module writes X12 segments,
only streams/services writes an export's or a submission's audit row, and `rtm billing`
keeps its commands and options."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import click
import pytest

from billing.claims837 import DraftParties, RecordedLine, plan_claims, render_draft_837p
from billing.config import DEFAULT_CONFIG
from billing.rules import ClaimLine
from billing.state import fold_events
from billing.submission import (
    Parties,
    SubmissionRefused,
    check_submission_request,
    exports_of,
    plan_export,
    plan_fingerprint,
    plan_submission,
    preview_lines,
    render_submission,
    submission_file_name,
)
from billing.x12 import Delimiters
from schemas.events import DEFAULT_ORG, validate_event
from tests.unit.test_billing_837p import FEES, NPI, demographics, profile, pyx12_errors, segments
from tests.unit.test_billing_export import CREATED, EVENTS, example_claims

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
EVERYTHING = (dt.date(2000, 1, 1), dt.date(2100, 12, 31))


def states() -> dict[str, object]:
    import orjson

    events = [validate_event(orjson.loads(line)) for line in EVENTS.read_bytes().splitlines()]
    folded = fold_events([e for e in events if not isinstance(e, list)])
    return {pid: st for (_, pid), st in folded.items() if pid in ("p-ex-a", "p-ex-b")}


def parties(**over: object) -> Parties:
    return Parties(
        profiles={NPI: profile(**over)},
        demographics=demographics(),
        fees=FEES,
        payer_claim_numbers={},
    )


def recorded(lines: list[ClaimLine], submission_id: int, claim_ids: list[str | None]) -> list:
    return [RecordedLine(submission_id, c, ln) for ln, c in zip(lines, claim_ids, strict=True)]


# --- a look and a recorded export ------------------------------------------------------------


def test_a_look_shows_every_line_then_nothing_once_they_are_recorded() -> None:
    st = states()
    look = preview_lines(st, [], *EVERYTHING, AS_OF)  # type: ignore[arg-type]
    assert look.lines and {ln.status for ln in look.lines} == {"new"} and look.withdrawn == []
    plan = plan_export(DEFAULT_ORG, st, [], [], *EVERYTHING, AS_OF)  # type: ignore[arg-type]
    assert plan.lines == look.lines
    # each line carries the claim id a submission would give it
    ids = {c.claim_id for c in plan_claims([], plan.claims, *EVERYTHING)}
    assert set(plan.claim_ids) == ids and None not in plan.claim_ids
    assert {c.claim_id for c in plan.planned} == ids
    history = recorded(plan.lines, 1, plan.claim_ids)
    assert preview_lines(st, history, *EVERYTHING, AS_OF).lines == []  # type: ignore[arg-type]
    again = plan_export(DEFAULT_ORG, st, history, ids, *EVERYTHING, AS_OF)  # type: ignore[arg-type]
    assert again.lines == [] and again.planned == []


def test_a_look_with_open_periods_shows_previews_and_records_are_grouped_per_export() -> None:
    st = states()
    early = dt.datetime(2026, 12, 20, tzinfo=dt.UTC)
    closed = preview_lines(st, [], *EVERYTHING, early)  # type: ignore[arg-type]
    with_open = preview_lines(st, [], *EVERYTHING, early, include_open=True)  # type: ignore[arg-type]
    assert "preview" in {ln.status for ln in with_open.lines}
    assert "preview" not in {ln.status for ln in closed.lines}
    lines = example_claims()
    history = [*recorded(lines[:2], 2, [None, None]), *recorded(lines[2:3], 1, [None])]
    assert exports_of(history) == [lines[2:3], lines[:2]]


# --- a submission ----------------------------------------------------------------------------


def test_a_submission_plan_is_checked_rendered_and_named() -> None:
    st = states()
    plan = plan_submission(DEFAULT_ORG, st, [], [], *EVERYTHING, AS_OF, "x12", parties())  # type: ignore[arg-type]
    assert plan.claims and plan.problems == [] and {c.frequency for c in plan.claims} == {"1"}
    assert [ln for _, ln in plan.record] == [ln for c in plan.claims for ln in c.record]
    text = render_submission(plan, 7, "P", CREATED)
    assert pyx12_errors(text) == [] and segments(text)[0][13] == "000000007"
    with pytest.raises(ValueError, match="control number"):
        render_submission(plan, None, "P", CREATED)
    csv = plan_submission(DEFAULT_ORG, st, [], [], *EVERYTHING, AS_OF, "csv")  # type: ignore[arg-type]
    assert [c.claim_id for c in csv.claims] == [c.claim_id for c in plan.claims]
    assert render_submission(csv, None, "P", CREATED).startswith(DEFAULT_CONFIG.header_text())
    assert submission_file_name("org-a", 12, 7, "x12") == "org-a-submission-000012-isa000000007.x12"
    assert submission_file_name("default", 3, None, "fhir") == "default-submission-000003.json"


def test_a_submission_refuses_a_thin_profile_and_leaves_out_what_lacks_a_party() -> None:
    st = states()
    args = (DEFAULT_ORG, st, [], [], *EVERYTHING, AS_OF, "x12")
    with pytest.raises(SubmissionRefused) as refused:
        plan_submission(*args, parties(submitter_id=""))  # type: ignore[arg-type]
    assert refused.value.problems == [f"billing NPI {NPI}: submitter_id"]
    with pytest.raises(ValueError, match="needs the billing profiles"):
        plan_submission(*args)  # type: ignore[arg-type]
    only_a = Parties(
        profiles={NPI: profile()},
        demographics={k: v for k, v in demographics().items() if k == "p-ex-a"},
        fees=FEES,
        payer_claim_numbers={},
    )
    plan = plan_submission(*args, only_a)  # type: ignore[arg-type]
    assert {c.first.patient_id for c in plan.claims} == {"p-ex-a"}
    assert [(p.patient_id, p.field) for p in plan.problems] == [("p-ex-b", "demographics")]


def test_a_changed_group_is_a_replacement_that_needs_the_payers_number() -> None:
    st = states()
    first = plan_submission(DEFAULT_ORG, st, [], [], *EVERYTHING, AS_OF, "x12", parties())  # type: ignore[arg-type]
    history = [RecordedLine(1, cid, ln) for cid, ln in first.record]
    # the history billed one group with another code: the rules' code now amends it
    changed = history[0].line.model_copy(update={"units": history[0].line.units + 1})
    history[0] = RecordedLine(1, history[0].claim_id, changed)
    taken = [c.claim_id for c in first.claims]
    args = (DEFAULT_ORG, st, history, taken, *EVERYTHING, AS_OF, "x12")
    plan = plan_submission(*args, parties())  # type: ignore[arg-type]
    assert plan.claims == [] and [p.field for p in plan.problems] == ["payer_claim_number"]
    cid = plan.problems[0].claim_id
    numbered = Parties(parties().profiles, demographics(), FEES, {cid: "ICN-1"})
    plan = plan_submission(*args, numbered)  # type: ignore[arg-type]
    assert [(c.claim_id, c.frequency) for c in plan.claims] == [(cid, "7")]
    text = render_submission(plan, 8, "P", CREATED)
    assert ["REF", "F8", "ICN-1"] in segments(text) and pyx12_errors(text) == []


def test_a_plans_fingerprint_names_what_it_records_and_nothing_else() -> None:
    """The dashboard's confirmation: the same plan gives the same fingerprint; another
    line, claim, usage or month gives another."""
    st = states()
    args = (DEFAULT_ORG, st, [], [], *EVERYTHING, AS_OF, "x12")
    plan = plan_submission(*args, parties())  # type: ignore[arg-type]
    again = plan_submission(*args, parties())  # type: ignore[arg-type]
    fp = plan_fingerprint(plan, *EVERYTHING, "P")
    assert fp == plan_fingerprint(again, *EVERYTHING, "P") and len(fp) == 32
    assert fp != plan_fingerprint(plan, *EVERYTHING, "T")
    assert fp != plan_fingerprint(plan, EVERYTHING[0], dt.date(2100, 12, 30), "P")
    only_a = Parties(
        profiles={NPI: profile()},
        demographics={k: v for k, v in demographics().items() if k == "p-ex-a"},
        fees=FEES,
        payer_claim_numbers={},
    )
    fewer = plan_submission(*args, only_a)  # type: ignore[arg-type]
    assert fp != plan_fingerprint(fewer, *EVERYTHING, "P")
    first = plan.claims[0]
    changed = first.record[0].model_copy(update={"units": first.record[0].units + 1})
    other = type(first)(first.claim_id, first.frequency, first.lines, (changed, *first.record[1:]))
    moved = type(plan)(plan.fmt, [other, *plan.claims[1:]], plan.ready, plan.problems, [])
    assert fp != plan_fingerprint(moved, *EVERYTHING, "P")


def test_a_request_names_a_known_format_and_usage() -> None:
    check_submission_request("x12", "P")
    with pytest.raises(ValueError, match="unknown format"):
        check_submission_request("pdf", "P")
    with pytest.raises(ValueError, match="usage"):
        check_submission_request("csv", "X")


# --- the one X12 writer ------------------------------------------------------------------------


def test_the_draft_follows_its_delimiters_and_cleans_every_value() -> None:
    lines = [ln for ln in example_claims() if ln.patient_id == "p-ex-b"]
    pipes = DraftParties(delimiters=Delimiters(element="|", component=">"))

    def split(text: str) -> list[list[str]]:
        return [s.strip().split("|") for s in text.split("~") if s.strip()]

    plain, piped = render_draft_837p(lines, CREATED), render_draft_837p(lines, CREATED, pipes)
    assert pyx12_errors(plain) == []
    # the same segments, written with the other delimiters
    assert [[e.replace(">", ":") for e in s] for s in split(piped)] == segments(plain)
    # a delimiter inside a value never reaches the file: no segment gains an element
    unsafe = [ln.model_copy(update={"member_id": "M|1>2", "payer": "Acme|Health"}) for ln in lines]
    dirty = split(render_draft_837p(unsafe, CREATED, pipes))
    assert [len(s) for s in dirty] == [len(s) for s in split(piped)]
    assert ["NM1", "IL", "1", "p-ex-b", "", "", "", "", "MI", "M-1-2"] in dirty
    assert ["NM1", "PR", "2", "ACME-HEALTH", "", "", "", "", "PI", "ACME-HEALTH"] in dirty


def test_one_module_writes_x12_segments() -> None:
    writers = sorted(
        p.name
        for p in (ROOT / "billing").glob("*.py")
        if any(f'"{tag}"' in p.read_text() for tag in ("ST", "HL", "SV1", "CLM"))
    )
    assert writers == ["x12.py"]


# --- only the services write an export's audit row ---------------------------------------------


def _audit_calls_with_export(path: Path) -> list[int]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name not in ("audit", "audit_principal", "audit_requester"):
            continue
        texts = [
            n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value == "export"
        ]
        if texts:
            found.append(node.lineno)
    return found


def test_only_streams_services_write_an_export_or_submission_audit_row() -> None:
    outside = {
        str(p.relative_to(ROOT)): lines
        for package in ("streams", "rtm", "agents")
        for p in (ROOT / package).rglob("*.py")
        if (lines := _audit_calls_with_export(p)) and "services" not in p.parts
    }
    assert outside == {}
    inside = _audit_calls_with_export(ROOT / "streams" / "services" / "claims.py")
    assert len(inside) == 2  # export/preview, submit


# --- `rtm billing` keeps its commands and options ------------------------------------------------

COMMANDS = {
    "billing backfill": ["--dsn", "--patient-prefix"],
    "billing claims set-icn": ["--dsn", "--org!", "CLAIM_ID", "PAYER_CLAIM_NUMBER"],
    "billing demographics load": ["--dsn", "--org!", "FILE"],
    "billing export": [
        "--as-of",
        "--by",
        "--dry-run?",
        "--dsn",
        "--format",
        "--from!",
        "--include-open?",
        "--org",
        "--out",
        "--to!",
    ],
    "billing fees load": ["--dsn", "FILE"],
    "billing override": ["--as-of", "--by", "--dsn", "--line!", "--org!", "--reason!"],
    "billing profile set": ["--dsn", "--file!", "--npi!", "--org!"],
    "billing profile show": ["--dsn", "--org!"],
    "billing readiness": [
        "--as-of!",
        "--events!",
        "--fees!",
        "--include-open?",
        "--locality",
        "--streams",
    ],
    "billing readiness-backfill": ["--dsn", "--org"],
    "billing streams set": ["--by", "--dsn", "--mode!", "--org!", "--stream!"],
    "billing streams show": ["--dsn", "--json?", "--org!"],
    "billing reconcile": ["--as-of", "--dsn", "--patient-prefix"],
    "billing remit load": ["--dsn", "--org!", "FILE"],
    "billing escaped-denials": ["--dsn", "--org!", "--remit!"],
    "billing submission-file": ["--dsn", "--org!", "--out", "SUBMISSION_ID"],
    "billing submissions": ["--dsn", "--json?", "--org!"],
    "billing submit": [
        "--as-of",
        "--by",
        "--dry-run?",
        "--dsn",
        "--format",
        "--from!",
        "--org!",
        "--out",
        "--test?",
        "--to!",
    ],
}


def _leaves(cmd: click.Command, path: list[str], out: dict[str, list[str]]) -> None:
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            _leaves(sub, [*path, name], out)
        return
    out[" ".join(path)] = sorted(
        "/".join(sorted(p.opts)) + ("!" if p.required else "") + ("?" if p.is_flag else "")
        if isinstance(p, click.Option)
        else (p.name or "").upper()
        for p in cmd.params
    )


def test_rtm_billing_keeps_its_commands_and_options() -> None:
    from rtm.cli import main

    found: dict[str, list[str]] = {}
    _leaves(main.commands["billing"], ["billing"], found)
    found.pop("billing evaluate")  # rtm/cli.py's own
    assert found == COMMANDS
