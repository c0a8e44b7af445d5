"""The claims' tables: exports and submissions with their lines and files, claims, billing
profiles, demographics, the fee schedule and the X12 control numbers (SQL only).

What to export or submit is decided in ``billing.submission``; the use cases that read
here, decide, then write here (under ``lock_exports``, in one transaction) and leave their
audit row are ``streams.services.claims``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from billing.claims837 import PlannedClaim, RecordedLine
from billing.demographics import Demographics
from billing.fees import FeeEntry
from billing.profile import BillingProfile
from billing.rules import ClaimLine
from billing.submission import LineReadiness, Override

EXPORT_LOCK_KEY = 7_270_503  # pg_advisory_xact_lock id: one export recorded at a time


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


# --- record of exports ----------------------------------------------------------------------


async def lock_exports(conn: asyncpg.Connection) -> None:
    """Serialise exports (inside a transaction) so two cannot bill the same group."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", EXPORT_LOCK_KEY)


async def recorded_history(
    conn: asyncpg.Connection, org_id: str, patient_ids: Sequence[str]
) -> list[RecordedLine]:
    """Recorded lines of these patients of ``org_id`` with their claim ids, oldest first."""
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


async def org_history(conn: asyncpg.Connection, org_id: str) -> list[RecordedLine]:
    """Every recorded line of ``org_id`` with its claim id, oldest first."""
    rows = await conn.fetch(
        "SELECT export_id, claim_id, line::text AS line FROM billing_export_lines"
        " WHERE org_id = $1 ORDER BY export_id, line_no",
        org_id,
    )
    return [
        RecordedLine(r["export_id"], r["claim_id"], ClaimLine.model_validate_json(r["line"]))
        for r in rows
    ]


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
    readiness: Sequence[LineReadiness | None] | None = None,
) -> int:
    """Record an export (call inside the transaction that chose its lines); returns its id.
    ``readiness``: per line, what it is stored with (None: nothing)."""
    keep = [i for i, ln in enumerate(lines) if ln.status != "preview"]
    billed = [lines[i] for i in keep]
    ids = [None if claim_ids is None else claim_ids[i] for i in keep]
    ready = [None if readiness is None else readiness[i] for i in keep]
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
            " episode_id, cpt, date_of_service, period_start, status, line, claim_id,"
            " readiness, checks, override_id)"
            " SELECT $1, coalesce($11::text, 'default'), * FROM unnest($2::int[], $3::text[],"
            " $4::text[], $5::text[], $6::date[], $7::date[], $8::text[], $9::jsonb[],"
            " $10::text[], $12::text[], $13::text[], $14::bigint[])",
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
            [r.readiness if r else None for r in ready],
            ["+".join(r.checks) if r else None for r in ready],
            [r.override_id if r else None for r in ready],
        )
    return export_id


async def line_readiness(conn: asyncpg.Connection, export_id: int) -> list[dict[str, Any]]:
    """The recorded lines of an export with their readiness, checks and override."""
    rows = await conn.fetch(
        "SELECT patient_id, episode_id, cpt, date_of_service, status, readiness, checks,"
        " override_id, line->'modifiers' AS modifiers FROM billing_export_lines"
        " WHERE export_id = $1 ORDER BY line_no",
        export_id,
    )
    return [
        {**dict(r), "modifiers": orjson.loads(r["modifiers"]) if r["modifiers"] else []}
        for r in rows
    ]


# --- readiness facts and overrides (issue 20) ---------------------------------------------------


async def readiness_payloads(
    conn: asyncpg.Connection, org_id: str, types: Iterable[str]
) -> list[str]:
    """The organisation's stored events (JSON) of these types: its readiness facts and the
    episode starts that name each line's organisation."""
    rows = await conn.fetch(
        "SELECT payload::text AS p FROM events WHERE org_id = $1 AND type = ANY($2::text[])",
        org_id,
        sorted(types),
    )
    return [r["p"] for r in rows]


async def add_override(
    conn: asyncpg.Connection,
    org_id: str,
    line: tuple[str, str, str, dt.date],
    codes: Sequence[str],
    reason: str,
    created_by: str,
    created_at: dt.datetime,
) -> int:
    """Append an override (the table refuses updates and deletes); returns its id."""
    patient_id, episode_id, cpt, dos = line
    return int(
        await conn.fetchval(
            "INSERT INTO billing_line_overrides (org_id, patient_id, episode_id, cpt,"
            " date_of_service, codes, reason, created_by, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING override_id",
            org_id,
            patient_id,
            episode_id,
            cpt,
            dos,
            sorted(codes),
            reason,
            created_by,
            created_at,
        )
    )


async def overrides(conn: asyncpg.Connection, org_id: str) -> list[Override]:
    """Every override of the organisation, oldest first."""
    rows = await conn.fetch(
        "SELECT override_id, patient_id, episode_id, cpt, date_of_service, codes"
        " FROM billing_line_overrides WHERE org_id = $1 ORDER BY override_id",
        org_id,
    )
    return [
        Override(
            int(r["override_id"]),
            (r["patient_id"], r["episode_id"], r["cpt"], r["date_of_service"]),
            frozenset(r["codes"]),
        )
        for r in rows
    ]


async def store_submission_file(
    conn: asyncpg.Connection,
    export_id: int,
    *,
    usage: str | None,
    control_number: int | None,
    claim_count: int,
    file_name: str,
    text: str,
    problems: Sequence[str],
) -> None:
    """Keep a submission's file (and its SHA-256) with its recorded export."""
    await conn.execute(
        "UPDATE billing_exports SET usage = $2, control_number = $3, claim_count = $4,"
        " file_name = $5, file_body = $6, file_sha256 = $7, problems = $8::jsonb"
        " WHERE export_id = $1",
        export_id,
        usage,
        control_number,
        claim_count,
        file_name,
        text,
        hashlib.sha256(text.encode()).hexdigest(),
        orjson.dumps(list(problems)).decode(),
    )


async def export_history(
    conn: asyncpg.Connection, org_id: str, limit: int = 50
) -> list[asyncpg.Record]:
    """The organisation's recorded exports, newest first (who, when, what; a submission's
    claims, usage and control number, and whether its file is kept)."""
    return list(
        await conn.fetch(
            "SELECT export_id, created_at, created_by, as_of, date_from, date_to, format,"
            " line_count, claim_count, usage, control_number, file_body IS NOT NULL AS has_file"
            " FROM billing_exports WHERE org_id = $1 ORDER BY export_id DESC LIMIT $2",
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


# --- claims and their numbers -----------------------------------------------------------------


async def claim_ids(conn: asyncpg.Connection, org_id: str, patient_ids: Sequence[str]) -> list[str]:
    """Every claim id the organisation used for these patients (never to be reused)."""
    return [
        r["claim_id"]
        for r in await conn.fetch(
            "SELECT claim_id FROM billing_claims WHERE org_id = $1"
            " AND patient_id = ANY($2::text[])",
            org_id,
            list(patient_ids),
        )
    ]


async def record_claims(
    conn: asyncpg.Connection, org_id: str, export_id: int, claims: Iterable[PlannedClaim]
) -> None:
    """Record (or move on) the claims an export or submission sent."""
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


async def payer_claim_numbers(
    conn: asyncpg.Connection, org_id: str, patient_ids: Sequence[str]
) -> dict[str, str]:
    """Claim id -> the payer's claim control number, of the claims of these patients that
    have one (REF*F8 of their replacements and voids)."""
    return {
        r["claim_id"]: r["payer_claim_number"]
        for r in await conn.fetch(
            "SELECT claim_id, payer_claim_number FROM billing_claims WHERE org_id = $1"
            " AND patient_id = ANY($2::text[]) AND payer_claim_number IS NOT NULL",
            org_id,
            list(patient_ids),
        )
    }


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


async def next_control_number(conn: asyncpg.Connection) -> int:
    """ISA13/GS06/ST02 of a new interchange: unique, never reused (sequences do not roll
    back, so a failed submission leaves a gap, never a repeat)."""
    return int(await conn.fetchval("SELECT nextval('billing_x12_control_seq')"))


# --- billing profiles, demographics, fee schedule ---------------------------------------------


async def set_profile(conn: asyncpg.Connection, profile: BillingProfile, updated_by: str) -> None:
    """Store (replace) a billing profile."""
    await conn.execute(
        "INSERT INTO billing_profiles (org_id, billing_npi, profile, updated_by)"
        " VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (org_id, billing_npi) DO UPDATE"
        " SET profile = EXCLUDED.profile, updated_by = EXCLUDED.updated_by, updated_at = now()",
        profile.org_id,
        profile.billing_npi,
        profile.model_dump_json(),
        updated_by,
    )


async def get_profiles(conn: asyncpg.Connection, org_id: str) -> dict[str, BillingProfile]:
    """The organisation's billing profiles by billing NPI."""
    rows = await conn.fetch(
        "SELECT billing_npi, profile::text AS profile FROM billing_profiles WHERE org_id = $1",
        org_id,
    )
    return {r["billing_npi"]: BillingProfile.model_validate_json(r["profile"]) for r in rows}


async def load_demographics(
    conn: asyncpg.Connection, org_id: str, rows: Sequence[Demographics], loaded_by: str
) -> int:
    """Upsert demographics rows for the organisation."""
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
) -> dict[str, Demographics]:
    rows = await conn.fetch(
        "SELECT patient_id, demographics::text AS d FROM billing_demographics"
        " WHERE org_id = $1 AND patient_id = ANY($2::text[])",
        org_id,
        list(patient_ids),
    )
    return {r["patient_id"]: Demographics.model_validate_json(r["d"]) for r in rows}


async def add_fee_entries(
    conn: asyncpg.Connection, entries: Sequence[FeeEntry], loaded_by: str
) -> int:
    """Add fee-schedule entries; returns how many were new. A version is immutable: an
    entry already loaded with another amount or end date is refused (ValueError). Call in
    a transaction (``streams.services.claims.load_fee_schedule`` checks the overlaps)."""
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
    return new


async def fee_entries(conn: asyncpg.Connection) -> list[FeeEntry]:
    rows = await conn.fetch(
        "SELECT version, cpt, locality, effective_from, effective_to, amount"
        " FROM billing_fee_schedule"
    )
    return [FeeEntry.model_validate(dict(r)) for r in rows]
