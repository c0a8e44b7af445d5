"""The RTM ledger (data days, time logs, episode events) and the record of exports.

``write_ledger`` writes one batch's ledger rows, one ``unnest`` round trip per table,
``ON CONFLICT DO NOTHING`` (a re-delivered event adds nothing), inside the ingest step's
batch transaction (agents/pipeline.py). ``load_states`` gives the ledger back as states
equal to the offline fold; ``export_claims`` chooses and records an export under an
advisory lock. Shared by the worker, ``rtm billing`` and the gateway's billing routes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from billing.ledger import LedgerRows, states_from_rows
from billing.rules import ClaimLine
from billing.state import PatientBillingState
from streams.db.events import EventStore

log = logging.getLogger(__name__)
EXPORT_LOCK_KEY = 7_270_503  # pg_advisory_xact_lock id: one export recorded at a time

_INSERT_DAYS = """
INSERT INTO billing_data_days (patient_id, local_date, episode_id, first_event_id)
SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[])
ON CONFLICT DO NOTHING
"""
_INSERT_LOGS = """
INSERT INTO billing_time_logs (event_id, patient_id, episode_id, local_date, occurred_at,
                               utc_offset_s, minutes, clinician_role, interactive)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::timestamptz[],
                     $6::int[], $7::int[], $8::text[], $9::bool[])
ON CONFLICT DO NOTHING
"""
_INSERT_EPISODE_EVENTS = """
INSERT INTO billing_episode_events (event_id, patient_id, type, episode_id, occurred_at, payload)
SELECT e, p, t, ep, o, pl::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
    AS u(e, p, t, ep, o, pl)
ON CONFLICT DO NOTHING
"""


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(c) for c in zip(*rows)] if rows else [[] for _ in range(width)]


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def write_ledger(conn: asyncpg.Connection, rows: LedgerRows) -> tuple[int, int, int]:
    """Write one batch in one transaction; returns newly inserted (days, logs, episode events)."""
    new = [0, 0, 0]
    async with conn.transaction():
        for i, (sql, data, width) in enumerate((
            (_INSERT_DAYS, rows.data_days, 4),
            (_INSERT_LOGS, rows.time_logs, 9),
            (_INSERT_EPISODE_EVENTS, rows.episode_events, 6),
        )):
            if data:
                new[i] = _count(await conn.execute(sql, *_columns(data, width)))
    return new[0], new[1], new[2]


async def load_states(
    source: asyncpg.Connection | EventStore, patient_ids: Sequence[str] | None = None
) -> dict[str, PatientBillingState]:
    """The ledger as per-patient states (all patients, or those given), equal to what
    ``billing.ledger.fold_for_billing`` gives over the same events."""
    if isinstance(source, EventStore):
        async with source.acquire() as conn:
            return await load_states(conn, patient_ids)
    where, args = ("", []) if patient_ids is None else (" WHERE patient_id = ANY($1::text[])",
                                                        [list(patient_ids)])
    days = await source.fetch(
        "SELECT patient_id, local_date, episode_id FROM billing_data_days" + where, *args)
    logs = await source.fetch(
        "SELECT event_id, patient_id, episode_id, local_date, occurred_at, utc_offset_s,"
        " minutes, clinician_role, interactive FROM billing_time_logs" + where, *args)
    eps = await source.fetch(
        "SELECT event_id, patient_id, payload::text AS payload FROM billing_episode_events"
        + where, *args)
    return states_from_rows(days, logs, eps)


async def patient_known(conn: asyncpg.Connection, patient_id: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM billing_episode_events WHERE patient_id = $1)"
        " OR EXISTS (SELECT 1 FROM billing_data_days WHERE patient_id = $1)"
        " OR EXISTS (SELECT 1 FROM billing_time_logs WHERE patient_id = $1)", patient_id))


# --- record of exports ----------------------------------------------------------------------


async def previous_exports(
    conn: asyncpg.Connection, patient_ids: Sequence[str]
) -> list[list[ClaimLine]]:
    """Recorded exports touching these patients, oldest first, each as its lines of those
    patients (feed to ``billing.amend.standing_lines``)."""
    rows = await conn.fetch(
        "SELECT export_id, line::text AS line FROM billing_export_lines"
        " WHERE patient_id = ANY($1::text[]) ORDER BY export_id, line_no",
        list(patient_ids),
    )
    out: dict[int, list[ClaimLine]] = {}
    for r in rows:
        out.setdefault(r["export_id"], []).append(ClaimLine.model_validate_json(r["line"]))
    return [out[k] for k in sorted(out)]


async def record_export(
    conn: asyncpg.Connection,
    lines: Sequence[ClaimLine],
    *,
    created_by: str,
    as_of: dt.datetime,
    date_from: dt.date,
    date_to: dt.date,
    fmt: str,
    conventions: str,
    org_id: str | None = None,
) -> int:
    """Record an export (call inside the transaction that chose its lines); returns its id."""
    billed = [ln for ln in lines if ln.status != "preview"]
    export_id = int(await conn.fetchval(
        "INSERT INTO billing_exports (created_by, as_of, date_from, date_to, format,"
        " line_count, conventions, org_id) VALUES ($1, $2, $3, $4, $5, $6, $7,"
        " coalesce($8, 'default')) RETURNING export_id",
        created_by, as_of, date_from, date_to, fmt, len(billed), conventions, org_id,
    ))
    if billed:
        await conn.execute(
            "INSERT INTO billing_export_lines (export_id, line_no, patient_id, episode_id, cpt,"
            " date_of_service, period_start, status, line)"
            " SELECT $1, * FROM unnest($2::int[], $3::text[], $4::text[], $5::text[],"
            " $6::date[], $7::date[], $8::text[], $9::jsonb[])",
            export_id,
            list(range(1, len(billed) + 1)),
            [ln.patient_id for ln in billed],
            [ln.episode_id for ln in billed],
            [ln.cpt for ln in billed],
            [ln.date_of_service for ln in billed],
            [ln.period_start for ln in billed],
            [ln.status for ln in billed],
            [orjson.dumps(ln.model_dump(mode="json")).decode() for ln in billed],
        )
    return export_id


async def lock_exports(conn: asyncpg.Connection) -> None:
    """Serialise exports (inside a transaction) so two cannot bill the same group."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", EXPORT_LOCK_KEY)


# --- export (shared by `rtm billing export` and GET /v1/billing/claims) ---------------------

class ExportResult:
    def __init__(self, lines: list[ClaimLine], withdrawn: list[ClaimLine],
                 export_id: int | None, elapsed_s: float) -> None:
        self.lines = lines
        self.withdrawn = withdrawn
        self.export_id = export_id
        self.elapsed_s = elapsed_s


async def export_claims(
    conn: asyncpg.Connection,
    *,
    date_from: dt.date,
    date_to: dt.date,
    as_of: dt.datetime,
    include_open: bool = False,
    record: bool = True,
    created_by: str = "unknown",
    fmt: str = "csv",
    config: Any = None,
    org_id: str | None = None,
) -> ExportResult:
    """The lines of the next export: claims as of ``as_of`` with a date of service in
    [date_from, date_to], less what earlier recorded exports already billed unchanged,
    changed groups marked ``amended``. Recorded (when ``record``) in the same transaction,
    under an advisory lock, so two exports cannot bill one group twice. A preview
    (``include_open``) is never recorded: it bills nothing. With ``org_id``, only that
    organisation's patients (``patient_orgs``), and the export is recorded as its own."""
    import time

    from billing.amend import lines_to_export, standing_lines, withdrawn_lines
    from billing.config import DEFAULT_CONFIG
    from billing.rules import compute_claims

    config = config or DEFAULT_CONFIG
    t0 = time.perf_counter()
    record = record and not include_open
    async with conn.transaction():
        if record:
            await lock_exports(conn)
        patient_ids = None
        if org_id is not None:
            patient_ids = [r["patient_id"] for r in await conn.fetch(
                "SELECT patient_id FROM patient_orgs WHERE org_id = $1", org_id)]
        states = await load_states(conn, patient_ids)
        claims = [ln for ln in compute_claims(states.values(), as_of, config, include_open)
                  if date_from <= ln.date_of_service <= date_to]
        patients = sorted(states)
        standing = standing_lines(await previous_exports(conn, patients))
        lines = lines_to_export(standing, claims)
        in_range = [ln for ln in standing if date_from <= ln.date_of_service <= date_to]
        withdrawn = withdrawn_lines(in_range, claims)
        export_id = None
        if record:
            export_id = await record_export(
                conn, lines, created_by=created_by, as_of=as_of, date_from=date_from,
                date_to=date_to, fmt=fmt, conventions=config.header_text(),
                org_id=org_id)
    return ExportResult(lines, withdrawn, export_id, time.perf_counter() - t0)


async def export_history(conn: asyncpg.Connection, org_id: str, limit: int = 50
                         ) -> list[asyncpg.Record]:
    """The organisation's recorded exports, newest first (who, when, what)."""
    return list(await conn.fetch(
        "SELECT export_id, created_at, created_by, as_of, date_from, date_to, format,"
        " line_count FROM billing_exports WHERE org_id = $1 ORDER BY export_id DESC LIMIT $2",
        org_id, limit))


async def exported_lines(conn: asyncpg.Connection, org_id: str, export_id: int
                         ) -> tuple[asyncpg.Record, list[ClaimLine]] | None:
    """A recorded export of the organisation and its lines as billed (to download again);
    None for an export of another organisation or none at all."""
    head = await conn.fetchrow(
        "SELECT export_id, created_at, created_by, as_of, date_from, date_to, format,"
        " line_count FROM billing_exports WHERE export_id = $1 AND org_id = $2",
        export_id, org_id)
    if head is None:
        return None
    rows = await conn.fetch("SELECT line::text AS line FROM billing_export_lines"
                            " WHERE export_id = $1 ORDER BY line_no", export_id)
    return head, [ClaimLine.model_validate_json(r["line"]) for r in rows]
