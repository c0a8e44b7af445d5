"""The billing ledger's tables: data days, time logs, episode events (SQL only).

``write_ledger`` writes one batch's ledger rows (``billing.ledger.ledger_rows``), one
``unnest`` round trip per table, ``ON CONFLICT DO NOTHING`` (a re-delivered event adds
nothing), inside the ingest step's batch transaction (agents/pipeline.py). ``ledger_states``
and ``load_states`` give the ledger back as the states the offline fold gives
(``billing.state.fold_events``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from billing.ledger import LedgerRows, states_from_rows
from billing.state import PatientBillingState
from schemas.events import PatientKey
from streams.db.events import EventStore

# Every row names the patient's organisation first (a patient is (org_id, patient_id)).
_INSERT_DAYS = """
INSERT INTO billing_data_days (org_id, patient_id, local_date, episode_id, first_event_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::text[])
ON CONFLICT DO NOTHING
"""
_INSERT_LOGS = """
INSERT INTO billing_time_logs (org_id, event_id, patient_id, episode_id, local_date,
                               occurred_at, utc_offset_s, minutes, clinician_role, interactive,
                               supersedes)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::date[],
                     $6::timestamptz[], $7::int[], $8::int[], $9::text[], $10::bool[],
                     $11::text[])
ON CONFLICT DO NOTHING
"""
_INSERT_EPISODE_EVENTS = """
INSERT INTO billing_episode_events (org_id, event_id, patient_id, type, episode_id,
                                    occurred_at, payload)
SELECT org, e, p, t, ep, o, pl::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::text[])
    AS u(org, e, p, t, ep, o, pl)
ON CONFLICT DO NOTHING
"""


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def write_ledger(conn: asyncpg.Connection, rows: LedgerRows) -> tuple[int, int, int]:
    """Write one batch in one transaction; returns newly inserted (days, logs, episode events)."""
    new = [0, 0, 0]
    async with conn.transaction():
        tables: tuple[tuple[str, Sequence[tuple[Any, ...]], int], ...] = (
            (_INSERT_DAYS, rows.data_days, 5),
            (_INSERT_LOGS, rows.time_logs, 11),
            (_INSERT_EPISODE_EVENTS, rows.episode_events, 7),
        )
        for i, (sql, data, width) in enumerate(tables):
            if data:
                new[i] = _count(await conn.execute(sql, *_columns(data, width)))
    return new[0], new[1], new[2]


async def ledger_states(
    source: asyncpg.Connection | EventStore,
    org_id: str | None = None,
    patient_ids: Sequence[str] | None = None,
) -> dict[PatientKey, PatientBillingState]:
    """The ledger as per-patient states by (organisation, patient_id): of every
    organisation or of ``org_id``, all its patients or those given; equal to what
    ``billing.state.fold_events`` gives over the same events."""
    if isinstance(source, EventStore):
        async with source.acquire() as conn:
            return await ledger_states(conn, org_id, patient_ids)
    conds: list[str] = []
    args: list[Any] = []
    if org_id is not None:
        args.append(org_id)
        conds.append(f"org_id = ${len(args)}")
    if patient_ids is not None:
        args.append(list(patient_ids))
        conds.append(f"patient_id = ANY(${len(args)}::text[])")
    where = " WHERE " + " AND ".join(conds) if conds else ""
    days = await source.fetch(
        "SELECT org_id, patient_id, local_date, episode_id FROM billing_data_days" + where, *args
    )
    logs = await source.fetch(
        "SELECT org_id, event_id, patient_id, episode_id, local_date, occurred_at, utc_offset_s,"
        " minutes, clinician_role, interactive, supersedes FROM billing_time_logs" + where,
        *args,
    )
    eps = await source.fetch(
        "SELECT org_id, event_id, patient_id, payload::text AS payload"
        " FROM billing_episode_events" + where,
        *args,
    )
    return states_from_rows(days, logs, eps)


async def load_states(
    source: asyncpg.Connection | EventStore,
    org_id: str,
    patient_ids: Sequence[str] | None = None,
) -> dict[str, PatientBillingState]:
    """The ledger of one organisation's patients (all, or those given) by patient_id."""
    return {pid: st for (_, pid), st in (await ledger_states(source, org_id, patient_ids)).items()}


async def patient_known(conn: asyncpg.Connection, org_id: str, patient_id: str) -> bool:
    """Whether the ledger holds anything of the patient (an episode event, a data day or a
    time log)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM billing_episode_events"
            "               WHERE org_id = $1 AND patient_id = $2)"
            " OR EXISTS (SELECT 1 FROM billing_data_days WHERE org_id = $1 AND patient_id = $2)"
            " OR EXISTS (SELECT 1 FROM billing_time_logs WHERE org_id = $1 AND patient_id = $2)",
            org_id,
            patient_id,
        )
    )
