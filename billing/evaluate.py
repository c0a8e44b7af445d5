"""Offline evaluation: a JSONL file of contract events -> the claims CSV (same engine).

``rtm billing evaluate --events FILE.jsonl --as-of TIMESTAMP [--include-open]`` calls
``run_evaluate``. stdout carries exactly the CSV of billing-rules.md (no comment lines,
so that it matches the shared example byte for byte); invalid lines and refused events
are reported on stderr and skipped. The conventions block is printed first only when
asked (``conventions=True``, for a ``--conventions`` flag).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple, TextIO

from pydantic import TypeAdapter, ValidationError

from billing.config import DEFAULT_CONFIG, BillingConfig
from billing.export import write_csv
from billing.fees import FeeScheduleError, parse_fee_schedule
from billing.readiness import (
    DEFAULT_READINESS_CONFIG,
    MissingFees,
    ReadinessConfig,
    ReadinessFacts,
    Stream,
    StreamMode,
    assess,
    config_for,
    write_readiness_csv,
)
from billing.rules import ClaimLine, compute_claims
from billing.state import PatientBillingState
from schemas.events import PatientKey, validate_event


class LineError(NamedTuple):
    line_no: int  # 1-based line number in the input
    event_id: str | None
    message: str

    def __str__(self) -> str:
        ref = f" (event_id {self.event_id})" if self.event_id else ""
        return f"line {self.line_no}{ref}: {self.message}"


class Evaluation(NamedTuple):
    claims: list[ClaimLine]
    errors: list[LineError]


def fold_jsonl(
    lines_of_jsonl: Iterable[str | bytes],
) -> tuple[dict[PatientKey, PatientBillingState], list[LineError]]:
    """Validate each line on its own and fold the valid events into per-patient states,
    by (organisation, patient_id) as the worker keys them (a line without an ``org_id``
    stamp belongs to DEFAULT_ORG)."""
    states: dict[PatientKey, PatientBillingState] = {}
    errors: list[LineError] = []
    episode_lines: dict[str, int] = {}  # to report a refused episode.started by line
    for n, raw in enumerate(lines_of_jsonl, start=1):
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            errors.append(LineError(n, None, f"not JSON: {exc.msg}"))
            continue
        event_id = obj.get("event_id") if isinstance(obj, dict) else None
        event_id = event_id if isinstance(event_id, str) else None
        result = validate_event(obj)
        if isinstance(result, list):
            errors.append(LineError(n, event_id, "; ".join(e.message for e in result)))
            continue
        key = result.patient_key
        state = states.get(key)
        if state is None:
            state = states[key] = PatientBillingState(patient_id=result.patient_id)
        state.apply(result)
        if result.type == "episode.started":
            episode_lines.setdefault(result.event_id, n)
    for state in states.values():
        for eid, reason in state.rejected_episode_events.items():
            errors.append(
                LineError(episode_lines.get(eid, 0), eid, f"episode.started refused: {reason}")
            )
    return states, errors


def evaluate(
    lines_of_jsonl: Iterable[str | bytes],
    as_of: dt.datetime,
    include_open: bool = False,
    config: BillingConfig = DEFAULT_CONFIG,
) -> Evaluation:
    """Claims the rules give for the events of a JSONL file, with periods closed as of
    ``as_of`` (timezone-aware). Never raises on bad input lines: they are skipped and
    returned in ``errors``. Unpack as ``claims, errors = evaluate(...)``."""
    states, errors = fold_jsonl(lines_of_jsonl)
    claims = compute_claims(states.values(), as_of, config, include_open)
    return Evaluation(claims, errors)


def run_evaluate(
    events_path: Path,
    as_of: dt.datetime,
    include_open: bool,
    out: TextIO,
    *,
    err: TextIO | None = None,
    config: BillingConfig = DEFAULT_CONFIG,
    conventions: bool = False,
) -> int:
    """CLI body of ``rtm billing evaluate``. Returns the exit code: 0 when the CSV was
    written (even if some lines were skipped, each reported on ``err``), 2 when the file
    cannot be read or ``as_of`` has no UTC offset."""
    err = err if err is not None else sys.stderr
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        err.write("error: --as-of must carry a UTC offset, e.g. 2027-03-01T00:00:00Z\n")
        return 2
    try:
        with events_path.open("rb") as fh:
            claims, errors = evaluate(fh, as_of, include_open, config)
    except OSError as exc:
        err.write(f"error: cannot read {events_path}: {exc.strerror or exc}\n")
        return 2
    for e in errors:
        err.write(f"skipped {e}\n")
    write_csv(claims, out, config if conventions else None)
    return 0


# --- rtm billing readiness (issue 20; docs/billing-readiness.md) -----------------------------


_MODES: TypeAdapter[dict[str, dict[Stream, StreamMode]]] = TypeAdapter(
    dict[str, dict[Stream, StreamMode]]
)


def parse_stream_modes(text: str | bytes) -> ReadinessConfig:
    """``--streams``: JSON ``{"ORG": {"consent": "not_sent", ...}}``, the modes `rtm billing
    streams set` stores (streams not named: ``auto``; ``default`` also holds for events
    that name no organisation). Raises ValueError naming the problem."""
    try:
        by_org = _MODES.validate_json(text)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        raise ValueError(f"{where}: {e['msg']}" if where else e["msg"]) from None
    streams: dict[str, dict[Stream, StreamMode]] = {}
    for org, modes in by_org.items():
        streams.update(config_for(org, modes).streams)
    return ReadinessConfig(streams=streams)


def run_readiness(
    events_path: Path,
    as_of: dt.datetime,
    fees_path: Path,
    out: TextIO,
    *,
    locality: str | None = None,
    include_open: bool = False,
    err: TextIO | None = None,
    config: BillingConfig = DEFAULT_CONFIG,
    streams: ReadinessConfig = DEFAULT_READINESS_CONFIG,
) -> int:
    """CLI body of ``rtm billing readiness``: the rows, order and columns of ``rtm billing
    evaluate`` (KX in ``modifiers``), then ``readiness,checks``. ``streams``: the modes of
    ``--streams`` (``parse_stream_modes``); every stream not named is ``auto``.

    Returns the exit code: 0 with the CSV written; 2, with nothing on ``out``, when a file
    cannot be read, an events line is not a valid event or the fee file is invalid (each
    named on ``err``), ``as_of`` has no UTC offset, the locality is ambiguous (no
    ``locality`` and the fee file has several, or none) or not in the fee file, or a
    therapy line has no fee (each named). A refused second ``episode.started`` is reported
    as by ``rtm billing evaluate`` and does not stop the command.
    """
    err = err if err is not None else sys.stderr
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        err.write("error: --as-of must carry a UTC offset, e.g. 2027-03-01T00:00:00Z\n")
        return 2
    try:
        fee_text = fees_path.read_text(encoding="utf-8")
    except OSError as exc:
        err.write(f"error: cannot read {fees_path}: {exc.strerror or exc}\n")
        return 2
    except UnicodeDecodeError:
        err.write(f"error: {fees_path}: not UTF-8 text\n")
        return 2
    try:
        fees = parse_fee_schedule(fee_text)
    except FeeScheduleError as exc:
        err.write(f"error: {fees_path}: {exc}\n")
        return 2
    localities = sorted({e.locality for e in fees})
    if locality is None:
        if len(localities) != 1:
            found = ", ".join(localities) or "none"
            err.write(
                f"error: locality ambiguous: {fees_path} has {found}; name one with --locality\n"
            )
            return 2
        locality = localities[0]
    elif locality not in localities:
        err.write(
            f"error: locality {locality} is not in {fees_path}"
            f" (it has {', '.join(localities) or 'none'})\n"
        )
        return 2

    states: dict[str, PatientBillingState] = {}
    facts = ReadinessFacts()
    invalid: list[LineError] = []
    episode_lines: dict[str, int] = {}
    try:
        with events_path.open("rb") as fh:
            for n, raw in enumerate(fh, start=1):
                text = raw.decode("utf-8", errors="replace")
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    invalid.append(LineError(n, None, f"not JSON: {exc.msg}"))
                    continue
                event_id = obj.get("event_id") if isinstance(obj, dict) else None
                event_id = event_id if isinstance(event_id, str) else None
                result = validate_event(obj)
                if isinstance(result, list):
                    invalid.append(LineError(n, event_id, "; ".join(e.message for e in result)))
                    continue
                state = states.get(result.patient_id)
                if state is None:
                    state = states[result.patient_id] = PatientBillingState(
                        patient_id=result.patient_id
                    )
                state.apply(result)
                facts.apply(result)
                if result.type == "episode.started":
                    episode_lines.setdefault(result.event_id, n)
    except OSError as exc:
        err.write(f"error: cannot read {events_path}: {exc.strerror or exc}\n")
        return 2
    if invalid:
        for e in invalid:
            err.write(f"invalid {e}\n")
        err.write(f"error: {len(invalid)} invalid line(s) in {events_path}; nothing assessed\n")
        return 2
    for state in states.values():
        for eid, reason in state.rejected_episode_events.items():
            line = LineError(episode_lines.get(eid, 0), eid, f"episode.started refused: {reason}")
            err.write(f"skipped {line}\n")

    claims = compute_claims(states.values(), as_of, config, include_open)
    chosen = locality
    try:
        assessed = assess(claims, states, facts, as_of, fees, lambda _org, _line: chosen, streams)
    except MissingFees as exc:
        for ln, loc in exc.lines:
            err.write(
                f"error: no fee for therapy line {ln.patient_id} {ln.episode_id} {ln.cpt}"
                f" {ln.date_of_service.isoformat()} in {fees_path} (locality {loc})\n"
            )
        return 2
    write_readiness_csv(assessed, out)
    return 0
