"""The database's own upkeep, as the schema owner sees it (SQL only): a ``VACUUM
(ANALYZE)`` of what the owner owns, and how many autovacuum workers run now. ``rtm bench``
settles on these before it times anything over a bulk-loaded history."""

from __future__ import annotations

import asyncpg


async def vacuum_analyze(conn: asyncpg.Connection) -> None:
    """Vacuum and analyse every table the connection's role owns (outside a transaction)."""
    await conn.execute("VACUUM (ANALYZE)")


async def autovacuum_workers(conn: asyncpg.Connection) -> int:
    """How many autovacuum workers run now, over the whole server."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
        )
    )
