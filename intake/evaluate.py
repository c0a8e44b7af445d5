"""The offline driver of the intake engine (``rtm intake evaluate``), pure: lines of a
JSONL file in, the output lines and the per-line errors out (the CLI opens the file and
writes). The whole file is read: events after ``as_of`` count too (``as_of`` is only the
"now" of intakes without a contact).

Output: one JSON object per intake, sorted by intake_id, then patient_id:
``{"intake_id", "patient_id", "route", "reasons", "sbst", "due_at", "first_contact_at",
"breached"}``, times RFC 3339 in the intake zone's offset at that instant. A contact for an
intake that never arrived prints nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from intake.engine import IntakeResult, fold, results
from intake.rules import DEFAULT_RULES, IntakeRules
from schemas.events import Event, validate_event


class LineError(NamedTuple):
    line_no: int  # 1-based
    message: str  # the field-naming messages (no field values: no PHI in logs)

    def __str__(self) -> str:
        return f"line {self.line_no}: skipped: {self.message}"


def read_events(lines: Iterable[str | bytes], errors: list[LineError]) -> Iterator[Event]:
    """The valid events of JSONL lines, in file order; invalid lines go to ``errors``."""
    for n, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            errors.append(LineError(n, f"not JSON: {exc}"))
            continue
        result = validate_event(obj)
        if isinstance(result, list):
            errors.append(LineError(n, "; ".join(e.message for e in result)))
            continue
        yield result


def evaluate(
    lines: Iterable[str | bytes], as_of: dt.datetime, rules: IntakeRules = DEFAULT_RULES
) -> tuple[list[IntakeResult], list[LineError]]:
    """Every intake of the file as of ``as_of``, and the lines that were skipped."""
    errors: list[LineError] = []
    states = fold(read_events(lines, errors))
    return results(states.values(), as_of, rules), errors


def render(result: IntakeResult) -> str:
    """One output line (compact JSON, keys in the documented order)."""
    return json.dumps(result.output(), separators=(",", ":"), ensure_ascii=False)
