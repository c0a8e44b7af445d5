"""Published pathway versions (``pathway_versions``, migration 029): an organisation's
versions, immutable (a trigger refuses any update or delete). Stored by ``rtm pathways
publish`` through ``streams.services.pathways``; read by ``rtm pathways list``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from pathways.model import Pathway, parse_pathway


@dataclass(frozen=True)
class StoredVersion:
    org_id: str
    pathway: Pathway
    published_by: str
    published_at: dt.datetime


async def lock_version(conn: asyncpg.Connection, org_id: str, key: str) -> None:
    """One publisher at a time per (organisation, id@version), until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"pathway|{org_id}|{key}")


async def stored_version(
    conn: asyncpg.Connection, org_id: str, pathway_id: str, version: int
) -> Pathway | None:
    """One published version of the organisation (None: not published)."""
    content = await conn.fetchval(
        "SELECT content::text FROM pathway_versions"
        " WHERE org_id = $1 AND pathway_id = $2 AND version = $3",
        org_id,
        pathway_id,
        version,
    )
    return None if content is None else parse_pathway(content)


async def insert_version(conn: asyncpg.Connection, org_id: str, pathway: Pathway, by: str) -> None:
    await conn.execute(
        "INSERT INTO pathway_versions (org_id, pathway_id, version, content, published_by)"
        " VALUES ($1, $2, $3, $4::jsonb, $5)",
        org_id,
        pathway.id,
        pathway.version,
        pathway.model_dump_json(),
        by,
    )


async def published_versions(conn: asyncpg.Connection, org_id: str) -> list[StoredVersion]:
    """The organisation's published versions, by id then version."""
    rows = await conn.fetch(
        "SELECT org_id, content::text AS content, published_by, published_at"
        " FROM pathway_versions WHERE org_id = $1 ORDER BY pathway_id, version",
        org_id,
    )
    return [
        StoredVersion(
            r["org_id"], parse_pathway(r["content"]), r["published_by"], r["published_at"]
        )
        for r in rows
    ]
