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


async def wal_activity(conn: asyncpg.Connection) -> dict[str, int]:
    """The server's write-ahead log so far (``pg_stat_wal``: records, full-page images,
    bytes) and its checkpoints (``pg_stat_bgwriter``, timed and requested): read before and
    after a timed window, what the window wrote and whether a checkpoint began in it (the
    first change of each page after one writes the whole page to the log)."""
    row = await conn.fetchrow(
        "SELECT w.wal_records, w.wal_fpi, w.wal_bytes::bigint AS wal_bytes,"
        " b.checkpoints_timed + b.checkpoints_req AS checkpoints"
        " FROM pg_stat_wal w, pg_stat_bgwriter b"
    )
    return {k: int(row[k]) for k in ("wal_records", "wal_fpi", "wal_bytes", "checkpoints")}
