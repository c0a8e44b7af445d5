"""TimescaleDB adapter for the alert engine: rule states, alerts, the rtm.alerts outbox,
webhooks and deliveries."""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

import asyncpg
import orjson

from alerts.models import Alert, AlertChange
from alerts.state import PatientState, decode_state, encode_state, new_state
from streams.access import Scope
from streams.db.access import scope_sql

STATUS_RANK = {"open": 0, "acknowledged": 1, "resolved": 2}

_UPSERT = """
INSERT INTO alerts (id, patient_id, episode_id, clinician_id, kind, severity, status,
                    status_rank, event_ids, value, threshold, fired_at, acknowledged_at,
                    acknowledged_by, resolved_at, resolved_by_event_id, payload, updated_at,
                    org_id)
SELECT t.c1, t.c2, t.c3, t.c4, t.c5, t.c6, t.c7, t.c8,
       CASE WHEN t.c9 = '' THEN '{}'::text[] ELSE string_to_array(t.c9, ',') END,
       t.c10, t.c11, t.c12, t.c13, t.c14, t.c15, t.c16, t.c17, now(),
       -- the patient's organisation (claimed in this batch's transaction, before alerts)
       coalesce((SELECT po.org_id FROM patient_orgs po WHERE po.patient_id = t.c2), 'default')
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::smallint[], $9::text[], $10::float8[], $11::float8[],
            $12::timestamptz[], $13::timestamptz[], $14::text[], $15::timestamptz[],
            $16::text[], $17::jsonb[])
     AS t(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, status_rank = EXCLUDED.status_rank,
    acknowledged_at = EXCLUDED.acknowledged_at, acknowledged_by = EXCLUDED.acknowledged_by,
    resolved_at = EXCLUDED.resolved_at, resolved_by_event_id = EXCLUDED.resolved_by_event_id,
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
        [a.id for a in alerts], [a.patient_id for a in alerts], [a.episode_id for a in alerts],
        [a.clinician_id for a in alerts], [a.kind for a in alerts],
        [a.severity for a in alerts], [a.status for a in alerts],
        [STATUS_RANK[a.status] for a in alerts],
        # a text[] per row cannot ride in unnest; store it comma-joined, split below
        [",".join(a.event_ids) for a in alerts],
        [a.value for a in alerts], [a.threshold for a in alerts], [a.fired_at for a in alerts],
        [a.acknowledged_at for a in alerts], [a.acknowledged_by for a in alerts],
        [a.resolved_at for a in alerts], [a.resolved_by_event_id for a in alerts],
        [alert_json(a) for a in alerts],
    ]
    await conn.execute(
        _UPSERT,
        *cols,
    )


async def get_alert(conn: asyncpg.Connection, alert_id: str) -> Alert | None:
    raw = await conn.fetchval("SELECT payload FROM alerts WHERE id = $1", alert_id)
    return Alert.model_validate_json(raw) if raw is not None else None


SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}


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
    where, args = scope_sql(scope, "a.patient_id", 1)
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
        " FROM alerts a WHERE " + " AND ".join(conds)
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


async def worklist(conn: asyncpg.Connection, scope: Scope, limit: int = 200
                   ) -> list[dict[str, Any]]:
    """Patients in the scope with open alerts, sorted by need: open critical, then high,
    then low adherence, then inactivity, then billing at risk (each: more first), then the
    oldest open alert first (who has waited longest)."""
    where, args = scope_sql(scope, "a.patient_id", 1)
    args.append(limit)
    rows = await conn.fetch(
        "SELECT a.patient_id,"
        " count(*) FILTER (WHERE a.severity = 'critical') AS critical,"
        " count(*) FILTER (WHERE a.severity = 'high') AS high,"
        " count(*) FILTER (WHERE a.kind = 'adherence_low') AS adherence_low,"
        " count(*) FILTER (WHERE a.kind = 'inactivity') AS inactivity,"
        " count(*) FILTER (WHERE a.kind = 'billing_at_risk') AS billing_at_risk,"
        " count(*) AS open_alerts, min(a.fired_at) AS oldest_open,"
        " array_agg(DISTINCT a.kind ORDER BY a.kind) AS kinds"
        " FROM alerts a WHERE a.status = 'open' AND " + where
        + " GROUP BY a.patient_id"
        " ORDER BY critical DESC, high DESC, adherence_low DESC, inactivity DESC,"
        " billing_at_risk DESC, oldest_open, a.patient_id"
        f" LIMIT ${len(args)}", *args)
    return [{"patient_id": r["patient_id"], "open_critical": r["critical"],
             "open_high": r["high"], "adherence_low": r["adherence_low"] > 0,
             "inactivity": r["inactivity"] > 0, "billing_at_risk": r["billing_at_risk"] > 0,
             "open_alerts": r["open_alerts"], "oldest_open": r["oldest_open"].isoformat(),
             "kinds": list(r["kinds"])} for r in rows]


async def alert_in_scope(conn: asyncpg.Connection, scope: Scope, alert_id: str
                         ) -> Alert | None:
    where, args = scope_sql(scope, "a.patient_id", 2)
    raw = await conn.fetchval(
        f"SELECT a.payload FROM alerts a WHERE a.id = $1 AND {where}", alert_id, *args)
    return Alert.model_validate_json(raw) if raw is not None else None


async def set_webhook(conn: asyncpg.Connection, clinician_id: str, url: str, secret: str) -> None:
    await conn.execute(
        "INSERT INTO clinician_webhooks (clinician_id, url, secret) VALUES ($1, $2, $3)"
        " ON CONFLICT (clinician_id) DO UPDATE SET url = EXCLUDED.url,"
        " secret = EXCLUDED.secret, updated_at = now()",
        clinician_id, url, secret,
    )


async def webhook_for(conn: asyncpg.Connection, clinician_id: str) -> tuple[str, str] | None:
    """The clinician's own webhook, else the clinic-wide one (clinician_id '*')."""
    row = await conn.fetchrow(
        "SELECT url, secret FROM clinician_webhooks WHERE clinician_id = ANY($1::text[])"
        " ORDER BY clinician_id = '*' LIMIT 1",
        [clinician_id, "*"],
    )
    return (row["url"], row["secret"]) if row else None


async def queue_deliveries(conn: asyncpg.Connection, changes: Sequence[AlertChange]) -> None:
    """Outbox: one pending delivery per (alert, change), in the alerts' own transaction, so
    a change that is stored is also delivered, whatever happens after the commit."""
    unique = {(c.alert.id, c.change): c for c in changes}
    if not unique:
        return
    items = list(unique.values())
    await conn.execute(
        "INSERT INTO alert_deliveries (alert_id, change, clinician_id, status, payload)"
        " SELECT a, c, cl, 'pending', p::jsonb"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(a, c, cl, p)"
        " ON CONFLICT (alert_id, change) DO NOTHING",
        [c.alert.id for c in items], [c.change for c in items],
        [c.alert.clinician_id for c in items], [c.model_dump_json() for c in items],
    )


async def claim_deliveries(
    conn: asyncpg.Connection, statuses: Sequence[str], older_than_s: float, limit: int
) -> list[dict[str, Any]]:
    """Mark up to `limit` deliveries in `statuses` (untouched for `older_than_s`) as
    'sending' and return their payloads; SKIP LOCKED lets several workers share the queue."""
    rows = await conn.fetch(
        "UPDATE alert_deliveries d SET status = 'sending', updated_at = now()"
        " FROM (SELECT alert_id, change FROM alert_deliveries"
        "       WHERE status = ANY($1::text[])"
        "         AND updated_at <= now() - make_interval(secs => $2)"
        "       ORDER BY updated_at LIMIT $3 FOR UPDATE SKIP LOCKED) c"
        " WHERE d.alert_id = c.alert_id AND d.change = c.change"
        " RETURNING d.payload",
        list(statuses), older_than_s, limit,
    )
    return [orjson.loads(r["payload"]) for r in rows]


# --- rule states -------------------------------------------------------------------------------


async def mark_delivery(conn: asyncpg.Connection, alert_id: str, change: str, status: str,
                        attempts: int, error: str | None) -> None:
    await conn.execute(
        "UPDATE alert_deliveries SET status = $3, attempts = attempts + $4,"
        " last_error = $5, updated_at = now() WHERE alert_id = $1 AND change = $2",
        alert_id, change, status, attempts, error,
    )


async def acknowledge(conn: asyncpg.Connection, acked: Alert, note: str | None) -> None:
    """Record an acknowledgement and its note (never over a resolved alert: status_rank
    only rises)."""
    await conn.execute(
        "UPDATE alerts SET status = 'acknowledged', status_rank = 1,"
        " acknowledged_at = $2, acknowledged_by = $3, payload = $4::jsonb, ack_note = $5,"
        " updated_at = now() WHERE id = $1 AND status_rank < 1",
        acked.id, acked.acknowledged_at, acked.acknowledged_by, acked.model_dump_json(), note,
    )


async def alert_progress(conn: asyncpg.Connection) -> int:
    """A number that rises with every alert written or changed (to wait for quiet)."""
    return int(await conn.fetchval("SELECT count(*) + coalesce(sum(status_rank), 0) FROM alerts"))


async def alert_counts(conn: asyncpg.Connection, patient_ids: Sequence[str]
                       ) -> list[asyncpg.Record]:
    """kind, severity, n (all), o (open) of these patients' alerts, largest first."""
    return list(await conn.fetch(
        "SELECT kind, severity, count(*) AS n, count(*) FILTER (WHERE status = 'open') AS o"
        " FROM alerts WHERE patient_id = ANY($1::text[]) GROUP BY 1, 2 ORDER BY 3 DESC",
        list(patient_ids),
    ))


class StateConflict(Exception):
    """Another worker wrote a state this batch read: roll back and redo the batch."""


class StateStore:
    """Per-patient rule states, with decoded copies kept in memory.

    A cached state is used only while its revision equals the stored one, so a patient
    whose partition moved to another worker and back is re-read, never stale.
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, PatientState]] = {}
        self._saved: dict[str, tuple[int, PatientState]] = {}  # written, not yet committed
        self._loaded: dict[str, int] = {}  # rev of each state handed out by load (0: new)

    async def load(self, conn: asyncpg.Connection, patient_ids: Sequence[str]
                   ) -> dict[str, PatientState]:
        if not patient_ids:
            return {}
        revs = {
            r["patient_id"]: int(r["rev"])
            for r in await conn.fetch(
                "SELECT patient_id, rev FROM alert_state WHERE patient_id = ANY($1::text[])",
                list(patient_ids),
            )
        }
        stale = [p for p, rev in revs.items() if self._cache.get(p, (-1,))[0] != rev]
        if stale:
            for r in await conn.fetch(
                "SELECT patient_id, rev, state FROM alert_state"
                " WHERE patient_id = ANY($1::text[])",
                stale,
            ):
                self._cache[r["patient_id"]] = (int(r["rev"]), decode_state(r["state"]))
        out = {}
        self._loaded = {pid: revs.get(pid, 0) for pid in patient_ids}
        for pid in patient_ids:
            if pid in revs:
                out[pid] = self._cache[pid][1]
            else:
                self._cache.pop(pid, None)
                out[pid] = new_state(pid)
        return out

    async def patients_of_partition(self, conn: asyncpg.Connection, part: int) -> list[str]:
        rows = await conn.fetch("SELECT patient_id FROM alert_state WHERE part = $1", part)
        return [r["patient_id"] for r in rows]

    async def save(self, conn: asyncpg.Connection, states: dict[str, PatientState],
                   partitions: dict[str, int]) -> None:
        """Write the given (touched) states; the cache learns them only after the commit
        (``commit_saved``), so a rolled-back batch cannot leave a state the table lacks."""
        self._saved = {}
        if not states:
            return
        pids = list(states)
        # Optimistic concurrency: a state is written only over the revision it was read
        # at. During a rebalance the old owner of a partition may still be committing
        # while the new one starts; without this, one of them would overwrite the other.
        rows = await conn.fetch(
            "INSERT INTO alert_state (patient_id, part, rev, state)"
            " SELECT p, part, r + 1, st"
            " FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[]) AS t(p, part, st, r)"
            " ON CONFLICT (patient_id) DO UPDATE SET rev = EXCLUDED.rev,"
            " state = EXCLUDED.state, updated_at = now()"
            " WHERE alert_state.rev = EXCLUDED.rev - 1"
            " RETURNING patient_id, rev",
            pids,
            [partitions[p] for p in pids],
            [encode_state(states[p]).decode() for p in pids],
            [self._loaded.get(p, 0) for p in pids],
        )
        if len(rows) != len(pids):
            raise StateConflict(f"{len(pids) - len(rows)} states changed since read")
        self._saved = {r["patient_id"]: (int(r["rev"]), states[r["patient_id"]]) for r in rows}

    def commit_saved(self) -> None:
        self._cache.update(self._saved)
        self._saved = {}

    def forget(self) -> None:
        """After a failed batch: drop everything, re-read from the table next time."""
        self._cache.clear()
        self._saved = {}


async def alerts_by_id(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, Alert]:
    rows = await conn.fetch("SELECT id, payload::text AS payload FROM alerts"
                            " WHERE id = ANY($1::text[])", list(ids))
    return {r["id"]: Alert.model_validate_json(r["payload"]) for r in rows}


# --- rtm.alerts outbox ---------------------------------------------------------------------------


async def queue_publish(conn: asyncpg.Connection, changes: Sequence[AlertChange]) -> list[int]:
    """Queue changes for rtm.alerts in the batch's transaction; returns their seq numbers."""
    if not changes:
        return []
    rows = await conn.fetch(
        "INSERT INTO alert_publish (patient_id, payload)"
        " SELECT * FROM unnest($1::text[], $2::text[]) RETURNING seq",
        [c.alert.patient_id for c in changes], [c.model_dump_json() for c in changes],
    )
    return [int(r["seq"]) for r in rows]


async def unpublished(conn: asyncpg.Connection, older_than_s: float, limit: int
                      ) -> list[tuple[int, str, str]]:
    """(seq, patient_id, payload) of queued changes left behind (e.g. by a crash)."""
    rows = await conn.fetch(
        "SELECT seq, patient_id, payload FROM alert_publish"
        " WHERE queued_at <= now() - make_interval(secs => $1) ORDER BY seq LIMIT $2",
        older_than_s, limit,
    )
    return [(int(r["seq"]), r["patient_id"], r["payload"]) for r in rows]


async def published(conn: asyncpg.Connection, seqs: Sequence[int]) -> None:
    if seqs:
        await conn.execute("DELETE FROM alert_publish WHERE seq = ANY($1::bigint[])",
                           list(seqs))
