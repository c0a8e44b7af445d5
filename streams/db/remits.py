"""Loaded 835 remittances: the claims paid or denied and the denied service lines with
their escaped-denial outcome (SQL only; the use case is ``streams.services.claims``)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from billing.denials import Denial, LineKey, SubmittedLine
from billing.remit import ClaimPayment


async def submitted_lines(
    conn: asyncpg.Connection, org_id: str, claim_ids: Iterable[str]
) -> dict[LineKey, SubmittedLine]:
    """The organisation's submitted lines of these claims (voids left out), keyed by claim
    id, CPT and date of service; a line submitted again (a replacement) keeps its latest
    checks."""
    rows = await conn.fetch(
        "SELECT claim_id, cpt, date_of_service, patient_id, episode_id, checks"
        " FROM billing_export_lines WHERE org_id = $1 AND claim_id = ANY($2::text[])"
        " AND status <> 'void' ORDER BY export_id, line_no",
        org_id,
        sorted(set(claim_ids)),
    )
    return {
        (r["claim_id"], r["cpt"], r["date_of_service"]): SubmittedLine(
            r["patient_id"], r["episode_id"], tuple(r["checks"].split("+")) if r["checks"] else ()
        )
        for r in rows
    }


async def known_claims(conn: asyncpg.Connection, org_id: str, claim_ids: Iterable[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT claim_id FROM billing_claims WHERE org_id = $1 AND claim_id = ANY($2::text[])",
        org_id,
        sorted(set(claim_ids)),
    )
    return {r["claim_id"] for r in rows}


async def add_remit(
    conn: asyncpg.Connection, org_id: str, file_name: str, text: str, loaded_by: str
) -> int | None:
    """Store a loaded 835's row; None if the organisation loaded this very file before."""
    found = await conn.fetchval(
        "INSERT INTO billing_remits (org_id, file_name, sha256, loaded_by, loaded_at)"
        " VALUES ($1, $2, $3, $4, now()) ON CONFLICT (org_id, sha256) DO NOTHING"
        " RETURNING remit_id",
        org_id,
        file_name,
        hashlib.sha256(text.encode()).hexdigest(),
        loaded_by,
    )
    return None if found is None else int(found)


async def add_remit_claims(
    conn: asyncpg.Connection, remit_id: int, org_id: str, claims: Sequence[ClaimPayment]
) -> None:
    await conn.executemany(
        "INSERT INTO billing_remit_claims (remit_id, org_id, claim_id, status, charge, paid,"
        " denied) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        [(remit_id, org_id, c.claim_id, c.status, c.charge, c.paid, c.denied) for c in claims],
    )


async def add_denials(
    conn: asyncpg.Connection, remit_id: int, org_id: str, denials: Sequence[Denial]
) -> None:
    await conn.executemany(
        "INSERT INTO billing_remit_denials (remit_id, org_id, claim_id, patient_id, episode_id,"
        " cpt, date_of_service, carc, rarc, gates, checks, outcome)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        [(remit_id, org_id, *d.row()[:4], d.date_of_service, *d.row()[5:]) for d in denials],
    )


async def claim_outcomes(conn: asyncpg.Connection, org_id: str) -> dict[str, bool]:
    """Claim id -> denied, as the latest loaded 835 naming the claim says (reversals,
    CLP02 22, left out)."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (claim_id) claim_id, denied FROM billing_remit_claims"
        " WHERE org_id = $1 AND status <> '22' ORDER BY claim_id, remit_id DESC",
        org_id,
    )
    return {r["claim_id"]: bool(r["denied"]) for r in rows}


async def month_denials(
    conn: asyncpg.Connection, org_id: str, first: dt.date, last: dt.date
) -> list[dict[str, Any]]:
    """The organisation's stored denials with a date of service in [first, last]."""
    rows = await conn.fetch(
        "SELECT d.claim_id, d.patient_id, d.episode_id, d.cpt, d.date_of_service, d.carc,"
        " d.rarc, d.gates, d.checks, d.outcome, r.file_name, r.loaded_at"
        " FROM billing_remit_denials d JOIN billing_remits r USING (remit_id)"
        " WHERE d.org_id = $1 AND d.date_of_service BETWEEN $2 AND $3"
        " ORDER BY d.date_of_service, d.claim_id, d.cpt, d.carc",
        org_id,
        first,
        last,
    )
    return [dict(r) for r in rows]
