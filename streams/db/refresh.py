"""The refresh queue (migration 038): the patients whose derived views (claim-line readiness,
care-pathway outcome rows) a batch changed, refreshed off the ingest path by the worker's
refresh timer (``streams.services.refresh``).

- ``mark``: in the batch's transaction, one statement; rows in (organisation, patient) order,
  as ``done`` locks them, so the two never wait on each other in a circle.
- ``claim``: a short transaction of its own: up to ``limit`` patients whose marks have
  settled (no mark for ``settle`` or the first one older than ``max_wait``), or whose claim
  is older than ``stale`` (a refresher that died), organisations taking turns, stamped with
  the claim's instant.
- ``done``: in the refresh's write transaction, removes the marks it served; a patient
  marked again meanwhile (its ``claimed_at`` cleared by ``mark``) stays to do."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg

from schemas.events import PatientKey


async def mark(conn: asyncpg.Connection, patients: Sequence[PatientKey]) -> None:
    if not patients:
        return
    keys = sorted(set(patients))
    await conn.execute(
        "INSERT INTO refresh_queue (org_id, patient_id, first_marked, last_marked)"
        " SELECT o, p, now(), now() FROM unnest($1::text[], $2::text[]) AS k(o, p) ORDER BY o, p"
        " ON CONFLICT (org_id, patient_id) DO UPDATE"
        " SET last_marked = EXCLUDED.last_marked, claimed_at = NULL",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )


async def claim(
    conn: asyncpg.Connection,
    limit: int,
    settle: dt.timedelta,
    max_wait: dt.timedelta,
    stale: dt.timedelta,
) -> tuple[list[PatientKey], dt.datetime | None]:
    """Claim up to ``limit`` patients to refresh, each organisation's oldest first mark
    first, organisations taking turns (one organisation's replay or upgrade backlog does not
    hold another's views back); returns them and the claim's stamp. The database's clock:
    the queue's times are operational, not the patients', so an injected clock that stands
    still does not stop it."""
    rows = await conn.fetch(
        "WITH t AS (SELECT clock_timestamp() AS now), due AS ("
        "  SELECT org_id, patient_id FROM ("
        "    SELECT org_id, patient_id, first_marked,"
        "      row_number() OVER (PARTITION BY org_id ORDER BY first_marked) AS turn"
        "    FROM refresh_queue, t"
        "    WHERE (claimed_at IS NULL OR claimed_at < t.now - $4::interval)"
        "      AND (last_marked <= t.now - $2::interval OR first_marked <= t.now - $3::interval)"
        "  ) r ORDER BY turn, first_marked LIMIT $1)"
        " UPDATE refresh_queue q SET claimed_at = t.now FROM t, due"
        " WHERE q.org_id = due.org_id AND q.patient_id = due.patient_id"
        # re-checked on the row as another refresher may just have claimed it
        "   AND (q.claimed_at IS NULL OR q.claimed_at < t.now - $4::interval)"
        " RETURNING q.org_id, q.patient_id, q.claimed_at",
        limit,
        settle,
        max_wait,
        stale,
    )
    if not rows:
        return [], None
    return sorted((r["org_id"], r["patient_id"]) for r in rows), rows[0]["claimed_at"]


async def done(
    conn: asyncpg.Connection, patients: Sequence[PatientKey], claimed_at: dt.datetime
) -> None:
    keys = sorted(set(patients))
    if not keys:
        return
    await conn.execute(
        "DELETE FROM refresh_queue q USING ("
        "  SELECT r.org_id, r.patient_id FROM refresh_queue r"
        "  JOIN unnest($1::text[], $2::text[]) AS k(o, p) ON r.org_id = k.o AND r.patient_id = k.p"
        "  WHERE r.claimed_at = $3 ORDER BY r.org_id, r.patient_id FOR UPDATE OF r) AS s"
        " WHERE q.org_id = s.org_id AND q.patient_id = s.patient_id AND q.claimed_at = $3",
        [k[0] for k in keys],
        [k[1] for k in keys],
        claimed_at,
    )


async def release(
    conn: asyncpg.Connection, patients: Sequence[PatientKey], claimed_at: dt.datetime
) -> None:
    """Give a claim back without refreshing (a refresh that lost its write to an ingest
    batch): the patients are due again at once, for this or another refresher. Only the
    rows still held by this claim (``claimed_at``) are released."""
    await conn.execute(
        "UPDATE refresh_queue q SET claimed_at = NULL"
        " FROM unnest($1::text[], $2::text[]) AS k(o, p)"
        " WHERE q.org_id = k.o AND q.patient_id = k.p AND q.claimed_at = $3",
        [k[0] for k in patients],
        [k[1] for k in patients],
        claimed_at,
    )


async def pending(conn: asyncpg.Connection, org_id: str | None = None) -> int:
    """Patients still to refresh (of ``org_id``, or of every organisation)."""
    if org_id is None:
        return int(await conn.fetchval("SELECT count(*) FROM refresh_queue"))
    return int(await conn.fetchval("SELECT count(*) FROM refresh_queue WHERE org_id = $1", org_id))
