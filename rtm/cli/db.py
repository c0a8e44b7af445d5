"""What the CLI's commands that change the database share: one connection and transaction
per command (``run_db``), the audit row of a change in the OS user's name (``audit_change``,
actor ``cli:<user>``), and the checks of an id and an organisation."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import click

from rtm.cli.options import settings_of
from streams.access import ID_PATTERN
from streams.db import access as db

T = TypeVar("T")


def run_db(ctx: click.Context, body: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def go() -> T:
        conn = await asyncpg.connect(settings_of(ctx).db.dsn)
        try:
            async with conn.transaction():
                return await body(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def cli_actor() -> str:
    return f"cli:{os.environ.get('USER') or getpass.getuser()}"


async def audit_change(
    conn: asyncpg.Connection, org_id: str, action: str, detail: dict[str, Any]
) -> None:
    await db.audit(
        conn,
        org_id=org_id,
        actor=cli_actor(),
        role="cli",
        action=action,
        resource="rtm " + action.replace("access.", "").replace("_", " "),
        detail=detail,
    )


def check_id(value: str, what: str) -> str:
    if not ID_PATTERN.match(value):
        raise click.BadParameter(f"{what} must be 1-64 of A-Z a-z 0-9 . _ : -")
    return value


async def require_org(conn: asyncpg.Connection, org_id: str) -> None:
    if not await db.org_exists(conn, org_id):
        raise click.ClickException(f"no organisation {org_id!r} (add it: rtm orgs add)")
