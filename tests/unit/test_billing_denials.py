"""Escaped denials and the month-end queue (issue 20 items 5-6, billing.remit,
billing.denials, billing.queue): every row of the 835 CARC mapping table of
docs/billing-readiness.md, the outcome (caught / escaped / uncovered), an 835's denied
service lines read with their reason and remark codes and matched to the submitted line,
and each line's place in the queue (Blocked, Ready, Submitted, Paid, Denied)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import pytest

from billing.claims837 import RecordedLine
from billing.denials import SubmittedLine, escaped_denials, gates_for, outcome_of
from billing.queue import QueueLine, filter_queue, queue_lines, status_counts
from billing.remit import parse_835
from billing.submission import Override, gate_lines, line_id
from tests.unit.test_billing_readiness import AS_OF
from tests.unit.test_billing_submission import EVERYTHING, recorded
from tests.unit.test_billing_submission_readiness import BASE, inputs, scenario

# The table of docs/billing-readiness.md ("835: escaped denials"), row by row.
TABLE = [
    ("4", (), ("KX_REQUIRED",)),
    ("16", (), ("CERTIFIER_NPI_INVALID", "ICD10_NOT_BILLABLE")),
    ("16", ("N286",), ("CERTIFIER_NPI_INVALID",)),
    ("16", ("N265",), ("CERTIFIER_NPI_INVALID",)),
    ("16", ("M76",), ("ICD10_NOT_BILLABLE",)),
    ("16", ("N286", "M76"), ("CERTIFIER_NPI_INVALID", "ICD10_NOT_BILLABLE")),
    ("16", ("N130",), ("CERTIFIER_NPI_INVALID", "ICD10_NOT_BILLABLE")),
    ("18", (), ()),
    ("50", (), ("POC_MISSING", "POC_EXPIRED", "POC_LATE", "MEDICAL_REVIEW_THRESHOLD")),
    ("97", (), ("GLOBAL_PERIOD", "RPM_OVERLAP")),
    ("119", (), ("KX_REQUIRED",)),
    ("204", (), ()),
    ("B7", (), ()),
    ("45", (), ()),  # not in the table: no gate speaks of it
]


@pytest.mark.parametrize(("carc", "rarc", "gates"), TABLE)
def test_each_reason_maps_to_the_gates_of_its_row(
    carc: str, rarc: tuple[str, ...], gates: tuple[str, ...]
) -> None:
    assert gates_for(carc, rarc) == gates


def test_the_outcome_is_caught_when_a_mapped_check_fired_escaped_when_none_uncovered_else() -> None:
    assert outcome_of(("KX_REQUIRED",), ("CONSENT_UNKNOWN", "KX_REQUIRED")) == "caught"
    assert outcome_of(("POC_MISSING", "POC_EXPIRED"), ("POC_EXPIRED",)) == "caught"
    assert outcome_of(("POC_MISSING", "POC_EXPIRED"), ("KX_REQUIRED",)) == "escaped"
    assert outcome_of(("POC_MISSING",), ()) == "escaped"
    assert outcome_of((), ("POC_MISSING",)) == "uncovered"


def remit_835(*claims: str) -> str:
    return (
        "ISA*00*          *00*          *ZZ*04412          *ZZ*SUBM12345      *261201*1200*^"
        "*00501*000000778*0*P*:~GS*HP*04412*SUBM12345*20261201*1200*778*X*005010X221A1~"
        "ST*835*0001~BPR*I*30*C*ACH~" + "".join(claims) + "SE*20*0001~GE*1*778~IEA*1*000000778~"
    )


DENIED = (
    "CLP*C-1*4*150*0**MB*ICN-1~CAS*CO*45*0~"
    "SVC*HC:98977:GP:KX*50*0**1~DTM*472*20261015~CAS*CO*4*50**50*0~LQ*HE*N386~"
    "SVC*HC:98980:GP*100*0**1~DTM*150*20261001~DTM*151*20261031~CAS*CO*18*100~"
)
PAID = "CLP*C-2*1*80*30**MB*ICN-2~SVC*HC:98975*30*30**1~DTM*472*20261002~"


def test_an_835s_service_lines_are_read_with_their_reasons_remarks_and_dates() -> None:
    denied, paid = parse_835(remit_835(DENIED, PAID))
    assert (denied.claim_id, denied.status, denied.payer_claim_number) == ("C-1", "4", "ICN-1")
    assert denied.denied and not paid.denied
    kx, tm = denied.services  # the claim-level CAS*CO*45 belongs to no line
    assert (kx.cpt, kx.date_of_service, kx.denied) == ("98977", dt.date(2026, 10, 15), True)
    assert [a.text for a in kx.adjustments] == ["CO-4", "CO-50"] and kx.remarks == ["N386"]
    assert (tm.cpt, tm.date_of_service, [a.text for a in tm.adjustments]) == (
        "98980",
        dt.date(2026, 10, 1),
        ["CO-18"],
    )
    assert [s.denied for s in paid.services] == [False]
    with pytest.raises(ValueError, match="not an X12 interchange"):
        parse_835("CLP*1~")
    with pytest.raises(ValueError, match="not a date"):
        parse_835(remit_835("CLP*C-1*4*1*0**MB*I~SVC*HC:98977*1*0**1~DTM*472*2026-10-15~"))


def test_each_denied_line_is_matched_to_the_submitted_line_and_an_unknown_one_is_named() -> None:
    submitted = {
        ("C-1", "98977", dt.date(2026, 10, 15)): SubmittedLine("p-1", "ep-1", ("POC_EXPIRED",)),
        ("C-2", "98975", dt.date(2026, 10, 2)): SubmittedLine("p-2", "ep-2", ()),
    }
    denials, unmatched = escaped_denials(parse_835(remit_835(DENIED, PAID)), submitted)
    assert [(d.claim_id, d.carc, d.outcome) for d in denials] == [
        ("C-1", "CO-4", "escaped"),  # KX_REQUIRED did not fire
        ("C-1", "CO-50", "caught"),  # POC_EXPIRED did
    ]
    assert denials[0].row() == [
        "C-1",
        "p-1",
        "ep-1",
        "98977",
        "2026-10-15",
        "CO-4",
        "N386",
        "KX_REQUIRED",
        "POC_EXPIRED",
        "escaped",
    ]
    assert [u.text() for u in unmatched] == ["C-1 98980 2026-10-01"]  # never dropped


def test_the_queue_moves_a_line_from_blocked_to_ready_to_submitted_to_paid_or_denied() -> None:
    states, facts = scenario(BASE)  # consents sent, none for this episode: blocked
    first, last = EVERYTHING

    def queue(
        *overrides: Override,
        history: Sequence[RecordedLine] = (),
        denied: Mapping[str, bool] | None = None,
    ) -> list[QueueLine]:
        standing = [r.line for r in history]
        gated = gate_lines(states, standing, first, last, AS_OF, inputs(facts, *overrides))
        return queue_lines(gated, history, denied or {}, first, last)

    blocked = queue()
    assert blocked and {q.status for q in blocked} == {"blocked"}
    words = {c.code: c.text for c in blocked[0].checks}
    assert words["CONSENT_MISSING"] == "No consent on file for the episode"
    assert filter_queue(blocked, "blocked", "CONSENT_MISSING") == blocked
    assert filter_queue(blocked, "ready", None) == [] and filter_queue(blocked, None, "X") == []

    lets_out = [
        Override(i, line_id(q.line), frozenset({"CONSENT_MISSING"}))
        for i, q in enumerate(blocked, 1)
    ]
    ready = queue(*lets_out)
    assert {q.status for q in ready} == {"ready"} and all(q.override_id for q in ready)
    assert status_counts(ready)["ready"] == len(blocked)

    history = recorded([q.line for q in ready], 1, ["C-9"] * len(ready))
    assert {(q.status, q.claim_id) for q in queue(*lets_out, history=history)} == {
        ("submitted", "C-9")
    }
    assert {q.status for q in queue(*lets_out, history=history, denied={"C-9": True})} == {"denied"}
    assert {q.status for q in queue(*lets_out, history=history, denied={"C-9": False})} == {"paid"}
