"""Publishing a care pathway version (the use case, once): validate it against the versions
in force (a built-in or published version is never changed), store it and audit it in the
caller's transaction. ``rtm pathways publish`` calls it; a manager page would too."""

from __future__ import annotations

import asyncpg

from pathways.model import Pathway, builtin
from streams.db.access import audit
from streams.db.pathway_versions import insert_version, lock_version, stored_version


class VersionConflict(Exception):
    """The id and version are published (or built in) with other content: a changed
    pathway needs a new version."""


async def publish(
    conn: asyncpg.Connection, org_id: str, pathway: Pathway, actor: str, role: str
) -> bool:
    """Publish ``pathway`` for the organisation (audited); False if this very version with
    the same content is published already (nothing changes). Raises VersionConflict for a
    version published, or built in, with other content."""
    async with conn.transaction():
        await lock_version(conn, org_id, pathway.key)
        existing = builtin().get(pathway.key) or await stored_version(
            conn, org_id, pathway.id, pathway.version
        )
        if existing is not None:
            if existing != pathway:
                raise VersionConflict(
                    f"{pathway.key} is published with other content;"
                    " a changed pathway needs a new version"
                )
            return False
        await insert_version(conn, org_id, pathway, actor)
        await audit(
            conn,
            org_id=org_id,
            actor=actor,
            role=role,
            action="pathways.published",
            resource="rtm pathways publish",
            detail={"pathway": pathway.id, "version": pathway.version},
        )
    return True
