"""The connection pool (``EventStore``) and the migrations runner.

Every process opens one ``EventStore`` (a lazily opened asyncpg pool) and hands it, or a
connection acquired from it, to the table modules beside this one; ``migrate`` applies
infra/migrations once each, as the owner, and grants the application role.
"""

from __future__ import annotations

import asyncio
import importlib.resources
from typing import Any, Self

import asyncpg

from streams.db.roles import applied_versions, grant_app_role

MIGRATION_LOCK_KEY = 7_270_501  # pg_advisory_lock id: one migrator at a time


def _migrations() -> list[tuple[str, str]]:
    folder = importlib.resources.files("infra") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text()) for p in files]


async def migrate(dsn: str, app_role: str | None = None) -> list[str]:
    """Apply the versioned SQL files under infra/migrations once each; returns the new ones.

    Run as the owner; with ``app_role`` it then grants the application role its privileges
    (streams/db/roles.py). As the application role (which may not create anything) it only
    checks that nothing is pending."""
    conn = await asyncpg.connect(dsn)
    try:
        done_before = await applied_versions(conn)
        if app_role is None and done_before is not None:
            if not {name for name, _ in _migrations()} - done_before:
                return []
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied: list[str] = []
        for name, sql in _migrations():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", name)
            applied.append(name)
        if app_role is not None:
            await grant_app_role(conn, app_role)
        return applied
    finally:
        await conn.close()


class Pool:
    """A pool of connections to the database, opened on first use, inside the loop of
    whoever uses it (Faust's worker creates its loop after the agents are registered).
    ``streams.db.events.EventStore`` is this pool with the gateway's two event writes."""

    def __init__(self, dsn: str, max_size: int = 5) -> None:
        self.dsn = dsn
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, dsn: str, max_size: int = 5) -> Self:
        store = cls(dsn, max_size)
        await store.pool()
        return store

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=self.max_size
                    )
        assert self._pool is not None
        return self._pool

    def acquire(self) -> Any:
        return _Acquire(self)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        async with self.acquire() as conn:
            return bool(await conn.fetchval("SELECT 1") == 1)


class _Acquire:
    """`async with store.acquire() as conn`, opening the pool lazily."""

    def __init__(self, store: Pool) -> None:
        self.store = store
        self._ctx: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        pool = await self.store.pool()
        self._ctx = pool.acquire()
        return await self._ctx.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self._ctx.__aexit__(*exc)
