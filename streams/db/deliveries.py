"""Webhooks (``clinician_webhooks``) and the delivery queue (``alert_deliveries``): the
ingest batch queues one delivery per (alert, change) in its transaction (a transactional
outbox), the worker's deliverer claims, marks and measures them (agents/delivery.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from alerts.models import CLINIC_WIDE, SEVERITY_RANK, Alert, AlertChange

# --- webhooks and the delivery queue -------------------------------------------------------------
# An endpoint is one row of clinician_webhooks (org_id, clinician_id; clinician_id '*' is the
# organisation's clinic-wide recipient). Deliveries are routed to an endpoint when queued, so a
# webhook added later starts with an empty queue (no history). See 009_delivery.sql.

# (SEVERITY_RANK, the domain's, is the queue order too: critical first)
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
    """One delivery claimed for one attempt (status 'sending' until marked or released)."""

    alert_id: str
    change: str
    payload: str
    attempts: int  # before this attempt
    severity_rank: int
    webhook_id: int
    url: str
    secret: str
    failures: int  # the endpoint's failure streak when claimed
    was: str  # its status before the claim ('failed', else it goes back as 'pending')


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

    A step of the escalation ladder (change 'escalated') goes elsewhere: step 1 to each of
    the rest of the patient's care team (``escalation_recipients``), to their own webhook
    only, one row each (change ``escalated-1:<clinician>``); step 2 to the organisation's
    '*' only (``escalated-2``). A step of an alert stored as acknowledged meanwhile (the
    API writes the acknowledgement before the worker's state sees it) is not sent: the
    acknowledgement stops the ladder.
    """
    unique = {(c.alert.id, c.change, c.alert.escalation_level): c for c in changes}
    if not unique:
        return
    items = list(unique.values())
    acked = await _acknowledged(conn, [c.alert.id for c in items if c.change == "escalated"])
    rows: list[tuple[AlertChange, str, str, bool]] = []  # change, key, recipient, exact
    for c in items:
        if c.change != "escalated":
            rows.append((c, c.change, c.alert.clinician_id, False))
        elif c.alert.id in acked:
            continue
        elif c.alert.escalation_level >= 2:
            rows.append((c, f"escalated-{c.alert.escalation_level}", CLINIC_WIDE, True))
        else:
            team = await escalation_recipients(conn, c.alert)
            # nobody else on the care team: one row that says so, on the alert
            rows += [(c, f"escalated-1:{who}", who, True) for who in team] or [
                (c, "escalated-1", "", True)
            ]
    await conn.execute(
        "INSERT INTO alert_deliveries (alert_id, change, clinician_id, status, last_error,"
        "                              payload, org_id, webhook_id, severity_rank)"
        " SELECT r.a, r.c, r.cl, CASE WHEN r.wid IS NULL THEN 'no_webhook' ELSE 'pending' END,"
        "        CASE WHEN r.wid IS NOT NULL THEN NULL WHEN r.cl = '' THEN"
        "          'no one else on the care team' ELSE 'no webhook configured' END,"
        "        r.p::jsonb, r.org, r.wid, r.rank"
        " FROM (SELECT t.*, (SELECT w.webhook_id FROM clinician_webhooks w"
        "                    WHERE w.org_id = t.org"
        # an escalation step goes to exactly its recipient, never to a fall-back
        "                      AND w.clinician_id IN (t.cl, CASE WHEN t.ex THEN t.cl ELSE '*' END)"
        "                    ORDER BY w.clinician_id = '*' LIMIT 1) AS wid"
        "       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        "                   $6::smallint[], $7::int[], $8::bool[])"
        "            AS t(a, c, cl, p, org, rank, ord, ex)) r"
        # seq (queue order) follows the order of the changes: fired before resolved
        " ORDER BY r.ord"
        " ON CONFLICT (alert_id, change) DO NOTHING",
        [c.alert.id for c, _, _, _ in rows],
        [key for _, key, _, _ in rows],
        [who for _, _, who, _ in rows],
        [c.model_dump_json() for c, _, _, _ in rows],
        [c.alert.org_id for c, _, _, _ in rows],
        [SEVERITY_RANK.get(c.alert.severity, 3) for c, _, _, _ in rows],
        list(range(len(rows))),
        [exact for _, _, _, exact in rows],
    )


async def _acknowledged(conn: asyncpg.Connection, alert_ids: Sequence[str]) -> set[str]:
    """Of these alerts, those stored as acknowledged or resolved."""
    if not alert_ids:
        return set()
    rows = await conn.fetch(
        "SELECT id FROM alerts WHERE id = ANY($1::text[])"
        " AND (status_rank > 0 OR acknowledged_at IS NOT NULL)",
        list(alert_ids),
    )
    return {r["id"] for r in rows}


async def escalation_recipients(conn: asyncpg.Connection, alert: Alert) -> list[str]:
    """The rest of the patient's care team, for step 1 of an alert's escalation: the
    patient's other clinicians (``patient_clinicians``, every episode's) and the members of
    the care teams the alert's clinician is on, in the patient's organisation, without the
    alert's own clinician."""
    rows = await conn.fetch(
        "SELECT clinician_id FROM patient_clinicians WHERE org_id = $1 AND patient_id = $2"
        " UNION SELECT m.clinician_id FROM care_team_members m"
        " JOIN care_team_members me ON me.org_id = m.org_id AND me.team = m.team"
        " WHERE me.org_id = $1 AND me.clinician_id = $3",
        alert.org_id,
        alert.patient_id,
        alert.clinician_id,
    )
    return sorted({r["clinician_id"] for r in rows} - {alert.clinician_id, CLINIC_WIDE})


_CLAIM = f"""
WITH ep AS (
    SELECT w.webhook_id, w.url, w.secret, w.failures, w.retry_at
    FROM clinician_webhooks w
    WHERE w.webhook_id <> ALL($1::bigint[])
      AND ($2::bigint IS NULL OR w.webhook_id = $2)
      AND EXISTS (SELECT 1 FROM alert_deliveries d
                  WHERE d.webhook_id = w.webhook_id AND d.status IN {_UNDELIVERED_SQL}
                    AND d.next_attempt_at <= now())
      -- one claim in flight per endpoint, across workers
      AND NOT EXISTS (SELECT 1 FROM alert_deliveries s
                      WHERE s.webhook_id = w.webhook_id AND s.status = 'sending'
                        AND s.next_attempt_at > now())
    FOR UPDATE OF w SKIP LOCKED
), head AS (
    SELECT ep.webhook_id, ep.url, ep.secret, ep.failures, h.severity_rank, h.seq
    FROM ep CROSS JOIN LATERAL (
        SELECT d.severity_rank, d.seq FROM alert_deliveries d
        WHERE d.webhook_id = ep.webhook_id AND d.status IN {_UNDELIVERED_SQL}
          AND d.next_attempt_at <= now()
        ORDER BY d.severity_rank, d.seq LIMIT 1
        FOR UPDATE OF d SKIP LOCKED) h
    -- a failing endpoint waits; how long depends on the most urgent delivery it holds
    WHERE ep.failures = 0 OR ep.retry_at IS NULL OR ep.retry_at[h.severity_rank + 1] <= now()
    ORDER BY h.severity_rank, h.seq
    LIMIT $3
), run AS (
    -- the head and, from a healthy endpoint, the deliveries that follow it in its queue
    SELECT head.webhook_id, head.url, head.secret, head.failures, r.alert_id, r.change,
           r.status AS was, r.seq
    FROM head CROSS JOIN LATERAL (
        SELECT d.alert_id, d.change, d.status, d.seq FROM alert_deliveries d
        WHERE d.webhook_id = head.webhook_id AND d.status IN {_UNDELIVERED_SQL}
          AND d.next_attempt_at <= now()
        ORDER BY d.severity_rank, d.seq
        LIMIT CASE WHEN head.failures = 0 THEN $5::int ELSE 1 END
        FOR UPDATE OF d SKIP LOCKED) r
)
UPDATE alert_deliveries d
SET status = 'sending', next_attempt_at = now() + make_interval(secs => $4), updated_at = now()
FROM run
WHERE d.alert_id = run.alert_id AND d.change = run.change
RETURNING d.alert_id, d.change, d.payload::text AS payload, d.attempts, d.severity_rank,
          run.webhook_id, run.url, run.secret, run.failures, run.seq, run.was
"""


async def claim_deliveries(
    conn: asyncpg.Connection,
    busy: Sequence[int],
    limit: int,
    lease_s: float,
    only: int | None = None,
    run: int = 1,
) -> list[Claimed]:
    """Claim up to `limit` endpoints' queues: of each, its head and, if the endpoint is
    healthy, up to ``run - 1`` deliveries that follow it, to be posted one after another.

    An endpoint's queue is in order of severity, then age (a delivery that used up its quick
    attempts waits for its own next_attempt_at, so it cannot hold the rest of the queue).
    Endpoints in `busy` (in flight in this worker), with a claim in flight elsewhere or
    still backing off are left out; endpoints are taken most urgent head first. A failing
    endpoint gets one delivery (its probe). The claim holds for `lease_s` (a worker that
    dies mid-run loses it); SKIP LOCKED lets several workers share the queue. `only`: just
    this endpoint. Returned in queue order, most urgent endpoint first.
    """
    rows = await conn.fetch(_CLAIM, list(busy), only, limit, lease_s, max(run, 1))
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
            r["was"],
        )
        for r in rows
    ]


_RELEASE = """
UPDATE alert_deliveries d
SET status = CASE WHEN t.was = 'failed' THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now(), updated_at = now()
FROM unnest($1::text[], $2::text[], $3::text[]) AS t(alert_id, change, was)
WHERE d.alert_id = t.alert_id AND d.change = t.change AND d.status = 'sending'
"""


async def release_deliveries(conn: asyncpg.Connection, claimed: Sequence[Claimed]) -> None:
    """Claimed deliveries not attempted (their run stopped at a failure, or before its
    lease could run out): back to what they were, due, in their place in the queue."""
    if claimed:
        await conn.execute(
            _RELEASE,
            [c.alert_id for c in claimed],
            [c.change for c in claimed],
            [c.was for c in claimed],
        )


_MARK_DELIVERED = """
WITH t AS (
    SELECT * FROM unnest($1::text[], $2::text[]) AS t(alert_id, change)
), done AS (
    UPDATE alert_deliveries d SET status = 'delivered', attempts = d.attempts + 1,
        last_error = NULL, delivered_at = now(), updated_at = now()
    FROM t WHERE d.alert_id = t.alert_id AND d.change = t.change
), healthy AS (
    UPDATE clinician_webhooks SET failures = 0, retry_at = NULL
    WHERE webhook_id = $3 AND failures <> 0
)
UPDATE alert_deliveries d SET next_attempt_at = now()
WHERE $4 AND d.webhook_id = $3 AND d.status = 'failed' AND d.next_attempt_at > now()
    -- the parts of one statement see the rows as they were before it, and no row may be
    -- changed by two of them: the deliveries just done (perhaps 'failed' until now) are
    -- not pulled forward
    AND NOT EXISTS (SELECT 1 FROM t WHERE t.alert_id = d.alert_id AND t.change = d.change)
"""


async def mark_delivered(
    conn: asyncpg.Connection, done: Sequence[Claimed], pull_forward: bool
) -> None:
    """2xx answers to ``done`` (one endpoint's): they are delivered and the endpoint is
    healthy again. `pull_forward` (the endpoint is back after an outage): its 'failed'
    deliveries, which wait out their own longer delays, become due now, so the backlog
    drains at once, in queue order. One statement (atomic on its own) for a whole run: an
    endpoint's deliveries follow one another, so this is on the path of every webhook
    (rtm bench's accept -> webhook delivered)."""
    if not done:
        return
    await conn.execute(
        _MARK_DELIVERED,
        [c.alert_id for c in done],
        [c.change for c in done],
        done[0].webhook_id,
        pull_forward,
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


async def delivery_backlog(conn: asyncpg.Connection) -> dict[int, tuple[int, float]]:
    """severity rank -> (undelivered changes routed to a webhook, age of the oldest in s)."""
    rows = await conn.fetch(
        "SELECT severity_rank, count(*) AS n,"
        " extract(epoch FROM now() - min(queued_at))::float8 AS oldest"
        " FROM alert_deliveries WHERE webhook_id IS NOT NULL"
        " AND status IN ('pending', 'sending', 'failed') GROUP BY severity_rank"
    )
    return {int(r["severity_rank"]): (int(r["n"]), float(r["oldest"])) for r in rows}


async def routed_delivery_keys(conn: asyncpg.Connection, patient_like: str) -> set[str]:
    """The Idempotency-Key (``<alert id>:<change>``) of every delivery routed to a webhook
    (queued, sent or failing: not 'no_webhook') of the patients matching the LIKE pattern
    ``patient_like``: what a receiver must get for them (`rtm chaos`, `rtm bench`)."""
    rows = await conn.fetch(
        "SELECT alert_id || ':' || change AS k FROM alert_deliveries"
        " WHERE payload->'alert'->>'patient_id' LIKE $1 AND status <> 'no_webhook'",
        patient_like,
    )
    return {str(r["k"]) for r in rows}
