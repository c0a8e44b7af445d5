"""TimescaleDB adapter for the alert engine: rule states, alerts, the rtm.alerts outbox,
webhooks and deliveries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from alerts.models import Alert, AlertChange
from alerts.rollup import tier_sql
from alerts.state import PatientState, decode_state, encode_state, new_state
from schemas.events import DEFAULT_ORG, PatientKey, key_text
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
       t.c10, t.c11, t.c12, t.c13, t.c14, t.c15, t.c16, t.c17, now(), t.c18
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::smallint[], $9::text[], $10::float8[], $11::float8[],
            $12::timestamptz[], $13::timestamptz[], $14::text[], $15::timestamptz[],
            $16::text[], $17::jsonb[], $18::text[])
     AS t(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18)
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


async def worklist(
    conn: asyncpg.Connection, scope: Scope, limit: int = 200
) -> list[dict[str, Any]]:
    """Patients in the scope with open alerts in triage order: the tier of their most
    urgent open alert (a red flag or fall, other critical, high, low adherence, inactivity,
    billing at risk: alerts.rollup.alert_tier), then who has waited longest in that tier
    (its oldest open alert), then the patient id."""
    where, args = scope_sql(scope, "a.patient_id", 1, "a.org_id")
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
        " min(a.t) AS tier, (array_agg(a.fired_at ORDER BY a.t, a.fired_at))[1] AS tier_since"
        f" FROM (SELECT a.*, {tier_sql('a.kind', 'a.severity')} AS t FROM alerts a"
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
        }
        for r in rows
    ]


async def alert_in_scope(conn: asyncpg.Connection, scope: Scope, alert_id: str) -> Alert | None:
    where, args = scope_sql(scope, "a.patient_id", 2, "a.org_id")
    raw = await conn.fetchval(
        f"SELECT a.payload FROM alerts a WHERE a.id = $1 AND {where}", alert_id, *args
    )
    return Alert.model_validate_json(raw) if raw is not None else None


# --- webhooks and the delivery queue -------------------------------------------------------------
# An endpoint is one row of clinician_webhooks (org_id, clinician_id; clinician_id '*' is the
# organisation's clinic-wide recipient). Deliveries are routed to an endpoint when queued, so a
# webhook added later starts with an empty queue (no history). See 009_delivery.sql.

# (SEVERITY_RANK, above, is the queue order too: critical first)
# as a literal, so the planner uses the partial queue index (009_delivery.sql)
_UNDELIVERED_SQL = "('pending', 'failed', 'sending')"


@dataclass(frozen=True)
class Webhook:
    """A configured endpoint, without its secret (for listings)."""

    webhook_id: int
    org_id: str
    clinician_id: str
    url: str
    created_at: dt.datetime
    failures: int
    undelivered: int
    oldest_undelivered: dt.datetime | None


@dataclass(frozen=True)
class Claimed:
    """One delivery claimed for one attempt (status 'sending' until marked)."""

    alert_id: str
    change: str
    payload: str
    attempts: int  # before this attempt
    severity_rank: int
    webhook_id: int
    url: str
    secret: str
    failures: int  # the endpoint's failure streak when claimed


async def set_webhook(
    conn: asyncpg.Connection, clinician_id: str, url: str, secret: str, org_id: str = "default"
) -> bool:
    """Add or change an endpoint; True if it is new. A changed URL or secret keeps the
    endpoint's queue and clears its failure streak (the new address gets a fresh start)."""
    return bool(
        await conn.fetchval(
            "INSERT INTO clinician_webhooks (org_id, clinician_id, url, secret)"
            " VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (org_id, clinician_id) DO UPDATE SET url = EXCLUDED.url,"
            " secret = EXCLUDED.secret, failures = 0, retry_at = NULL, updated_at = now()"
            " RETURNING xmax = 0",
            org_id,
            clinician_id,
            url,
            secret,
        )
    )


async def remove_webhook(
    conn: asyncpg.Connection, clinician_id: str, org_id: str = "default"
) -> int | None:
    """Remove an endpoint; its undelivered deliveries become 'no_webhook' (visible on the
    alert) rather than waiting for an endpoint that is gone. None if there was none, else
    how many deliveries were dropped."""
    async with conn.transaction():
        wid = await conn.fetchval(
            "DELETE FROM clinician_webhooks WHERE org_id = $1 AND clinician_id = $2"
            " RETURNING webhook_id",
            org_id,
            clinician_id,
        )
        if wid is None:
            return None
        status = await conn.execute(
            "UPDATE alert_deliveries SET status = 'no_webhook', last_error = 'webhook removed',"
            f" updated_at = now() WHERE webhook_id = $1 AND status IN {_UNDELIVERED_SQL}",
            wid,
        )
    return int(status.rsplit(" ", 1)[-1])


async def webhook_for(
    conn: asyncpg.Connection, clinician_id: str, org_id: str = "default"
) -> tuple[str, str] | None:
    """(url, secret) of exactly this endpoint (no fall-back to '*': for `--test`)."""
    row = await conn.fetchrow(
        "SELECT url, secret FROM clinician_webhooks WHERE org_id = $1 AND clinician_id = $2",
        org_id,
        clinician_id,
    )
    return (row["url"], row["secret"]) if row else None


async def list_webhooks(conn: asyncpg.Connection, org_id: str | None) -> list[Webhook]:
    """Endpoints (of one organisation, or all) with their queue depth; never the secret."""
    rows = await conn.fetch(
        "SELECT w.webhook_id, w.org_id, w.clinician_id, w.url, w.created_at, w.failures,"
        "  count(d.alert_id) AS undelivered, min(d.queued_at) AS oldest"
        " FROM clinician_webhooks w LEFT JOIN alert_deliveries d"
        f"   ON d.webhook_id = w.webhook_id AND d.status IN {_UNDELIVERED_SQL}"
        " WHERE $1::text IS NULL OR w.org_id = $1"
        " GROUP BY w.org_id, w.clinician_id ORDER BY w.org_id, w.clinician_id",
        org_id,
    )
    return [
        Webhook(
            int(r["webhook_id"]),
            r["org_id"],
            r["clinician_id"],
            r["url"],
            r["created_at"],
            int(r["failures"]),
            int(r["undelivered"]),
            r["oldest"],
        )
        for r in rows
    ]


async def queue_deliveries(conn: asyncpg.Connection, changes: Sequence[AlertChange]) -> None:
    """Outbox: one delivery per (alert, change), in the alerts' own transaction, so a change
    that is stored is also delivered, whatever happens after the commit.

    Routed here, to the webhook in effect now: the clinician's own in the patient's
    organisation (the alert's org_id), else that organisation's '*'. With neither the row
    is 'no_webhook' for good: a webhook added later does not get it.
    """
    unique = {(c.alert.id, c.change): c for c in changes}
    if not unique:
        return
    items = list(unique.values())
    await conn.execute(
        "INSERT INTO alert_deliveries (alert_id, change, clinician_id, status, last_error,"
        "                              payload, org_id, webhook_id, severity_rank)"
        " SELECT r.a, r.c, r.cl, CASE WHEN r.wid IS NULL THEN 'no_webhook' ELSE 'pending' END,"
        "        CASE WHEN r.wid IS NULL THEN 'no webhook configured' END,"
        "        r.p::jsonb, r.org, r.wid, r.rank"
        " FROM (SELECT t.*, (SELECT w.webhook_id FROM clinician_webhooks w"
        "                    WHERE w.org_id = t.org AND w.clinician_id IN (t.cl, '*')"
        "                    ORDER BY w.clinician_id = '*' LIMIT 1) AS wid"
        "       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        "                   $6::smallint[], $7::int[]) AS t(a, c, cl, p, org, rank, ord)) r"
        # seq (queue order) follows the order of the changes: fired before resolved
        " ORDER BY r.ord"
        " ON CONFLICT (alert_id, change) DO NOTHING",
        [c.alert.id for c in items],
        [c.change for c in items],
        [c.alert.clinician_id for c in items],
        [c.model_dump_json() for c in items],
        [c.alert.org_id for c in items],
        [SEVERITY_RANK.get(c.alert.severity, 3) for c in items],
        list(range(len(items))),
    )


_CLAIM = f"""
WITH ep AS (
    SELECT w.webhook_id, w.url, w.secret, w.failures, w.retry_at
    FROM clinician_webhooks w
    WHERE w.webhook_id <> ALL($1::bigint[])
      AND ($2::bigint IS NULL OR w.webhook_id = $2)
      AND EXISTS (SELECT 1 FROM alert_deliveries d
                  WHERE d.webhook_id = w.webhook_id AND d.status IN {_UNDELIVERED_SQL}
                    AND d.next_attempt_at <= now())
      -- one attempt in flight per endpoint, across workers
      AND NOT EXISTS (SELECT 1 FROM alert_deliveries s
                      WHERE s.webhook_id = w.webhook_id AND s.status = 'sending'
                        AND s.next_attempt_at > now())
    FOR UPDATE OF w SKIP LOCKED
), head AS (
    SELECT ep.webhook_id, ep.url, ep.secret, ep.failures, h.alert_id, h.change,
           h.severity_rank, h.seq
    FROM ep CROSS JOIN LATERAL (
        SELECT d.alert_id, d.change, d.severity_rank, d.seq FROM alert_deliveries d
        WHERE d.webhook_id = ep.webhook_id AND d.status IN {_UNDELIVERED_SQL}
          AND d.next_attempt_at <= now()
        ORDER BY d.severity_rank, d.seq LIMIT 1
        FOR UPDATE OF d SKIP LOCKED) h
    -- a failing endpoint waits; how long depends on the most urgent delivery it holds
    WHERE ep.failures = 0 OR ep.retry_at IS NULL OR ep.retry_at[h.severity_rank + 1] <= now()
    ORDER BY h.severity_rank, h.seq
    LIMIT $3
)
UPDATE alert_deliveries d
SET status = 'sending', next_attempt_at = now() + make_interval(secs => $4), updated_at = now()
FROM head
WHERE d.alert_id = head.alert_id AND d.change = head.change
RETURNING d.alert_id, d.change, d.payload::text AS payload, d.attempts, d.severity_rank,
          head.webhook_id, head.url, head.secret, head.failures, head.seq
"""


async def claim_deliveries(
    conn: asyncpg.Connection,
    busy: Sequence[int],
    limit: int,
    lease_s: float,
    only: int | None = None,
) -> list[Claimed]:
    """Claim the head of up to `limit` endpoints' queues for one attempt each.

    An endpoint's head is its most severe, then oldest, due delivery (a delivery that used
    up its quick attempts waits for its own next_attempt_at, so it cannot hold the rest of
    the queue). Endpoints in `busy` (in flight in this worker), with a claim in flight
    elsewhere or still backing off are left out; endpoints are taken most urgent head
    first. The claim holds for `lease_s` (a worker that dies mid-attempt loses it); SKIP
    LOCKED lets several workers share the queue. `only`: just this endpoint.
    """
    rows = await conn.fetch(_CLAIM, list(busy), only, limit, lease_s)
    rows = sorted(rows, key=lambda r: (r["severity_rank"], r["seq"]))
    return [
        Claimed(
            r["alert_id"],
            r["change"],
            r["payload"],
            int(r["attempts"]),
            int(r["severity_rank"]),
            int(r["webhook_id"]),
            r["url"],
            r["secret"],
            int(r["failures"]),
        )
        for r in rows
    ]


async def mark_delivered(conn: asyncpg.Connection, c: Claimed, pull_forward: bool) -> None:
    """A 2xx: the delivery is done and the endpoint healthy again. `pull_forward` (the
    endpoint is back after an outage): its 'failed' deliveries, which wait out their own
    longer delays, become due now, so the backlog drains at once, in queue order."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE alert_deliveries SET status = 'delivered', attempts = attempts + 1,"
            " last_error = NULL, delivered_at = now(), updated_at = now()"
            " WHERE alert_id = $1 AND change = $2",
            c.alert_id,
            c.change,
        )
        await conn.execute(
            "UPDATE clinician_webhooks SET failures = 0, retry_at = NULL"
            " WHERE webhook_id = $1 AND failures <> 0",
            c.webhook_id,
        )
        if pull_forward:
            await conn.execute(
                "UPDATE alert_deliveries SET next_attempt_at = now()"
                " WHERE webhook_id = $1 AND status = 'failed' AND next_attempt_at > now()",
                c.webhook_id,
            )


async def mark_attempt_failed(
    conn: asyncpg.Connection,
    c: Claimed,
    error: str,
    exhausted: bool,
    retry_in_s: float,
    endpoint_retry_in_s: Sequence[float],
) -> None:
    """A failed attempt. The delivery shows 'failed' once `exhausted` (it is still retried,
    after `retry_in_s`); the endpoint's streak grows and it may be tried again after
    endpoint_retry_in_s[severity rank of its head]."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE alert_deliveries SET status = $3, attempts = attempts + 1,"
            " last_error = $4, next_attempt_at = now() + make_interval(secs => $5),"
            " updated_at = now()"
            # a delivery the endpoint's removal (or another worker) settled stays settled
            " WHERE alert_id = $1 AND change = $2 AND status = 'sending'",
            c.alert_id,
            c.change,
            "failed" if exhausted else "pending",
            error,
            retry_in_s,
        )
        await conn.execute(
            "UPDATE clinician_webhooks SET failures = $2,"
            " retry_at = ARRAY(SELECT now() + make_interval(secs => x)"
            "                  FROM unnest($3::float8[]) WITH ORDINALITY AS t(x, i) ORDER BY i)"
            " WHERE webhook_id = $1",
            c.webhook_id,
            c.failures + 1,
            list(endpoint_retry_in_s),
        )


# --- rule states -------------------------------------------------------------------------------


async def acknowledge(conn: asyncpg.Connection, acked: Alert, note: str | None) -> None:
    """Record an acknowledgement and its note (never over a resolved alert: status_rank
    only rises)."""
    await conn.execute(
        "UPDATE alerts SET status = 'acknowledged', status_rank = 1,"
        " acknowledged_at = $2, acknowledged_by = $3, payload = $4::jsonb, ack_note = $5,"
        " updated_at = now() WHERE id = $1 AND status_rank < 1",
        acked.id,
        acked.acknowledged_at,
        acked.acknowledged_by,
        acked.model_dump_json(),
        note,
    )


async def delivery_backlog(conn: asyncpg.Connection) -> dict[int, tuple[int, float]]:
    """severity rank -> (undelivered changes routed to a webhook, age of the oldest in s)."""
    rows = await conn.fetch(
        "SELECT severity_rank, count(*) AS n,"
        " extract(epoch FROM now() - min(queued_at))::float8 AS oldest"
        " FROM alert_deliveries WHERE webhook_id IS NOT NULL"
        " AND status IN ('pending', 'sending', 'failed') GROUP BY severity_rank"
    )
    return {int(r["severity_rank"]): (int(r["n"]), float(r["oldest"])) for r in rows}


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


class StateConflict(Exception):
    """Another worker wrote a state this batch read: roll back and redo the batch."""


class StateStore:
    """Per-patient rule states, by (organisation, patient_id), with decoded copies kept in
    memory.

    A cached state is used only while its revision equals the stored one, so a patient
    whose partition moved to another worker and back is re-read, never stale.
    """

    def __init__(self) -> None:
        self._cache: dict[PatientKey, tuple[int, PatientState]] = {}
        # written, not yet committed
        self._saved: dict[PatientKey, tuple[int, PatientState]] = {}
        self._loaded: dict[PatientKey, int] = {}  # rev of each state handed out (0: new)

    async def load(
        self, conn: asyncpg.Connection, keys: Sequence[PatientKey]
    ) -> dict[PatientKey, PatientState]:
        if not keys:
            return {}
        orgs, pids = [k[0] for k in keys], [k[1] for k in keys]
        revs: dict[PatientKey, int] = {
            (r["org_id"], r["patient_id"]): int(r["rev"])
            for r in await conn.fetch(
                "SELECT s.org_id, s.patient_id, s.rev FROM alert_state s"
                " JOIN unnest($1::text[], $2::text[]) AS k(o, p)"
                " ON s.org_id = k.o AND s.patient_id = k.p",
                orgs,
                pids,
            )
        }
        stale = [k for k, rev in revs.items() if self._cache.get(k, (-1,))[0] != rev]
        if stale:
            for r in await conn.fetch(
                "SELECT s.org_id, s.patient_id, s.rev, s.state FROM alert_state s"
                " JOIN unnest($1::text[], $2::text[]) AS k(o, p)"
                " ON s.org_id = k.o AND s.patient_id = k.p",
                [k[0] for k in stale],
                [k[1] for k in stale],
            ):
                key = (r["org_id"], r["patient_id"])
                self._cache[key] = (int(r["rev"]), decode_state(r["state"]))
        out = {}
        self._loaded = {k: revs.get(k, 0) for k in keys}
        for k in keys:
            if k in revs:
                out[k] = self._cache[k][1]
            else:
                self._cache.pop(k, None)
                out[k] = new_state(k[1], k[0])
        return out

    async def patients_of_partition(self, conn: asyncpg.Connection, part: int) -> list[PatientKey]:
        rows = await conn.fetch("SELECT org_id, patient_id FROM alert_state WHERE part = $1", part)
        return [(r["org_id"], r["patient_id"]) for r in rows]

    async def assign_partitions(
        self, conn: asyncpg.Connection, partition_of: Callable[[PatientKey], int]
    ) -> int:
        """Give states stored without a partition (``part`` -1: infra/migrations/013, when
        the Kafka key became ``<org>/<patient>``) the partition of their key, so that the
        ticks of that partition reach them; returns how many."""
        rows = await conn.fetch("SELECT org_id, patient_id FROM alert_state WHERE part < 0")
        if not rows:
            return 0
        keys = [(r["org_id"], r["patient_id"]) for r in rows]
        status = await conn.execute(
            "UPDATE alert_state s SET part = k.part"
            " FROM unnest($1::text[], $2::text[], $3::int[]) AS k(o, p, part)"
            " WHERE s.org_id = k.o AND s.patient_id = k.p AND s.part < 0",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [partition_of(k) for k in keys],
        )
        return int(status.rsplit(" ", 1)[-1])

    async def save(
        self,
        conn: asyncpg.Connection,
        states: dict[PatientKey, PatientState],
        partitions: dict[PatientKey, int],
    ) -> None:
        """Write the given (touched) states; the cache learns them only after the commit
        (``commit_saved``), so a rolled-back batch cannot leave a state the table lacks."""
        self._saved = {}
        if not states:
            return
        keys = list(states)
        # Optimistic concurrency: a state is written only over the revision it was read
        # at. During a rebalance the old owner of a partition may still be committing
        # while the new one starts; without this, one of them would overwrite the other.
        rows = await conn.fetch(
            "INSERT INTO alert_state (org_id, patient_id, part, rev, state)"
            " SELECT o, p, part, r + 1, st"
            " FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[])"
            "   AS t(o, p, part, st, r)"
            " ON CONFLICT (org_id, patient_id) DO UPDATE SET rev = EXCLUDED.rev,"
            " state = EXCLUDED.state, part = EXCLUDED.part, updated_at = now()"
            " WHERE alert_state.rev = EXCLUDED.rev - 1"
            " RETURNING org_id, patient_id, rev",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [partitions[k] for k in keys],
            [encode_state(states[k]).decode() for k in keys],
            [self._loaded.get(k, 0) for k in keys],
        )
        if len(rows) != len(keys):
            raise StateConflict(f"{len(keys) - len(rows)} states changed since read")
        self._saved = {
            (r["org_id"], r["patient_id"]): (int(r["rev"]), states[(r["org_id"], r["patient_id"])])
            for r in rows
        }

    def commit_saved(self) -> None:
        self._cache.update(self._saved)
        self._saved = {}

    def forget(self) -> None:
        """After a failed batch: drop everything, re-read from the table next time."""
        self._cache.clear()
        self._saved = {}


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


async def unpublished(
    conn: asyncpg.Connection, older_than_s: float, limit: int
) -> list[tuple[int, str, str]]:
    """(seq, Kafka key ``<org>/<patient>``, payload) of queued changes left behind (e.g. by
    a crash)."""
    rows = await conn.fetch(
        "SELECT seq, org_id, patient_id, payload FROM alert_publish"
        " WHERE queued_at <= now() - make_interval(secs => $1) ORDER BY seq LIMIT $2",
        older_than_s,
        limit,
    )
    return [(int(r["seq"]), key_text((r["org_id"], r["patient_id"])), r["payload"]) for r in rows]


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
