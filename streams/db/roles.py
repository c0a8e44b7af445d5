"""The two database roles: the owner, who runs the migrations and owns every object, and
the application role that the gateway, the worker and the CLI use at run time.

The migrations runner (``streams.db.pool.migrate``) calls ``grant_app_role`` as the
owner after every run, so a table made by a later migration is granted in the same run
(the role's name is configuration, so it is not written into a migration). The
application role gets, in the migrated schema:
- USAGE on the schema, SELECT, INSERT, UPDATE, DELETE on every table (TimescaleDB gives
  a hypertable's privileges to its chunks), USAGE and SELECT on every sequence;
- on ``audit_log`` and ``instrument_activations`` only INSERT and SELECT: no UPDATE,
  DELETE, TRUNCATE, REFERENCES or TRIGGER, and as it owns nothing it can neither disable
  the tables' triggers nor drop them;
- on ``schema_migrations`` only SELECT.
No CREATE anywhere (PostgreSQL 15 gives PUBLIC no CREATE on schema public).
"""

from __future__ import annotations

import asyncpg

# Tables the application may read and append to, never change.
APPEND_ONLY = ("audit_log", "instrument_activations")
READ_ONLY = ("schema_migrations",)


async def current_schema(conn: asyncpg.Connection) -> str:
    schema: str = await conn.fetchval("SELECT current_schema()")
    return schema


async def applied_versions(conn: asyncpg.Connection) -> set[str] | None:
    """The migrations applied in the current schema (None: none ever were). Reads only,
    so the application role can ask."""
    exists = await conn.fetchval(
        "SELECT to_regclass(format('%I.schema_migrations', current_schema())) IS NOT NULL"
    )
    if not exists:
        return None
    rows = await conn.fetch("SELECT version FROM schema_migrations")
    return {r["version"] for r in rows}


async def grant_app_role(conn: asyncpg.Connection, role: str) -> None:
    """Grant the application role its privileges on the current schema (idempotent).
    Run as the owner; a role that does not exist is an error naming it."""
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role):
        raise RuntimeError(
            f"database role {role!r} (the application's, RTM_PG_USER or RTM_DATABASE_URL)"
            " does not exist: create it with LOGIN and a password (`rtm up` does locally)"
        )
    r = await conn.fetchval("SELECT quote_ident($1)", role)
    s = await conn.fetchval("SELECT quote_ident(current_schema())")
    statements = [
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
        f"REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {s} FROM {r}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        f"REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA {s} FROM {r}",
    ]
    for table in APPEND_ONLY:
        statements.append(f"REVOKE ALL ON {s}.{table} FROM {r}")
        statements.append(f"GRANT SELECT, INSERT ON {s}.{table} TO {r}")
    for table in READ_ONLY:
        statements.append(f"REVOKE ALL ON {s}.{table} FROM {r}")
        statements.append(f"GRANT SELECT ON {s}.{table} TO {r}")
    async with conn.transaction():
        for sql in statements:
            await conn.execute(sql)


async def table_privileges(conn: asyncpg.Connection, role: str, table: str) -> set[str]:
    """What ``role`` may do on ``table`` (for checks and tests)."""
    out = set()
    for priv in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
        if await conn.fetchval("SELECT has_table_privilege($1, $2, $3)", role, table, priv):
            out.add(priv)
    return out
