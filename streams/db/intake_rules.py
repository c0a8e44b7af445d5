"""Per-organisation intake rule sets (``intake_rule_sets``, migration 022): stored by `rtm
intake rules set`, read by the worker (the newest of each organisation) and by `rtm intake
rules show`."""

from __future__ import annotations

import asyncpg

from intake.rules import IntakeRules


class RuleSetConflict(Exception):
    """The organisation already stored this version with other rules (versions are
    immutable: each routing records the version it used)."""


async def store_rules(conn: asyncpg.Connection, org_id: str, rules: IntakeRules, by: str) -> bool:
    """Store ``rules`` as the organisation's newest rule set; False if this very version
    with the same rules is stored already (nothing changes). Raises RuleSetConflict for a
    stored version with other rules."""
    text = rules.model_dump_json()
    stored = await conn.fetchval(
        "SELECT rules::text FROM intake_rule_sets WHERE org_id = $1 AND version = $2",
        org_id,
        rules.version,
    )
    if stored is not None:
        if IntakeRules.model_validate_json(stored) != rules:
            raise RuleSetConflict(
                f"version {rules.version!r} of {org_id} is stored with other rules;"
                " a changed rule set needs a new version"
            )
        return False
    await conn.execute(
        "INSERT INTO intake_rule_sets (org_id, version, rules, created_by)"
        " VALUES ($1, $2, $3::jsonb, $4)",
        org_id,
        rules.version,
        text,
        by,
    )
    return True


async def current_rules(conn: asyncpg.Connection) -> dict[str, IntakeRules]:
    """Each organisation's rule set in force: its newest."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (org_id) org_id, rules::text AS rules FROM intake_rule_sets"
        " ORDER BY org_id, created_at DESC, version DESC"
    )
    return {r["org_id"]: IntakeRules.model_validate_json(r["rules"]) for r in rows}
