"""The intake queue's table (``intakes``, migration 016): one row per (organisation, patient,
intake), the intake engine's state (intake/engine.py) and its routing, written by the ingest
batch (``streams.db.batch.write_batch``) and read by the queue (``GET /v1/intakes``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson

from intake.engine import Assessment, IntakeState

# (organisation, patient_id, intake_id): an intake id is unique per patient of one organisation
IntakeOrgKey = tuple[str, str, str]
IntakeStatus = Literal["waiting", "contacted", "all"]


@dataclass(frozen=True)
class IntakeWrite:
    """One intake the batch changed: its state and, once its intake arrived, its routing."""

    state: IntakeState
    assessment: Assessment | None


async def load_intakes(
    conn: asyncpg.Connection, keys: Sequence[IntakeOrgKey]
) -> dict[IntakeOrgKey, IntakeState]:
    """The stored states of these intakes (an intake not stored is absent)."""
    if not keys:
        return {}
    rows = await conn.fetch(
        "SELECT i.org_id, i.patient_id, i.intake_id, i.state::text AS state FROM intakes i"
        " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(o, p, n)"
        " ON i.org_id = k.o AND i.patient_id = k.p AND i.intake_id = k.n",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    return {
        (r["org_id"], r["patient_id"], r["intake_id"]): IntakeState.model_validate_json(r["state"])
        for r in rows
    }


_UPSERT = """
INSERT INTO intakes (org_id, patient_id, intake_id, state, event_id, route, reasons, sbst,
                     body_region, referral_source, red_flags, nprs, timezone, submitted_at,
                     due_at, first_contact_at, rules_version, updated_at)
SELECT o, p, n, s::jsonb, e, r, string_to_array(rs, '|'), sb::jsonb, b, rf,
       string_to_array(fl, '|'), np, tz, sa, da, fc, rv, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int[],
            $13::text[], $14::timestamptz[], $15::timestamptz[], $16::timestamptz[],
            $17::text[])
    AS t(o, p, n, s, e, r, rs, sb, b, rf, fl, np, tz, sa, da, fc, rv)
ON CONFLICT (org_id, patient_id, intake_id) DO UPDATE SET
    state = EXCLUDED.state, event_id = EXCLUDED.event_id, route = EXCLUDED.route,
    reasons = EXCLUDED.reasons, sbst = EXCLUDED.sbst, body_region = EXCLUDED.body_region,
    referral_source = EXCLUDED.referral_source, red_flags = EXCLUDED.red_flags,
    nprs = EXCLUDED.nprs, timezone = EXCLUDED.timezone, submitted_at = EXCLUDED.submitted_at,
    due_at = EXCLUDED.due_at, first_contact_at = EXCLUDED.first_contact_at,
    rules_version = EXCLUDED.rules_version, updated_at = now()
"""


def _columns(key: IntakeOrgKey, w: IntakeWrite) -> tuple[Any, ...]:
    s, a, intake = w.state, w.assessment, w.state.submitted
    return (
        *key,
        s.model_dump_json(),
        intake.event_id if intake is not None else None,
        a.route if a is not None else None,
        "|".join(a.reasons) if a is not None else None,
        a.sbst.model_dump_json() if a is not None and a.sbst is not None else None,
        intake.body_region if intake is not None else None,
        intake.referral_source if intake is not None else None,
        "|".join(intake.red_flags) if intake is not None else None,
        intake.answers.nprs if intake is not None else None,
        intake.timezone if intake is not None else None,
        a.submitted_at if a is not None else None,
        a.due_at if a is not None else None,
        s.first_contact_at,
        a.rules_version if a is not None else None,
    )


async def write_intakes(
    conn: asyncpg.Connection, intakes: Mapping[IntakeOrgKey, IntakeWrite]
) -> None:
    """Store the batch's changed intakes (inside the caller's transaction)."""
    if not intakes:
        return
    rows = [_columns(k, w) for k, w in sorted(intakes.items())]
    await conn.execute(_UPSERT, *(list(c) for c in zip(*rows, strict=True)))


@dataclass(frozen=True)
class QueuedIntake:
    """A row of the intake queue."""

    patient_id: str
    intake_id: str
    route: str
    reasons: tuple[str, ...]
    sbst: dict[str, Any] | None
    body_region: str
    referral_source: str | None
    red_flags: tuple[str, ...]
    nprs: int
    timezone: str
    submitted_at: dt.datetime
    due_at: dt.datetime
    first_contact_at: dt.datetime | None
    rules_version: str


# the queue's order: urgent, then physician review, then by due time
_ORDER = (
    "CASE route WHEN 'urgent' THEN 0 WHEN 'physician_review' THEN 1 ELSE 2 END,"
    " due_at, patient_id, intake_id"
)


async def list_intakes(
    conn: asyncpg.Connection,
    org_id: str,
    status: IntakeStatus,
    route: str | None,
    limit: int,
) -> list[QueuedIntake]:
    """The organisation's intakes that arrived, in the queue's order: ``waiting`` (no first
    contact yet), ``contacted``, or ``all``."""
    contact = {
        "waiting": " AND first_contact_at IS NULL",
        "contacted": " AND first_contact_at IS NOT NULL",
        "all": "",
    }[status]
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM intakes WHERE org_id = $1 AND route IS NOT NULL"
        f"{contact} AND ($2::text IS NULL OR route = $2) ORDER BY {_ORDER} LIMIT $3",
        org_id,
        route,
        limit,
    )
    return [_queued(r) for r in rows]


_COLUMNS = (
    "patient_id, intake_id, route, reasons, sbst::text AS sbst, body_region, referral_source,"
    " red_flags, nprs, timezone, submitted_at, due_at, first_contact_at, rules_version"
)


def _queued(r: asyncpg.Record) -> QueuedIntake:
    return QueuedIntake(
        patient_id=r["patient_id"],
        intake_id=r["intake_id"],
        route=r["route"],
        reasons=tuple(r["reasons"] or ()),
        sbst=orjson.loads(r["sbst"]) if r["sbst"] is not None else None,
        body_region=r["body_region"],
        referral_source=r["referral_source"],
        red_flags=tuple(r["red_flags"] or ()),
        nprs=r["nprs"],
        timezone=r["timezone"],
        submitted_at=r["submitted_at"],
        due_at=r["due_at"],
        first_contact_at=r["first_contact_at"],
        rules_version=r["rules_version"],
    )


async def get_intake(
    conn: asyncpg.Connection, org_id: str, patient_id: str, intake_id: str
) -> QueuedIntake | None:
    """One intake of the organisation that arrived (None: unknown, or only contacts)."""
    r = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM intakes WHERE org_id = $1 AND patient_id = $2"
        " AND intake_id = $3 AND route IS NOT NULL",
        org_id,
        patient_id,
        intake_id,
    )
    return None if r is None else _queued(r)


async def intakes_changed_since(
    conn: asyncpg.Connection, org_id: str, since: dt.datetime, limit: int = 500
) -> list[tuple[dt.datetime, QueuedIntake]]:
    """The organisation's intakes that arrived and changed at or after ``since`` (the
    batch's transaction time), oldest change first: the live stream of the queue page."""
    rows = await conn.fetch(
        f"SELECT updated_at, {_COLUMNS} FROM intakes WHERE org_id = $1 AND route IS NOT NULL"
        " AND updated_at >= $2 ORDER BY updated_at, patient_id, intake_id LIMIT $3",
        org_id,
        since,
        limit,
    )
    return [(r["updated_at"], _queued(r)) for r in rows]
