"""The RTM ledger (data days, time logs, episode events) and the record of exports.

``write_ledger`` writes one batch's ledger rows, one ``unnest`` round trip per table,
``ON CONFLICT DO NOTHING`` (a re-delivered event adds nothing), inside the ingest step's
batch transaction (agents/pipeline.py). ``load_states`` gives the ledger back as states
equal to the offline fold; ``export_claims`` chooses and records an export under an
advisory lock. Shared by the worker, ``rtm billing`` and the gateway's billing routes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from billing.ledger import LedgerRows, states_from_rows
from billing.rules import ClaimLine
from billing.state import PatientBillingState
from schemas.events import DEFAULT_ORG, PatientKey
from streams.db.events import EventStore

log = logging.getLogger(__name__)
EXPORT_LOCK_KEY = 7_270_503  # pg_advisory_xact_lock id: one export recorded at a time

# Every row names the patient's organisation first (a patient is (org_id, patient_id)).
_INSERT_DAYS = """
INSERT INTO billing_data_days (org_id, patient_id, local_date, episode_id, first_event_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::text[])
ON CONFLICT DO NOTHING
"""
_INSERT_LOGS = """
INSERT INTO billing_time_logs (org_id, event_id, patient_id, episode_id, local_date,
                               occurred_at, utc_offset_s, minutes, clinician_role, interactive)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::date[],
                     $6::timestamptz[], $7::int[], $8::int[], $9::text[], $10::bool[])
ON CONFLICT DO NOTHING
"""
_INSERT_EPISODE_EVENTS = """
INSERT INTO billing_episode_events (org_id, event_id, patient_id, type, episode_id,
                                    occurred_at, payload)
SELECT org, e, p, t, ep, o, pl::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::text[])
    AS u(org, e, p, t, ep, o, pl)
ON CONFLICT DO NOTHING
"""


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def write_ledger(conn: asyncpg.Connection, rows: LedgerRows) -> tuple[int, int, int]:
    """Write one batch in one transaction; returns newly inserted (days, logs, episode events)."""
    new = [0, 0, 0]
    async with conn.transaction():
        tables: tuple[tuple[str, Sequence[tuple[Any, ...]], int], ...] = (
            (_INSERT_DAYS, rows.data_days, 5),
            (_INSERT_LOGS, rows.time_logs, 10),
            (_INSERT_EPISODE_EVENTS, rows.episode_events, 7),
        )
        for i, (sql, data, width) in enumerate(tables):
            if data:
                new[i] = _count(await conn.execute(sql, *_columns(data, width)))
    return new[0], new[1], new[2]


async def ledger_states(
    source: asyncpg.Connection | EventStore,
    org_id: str | None = None,
    patient_ids: Sequence[str] | None = None,
) -> dict[PatientKey, PatientBillingState]:
    """The ledger as per-patient states by (organisation, patient_id): of every
    organisation or of ``org_id``, all its patients or those given; equal to what
    ``billing.ledger.fold_for_billing`` gives over the same events."""
    if isinstance(source, EventStore):
        async with source.acquire() as conn:
            return await ledger_states(conn, org_id, patient_ids)
    conds: list[str] = []
    args: list[Any] = []
    if org_id is not None:
        args.append(org_id)
        conds.append(f"org_id = ${len(args)}")
    if patient_ids is not None:
        args.append(list(patient_ids))
        conds.append(f"patient_id = ANY(${len(args)}::text[])")
    where = " WHERE " + " AND ".join(conds) if conds else ""
    days = await source.fetch(
        "SELECT org_id, patient_id, local_date, episode_id FROM billing_data_days" + where, *args
    )
    logs = await source.fetch(
        "SELECT org_id, event_id, patient_id, episode_id, local_date, occurred_at, utc_offset_s,"
        " minutes, clinician_role, interactive FROM billing_time_logs" + where,
        *args,
    )
    eps = await source.fetch(
        "SELECT org_id, event_id, patient_id, payload::text AS payload"
        " FROM billing_episode_events" + where,
        *args,
    )
    return states_from_rows(days, logs, eps)


async def load_states(
    source: asyncpg.Connection | EventStore,
    org_id: str,
    patient_ids: Sequence[str] | None = None,
) -> dict[str, PatientBillingState]:
    """The ledger of one organisation's patients (all, or those given) by patient_id."""
    return {pid: st for (_, pid), st in (await ledger_states(source, org_id, patient_ids)).items()}


async def patient_known(conn: asyncpg.Connection, org_id: str, patient_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM billing_episode_events"
            "               WHERE org_id = $1 AND patient_id = $2)"
            " OR EXISTS (SELECT 1 FROM billing_data_days WHERE org_id = $1 AND patient_id = $2)"
            " OR EXISTS (SELECT 1 FROM billing_time_logs WHERE org_id = $1 AND patient_id = $2)",
            org_id,
            patient_id,
        )
    )


# --- record of exports ----------------------------------------------------------------------


async def previous_exports(
    conn: asyncpg.Connection, org_id: str, patient_ids: Sequence[str]
) -> list[list[ClaimLine]]:
    """Recorded exports touching these patients of ``org_id``, oldest first, each as its
    lines of those patients (feed to ``billing.amend.standing_lines``)."""
    rows = await conn.fetch(
        "SELECT export_id, line::text AS line FROM billing_export_lines"
        " WHERE org_id = $1 AND patient_id = ANY($2::text[]) ORDER BY export_id, line_no",
        org_id,
        list(patient_ids),
    )
    out: dict[int, list[ClaimLine]] = {}
    for r in rows:
        out.setdefault(r["export_id"], []).append(ClaimLine.model_validate_json(r["line"]))
    return [out[k] for k in sorted(out)]


async def record_export(
    conn: asyncpg.Connection,
    lines: Sequence[ClaimLine],
    *,
    created_by: str,
    as_of: dt.datetime,
    date_from: dt.date,
    date_to: dt.date,
    fmt: str,
    conventions: str,
    org_id: str | None = None,
    claim_ids: Sequence[str | None] | None = None,
) -> int:
    """Record an export (call inside the transaction that chose its lines); returns its id."""
    keep = [i for i, ln in enumerate(lines) if ln.status != "preview"]
    billed = [lines[i] for i in keep]
    ids = [None if claim_ids is None else claim_ids[i] for i in keep]
    export_id = int(
        await conn.fetchval(
            "INSERT INTO billing_exports (created_by, as_of, date_from, date_to, format,"
            " line_count, conventions, org_id) VALUES ($1, $2, $3, $4, $5, $6, $7,"
            " coalesce($8, 'default')) RETURNING export_id",
            created_by,
            as_of,
            date_from,
            date_to,
            fmt,
            len(billed),
            conventions,
            org_id,
        )
    )
    if billed:
        await conn.execute(
            "INSERT INTO billing_export_lines (export_id, org_id, line_no, patient_id,"
            " episode_id, cpt, date_of_service, period_start, status, line, claim_id)"
            " SELECT $1, coalesce($11::text, 'default'), * FROM unnest($2::int[], $3::text[],"
            " $4::text[], $5::text[], $6::date[], $7::date[], $8::text[], $9::jsonb[],"
            " $10::text[])",
            export_id,
            list(range(1, len(billed) + 1)),
            [ln.patient_id for ln in billed],
            [ln.episode_id for ln in billed],
            [ln.cpt for ln in billed],
            [ln.date_of_service for ln in billed],
            [ln.period_start for ln in billed],
            [ln.status for ln in billed],
            [orjson.dumps(ln.model_dump(mode="json")).decode() for ln in billed],
            ids,
            org_id,
        )
    return export_id


async def lock_exports(conn: asyncpg.Connection) -> None:
    """Serialise exports (inside a transaction) so two cannot bill the same group."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", EXPORT_LOCK_KEY)


# --- export (shared by `rtm billing export` and GET /v1/billing/claims) ---------------------


class ExportResult:
    def __init__(
        self,
        lines: list[ClaimLine],
        withdrawn: list[ClaimLine],
        export_id: int | None,
        elapsed_s: float,
    ) -> None:
        self.lines = lines
        self.withdrawn = withdrawn
        self.export_id = export_id
        self.elapsed_s = elapsed_s


async def export_claims(
    conn: asyncpg.Connection,
    *,
    date_from: dt.date,
    date_to: dt.date,
    as_of: dt.datetime,
    include_open: bool = False,
    record: bool = True,
    created_by: str = "unknown",
    fmt: str = "csv",
    config: Any = None,
    org_id: str | None = None,
) -> ExportResult:
    """The lines of the next export: claims as of ``as_of`` with a date of service in
    [date_from, date_to], less what earlier recorded exports already billed unchanged,
    changed groups marked ``amended``. Recorded (when ``record``) in the same transaction,
    under an advisory lock, so two exports cannot bill one group twice. A preview
    (``include_open``) is never recorded: it bills nothing. An export is one
    organisation's (``org_id``; None: DEFAULT_ORG's): its patients, its history, recorded
    as its own."""
    import time

    from billing.amend import lines_to_export, standing_lines, withdrawn_lines
    from billing.config import DEFAULT_CONFIG
    from billing.rules import compute_claims

    config = config or DEFAULT_CONFIG
    t0 = time.perf_counter()
    record = record and not include_open
    org_id = org_id or DEFAULT_ORG
    async with conn.transaction():
        if record:
            await lock_exports(conn)
        states = await load_states(conn, org_id)  # the organisation's ledger, every patient
        claims = [
            ln
            for ln in compute_claims(states.values(), as_of, config, include_open)
            if date_from <= ln.date_of_service <= date_to
        ]
        patients = sorted(states)
        standing = standing_lines(await previous_exports(conn, org_id, patients))
        lines = lines_to_export(standing, claims)
        in_range = [ln for ln in standing if date_from <= ln.date_of_service <= date_to]
        withdrawn = withdrawn_lines(in_range, claims)
        export_id = None
        if record:
            # each recorded line gets the claim id a submission would give it, so that
            # later replacements and voids find their claim (withdrawn groups are reported,
            # not voided, on this path: `submit_export` voids them)
            from billing.claims837 import plan_claims

            history = await recorded_history(conn, org_id, patients)
            planned = plan_claims(
                history,
                claims,
                date_from,
                date_to,
                await _taken(conn, org_id, patients),
                org_id,
            )
            claim_of = {ln.key: c for c in planned for ln in c.record if ln.status != "void"}
            export_id = await record_export(
                conn,
                lines,
                created_by=created_by,
                as_of=as_of,
                date_from=date_from,
                date_to=date_to,
                fmt=fmt,
                conventions=config.header_text(),
                org_id=org_id,
                claim_ids=[
                    claim_of[ln.key].claim_id if ln.key in claim_of else None for ln in lines
                ],
            )
            await _record_claims(
                conn,
                org_id,
                export_id,
                {c.claim_id: c for c in claim_of.values()}.values(),
            )
    return ExportResult(lines, withdrawn, export_id, time.perf_counter() - t0)


async def export_history(
    conn: asyncpg.Connection, org_id: str, limit: int = 50
) -> list[asyncpg.Record]:
    """The organisation's recorded exports, newest first (who, when, what)."""
    return list(
        await conn.fetch(
            "SELECT export_id, created_at, created_by, as_of, date_from, date_to, format,"
            " line_count FROM billing_exports WHERE org_id = $1 ORDER BY export_id DESC LIMIT $2",
            org_id,
            limit,
        )
    )


async def exported_lines(
    conn: asyncpg.Connection, org_id: str, export_id: int
) -> tuple[asyncpg.Record, list[ClaimLine]] | None:
    """A recorded export of the organisation and its lines as billed (to download again);
    None for an export of another organisation or none at all."""
    head = await conn.fetchrow(
        "SELECT export_id, created_at, created_by, as_of, date_from, date_to, format,"
        " line_count FROM billing_exports WHERE export_id = $1 AND org_id = $2",
        export_id,
        org_id,
    )
    if head is None:
        return None
    rows = await conn.fetch(
        "SELECT line::text AS line FROM billing_export_lines WHERE export_id = $1 ORDER BY line_no",
        export_id,
    )
    return head, [ClaimLine.model_validate_json(r["line"]) for r in rows]


async def _taken(conn: asyncpg.Connection, org_id: str, patient_ids: Sequence[str]) -> list[str]:
    return [
        r["claim_id"]
        for r in await conn.fetch(
            "SELECT claim_id FROM billing_claims WHERE org_id = $1"
            " AND patient_id = ANY($2::text[])",
            org_id,
            list(patient_ids),
        )
    ]


async def _record_claims(
    conn: asyncpg.Connection, org_id: str, export_id: int, claims: Any
) -> None:
    for c in claims:
        await conn.execute(
            "INSERT INTO billing_claims (claim_id, org_id, patient_id, billing_npi, payer,"
            " first_export_id, last_export_id, last_frequency)"
            " VALUES ($1, $2, $3, $4, $5, $6, $6, $7) ON CONFLICT (org_id, claim_id) DO UPDATE"
            " SET last_export_id = EXCLUDED.last_export_id,"
            " last_frequency = EXCLUDED.last_frequency",
            c.claim_id,
            org_id,
            c.first.patient_id,
            c.first.billing_npi,
            c.first.payer,
            export_id,
            c.frequency,
        )


# --- issue 12: billing profile, demographics, fee schedule, submissions ----------------------


class SubmissionRefused(ValueError):
    """A submission that cannot go out at all (e.g. a required profile field is missing):
    nothing is recorded and no control number is used. ``problems`` names each field."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("submission refused: " + "; ".join(problems))
        self.problems = list(problems)


async def set_profile(conn: asyncpg.Connection, profile: Any, updated_by: str) -> None:
    """Store (replace) a ``billing.profile.BillingProfile``."""
    await conn.execute(
        "INSERT INTO billing_profiles (org_id, billing_npi, profile, updated_by)"
        " VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (org_id, billing_npi) DO UPDATE"
        " SET profile = EXCLUDED.profile, updated_by = EXCLUDED.updated_by, updated_at = now()",
        profile.org_id,
        profile.billing_npi,
        profile.model_dump_json(),
        updated_by,
    )


async def get_profiles(conn: asyncpg.Connection, org_id: str) -> dict[str, Any]:
    """The organisation's billing profiles by billing NPI."""
    from billing.profile import BillingProfile

    rows = await conn.fetch(
        "SELECT billing_npi, profile::text AS profile FROM billing_profiles WHERE org_id = $1",
        org_id,
    )
    return {r["billing_npi"]: BillingProfile.model_validate_json(r["profile"]) for r in rows}


async def load_demographics(
    conn: asyncpg.Connection, org_id: str, rows: Sequence[Any], loaded_by: str
) -> int:
    """Upsert ``billing.demographics.Demographics`` rows for the organisation."""
    if not rows:
        return 0
    await conn.execute(
        "INSERT INTO billing_demographics (org_id, patient_id, demographics, loaded_by)"
        " SELECT $1, p, d::jsonb, $4 FROM unnest($2::text[], $3::text[]) AS u(p, d)"
        " ON CONFLICT (org_id, patient_id) DO UPDATE SET demographics = EXCLUDED.demographics,"
        " loaded_by = EXCLUDED.loaded_by, loaded_at = now()",
        org_id,
        [r.patient_id for r in rows],
        [r.model_dump_json() for r in rows],
        loaded_by,
    )
    return len(rows)


async def demographics_for(
    conn: asyncpg.Connection, org_id: str, patient_ids: Sequence[str]
) -> dict[str, Any]:
    from billing.demographics import Demographics

    rows = await conn.fetch(
        "SELECT patient_id, demographics::text AS d FROM billing_demographics"
        " WHERE org_id = $1 AND patient_id = ANY($2::text[])",
        org_id,
        list(patient_ids),
    )
    return {r["patient_id"]: Demographics.model_validate_json(r["d"]) for r in rows}


async def load_fee_schedule(
    conn: asyncpg.Connection, entries: Sequence[Any], loaded_by: str
) -> int:
    """Add fee-schedule entries (``billing.fees.FeeEntry``). A version is immutable: an
    entry already loaded with another amount or end date is refused (ValueError)."""
    from billing.fees import check_overlaps

    async with conn.transaction():
        new = 0
        for e in entries:
            old = await conn.fetchrow(
                "SELECT effective_to, amount FROM billing_fee_schedule WHERE version = $1"
                " AND cpt = $2 AND locality = $3 AND effective_from = $4",
                e.version,
                e.cpt,
                e.locality,
                e.effective_from,
            )
            if old is not None:
                if (old["effective_to"], old["amount"]) != (e.effective_to, e.amount):
                    raise ValueError(
                        f"fee schedule version {e.version} is already loaded with"
                        f" another {e.cpt}/{e.locality} entry; a correction is a"
                        " new version"
                    )
                continue
            await conn.execute(
                "INSERT INTO billing_fee_schedule (version, cpt, locality, effective_from,"
                " effective_to, amount, loaded_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                e.version,
                e.cpt,
                e.locality,
                e.effective_from,
                e.effective_to,
                e.amount,
                loaded_by,
            )
            new += 1
        check_overlaps(await fee_entries(conn))
    return new


async def fee_entries(conn: asyncpg.Connection) -> list[Any]:
    from billing.fees import FeeEntry

    rows = await conn.fetch(
        "SELECT version, cpt, locality, effective_from, effective_to, amount"
        " FROM billing_fee_schedule"
    )
    return [FeeEntry.model_validate(dict(r)) for r in rows]


async def next_control_number(conn: asyncpg.Connection) -> int:
    """ISA13/GS06/ST02 of a new interchange: unique, never reused (sequences do not roll
    back, so a failed submission leaves a gap, never a repeat)."""
    return int(await conn.fetchval("SELECT nextval('billing_x12_control_seq')"))


async def set_payer_claim_number(
    conn: asyncpg.Connection, org_id: str, claim_id: str, payer_claim_number: str, source: str
) -> bool:
    """Record the payer's claim control number of a submitted claim (REF*F8 of its
    replacements and voids); False for a claim the organisation never submitted."""
    status = await conn.execute(
        "UPDATE billing_claims SET payer_claim_number = $3, payer_claim_number_source = $4,"
        " payer_claim_number_at = now() WHERE org_id = $1 AND claim_id = $2",
        org_id,
        claim_id,
        payer_claim_number,
        source,
    )
    return _count(status) == 1


async def recorded_history(
    conn: asyncpg.Connection, org_id: str, patient_ids: Sequence[str]
) -> list[Any]:
    """Recorded lines of these patients of ``org_id`` with their claim ids
    (``RecordedLine``), oldest first."""
    from billing.claims837 import RecordedLine

    rows = await conn.fetch(
        "SELECT export_id, claim_id, line::text AS line FROM billing_export_lines"
        " WHERE org_id = $1 AND patient_id = ANY($2::text[]) ORDER BY export_id, line_no",
        org_id,
        list(patient_ids),
    )
    return [
        RecordedLine(r["export_id"], r["claim_id"], ClaimLine.model_validate_json(r["line"]))
        for r in rows
    ]


class SubmissionResult:
    """What ``submit_export`` did: ``submission_id`` None when nothing was recorded (dry
    run, or nothing to send). ``problems``: claims left out, each naming its field."""

    def __init__(
        self,
        *,
        submission_id: int | None,
        control_number: int | None,
        text: str,
        file_name: str,
        claims: list[Any],
        problems: list[Any],
        withdrawn: list[ClaimLine],
    ) -> None:
        self.submission_id = submission_id
        self.control_number = control_number
        self.text = text
        self.file_name = file_name
        self.claims = claims
        self.problems = problems
        self.withdrawn = withdrawn

    @property
    def lines(self) -> list[ClaimLine]:
        """The recorded lines (new, amended, void), as the history keeps them."""
        return [ln for c in self.claims for ln in c.record]


async def submit_export(
    conn: asyncpg.Connection,
    *,
    org_id: str,
    date_from: dt.date,
    date_to: dt.date,
    as_of: dt.datetime,
    fmt: str = "x12",
    created_by: str,
    usage: str = "P",
    created: dt.datetime | None = None,
    config: Any = None,
    dry_run: bool = False,
) -> SubmissionResult:
    """Submit the organisation's next claims: this is what records lines as billed.

    Under the export lock, in one transaction: the claims of closed periods/months with a
    date of service in [date_from, date_to] (``billing.claims837.plan_claims``: new
    originals, whole-claim replacements, voids of withdrawn groups), checked against the
    billing profile, demographics and fee schedule for X12 (a claim lacking one is left
    out and listed in ``problems``; a missing profile field refuses the whole submission:
    ``SubmissionRefused``), rendered (X12: control number from the database sequence),
    stored with its file, and the lines recorded with their claim ids. Nothing to send:
    nothing recorded. ``dry_run``: the same file (X12 control number 0, usage T), not
    recorded."""
    import hashlib

    from billing.claims837 import envelope_problems, plan_claims, prepare_837p, render_837p
    from billing.config import DEFAULT_CONFIG
    from billing.export import render_csv, render_fhir
    from billing.rules import compute_claims

    if fmt not in ("csv", "x12", "fhir"):
        raise ValueError(f"unknown format {fmt!r}")
    if usage not in ("P", "T"):
        raise ValueError("usage must be P or T")
    config = config or DEFAULT_CONFIG
    created = created or dt.datetime.now(dt.UTC)
    async with conn.transaction():
        await lock_exports(conn)
        states = await load_states(conn, org_id)
        current = [
            ln
            for ln in compute_claims(states.values(), as_of, config, False)
            if date_from <= ln.date_of_service <= date_to
        ]
        history = await recorded_history(conn, org_id, sorted(states))
        planned = plan_claims(
            history,
            current,
            date_from,
            date_to,
            await _taken(conn, org_id, sorted(states)),
            org_id,
        )
        from billing.amend import standing_lines, withdrawn_lines

        standing = standing_lines([[r.line for r in history]])
        withdrawn = withdrawn_lines(
            [ln for ln in standing if date_from <= ln.date_of_service <= date_to], current
        )
        problems: list[Any] = []
        ready: list[Any] = []
        profiles: dict[str, Any] = {}
        if fmt == "x12" and planned:
            profiles = await get_profiles(conn, org_id)
            refused = envelope_problems(planned, profiles)
            if refused:
                raise SubmissionRefused(refused)
            pcns = {
                r["claim_id"]: r["payer_claim_number"]
                for r in await conn.fetch(
                    "SELECT claim_id, payer_claim_number FROM billing_claims WHERE org_id = $1"
                    " AND claim_id = ANY($2::text[]) AND payer_claim_number IS NOT NULL",
                    org_id,
                    [c.claim_id for c in planned],
                )
            }
            ready, problems = prepare_837p(
                planned,
                profiles,
                await demographics_for(conn, org_id, sorted(states)),
                await fee_entries(conn),
                pcns,
            )
            sendable = [r.claim for r in ready]
        else:
            sendable = list(planned)
        if not sendable:
            return SubmissionResult(
                submission_id=None,
                control_number=None,
                text="",
                file_name="",
                claims=[],
                problems=problems,
                withdrawn=withdrawn,
            )
        control: int | None = None
        if fmt == "x12":
            control = 0 if dry_run else await next_control_number(conn)
            text = render_837p(
                ready,
                profiles,
                control,
                "T" if dry_run else usage,  # type: ignore[arg-type]
                created,
            )
        elif fmt == "csv":
            text = render_csv([ln for c in sendable for ln in c.record], config)
        else:
            text = render_fhir([ln for c in sendable for ln in c.record], created)
        if dry_run:
            return SubmissionResult(
                submission_id=None,
                control_number=control,
                text=text,
                file_name="",
                claims=sendable,
                problems=problems,
                withdrawn=withdrawn,
            )
        record = [(c.claim_id, ln) for c in sendable for ln in c.record]
        export_id = await record_export(
            conn,
            [ln for _, ln in record],
            created_by=created_by,
            as_of=as_of,
            date_from=date_from,
            date_to=date_to,
            fmt=fmt,
            conventions=config.header_text(),
            org_id=org_id,
            claim_ids=[cid for cid, _ in record],
        )
        ext = {"x12": "x12", "csv": "csv", "fhir": "json"}[fmt]
        name = (
            f"{org_id}-submission-{export_id:06d}"
            + (f"-isa{control:09d}" if control else "")
            + f".{ext}"
        )
        await conn.execute(
            "UPDATE billing_exports SET usage = $2, control_number = $3, claim_count = $4,"
            " file_name = $5, file_body = $6, file_sha256 = $7, problems = $8::jsonb"
            " WHERE export_id = $1",
            export_id,
            usage if fmt == "x12" else None,
            control,
            len(sendable),
            name,
            text,
            hashlib.sha256(text.encode()).hexdigest(),
            orjson.dumps([p.text() for p in problems]).decode(),
        )
        await _record_claims(conn, org_id, export_id, sendable)
    return SubmissionResult(
        submission_id=export_id,
        control_number=control,
        text=text,
        file_name=name,
        claims=sendable,
        problems=problems,
        withdrawn=withdrawn,
    )


async def list_submissions(conn: asyncpg.Connection, org_id: str) -> list[dict[str, Any]]:
    """The organisation's export history, newest first: every recorded export (who, when,
    what: format, dates, lines, claims, control number, usage, problems), and whether its
    file can be downloaded again (``submission_file``)."""
    rows = await conn.fetch(
        "SELECT export_id, created_at, created_by, as_of, date_from, date_to, format,"
        " line_count, claim_count, usage, control_number, file_name, file_sha256,"
        " problems::text AS problems, file_body IS NOT NULL AS has_file,"
        " (SELECT count(DISTINCT patient_id) FROM billing_export_lines l"
        "  WHERE l.export_id = e.export_id) AS patients"
        " FROM billing_exports e WHERE org_id = $1 ORDER BY export_id DESC",
        org_id,
    )
    out = []
    for r in rows:
        d = dict(r)
        d["submission_id"] = d.pop("export_id")
        d["problems"] = orjson.loads(d["problems"])
        for k in ("created_at", "as_of", "date_from", "date_to"):
            d[k] = d[k].isoformat()
        out.append(d)
    return out


async def submission_file(
    conn: asyncpg.Connection, org_id: str, submission_id: int
) -> tuple[str, str, str] | None:
    """(file name, format, text) of one of the organisation's submissions; None if it is
    not theirs or kept no file (exports recorded before submissions stored files)."""
    row = await conn.fetchrow(
        "SELECT file_name, format, file_body FROM billing_exports WHERE org_id = $1"
        " AND export_id = $2 AND file_body IS NOT NULL",
        org_id,
        submission_id,
    )
    return None if row is None else (row["file_name"], row["format"], row["file_body"])


async def submission_patients(conn: asyncpg.Connection, submission_id: int) -> list[str]:
    return [
        r["p"]
        for r in await conn.fetch(
            "SELECT DISTINCT patient_id AS p FROM billing_export_lines WHERE export_id = $1",
            submission_id,
        )
    ]
