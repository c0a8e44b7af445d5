"""The biller's month-end queue (pure): each claim line of the month with where it stands,
Ready -> Submitted -> Paid / Denied, and its readiness and checks.

A line still to bill (new, or changed since it was billed) is ``blocked`` when a blocked
check holds it and no override lets it out, else ``ready``. A line whose group stands as
submitted is ``submitted``, or ``paid`` / ``denied`` once a loaded 835 says so of its claim
(the latest 835 naming the claim; a reversal says neither)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from billing.amend import lines_to_export, standing_lines
from billing.claims837 import RecordedLine
from billing.readiness import CHECK_TEXT, SEVERITY
from billing.rules import ClaimLine
from billing.submission import Gated, LineId, LineReadiness, exports_of, line_id, line_text

Status = Literal["blocked", "ready", "submitted", "paid", "denied"]
STATUSES: tuple[Status, ...] = ("blocked", "ready", "submitted", "paid", "denied")
STATUS_TEXT: dict[Status, str] = {
    "blocked": "Blocked",
    "ready": "Ready",
    "submitted": "Submitted",
    "paid": "Paid",
    "denied": "Denied",
}


@dataclass(frozen=True)
class Check:
    code: str
    severity: str  # blocked | warn
    text: str  # the code in words


@dataclass(frozen=True)
class QueueLine:
    status: Status
    claim_id: str  # "" until submitted
    line: ClaimLine
    readiness: str  # blocked | warn | ready | "" (not judged now: withdrawn since)
    checks: tuple[Check, ...]
    override_id: int | None

    @property
    def text(self) -> str:
        """``PATIENT EPISODE CPT DOS``, as the override form names the line."""
        return line_text(self.line)


def check_of(code: str) -> Check:
    return Check(code, SEVERITY.get(code, "warn"), CHECK_TEXT.get(code, code))


def _status(
    pending: bool, ready: LineReadiness | None, claim: str, denied: Mapping[str, bool]
) -> Status:
    if pending:
        blocked = ready is not None and ready.readiness == "blocked" and ready.override_id is None
        return "blocked" if blocked else "ready"
    if claim in denied:
        return "denied" if denied[claim] else "paid"
    return "submitted"


def queue_lines(
    gated: Gated,
    history: Sequence[RecordedLine],
    denied: Mapping[str, bool],
    first: dt.date,
    last: dt.date,
) -> list[QueueLine]:
    """The month's lines: those the gates judged now (``gated``: the month as of now, as a
    submission plans it), and the submitted lines of the month standing (``history``); each
    once, by (patient, episode, CPT, date of service). ``denied``: claim id -> the latest
    835's verdict."""
    standing = standing_lines(exports_of(history))
    claim_of: dict[LineId, str] = {}
    for rec in history:
        claim_of[line_id(rec.line)] = rec.claim_id or ""
    judged = [ln for ln in gated.lines] + [a.line for a in gated.refused]
    pending = {line_id(ln) for ln in lines_to_export(standing, judged) if ln.status != "void"}
    pending |= {line_id(a.line) for a in gated.refused}
    lines = {line_id(ln): ln for ln in standing if first <= ln.date_of_service <= last}
    lines.update({line_id(ln): ln for ln in judged})
    out = []
    for key, ln in lines.items():
        ready = gated.readiness.get(key)
        claim = "" if key in pending else claim_of.get(key, "")
        out.append(
            QueueLine(
                _status(key in pending, ready, claim, denied),
                claim,
                ln,
                ready.readiness if ready else "",
                tuple(check_of(c) for c in ready.checks) if ready else (),
                ready.override_id if ready else None,
            )
        )
    order = {s: i for i, s in enumerate(STATUSES)}
    return sorted(out, key=lambda q: (order[q.status], q.claim_id, q.line.sort_key()))


def filter_queue(
    lines: Sequence[QueueLine], status: Status | None, code: str | None
) -> list[QueueLine]:
    """The lines of one status and/or holding one check code (None: any)."""
    return [
        q
        for q in lines
        if (status is None or q.status == status)
        and (code is None or any(c.code == code for c in q.checks))
    ]


def status_counts(lines: Sequence[QueueLine]) -> dict[Status, int]:
    counts = Counter(q.status for q in lines)
    return {s: counts.get(s, 0) for s in STATUSES}
