"""The alerts table (snapshots by id, a status that only rises, the acknowledgement's note
and disposition, a snooze's end) and the rtm.alerts outbox (``alert_publish``). Rule states
are in alert_states.py, webhooks and deliveries in deliveries.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from alerts.models import STATUS_RANK, Alert, AlertChange
from alerts.rollup import SNOOZED_TIER, tier_sql
from schemas.events import DEFAULT_ORG, key_text
from streams.access import Scope
from streams.db.access import scope_sql

_UPSERT = """
INSERT INTO alerts (id, patient_id, episode_id, clinician_id, kind, severity, status,
                    status_rank, event_ids, value, threshold, fired_at, acknowledged_at,
                    acknowledged_by, resolved_at, resolved_by_event_id, payload, updated_at,
                    org_id, disposition, snoozed_until)
SELECT t.c1, t.c2, t.c3, t.c4, t.c5, t.c6, t.c7, t.c8,
       CASE WHEN t.c9 = '' THEN '{}'::text[] ELSE string_to_array(t.c9, ',') END,
       t.c10, t.c11, t.c12, t.c13, t.c14, t.c15, t.c16, t.c17, now(), t.c18, t.c19, t.c20
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::smallint[], $9::text[], $10::float8[], $11::float8[],
            $12::timestamptz[], $13::timestamptz[], $14::text[], $15::timestamptz[],
            $16::text[], $17::jsonb[], $18::text[], $19::text[], $20::timestamptz[])
     AS t(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18,
          c19, c20)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, status_rank = EXCLUDED.status_rank,
    acknowledged_at = EXCLUDED.acknowledged_at, acknowledged_by = EXCLUDED.acknowledged_by,
    resolved_at = EXCLUDED.resolved_at, resolved_by_event_id = EXCLUDED.resolved_by_event_id,
    disposition = EXCLUDED.disposition, snoozed_until = EXCLUDED.snoozed_until,
    payload = EXCLUDED.payload, updated_at = now()
WHERE alerts.status_rank <= EXCLUDED.status_rank
"""


def alert_json(alert: Alert) -> str:
    return alert.model_dump_json()


async def upsert_alerts(conn: asyncpg.Connection, changes: Sequence[AlertChange]) -> None:
    """Apply alert snapshots in order; the last snapshot of an id wins within a batch."""
    latest: dict[str, Alert] = {}
    for ch in changes:
        latest[ch.alert.id] = ch.alert
    if not latest:
        return
    alerts = list(latest.values())
    cols: list[list[Any]] = [
        [a.id for a in alerts],
        [a.patient_id for a in alerts],
        [a.episode_id for a in alerts],
        [a.clinician_id for a in alerts],
        [a.kind for a in alerts],
        [a.severity for a in alerts],
        [a.status for a in alerts],
        [STATUS_RANK[a.status] for a in alerts],
        # a text[] per row cannot ride in unnest; store it comma-joined, split below
        [",".join(a.event_ids) for a in alerts],
        [a.value for a in alerts],
        [a.threshold for a in alerts],
        [a.fired_at for a in alerts],
        [a.acknowledged_at for a in alerts],
        [a.acknowledged_by for a in alerts],
        [a.resolved_at for a in alerts],
        [a.resolved_by_event_id for a in alerts],
        [alert_json(a) for a in alerts],
        [a.org_id for a in alerts],  # the patient's organisation: (org_id, patient_id)
        [a.disposition for a in alerts],
        [a.snoozed_until for a in alerts],
    ]
    await conn.execute(
        _UPSERT,
        *cols,
    )


async def get_alert(conn: asyncpg.Connection, alert_id: str) -> Alert | None:
    raw = await conn.fetchval("SELECT payload FROM alerts WHERE id = $1", alert_id)
    return Alert.model_validate_json(raw) if raw is not None else None


async def list_alerts(
    conn: asyncpg.Connection,
    scope: Scope,
    *,
    clinician_id: str | None = None,
    status: str | None = None,
    severity: str | None = None,
    kind: str | None = None,
    patient_id: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 50,
    before: tuple[dt.datetime, str] | None = None,
) -> list[dict[str, Any]]:
    """Alerts in the scope, newest first (fired_at, id), keyset-paginated with ``before``.
    Each carries its acknowledgement note and delivery attempts."""
    where, args = scope_sql(scope, "a.patient_id", 1, "a.org_id")
    conds = [where]
    for cond, value in (
        ("a.clinician_id = ${}", clinician_id),
        ("a.status = ${}", status),
        ("a.severity = ${}", severity),
        ("a.kind = ${}", kind),
        ("a.patient_id = ${}", patient_id),
        ("a.fired_at >= ${}", since),
    ):
        if value is not None:
            args.append(value)
            conds.append(cond.format(len(args)))
    if before is not None:
        args.extend(before)
        conds.append(f"(a.fired_at, a.id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = (
        "SELECT a.payload, a.fired_at, a.id, a.ack_note,"
        " (SELECT jsonb_agg(jsonb_build_object('change', d.change, 'status', d.status,"
        "   'attempts', d.attempts, 'last_error', d.last_error))"
        "  FROM alert_deliveries d WHERE d.alert_id = a.id) AS deliveries"
        " FROM alerts a WHERE "
        + " AND ".join(conds)
        + f" ORDER BY a.fired_at DESC, a.id DESC LIMIT ${len(args)}"
    )
    rows = await conn.fetch(sql, *args)
    out = []
    for r in rows:
        item: dict[str, Any] = orjson.loads(r["payload"])
        item["ack_note"] = r["ack_note"]
        item["deliveries"] = orjson.loads(r["deliveries"]) if r["deliveries"] else []
        out.append(item)
    return out


def effective_tier_sql(now: str, a: str = "a") -> str:
    """An open alert's triage tier as a reader at ``now`` (a SQL expression) sees it:
    SNOOZED_TIER while a snooze is on, its own tier (``tier_sql``) otherwise: a snooze
    that ended puts the alert back in its tier."""
    tier = tier_sql(f"{a}.kind", f"{a}.severity")
    return f"CASE WHEN {a}.snoozed_until > {now} THEN {SNOOZED_TIER} ELSE {tier} END"


async def worklist(
    conn: asyncpg.Connection, scope: Scope, now: dt.datetime, limit: int = 200
) -> list[dict[str, Any]]:
    """Patients in the scope with open alerts in triage order: the tier of their most
    urgent open alert (a red flag or fall, other critical, high, low adherence, inactivity,
    billing at risk: alerts.rollup.alert_tier; a snoozed alert, while its snooze lasts at
    ``now``, in none: after them), then who has waited longest in that tier (its oldest
    open alert), then the patient id."""
    where, args = scope_sql(scope, "a.patient_id", 1, "a.org_id")
    args.append(now)
    now_arg = f"${len(args)}"
    args.append(limit)
    rows = await conn.fetch(
        "SELECT a.patient_id,"
        " count(*) FILTER (WHERE a.severity = 'critical') AS critical,"
        " count(*) FILTER (WHERE a.severity = 'high') AS high,"
        " count(*) FILTER (WHERE a.kind = 'adherence_low') AS adherence_low,"
        " count(*) FILTER (WHERE a.kind = 'inactivity') AS inactivity,"
        " count(*) FILTER (WHERE a.kind = 'billing_at_risk') AS billing_at_risk,"
        " count(*) AS open_alerts, min(a.fired_at) AS oldest_open,"
        " array_agg(DISTINCT a.kind ORDER BY a.kind) AS kinds,"
        " min(a.t) AS tier, (array_agg(a.fired_at ORDER BY a.t, a.fired_at))[1] AS tier_since,"
        f" count(*) FILTER (WHERE a.snoozed_until > {now_arg}) AS snoozed,"
        f" min(a.snoozed_until) FILTER (WHERE a.snoozed_until > {now_arg}) AS snoozed_until"
        f" FROM (SELECT a.*, {effective_tier_sql(now_arg)} AS t FROM alerts a"
        "       WHERE a.status = 'open' AND " + where + ") a GROUP BY a.patient_id"
        " ORDER BY tier, tier_since, a.patient_id"
        f" LIMIT ${len(args)}",
        *args,
    )
    return [
        {
            "patient_id": r["patient_id"],
            "open_critical": r["critical"],
            "open_high": r["high"],
            "adherence_low": r["adherence_low"] > 0,
            "inactivity": r["inactivity"] > 0,
            "billing_at_risk": r["billing_at_risk"] > 0,
            "open_alerts": r["open_alerts"],
            "oldest_open": r["oldest_open"].isoformat(),
            "kinds": list(r["kinds"]),
            "tier": r["tier"],
            "waiting_since": r["tier_since"].isoformat(),
            "snoozed": r["snoozed"],
            "snoozed_until": (
                r["snoozed_until"].isoformat() if r["snoozed_until"] is not None else None
            ),
        }
        for r in rows
    ]


async def alert_in_scope(conn: asyncpg.Connection, scope: Scope, alert_id: str) -> Alert | None:
    where, args = scope_sql(scope, "a.patient_id", 2, "a.org_id")
    raw = await conn.fetchval(
        f"SELECT a.payload FROM alerts a WHERE a.id = $1 AND {where}", alert_id, *args
    )
    return Alert.model_validate_json(raw) if raw is not None else None


async def acknowledge(conn: asyncpg.Connection, acked: Alert, note: str | None) -> None:
    """Record an acknowledgement, its disposition and its note (never over a resolved
    alert: status_rank only rises)."""
    await conn.execute(
        "UPDATE alerts SET status = 'acknowledged', status_rank = 1,"
        " acknowledged_at = $2, acknowledged_by = $3, payload = $4::jsonb, ack_note = $5,"
        " disposition = $6, updated_at = now() WHERE id = $1 AND status_rank < 1",
        acked.id,
        acked.acknowledged_at,
        acked.acknowledged_by,
        acked.model_dump_json(),
        note,
        acked.disposition,
    )


async def snooze(conn: asyncpg.Connection, snoozed: Alert) -> None:
    """Record a snooze of an alert that is still open."""
    await conn.execute(
        "UPDATE alerts SET snoozed_until = $2, payload = $3::jsonb, updated_at = now()"
        " WHERE id = $1 AND status = 'open'",
        snoozed.id,
        snoozed.snoozed_until,
        snoozed.model_dump_json(),
    )


async def alert_progress(conn: asyncpg.Connection) -> int:
    """A number that rises with every alert written or changed (to wait for quiet)."""
    return int(await conn.fetchval("SELECT count(*) + coalesce(sum(status_rank), 0) FROM alerts"))


async def alert_counts(
    conn: asyncpg.Connection, patient_ids: Sequence[str], org_id: str = DEFAULT_ORG
) -> list[asyncpg.Record]:
    """kind, severity, n (all), o (open) of these patients' (of ``org_id``) alerts, largest
    first."""
    return list(
        await conn.fetch(
            "SELECT kind, severity, count(*) AS n, count(*) FILTER (WHERE status = 'open') AS o"
            " FROM alerts WHERE org_id = $2 AND patient_id = ANY($1::text[])"
            " GROUP BY 1, 2 ORDER BY 3 DESC",
            list(patient_ids),
            org_id,
        )
    )


async def alerts_by_id(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, Alert]:
    rows = await conn.fetch(
        "SELECT id, payload::text AS payload FROM alerts WHERE id = ANY($1::text[])", list(ids)
    )
    return {r["id"]: Alert.model_validate_json(r["payload"]) for r in rows}


# --- rtm.alerts outbox ---------------------------------------------------------------------------


async def queue_publish(conn: asyncpg.Connection, changes: Sequence[AlertChange]) -> list[int]:
    """Queue changes for rtm.alerts in the batch's transaction; returns their seq numbers."""
    if not changes:
        return []
    rows = await conn.fetch(
        "INSERT INTO alert_publish (org_id, patient_id, payload)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) RETURNING seq",
        [c.alert.org_id for c in changes],
        [c.alert.patient_id for c in changes],
        [c.model_dump_json() for c in changes],
    )
    return [int(r["seq"]) for r in rows]


@dataclass(frozen=True, slots=True)
class Queued:
    """One alert change queued for rtm.alerts."""

    seq: int
    key: str  # the Kafka key, ``<org>/<patient>``
    payload: str  # the AlertChange's JSON


_QUEUED = "SELECT seq, org_id, patient_id, payload FROM alert_publish"


def _queued(rows: Sequence[asyncpg.Record]) -> list[Queued]:
    return [
        Queued(int(r["seq"]), key_text((r["org_id"], r["patient_id"])), r["payload"]) for r in rows
    ]


async def unpublished(conn: asyncpg.Connection, older_than_s: float, limit: int) -> list[Queued]:
    """Queued changes left behind (e.g. by a crash), oldest first."""
    return _queued(
        await conn.fetch(
            f"{_QUEUED} WHERE queued_at <= now() - make_interval(secs => $1) ORDER BY seq LIMIT $2",
            older_than_s,
            limit,
        )
    )


async def queued(conn: asyncpg.Connection, seqs: Sequence[int]) -> list[Queued]:
    """The changes of ``seqs`` still queued (not yet sent by anyone), in order."""
    return _queued(
        await conn.fetch(f"{_QUEUED} WHERE seq = ANY($1::bigint[]) ORDER BY seq", list(seqs))
    )


async def published(conn: asyncpg.Connection, seqs: Sequence[int]) -> None:
    if seqs:
        await conn.execute("DELETE FROM alert_publish WHERE seq = ANY($1::bigint[])", list(seqs))


async def alerts_changed_since(
    conn: asyncpg.Connection, scope: Scope, since: dt.datetime, limit: int = 200
) -> list[tuple[dt.datetime, dict[str, Any]]]:
    """(updated_at, alert) of alerts in the scope changed at or after ``since``, oldest
    change first (the dashboard's live stream)."""
    where, args = scope_sql(scope, "a.patient_id", 3, "a.org_id")
    rows = await conn.fetch(
        "SELECT a.updated_at, a.payload::text AS payload FROM alerts a"
        f" WHERE a.updated_at >= $1 AND {where} ORDER BY a.updated_at, a.id LIMIT $2",
        since,
        limit,
        *args,
    )
    return [(r["updated_at"], orjson.loads(r["payload"])) for r in rows]


async def db_now(conn: asyncpg.Connection) -> dt.datetime:
    """The database's clock (alerts.updated_at is written with it)."""
    now: dt.datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now
