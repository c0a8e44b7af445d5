"""The claims use cases, each written once: read, decide (``billing.submission``), write,
and leave the audit row, in one place for the gateway's routes, the dashboard and the CLI.

- ``preview``: a look at the next export's lines (nothing recorded, so a GET stays safe to
  repeat); audited as a ``read`` when the caller names who asks (``audit_as``).
- ``export``: the same lines recorded as an export, with the claim ids a submission would
  give them, under the export lock so two exports cannot bill one group twice; audited as
  an ``export``. The readiness gates run as for ``submit``: blocked lines are refused
  (``ExportResult.refused``), not recorded.
- ``submit``: the next submission (originals, replacements, voids), its file rendered with
  a control number from the database and kept with it; audited as an ``export`` (a dry
  run or nothing to send: a ``read``). A profile lacking a field refuses it
  (``billing.submission.SubmissionRefused``) and nothing is written. ``expect``: the
  fingerprint of the plan a person confirmed (``billing.submission.plan_fingerprint``, as
  a dry run returned it); a plan that differs by then is refused (``PlanChanged``) before
  a control number is taken or anything is written.
  Readiness (docs/billing-readiness.md): the gates run at plan time over the
  organisation's readiness facts (events in the ``events`` table) as of the submission's
  as-of; blocked lines are refused (``SubmissionResult.refused``: not written, not
  recorded, kept for the next run) unless an override lets them out; each recorded line
  keeps its readiness and checks. The organisation's stream switch (`rtm billing streams
  set`) holds.
- ``override``: let a blocked line out, with a reason (>= 10 characters): an append-only
  row and its audit row (who, when, line, blocked codes, reason), in one transaction.
- ``month_readiness``: the month's lines after the gates as of now, the one place the
  month-end queue reads readiness; ``month_queue``: the queue (Ready, Blocked, Submitted,
  Paid, Denied) with each line's readiness and checks, and the month's denials.
- ``load_remit``: an 835 loaded (the payer's claim control numbers, each claim paid or
  denied, each denied line with its escaped-denial outcome), stored once per file, audited.
- ``submission_file``: a submitted file again, byte for byte (audited as a ``read``).
- ``set_profile``, ``load_demographics`` (audited), ``load_fee_schedule``,
  ``record_payer_claim_numbers``: the parties and numbers a submission needs.

Each takes a connection (its transaction is the use case's), a ``Clock`` for "now" when the
caller gives no ``as_of``, and a ``Requester``: who asks, as the audit log names them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
import orjson

from billing.amend import standing_lines
from billing.claims837 import ClaimProblem, PlannedClaim
from billing.config import DEFAULT_CONFIG, BillingConfig
from billing.demographics import Demographics
from billing.denials import Denial, Unmatched, escaped_denials
from billing.fees import FeeEntry, check_overlaps
from billing.profile import BillingProfile
from billing.queue import QueueLine, queue_lines
from billing.readiness import SEVERITY, AssessedLine, ReadinessFacts, config_for
from billing.remit import parse_835
from billing.rules import ClaimLine
from billing.submission import (
    Format,
    Gated,
    LineId,
    LineReadiness,
    Parties,
    ReadinessInputs,
    check_submission_request,
    exports_of,
    gate_lines,
    line_id,
    line_text,
    plan_export,
    plan_fingerprint,
    plan_submission,
    preview_lines,
    render_submission,
    submission_file_name,
)
from billing.x12 import Usage
from schemas.events import DEFAULT_ORG, validate_event
from streams.access import Principal
from streams.clock import Clock
from streams.db import claims as db
from streams.db import remits as remit_db
from streams.db.access import audit
from streams.db.ledger import load_states
from streams.db.readiness import READINESS_EVENT_TYPES, stream_modes


@dataclass(frozen=True)
class Requester:
    """Who asks (the audit row's organisation, actor and role; ``created_by`` is the name
    an export records) and where (the audit row's resource: a route or a command)."""

    org_id: str
    actor: str
    role: str
    resource: str
    created_by: str

    @classmethod
    def of(cls, who: Principal, resource: str) -> Requester:
        return cls(who.org_id, who.actor, who.role_text, resource, who.actor)

    @classmethod
    def cli(cls, user: str, org_id: str | None, resource: str) -> Requester:
        return cls(org_id or DEFAULT_ORG, f"cli:{user}", "cli", resource, user)


async def audit_requester(
    conn: asyncpg.Connection,
    by: Requester,
    action: str,
    patient_ids: Iterable[str],
    detail: dict[str, object],
) -> None:
    await audit(
        conn,
        org_id=by.org_id,
        actor=by.actor,
        role=by.role,
        action=action,
        resource=by.resource,
        patient_ids=patient_ids,
        detail=detail,
    )


# --- preview and export ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    lines: list[ClaimLine]
    withdrawn: list[ClaimLine]
    export_id: int | None  # None: a look, nothing recorded
    as_of: dt.datetime  # the "now" the claims were computed at (render the file with it)
    elapsed_s: float
    refused: list[AssessedLine] = field(default_factory=list)  # blocked: not recorded


async def _audit_export(
    conn: asyncpg.Connection,
    by: Requester,
    result: ExportResult,
    fmt: str,
    date_from: dt.date,
    date_to: dt.date,
) -> None:
    await audit_requester(
        conn,
        by,
        "export" if result.export_id is not None else "read",
        [ln.patient_id for ln in result.lines],
        {
            "from": date_from.isoformat(),
            "to": date_to.isoformat(),
            "format": fmt,
            "lines": len(result.lines),
            "export_id": result.export_id,
            # blocked lines not recorded (only when some were: the row stays as before)
            **(
                {"refused": [f"{line_text(a.line)}: {a.checks_text}" for a in result.refused]}
                if result.refused
                else {}
            ),
        },
    )


async def preview(
    conn: asyncpg.Connection,
    clock: Clock,
    *,
    org_id: str | None,
    date_from: dt.date,
    date_to: dt.date,
    as_of: dt.datetime | None = None,
    include_open: bool = False,
    fmt: Format = "csv",
    audit_as: Requester | None = None,
    config: BillingConfig = DEFAULT_CONFIG,
) -> ExportResult:
    """The lines of the next export of ``org_id`` (None: DEFAULT_ORG's) with a date of
    service in [date_from, date_to] as of ``as_of`` (default: the clock), less what
    earlier recorded exports billed unchanged; open periods too with ``include_open``
    (status ``preview``). Nothing is recorded. Audited as a read of ``audit_as`` when given
    (the dashboard's page audits its whole view itself)."""
    t0 = time.perf_counter()
    org = org_id or DEFAULT_ORG
    when = as_of or clock.now()
    async with conn.transaction():
        states = await load_states(conn, org)  # the organisation's ledger, every patient
        history = await db.recorded_history(conn, org, sorted(states))
        look = preview_lines(states, history, date_from, date_to, when, config, include_open)
        result = ExportResult(look.lines, look.withdrawn, None, when, time.perf_counter() - t0)
        if audit_as is not None:
            await _audit_export(conn, audit_as, result, fmt, date_from, date_to)
    return result


async def export(
    conn: asyncpg.Connection,
    clock: Clock,
    by: Requester,
    *,
    date_from: dt.date,
    date_to: dt.date,
    as_of: dt.datetime | None = None,
    fmt: Format = "csv",
    config: BillingConfig = DEFAULT_CONFIG,
) -> ExportResult:
    """Record the next export of ``by``'s organisation: the lines of ``preview`` (closed
    periods/months only), each with the claim id a submission would give it, under the
    export lock, with its audit row, in one transaction."""
    t0 = time.perf_counter()
    org = by.org_id
    when = as_of or clock.now()
    async with conn.transaction():
        await db.lock_exports(conn)
        states = await load_states(conn, org)
        patients = sorted(states)
        history = await db.recorded_history(conn, org, patients)
        taken = await db.claim_ids(conn, org, patients)
        inputs = await _readiness_inputs(conn, org)
        plan = plan_export(org, states, history, taken, date_from, date_to, when, config, inputs)
        export_id = await db.record_export(
            conn,
            plan.lines,
            created_by=by.created_by,
            as_of=when,
            date_from=date_from,
            date_to=date_to,
            fmt=fmt,
            conventions=config.header_text(),
            org_id=org,
            claim_ids=plan.claim_ids,
            readiness=[plan.readiness.get(line_id(ln)) for ln in plan.lines],
        )
        await db.record_claims(conn, org, export_id, plan.planned)
        result = ExportResult(
            plan.lines,
            plan.withdrawn,
            export_id,
            when,
            time.perf_counter() - t0,
            plan.refused,
        )
        await _audit_export(conn, by, result, fmt, date_from, date_to)
    return result


# --- submit ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmissionResult:
    """What ``submit`` did: ``submission_id`` None when nothing was recorded (dry run, or
    nothing to send). ``problems``: claims left out, each naming its field."""

    submission_id: int | None
    control_number: int | None
    text: str
    file_name: str
    claims: list[PlannedClaim]
    problems: list[ClaimProblem]
    withdrawn: list[ClaimLine]
    fingerprint: str = ""  # billing.submission.plan_fingerprint of what it records
    charges: dict[str, Decimal] = field(default_factory=dict)  # X12: claim id -> total
    refused: list[AssessedLine] = field(default_factory=list)  # blocked, kept for next run

    @property
    def lines(self) -> list[ClaimLine]:
        """The recorded lines (new, amended, void), as the history keeps them."""
        return [ln for c in self.claims for ln in c.record]


class PlanChanged(Exception):
    """The plan is no longer the one confirmed (``submit``'s ``expect``): nothing recorded."""


async def submit(
    conn: asyncpg.Connection,
    clock: Clock,
    by: Requester,
    *,
    date_from: dt.date,
    date_to: dt.date,
    as_of: dt.datetime | None = None,
    fmt: Format = "x12",
    usage: Usage = "P",
    dry_run: bool = False,
    created: dt.datetime | None = None,
    config: BillingConfig = DEFAULT_CONFIG,
    expect: str | None = None,
) -> SubmissionResult:
    """Submit the next claims of ``by``'s organisation: this is what records lines as
    billed. Under the export lock, in one transaction: the plan
    (``billing.submission.plan_submission``), the file (X12: control number from the
    database sequence; ``created`` stamps it, default the clock), the file stored with the
    recorded lines and claims, and the audit row. Nothing to send: nothing recorded.
    ``dry_run``: the same file (X12 control number 0, usage T), not recorded.
    ``expect``: refuse (``PlanChanged``) unless the plan's fingerprint is this one."""
    check_submission_request(fmt, usage)
    now = clock.now()
    when, created = as_of or now, created or now
    org = by.org_id
    async with conn.transaction():
        await db.lock_exports(conn)
        states = await load_states(conn, org)
        patients = sorted(states)
        history = await db.recorded_history(conn, org, patients)
        taken = await db.claim_ids(conn, org, patients)
        parties = await _parties(conn, org, patients) if fmt == "x12" else None
        inputs = await _readiness_inputs(conn, org)
        plan = plan_submission(
            org, states, history, taken, date_from, date_to, when, fmt, parties, config, inputs
        )
        fingerprint = plan_fingerprint(plan, date_from, date_to, usage)
        if expect is not None and expect != fingerprint:
            raise PlanChanged(fingerprint)
        control: int | None = None
        submission_id: int | None = None
        text = name = ""
        if plan.claims:
            if fmt == "x12":
                control = 0 if dry_run else await db.next_control_number(conn)
            text = render_submission(plan, control, "T" if dry_run else usage, created, config)
        if plan.claims and not dry_run:
            submission_id = await db.record_export(
                conn,
                [ln for _, ln in plan.record],
                created_by=by.created_by,
                as_of=when,
                date_from=date_from,
                date_to=date_to,
                fmt=fmt,
                conventions=config.header_text(),
                org_id=org,
                claim_ids=[cid for cid, _ in plan.record],
                readiness=[plan.readiness_of(ln) for _, ln in plan.record],
            )
            name = submission_file_name(org, submission_id, control, fmt)
            await db.store_submission_file(
                conn,
                submission_id,
                usage=usage if fmt == "x12" else None,
                control_number=control,
                claim_count=len(plan.claims),
                file_name=name,
                text=text,
                problems=[p.text() for p in plan.problems],
            )
            await db.record_claims(conn, org, submission_id, plan.claims)
        result = SubmissionResult(
            submission_id,
            control,
            text,
            name,
            plan.claims,
            plan.problems,
            plan.withdrawn,
            fingerprint,
            {r.claim.claim_id: r.total for r in plan.ready},
            plan.refused,
        )
        await audit_requester(
            conn,
            by,
            "export" if result.submission_id is not None else "read",
            [c.first.patient_id for c in result.claims],
            {
                "from": date_from.isoformat(),
                "to": date_to.isoformat(),
                "format": fmt,
                "submission_id": result.submission_id,
                "control_number": result.control_number,
                "claims": len(result.claims),
                "problems": len(result.problems),
                "refused": [f"{line_text(a.line)}: {a.checks_text}" for a in result.refused],
            },
        )
    return result


async def _readiness_inputs(conn: asyncpg.Connection, org_id: str) -> ReadinessInputs:
    """The organisation's readiness facts (from the event log), fees, localities (its
    billing profiles') and overrides. A stored event that no longer validates is skipped,
    as the ledger skips it."""
    facts = ReadinessFacts()
    for text in await db.readiness_payloads(conn, org_id, READINESS_EVENT_TYPES):
        event = validate_event(orjson.loads(text))
        if not isinstance(event, list):
            facts.apply(event)
    profiles = await db.get_profiles(conn, org_id)
    modes = (await stream_modes(conn, [org_id])).get(org_id, {})
    return ReadinessInputs(
        config=config_for(org_id, modes),
        facts=facts,
        fees=await db.fee_entries(conn),
        localities={npi: p.locality for npi, p in profiles.items() if p.locality},
        overrides=await db.overrides(conn, org_id),
    )


# --- overrides ---------------------------------------------------------------------------------

MIN_REASON = 10  # characters (docs/billing-readiness.md, a convention)


class OverrideRefused(ValueError):
    """An override that cannot be recorded (no reason, no such line, not blocked)."""


@dataclass(frozen=True)
class OverrideResult:
    override_id: int
    line: str  # PATIENT EPISODE CPT DOS
    codes: tuple[str, ...]  # the blocked codes it holds


async def override(
    conn: asyncpg.Connection,
    clock: Clock,
    by: Requester,
    *,
    line: LineId,
    reason: str,
    as_of: dt.datetime | None = None,
) -> OverrideResult:
    """Let a blocked line of ``by``'s organisation out of the next submissions while it
    holds the blocked codes it has as of ``as_of`` (default: the clock): an append-only
    override and its audit row (who, when, the line, its codes, the reason), in one
    transaction. Refused (``OverrideRefused``, nothing written) without a reason of
    ``MIN_REASON`` characters, for a line the rules do not bill (closed periods only), one
    that is not blocked, or one an override already lets out."""
    text = reason.strip()
    if len(text) < MIN_REASON:
        raise OverrideRefused(f"a reason of at least {MIN_REASON} characters is required")
    now = clock.now()
    when = as_of or now
    org = by.org_id
    patient_id, _, _, dos = line
    async with conn.transaction():
        states = await load_states(conn, org, [patient_id])
        history = await db.recorded_history(conn, org, sorted(states))
        standing = standing_lines([[r.line for r in history]])
        inputs = await _readiness_inputs(conn, org)
        gated = gate_lines(states, standing, dos, dos, when, inputs)
        named = " ".join((*line[:3], dos.isoformat()))
        found: LineReadiness | None = gated.readiness.get(line)
        if found is None:
            raise OverrideRefused(f"no claim line {named} as of {when.isoformat()}")
        if found.readiness != "blocked":
            raise OverrideRefused(f"line {named} is not blocked ({found.readiness})")
        if found.override_id is not None:
            raise OverrideRefused(f"line {named} is already let out (override {found.override_id})")
        codes = tuple(c for c in found.checks if SEVERITY[c] == "blocked")
        override_id = await db.add_override(conn, org, line, codes, text, by.actor, now)
        await audit_requester(
            conn,
            by,
            "billing.override",
            [patient_id],
            {"override_id": override_id, "line": named, "codes": list(codes), "reason": text},
        )
    return OverrideResult(override_id, named, codes)


async def _parties(conn: asyncpg.Connection, org_id: str, patients: Sequence[str]) -> Parties:
    return Parties(
        profiles=await db.get_profiles(conn, org_id),
        demographics=await db.demographics_for(conn, org_id, patients),
        fees=await db.fee_entries(conn),
        payer_claim_numbers=await db.payer_claim_numbers(conn, org_id, patients),
    )


# --- a submitted file again ----------------------------------------------------------------------


async def submission_file(
    conn: asyncpg.Connection, by: Requester, submission_id: int
) -> tuple[str, str, str] | None:
    """(file name, format, text) of one of ``by``'s organisation's submissions, audited as
    a read of its patients; None (nothing audited) for another organisation's or none."""
    found = await db.submission_file(conn, by.org_id, submission_id)
    if found is not None:
        await audit_requester(
            conn,
            by,
            "read",
            await db.submission_patients(conn, submission_id),
            {"submission_id": submission_id},
        )
    return found


# --- the parties and numbers a submission needs ----------------------------------------------


async def set_profile(conn: asyncpg.Connection, by: Requester, profile: BillingProfile) -> None:
    """Store (replace) a billing profile of ``by``'s organisation, audited."""
    async with conn.transaction():
        await db.set_profile(conn, profile, by.actor)
        await audit_requester(
            conn, by, "billing.profile_set", (), {"billing_npi": profile.billing_npi}
        )


async def load_demographics(
    conn: asyncpg.Connection, by: Requester, rows: Sequence[Demographics], errors: int = 0
) -> int:
    """Upsert demographics of ``by``'s organisation, audited with the patients (``errors``:
    rows of the file that were refused, for the audit row)."""
    async with conn.transaction():
        n = await db.load_demographics(conn, by.org_id, rows, by.actor)
        await audit_requester(
            conn,
            by,
            "billing.demographics_load",
            [r.patient_id for r in rows],
            {"rows": n, "errors": errors},
        )
    return n


async def load_fee_schedule(
    conn: asyncpg.Connection, entries: Sequence[FeeEntry], loaded_by: str
) -> int:
    """Add fee-schedule entries; returns how many were new. A version is immutable and
    the schedule must stay free of overlaps (``billing.fees.check_overlaps``): either
    refusal (ValueError) leaves nothing loaded."""
    async with conn.transaction():
        new = await db.add_fee_entries(conn, entries, loaded_by)
        check_overlaps(await db.fee_entries(conn))
    return new


async def record_payer_claim_numbers(
    conn: asyncpg.Connection, org_id: str, numbers: Iterable[tuple[str, str]], source: str
) -> list[str]:
    """Record the payer's claim control numbers (claim id, number) of submitted claims
    (REF*F8 of their replacements and voids); returns the claim ids the organisation
    never submitted (skipped)."""
    unknown = []
    for claim_id, number in numbers:
        if not await db.set_payer_claim_number(conn, org_id, claim_id, number, source):
            unknown.append(claim_id)
    return unknown


# --- issue 20 items 5-6: escaped denials and the month-end queue -------------------------------


@dataclass(frozen=True)
class RemitResult:
    """What ``load_remit`` read: ``remit_id`` None when this file was loaded before (nothing
    stored again); ``unknown``: claim ids the organisation never submitted (skipped)."""

    remit_id: int | None
    claims: int
    unknown: list[str]
    denials: list[Denial]
    unmatched: list[Unmatched]


async def load_remit(
    conn: asyncpg.Connection, by: Requester, text: str, file_name: str
) -> RemitResult:
    """Load an 835 for ``by``'s organisation, in one transaction: the payer's claim control
    numbers of its claims, each claim's outcome (paid or denied) and each denied service
    line matched to the line submitted (``billing.denials.escaped_denials``: caught,
    escaped or uncovered), stored once per file, and the audit row. ValueError (nothing
    written) if the text is not an 835 this can read."""
    payments = parse_835(text)
    org = by.org_id
    async with conn.transaction():
        numbers = [(p.claim_id, p.payer_claim_number) for p in payments]
        unknown = await record_payer_claim_numbers(conn, org, numbers, f"835:{file_name}")
        skipped = set(unknown)
        ours = [p for p in payments if p.claim_id not in skipped]
        submitted = await remit_db.submitted_lines(conn, org, [p.claim_id for p in ours])
        denials, unmatched = escaped_denials(ours, submitted)
        remit_id = await remit_db.add_remit(conn, org, file_name, text, by.actor)
        if remit_id is not None:
            await remit_db.add_remit_claims(conn, remit_id, org, ours)
            await remit_db.add_denials(conn, remit_id, org, denials)
        await audit_requester(
            conn,
            by,
            "billing.remit_load",
            sorted({d.patient_id for d in denials}),
            {
                "file": file_name,
                "remit_id": remit_id,
                "claims": len(ours),
                "unknown": len(unknown),
                "denials": len(denials),
                "unmatched": [u.text() for u in unmatched],
            },
        )
    return RemitResult(remit_id, len(ours), unknown, denials, unmatched)


async def month_readiness(
    conn: asyncpg.Connection, org_id: str, first: dt.date, last: dt.date, as_of: dt.datetime
) -> Gated:
    """The organisation's claim lines with a date of service in [first, last] after the
    readiness gates as of ``as_of``, computed from the event log by the code path a
    submission plans with (``billing.submission.gate_lines``). The one place the month-end
    queue reads readiness: switching it to the worker's stored rows changes this only."""
    states = await load_states(conn, org_id)
    history = await db.recorded_history(conn, org_id, sorted(states))
    standing = standing_lines(exports_of(history))
    inputs = await _readiness_inputs(conn, org_id)
    return gate_lines(states, standing, first, last, as_of, inputs)


@dataclass(frozen=True)
class MonthQueue:
    lines: list[QueueLine]
    denials: list[dict[str, object]]  # the month's stored denials, with their outcome


async def month_queue(
    conn: asyncpg.Connection, by: Requester, first: dt.date, last: dt.date, as_of: dt.datetime
) -> MonthQueue:
    """The month-end queue of ``by``'s organisation for [first, last] as of ``as_of``:
    every line with its status, readiness and checks, and the month's denials. Nothing is
    recorded; audited as a read of the patients shown."""
    org = by.org_id
    async with conn.transaction():
        gated = await month_readiness(conn, org, first, last, as_of)
        history = await db.org_history(conn, org)
        denied = await remit_db.claim_outcomes(conn, org)
        lines = queue_lines(gated, history, denied, first, last)
        denials = await remit_db.month_denials(conn, org, first, last)
        await audit_requester(
            conn,
            by,
            "read",
            sorted({q.line.patient_id for q in lines} | {str(d["patient_id"]) for d in denials}),
            {"from": first.isoformat(), "to": last.isoformat(), "lines": len(lines)},
        )
    return MonthQueue(lines, denials)
