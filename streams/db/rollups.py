"""Per-patient rollups (patient_rollups, patient_daily_adherence): written in the worker's
batch transaction (streams/db/batch.py), read by the dashboard's worklist and patient page,
and backfilled from the stored events."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg

from alerts.rollup import HISTORY_EVENT_TYPES, Rollups, adherence_history
from schemas.events import PatientKey, parse_event_json
from streams.access import Scope
from streams.db.access import scope_sql
from streams.db.alerts import effective_tier_sql

_UPSERT_PATIENTS = """
INSERT INTO patient_rollups (patient_id, org_id, last_activity_at, latest_pain, latest_pain_at,
    pain_baseline, open_critical, open_high, open_medium, open_low, open_adherence_low,
    open_inactivity, open_billing_at_risk, open_alerts, oldest_open, open_kinds, open_red_flags,
    tier, tier_since, open_snoozed, updated_at)
SELECT t.p, t.org,
       t.la, t.lp, t.lpa, t.pb, t.c, t.h, t.m, t.l, t.al, t.ia, t.br, t.o, t.oo,
       CASE WHEN t.k = '' THEN '{}'::text[] ELSE string_to_array(t.k, ',') END,
       CASE WHEN t.rf = '' THEN '{}'::text[] ELSE string_to_array(t.rf, ',') END,
       t.tr, t.ts, t.sn, now()
FROM unnest($1::text[], $2::timestamptz[], $3::smallint[], $4::timestamptz[], $5::real[],
            $6::int[], $7::int[], $8::int[], $9::int[], $10::int[], $11::int[], $12::int[],
            $13::int[], $14::timestamptz[], $15::text[], $16::text[], $17::text[],
            $18::smallint[], $19::timestamptz[], $20::int[])
     AS t(p, la, lp, lpa, pb, c, h, m, l, al, ia, br, o, oo, k, org, rf, tr, ts, sn)
ON CONFLICT (org_id, patient_id) DO UPDATE SET
    -- activity and pain only move forward: a late-synced old event must not hide newer ones
    last_activity_at = GREATEST(patient_rollups.last_activity_at, EXCLUDED.last_activity_at),
    latest_pain = CASE WHEN EXCLUDED.latest_pain_at IS NOT NULL AND (patient_rollups.latest_pain_at
        IS NULL OR EXCLUDED.latest_pain_at >= patient_rollups.latest_pain_at)
        THEN EXCLUDED.latest_pain ELSE patient_rollups.latest_pain END,
    pain_baseline = CASE WHEN EXCLUDED.latest_pain_at IS NOT NULL
        AND (patient_rollups.latest_pain_at IS NULL
             OR EXCLUDED.latest_pain_at >= patient_rollups.latest_pain_at)
        THEN EXCLUDED.pain_baseline ELSE patient_rollups.pain_baseline END,
    latest_pain_at = GREATEST(patient_rollups.latest_pain_at, EXCLUDED.latest_pain_at),
    -- open alerts are the engine state's, which is complete for the patient: replaced
    open_critical = EXCLUDED.open_critical, open_high = EXCLUDED.open_high,
    open_medium = EXCLUDED.open_medium, open_low = EXCLUDED.open_low,
    open_adherence_low = EXCLUDED.open_adherence_low,
    open_inactivity = EXCLUDED.open_inactivity,
    open_billing_at_risk = EXCLUDED.open_billing_at_risk,
    open_alerts = EXCLUDED.open_alerts, oldest_open = EXCLUDED.oldest_open,
    open_kinds = EXCLUDED.open_kinds, open_red_flags = EXCLUDED.open_red_flags,
    tier = EXCLUDED.tier, tier_since = EXCLUDED.tier_since,
    open_snoozed = EXCLUDED.open_snoozed, updated_at = now()
"""

_UPSERT_DAYS = """
INSERT INTO patient_daily_adherence (patient_id, local_date, prescribed, completed,
                                     adherence_7d, org_id)
SELECT * FROM unnest($1::text[], $2::date[], $3::real[], $4::int[], $5::real[], $6::text[])
ON CONFLICT (org_id, patient_id, local_date) DO UPDATE SET prescribed = EXCLUDED.prescribed,
    completed = EXCLUDED.completed, adherence_7d = EXCLUDED.adherence_7d
-- a batch rewrites a touched patient's last 8 days, most of them as they were: a row left
-- as it is writes no new version of itself (nor its WAL)
WHERE (patient_daily_adherence.prescribed, patient_daily_adherence.completed,
       patient_daily_adherence.adherence_7d)
      IS DISTINCT FROM (EXCLUDED.prescribed, EXCLUDED.completed, EXCLUDED.adherence_7d)
"""


_CLEAR_DAYS = """
DELETE FROM patient_daily_adherence d
USING unnest($1::text[], $2::text[], $3::date[]) AS t(org, p, f)
WHERE d.org_id = t.org AND d.patient_id = t.p AND d.local_date >= t.f
"""


async def write_rollups(conn: asyncpg.Connection, r: Rollups) -> None:
    """The batch's rollups (``alerts.rollup.rollups`` over the touched states, decided by
    the step), two round trips (three when an episode event cleared days), inside the
    caller's transaction."""
    if r.cleared:
        cs = r.cleared
        await conn.execute(_CLEAR_DAYS, [c[0] for c in cs], [c[1] for c in cs], [c[2] for c in cs])
    if r.patients:
        ps = r.patients
        await conn.execute(
            _UPSERT_PATIENTS,
            [p.patient_id for p in ps],
            [p.last_activity_at for p in ps],
            [p.latest_pain for p in ps],
            [p.latest_pain_at for p in ps],
            [p.pain_baseline for p in ps],
            [p.open_critical for p in ps],
            [p.open_high for p in ps],
            [p.open_medium for p in ps],
            [p.open_low for p in ps],
            [p.open_adherence_low for p in ps],
            [p.open_inactivity for p in ps],
            [p.open_billing_at_risk for p in ps],
            [p.open_alerts for p in ps],
            [p.oldest_open for p in ps],
            # a text[] per row cannot ride in unnest: comma-joined, split in the SQL
            [",".join(p.open_kinds) for p in ps],
            [p.org_id for p in ps],
            [",".join(p.open_red_flags) for p in ps],  # flag names hold no commas
            [p.tier for p in ps],
            [p.tier_since for p in ps],
            [p.open_snoozed for p in ps],
        )
    if r.days:
        ds = r.days
        await conn.execute(
            _UPSERT_DAYS,
            [d.patient_id for d in ds],
            [d.date for d in ds],
            [d.prescribed for d in ds],
            [d.completed for d in ds],
            [d.adherence_7d for d in ds],
            [d.org_id for d in ds],
        )


_SEVERITY_COLUMN = {
    "critical": "open_critical",
    "high": "open_high",
    "medium": "open_medium",
    "low": "open_low",
}


def _snoozed_lateral(now: str) -> str:
    """The patient's tier at ``now`` (a SQL parameter) when some open alert of theirs has
    a snooze (``open_snoozed``, kept by the stream): the alerts' effective tiers
    (``effective_tier_sql``: a snooze still on counts in no tier, one that ended in its
    own), and the earliest end of a snooze still on. Other patients read no alert."""
    return (
        " LEFT JOIN LATERAL (SELECT min(x.t) AS tier,"
        "   (array_agg(x.fired_at ORDER BY x.t, x.fired_at))[1] AS since,"
        "   min(x.snoozed_until) FILTER (WHERE x.snoozed_until > " + now + ") AS until"
        f"   FROM (SELECT {effective_tier_sql(now)} AS t, a.fired_at, a.snoozed_until"
        "         FROM alerts a WHERE r.open_snoozed > 0 AND a.org_id = r.org_id"
        "         AND a.patient_id = r.patient_id AND a.status = 'open') x) s ON true"
    )


async def worklist_page(
    conn: asyncpg.Connection,
    scope: Scope,
    *,
    now: dt.datetime,
    severity: str | None = None,
    kind: str | None = None,
    only_open: bool = True,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Patients in the scope by triage tier (a red flag or fall, other critical, high, low
    adherence, inactivity, billing at risk: alerts.rollup.alert_tier; a patient whose open
    alerts are all snoozed at ``now`` after them), inside a tier who has waited longest
    first (the order of GET /v1/worklist), then the rest by id. Each row carries its last
    7 days of 7-day adherence (oldest first) for the sparkline, and ``snoozed_until``, the
    earliest end of a snooze still on (None: none)."""
    where, args = scope_sql(scope, "r.patient_id", 1, "r.org_id")
    conds = [where]
    if severity is not None:
        conds.append(f"r.{_SEVERITY_COLUMN[severity]} > 0")
    if kind is not None:
        args.append(kind)
        conds.append(f"r.open_kinds @> ARRAY[${len(args)}::text]")
    if only_open:
        conds.append("r.open_alerts > 0")
    if search:
        args.append(search)
        conds.append(f"strpos(r.patient_id, ${len(args)}) > 0")
    args.append(now)
    now_arg = f"${len(args)}"
    args.extend([limit, offset])
    # the page is chosen first (tiers as seen at now), then its sparklines are read
    rows = await conn.fetch(
        "SELECT p.*, d.spark, d.spark_dates FROM (SELECT r.*,"
        "   coalesce(s.tier, r.tier) AS eff_tier,"
        "   CASE WHEN s.tier IS NULL THEN r.tier_since ELSE s.since END AS eff_since,"
        "   s.until AS snoozed_until"
        "  FROM patient_rollups r"
        + _snoozed_lateral(now_arg)
        + " WHERE "
        + " AND ".join(conds)
        # triage: the tier of the most urgent open alert, then who has waited longest in it
        + " ORDER BY eff_tier, eff_since NULLS LAST,"
        f" r.patient_id LIMIT ${len(args) - 1} OFFSET ${len(args)}) p"
        " LEFT JOIN LATERAL (SELECT array_agg(x.adherence_7d ORDER BY x.local_date) AS spark,"
        "   array_agg(x.local_date ORDER BY x.local_date) AS spark_dates"
        "   FROM (SELECT local_date, adherence_7d FROM patient_daily_adherence"
        "         WHERE org_id = p.org_id AND patient_id = p.patient_id"
        "         ORDER BY local_date DESC LIMIT 7) x) d ON true"
        " ORDER BY p.eff_tier, p.eff_since NULLS LAST, p.patient_id",
        *args,
    )
    return [_row(r) for r in rows]


def _row(r: asyncpg.Record) -> dict[str, Any]:
    out = dict(r)
    out["open_kinds"] = list(r["open_kinds"])
    out["open_red_flags"] = list(r["open_red_flags"])
    out["spark"] = list(r["spark"] or [])
    out["spark_dates"] = list(r["spark_dates"] or [])
    return out


async def patient_rollup(
    conn: asyncpg.Connection, org_id: str, patient_id: str
) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT r.*, NULL::real[] AS spark, NULL::date[] AS spark_dates"
        " FROM patient_rollups r WHERE r.org_id = $1 AND r.patient_id = $2",
        org_id,
        patient_id,
    )
    return _row(row) if row is not None else None


async def daily_adherence(
    conn: asyncpg.Connection, org_id: str, patient_id: str, since: dt.date | None = None
) -> list[asyncpg.Record]:
    """The patient's daily rows, oldest first."""
    return list(
        await conn.fetch(
            "SELECT local_date, prescribed, completed, adherence_7d FROM patient_daily_adherence"
            " WHERE org_id = $1 AND patient_id = $2 AND ($3::date IS NULL OR local_date >= $3)"
            " ORDER BY local_date",
            org_id,
            patient_id,
            since,
        )
    )


# --- backfill of patient_daily_adherence from the stored events -----------------------------

_BACKFILL_DAYS = """
INSERT INTO patient_daily_adherence (patient_id, local_date, prescribed, completed,
                                     adherence_7d, org_id)
SELECT * FROM unnest($1::text[], $2::date[], $3::real[], $4::int[], $5::real[], $6::text[])
ON CONFLICT (org_id, patient_id, local_date) DO UPDATE SET prescribed = EXCLUDED.prescribed,
    completed = EXCLUDED.completed, adherence_7d = EXCLUDED.adherence_7d
WHERE (patient_daily_adherence.prescribed, patient_daily_adherence.completed,
       patient_daily_adherence.adherence_7d)
      IS DISTINCT FROM (EXCLUDED.prescribed, EXCLUDED.completed, EXCLUDED.adherence_7d)
"""


async def backfill_patients(
    conn: asyncpg.Connection, patient_prefix: str | None
) -> list[PatientKey]:
    """Every stored patient (``patient_orgs``: each (organisation, patient) the worker has
    seen), by organisation and id."""
    rows = await conn.fetch(
        "SELECT org_id, patient_id FROM patient_orgs"
        " WHERE $1::text IS NULL OR starts_with(patient_id, $1) ORDER BY org_id, patient_id",
        patient_prefix,
    )
    return [(r["org_id"], r["patient_id"]) for r in rows]


async def backfill_adherence_chunk(
    conn: asyncpg.Connection,
    keys: Sequence[PatientKey],
    attempts: int = 5,
    now: dt.datetime | None = None,
) -> tuple[int, int]:
    """Recompute these patients' daily adherence from their stored events
    (``alerts.rollup.adherence_history``, open episodes up to the patient-local day of
    ``now`` when given) and write the rows that are missing or differ;
    (rows computed, rows written). Read and write share one REPEATABLE READ snapshot: a row
    the worker writes meanwhile (from an event this read did not see) makes the write fail
    to serialise instead of being overwritten, and the chunk is read again."""
    for attempt in range(attempts):
        try:
            async with conn.transaction(isolation="repeatable_read"):
                rows = await conn.fetch(
                    "SELECT e.org_id, e.patient_id, e.payload::text AS p FROM events e"
                    " JOIN unnest($1::text[], $2::text[]) AS k(o, pid)"
                    "   ON e.org_id = k.o AND e.patient_id = k.pid"
                    " WHERE e.type = ANY($3::text[])",
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    list(HISTORY_EVENT_TYPES),
                )
                by_patient: dict[PatientKey, list[str]] = {}
                for r in rows:
                    by_patient.setdefault((r["org_id"], r["patient_id"]), []).append(r["p"])
                days = [
                    d
                    for (org, pid), payloads in sorted(by_patient.items())
                    for d in adherence_history(
                        pid, [parse_event_json(p) for p in payloads], org, now
                    )
                ]
                if not days:
                    return 0, 0
                status = await conn.execute(
                    _BACKFILL_DAYS,
                    [d.patient_id for d in days],
                    [d.date for d in days],
                    [d.prescribed for d in days],
                    [d.completed for d in days],
                    [d.adherence_7d for d in days],
                    [d.org_id for d in days],
                )
                return len(days), int(status.rsplit(" ", 1)[-1])
        except asyncpg.SerializationError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


async def tier_counts(conn: asyncpg.Connection, scope: Scope, now: dt.datetime) -> dict[int, int]:
    """Patients in the scope per triage tier at ``now`` (open alerts only; SNOOZED_TIER:
    every open alert snoozed), for the worklist's head."""
    where, args = scope_sql(scope, "r.patient_id", 1, "r.org_id")
    args.append(now)
    rows = await conn.fetch(
        "SELECT coalesce(s.tier, r.tier) AS tier, count(*) AS n FROM patient_rollups r"
        + _snoozed_lateral(f"${len(args)}")
        + f" WHERE {where} AND r.open_alerts > 0 GROUP BY 1",
        *args,
    )
    return {int(r["tier"]): int(r["n"]) for r in rows}
