"""Home exercise program templates (``program_templates``, migration 023): an organisation's
library, immutable per version (an edit stores the next version). Stored by `rtm programs
templates add`, listed there and on the patient page, which assigns one."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg
import orjson

from schemas.events import Exercise


@dataclass(frozen=True)
class ProgramTemplate:
    org_id: str
    template_id: str
    version: int
    name: str
    exercises: tuple[Exercise, ...]
    sessions_per_week: int
    created_by: str
    created_at: dt.datetime | None = None


def _template(r: asyncpg.Record) -> ProgramTemplate:
    return ProgramTemplate(
        org_id=r["org_id"],
        template_id=r["template_id"],
        version=r["version"],
        name=r["name"],
        exercises=tuple(Exercise.model_validate(e) for e in orjson.loads(r["exercises"])),
        sessions_per_week=r["sessions_per_week"],
        created_by=r["created_by"],
        created_at=r["created_at"],
    )


_COLUMNS = (
    "org_id, template_id, version, name, exercises::text AS exercises, sessions_per_week,"
    " created_by, created_at"
)


async def add_version(
    conn: asyncpg.Connection,
    org_id: str,
    template_id: str,
    name: str,
    exercises: list[Exercise],
    sessions_per_week: int,
    by: str,
) -> int:
    """Store the template's next version (1 for a new template); returns its number. A
    stored version is never changed."""
    body = orjson.dumps([e.model_dump(exclude_none=True) for e in exercises]).decode()
    async with conn.transaction():
        # one writer at a time per template: the next version number is taken once
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"program_template|{org_id}|{template_id}"
        )
        version: int = await conn.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM program_templates"
            " WHERE org_id = $1 AND template_id = $2",
            org_id,
            template_id,
        )
        await conn.execute(
            "INSERT INTO program_templates (org_id, template_id, version, name, exercises,"
            " sessions_per_week, created_by) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
            org_id,
            template_id,
            version,
            name,
            body,
            sessions_per_week,
            by,
        )
    return version


async def latest_templates(conn: asyncpg.Connection, org_id: str) -> list[ProgramTemplate]:
    """The organisation's templates, each at its newest version, by name."""
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (template_id) {_COLUMNS} FROM program_templates"
        " WHERE org_id = $1 ORDER BY template_id, version DESC",
        org_id,
    )
    return sorted((_template(r) for r in rows), key=lambda t: (t.name, t.template_id))


async def template_versions(conn: asyncpg.Connection, org_id: str) -> list[ProgramTemplate]:
    """Every stored version of the organisation's templates (oldest first per template)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM program_templates WHERE org_id = $1 ORDER BY template_id, version",
        org_id,
    )
    return [_template(r) for r in rows]


async def get_template(
    conn: asyncpg.Connection, org_id: str, template_id: str, version: int
) -> ProgramTemplate | None:
    """One version of one of the organisation's templates (None: no such version)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM program_templates"
        " WHERE org_id = $1 AND template_id = $2 AND version = $3",
        org_id,
        template_id,
        version,
    )
    return None if row is None else _template(row)
