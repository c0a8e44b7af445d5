"""Escaped denials (pure): each service line an 835 denies, matched to the line we
submitted, its CARC/RARC mapped to the readiness gates (docs/billing-readiness.md, "835:
escaped denials"), and the outcome: ``caught`` (a mapped gate was among the line's checks
at submission), ``escaped`` (none of them fired) or ``uncovered`` (no gate speaks of that
reason)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from billing.readiness import (
    CERTIFIER_NPI_INVALID,
    GLOBAL_PERIOD,
    ICD10_NOT_BILLABLE,
    KX_REQUIRED,
    MEDICAL_REVIEW_THRESHOLD,
    POC_EXPIRED,
    POC_LATE,
    POC_MISSING,
    RPM_OVERLAP,
)
from billing.remit import ClaimPayment

Outcome = Literal["caught", "escaped", "uncovered"]

# CARC (the reason, whatever its group code) -> the gates that would have caught it; an
# empty tuple: no gate covers it (CO-18 another biller's duplicate, CO-204, B7 enrolment).
CARC_GATES: dict[str, tuple[str, ...]] = {
    "4": (KX_REQUIRED,),
    "16": (CERTIFIER_NPI_INVALID, ICD10_NOT_BILLABLE),
    "18": (),
    "50": (POC_MISSING, POC_EXPIRED, POC_LATE, MEDICAL_REVIEW_THRESHOLD),
    "97": (GLOBAL_PERIOD, RPM_OVERLAP),
    "119": (KX_REQUIRED,),
    "204": (),
    "B7": (),
}
# CO-16 names what is missing in its remark codes: the NPI or the diagnosis.
RARC_GATES: dict[str, str] = {
    "N286": CERTIFIER_NPI_INVALID,
    "N265": CERTIFIER_NPI_INVALID,
    "M76": ICD10_NOT_BILLABLE,
}

CSV_COLUMNS = (
    "claim_id",
    "patient_id",
    "episode_id",
    "cpt",
    "date_of_service",
    "carc",
    "rarc",
    "gates",
    "checks",
    "outcome",
)


def gates_for(carc: str, rarcs: Sequence[str] = ()) -> tuple[str, ...]:
    """The gates a denial reason maps to: CO-16 narrowed by its RARCs (N286/N265 the NPI,
    M76 the diagnosis; with none of them, both); a reason not in the table maps to none."""
    gates = CARC_GATES.get(carc, ())
    if carc == "16":
        named = {RARC_GATES[r] for r in rarcs if r in RARC_GATES}
        if named:
            return tuple(g for g in gates if g in named)
    return gates


def outcome_of(gates: Sequence[str], checks: Sequence[str]) -> Outcome:
    if not gates:
        return "uncovered"
    return "caught" if set(gates) & set(checks) else "escaped"


@dataclass(frozen=True)
class SubmittedLine:
    """A line as submitted: its patient and episode, and its checks then (empty when it
    was submitted before readiness existed)."""

    patient_id: str
    episode_id: str
    checks: tuple[str, ...]


LineKey = tuple[str, str, dt.date]  # claim id (CLM01), CPT, date of service


@dataclass(frozen=True)
class Denial:
    claim_id: str
    patient_id: str
    episode_id: str
    cpt: str
    date_of_service: dt.date
    carc: str  # group and reason: CO-50
    rarc: tuple[str, ...]
    gates: tuple[str, ...]
    checks: tuple[str, ...]
    outcome: Outcome

    def row(self) -> list[str]:
        """The CSV row (CSV_COLUMNS); lists ``+``-joined."""
        return [
            self.claim_id,
            self.patient_id,
            self.episode_id,
            self.cpt,
            self.date_of_service.isoformat(),
            self.carc,
            "+".join(self.rarc),
            "+".join(self.gates),
            "+".join(self.checks),
            self.outcome,
        ]


@dataclass(frozen=True)
class Unmatched:
    """A denied service line that matches no line submitted by the organisation."""

    claim_id: str
    cpt: str
    date_of_service: dt.date | None

    def text(self) -> str:
        when = self.date_of_service.isoformat() if self.date_of_service else "(no date)"
        return f"{self.claim_id} {self.cpt} {when}"


def escaped_denials(
    remit: Sequence[ClaimPayment], submitted: Mapping[LineKey, SubmittedLine]
) -> tuple[list[Denial], list[Unmatched]]:
    """Every denied service line of ``remit`` (nothing paid, a reason given) with one
    denial per reason code on it, in the file's order; lines matching no submitted line
    (CLP01, SVC procedure code and date) come back as ``Unmatched``, never dropped."""
    out: list[Denial] = []
    unmatched: list[Unmatched] = []
    for claim in remit:
        for svc in claim.services:
            if not svc.denied:
                continue
            dos = svc.date_of_service
            line = submitted.get((claim.claim_id, svc.cpt, dos)) if dos else None
            if line is None or dos is None:
                unmatched.append(Unmatched(claim.claim_id, svc.cpt, dos))
                continue
            for adj in svc.adjustments:
                gates = gates_for(adj.reason, svc.remarks)
                out.append(
                    Denial(
                        claim.claim_id,
                        line.patient_id,
                        line.episode_id,
                        svc.cpt,
                        dos,
                        adj.text,
                        tuple(svc.remarks),
                        gates,
                        line.checks,
                        outcome_of(gates, line.checks),
                    )
                )
    return out, unmatched
