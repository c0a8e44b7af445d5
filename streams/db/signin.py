"""Sign-in throttle rows (``sign_in_throttle``), the installation's HMAC key, and the
user lookup a sign-in makes (disabled users included: their attempts are audited too)."""

from __future__ import annotations

import datetime as dt

import asyncpg

from streams.throttle import Throttle


async def sign_in_key(conn: asyncpg.Connection) -> bytes:
    key: bytes | None = await conn.fetchval("SELECT value FROM app_keys WHERE name = 'sign_in'")
    if key is None:
        raise RuntimeError("app_keys has no sign_in key: run `rtm db migrate`")
    return bytes(key)


async def user_for_sign_in(conn: asyncpg.Connection, username: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT user_id, org_id, username, role, clinician_id, password_hash, disabled"
        " FROM users WHERE username = $1",
        username,
    )
    return row


async def lock_throttle(
    conn: asyncpg.Connection, subjects: list[bytes], now: dt.datetime
) -> dict[bytes, Throttle]:
    """The keys' states, their rows locked until the transaction ends (made when new).
    Rows are made and locked in one order, so two sign-ins cannot deadlock."""
    ordered = sorted(set(subjects))
    await conn.execute(
        "INSERT INTO sign_in_throttle (subject, attempts, window_start, updated_at)"
        " SELECT s, 0, $2, $2 FROM unnest($1::bytea[]) AS s ORDER BY s"
        " ON CONFLICT DO NOTHING",
        ordered,
        now,
    )
    rows = await conn.fetch(
        "SELECT subject, attempts, window_start, locked_until, locks, refused"
        " FROM sign_in_throttle WHERE subject = ANY($1::bytea[]) ORDER BY subject FOR UPDATE",
        ordered,
    )
    return {
        bytes(r["subject"]): Throttle(
            r["attempts"], r["window_start"], r["locked_until"], r["locks"], r["refused"]
        )
        for r in rows
    }


async def save_throttle(
    conn: asyncpg.Connection, subject: bytes, state: Throttle, now: dt.datetime
) -> None:
    await conn.execute(
        "UPDATE sign_in_throttle SET attempts = $2, window_start = $3, locked_until = $4,"
        " locks = $5, refused = $6, updated_at = $7 WHERE subject = $1",
        subject,
        state.attempts,
        state.window_start,
        state.locked_until,
        state.locks,
        state.refused,
        now,
    )


async def clear_throttle(conn: asyncpg.Connection, subject: bytes) -> None:
    await conn.execute("DELETE FROM sign_in_throttle WHERE subject = $1", subject)


async def prune_throttle(conn: asyncpg.Connection, before: dt.datetime) -> None:
    """Forget keys untouched since ``before`` whose lock, if any, ended before it."""
    await conn.execute(
        "DELETE FROM sign_in_throttle WHERE updated_at < $1"
        " AND (locked_until IS NULL OR locked_until < $1)",
        before,
    )
