"""What the operator page reads from the database (SQL only; no patient data): the
webhook outbox by status (as ``delivery_backlog`` counts the backlog the worker's gauges
show) and when the newest event was stored."""

from __future__ import annotations

import datetime as dt

import asyncpg

RECENT_DAYS = 30  # the newest stored event among those that occurred lately (chunk pruning)


async def webhook_outbox(conn: asyncpg.Connection) -> dict[str, int]:
    """status -> alert changes routed to a webhook and not delivered, over every
    organisation."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM alert_deliveries"
        " WHERE webhook_id IS NOT NULL AND status <> 'delivered' GROUP BY status"
    )
    return {str(r["status"]): int(r["n"]) for r in rows}


async def last_event_stored(conn: asyncpg.Connection) -> dt.datetime | None:
    """When the newest event was stored (events.stored_at), among events that occurred in
    the last RECENT_DAYS days (None: none)."""
    at: dt.datetime | None = await conn.fetchval(
        "SELECT max(stored_at) FROM events WHERE occurred_at > now() - make_interval(days => $1)",
        RECENT_DAYS,
    )
    return at
