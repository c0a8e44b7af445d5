"""Licence activations of licence-gated instruments (``instrument_activations``, migration
030): appended by `rtm instruments activate`, never changed; read as
``outcomes.licences.Activation`` for the pure ``usable_as_primary``."""

from __future__ import annotations

import asyncpg

from outcomes.licences import Activation


async def add_activation(conn: asyncpg.Connection, a: Activation, by: str) -> int:
    """Append one activation; returns its id."""
    activation_id: int = await conn.fetchval(
        "INSERT INTO instrument_activations"
        " (org_id, instrument, licence_ref, activated_at, valid_until, activated_by)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING activation_id",
        a.org_id,
        a.instrument,
        a.licence_ref,
        a.activated_at,
        a.valid_until,
        by,
    )
    return activation_id


async def activations(conn: asyncpg.Connection, org_id: str) -> list[tuple[Activation, str]]:
    """The organisation's activations, oldest first, each with who activated it."""
    rows = await conn.fetch(
        "SELECT org_id, instrument, licence_ref, activated_at, valid_until, activated_by"
        " FROM instrument_activations WHERE org_id = $1 ORDER BY activated_at, activation_id",
        org_id,
    )
    return [
        (
            Activation(
                r["org_id"], r["instrument"], r["licence_ref"], r["activated_at"], r["valid_until"]
            ),
            r["activated_by"],
        )
        for r in rows
    ]
