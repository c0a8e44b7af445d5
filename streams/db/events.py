"""The events hypertable and its idempotency ledger (``event_ids``): the batch's reads and
writes of them, the dead-letter refusal probe, and the reads of raw events (patient
history, exports, demo). ``EventStore`` is the pool (streams/db/pool.py) with the gateway's
two event writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.events import DEFAULT_ORG, Event, PatientKey
from streams.db.pool import Pool


@dataclass(frozen=True)
class WriteResult:
    stored: int
    duplicates: int


def event_row(event: Event, raw: bytes | None = None) -> tuple[Any, ...]:
    """One event's columns; ``raw``: its JSON as received (validated by the contract: the
    same document, so it is stored as it is instead of serialising the model again)."""
    off = event.occurred_at.utcoffset()
    return (
        event.patient_key[0],
        event.event_id,
        event.type,
        event.patient_id,
        getattr(event, "episode_id", None),
        event.occurred_at,
        event.local_date,
        int(off.total_seconds()) if off is not None else 0,
        event.received_at,
        raw.decode() if raw is not None else event.model_dump_json(exclude_none=True),
    )


# The idempotency ledger first: the (organisation, event_id) pairs it did not hold are the new
# events, the only ones the hypertable gets (by COPY, below).
_INSERT_IDS = """
INSERT INTO event_ids (org_id, event_id, occurred_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT (org_id, event_id) DO NOTHING
RETURNING org_id, event_id
"""

# events' columns as ``event_row`` gives them (stored_at: the column's default, the
# transaction's now)
EVENT_COLUMNS = (
    "org_id",
    "event_id",
    "type",
    "patient_id",
    "episode_id",
    "occurred_at",
    "local_date",
    "utc_offset_s",
    "received_at",
    "payload",
)
_ORG, _ID, _OCCURRED = 0, 1, 5  # their places in a row

# An event's identity: (organisation, event_id). Event ids are the producers' idempotency
# keys and unique per organisation only: another organisation's event with the same id is
# a new event, never a duplicate of it.
EventKey = tuple[str, str]


def event_key(event: Event) -> EventKey:
    return (event.patient_key[0], event.event_id)


async def insert_new_events(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    payloads: Mapping[EventKey, bytes] | None = None,
) -> set[EventKey]:
    """Store each (organisation, event_id) once (inside the caller's transaction); returns
    the keys that were new, i.e. the events every derived effect must take (the rest are
    re-deliveries). Two round trips: the ledger's insert says which are new, then COPY
    writes those (an unnest insert of both tables in one statement cost the database a
    third more CPU per row: docs/benchmarks.md, sixth round)."""
    raws = payloads or {}
    unique: dict[EventKey, tuple[Any, ...]] = {}
    for ev in events:
        key = event_key(ev)
        if key not in unique:
            unique[key] = event_row(ev, raws.get(key))
    if not unique:
        return set()
    rows = list(unique.values())
    fresh = await conn.fetch(
        _INSERT_IDS, [r[_ORG] for r in rows], [r[_ID] for r in rows], [r[_OCCURRED] for r in rows]
    )
    new = {(r["org_id"], r["event_id"]) for r in fresh}
    if new:
        await conn.copy_records_to_table(
            "events",
            records=[r for r in rows if (r[_ORG], r[_ID]) in new],
            columns=EVENT_COLUMNS,
        )
    return new


async def known_events(conn: asyncpg.Connection, keys: Iterable[EventKey]) -> set[EventKey]:
    """Which of these (organisation, event_id) keys are stored already (re-deliveries)."""
    unique = sorted(set(keys))
    if not unique:
        return set()
    rows = await conn.fetch(
        "SELECT i.org_id, i.event_id FROM event_ids i"
        " JOIN unnest($1::text[], $2::text[]) AS k(o, e) ON i.org_id = k.o AND i.event_id = k.e",
        [k[0] for k in unique],
        [k[1] for k in unique],
    )
    return {(r["org_id"], r["event_id"]) for r in rows}


# A record the database refuses for what it contains (not a transient fault): SQLSTATE
# class 22 (data exception: bad text, NUL, out-of-range datetime) and client-side encoding.
CONTENT_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, ValueError, OverflowError)


async def refused_for_content(
    conn: asyncpg.Connection, events: Sequence[Event]
) -> dict[EventKey, str]:
    """(organisation, event_id) -> the database's reason, for each event it refuses on its
    own. Each event is tried in a savepoint that is always rolled back: nothing is written."""

    class _Rollback(Exception):
        pass

    refused: dict[EventKey, str] = {}
    for ev in events:
        try:
            async with conn.transaction():
                await insert_new_events(conn, [ev])
                raise _Rollback
        except _Rollback:
            pass
        except CONTENT_ERRORS as exc:
            refused[event_key(ev)] = f"{type(exc).__name__}: {exc}"[:500]
    return refused


async def patient_payloads(conn: asyncpg.Connection, org_id: str, patient_id: str) -> list[str]:
    """The patient's (of ``org_id``) stored events (JSON) in arrival order (stored_at, then
    event time)."""
    rows = await conn.fetch(
        "SELECT payload FROM events WHERE org_id = $1 AND patient_id = $2"
        " ORDER BY stored_at, occurred_at",
        org_id,
        patient_id,
    )
    return [r["payload"] for r in rows]


async def org_payloads(conn: asyncpg.Connection, org_id: str, types: Iterable[str]) -> list[str]:
    """The organisation's stored events (JSON) of these types, by event time then event id
    (the outcome report and the pathway diff read them; issue 19)."""
    rows = await conn.fetch(
        "SELECT payload::text AS p FROM events WHERE org_id = $1 AND type = ANY($2::text[])"
        " ORDER BY occurred_at, event_id",
        org_id,
        sorted(types),
    )
    return [r["p"] for r in rows]


async def keyed_payloads(
    conn: asyncpg.Connection, patients: Sequence[PatientKey], types: Iterable[str]
) -> list[str]:
    """The stored events (JSON) of these types of these (organisation, patient)s, by event
    time then event id (the refresh folds their care pathways)."""
    if not patients:
        return []
    rows = await conn.fetch(
        "SELECT e.payload::text AS p FROM events e"
        " JOIN unnest($1::text[], $2::text[]) AS k(o, pid)"
        "   ON e.org_id = k.o AND e.patient_id = k.pid"
        " WHERE e.type = ANY($3::text[]) ORDER BY e.occurred_at, e.event_id",
        [k[0] for k in patients],
        [k[1] for k in patients],
        sorted(types),
    )
    return [r["p"] for r in rows]


async def count_org_events(conn: asyncpg.Connection, org_id: str, types: Iterable[str]) -> int:
    """How many events of these types the organisation has stored."""
    n = await conn.fetchval(
        "SELECT count(*) FROM events WHERE org_id = $1 AND type = ANY($2::text[])",
        org_id,
        sorted(types),
    )
    return int(n)


async def patient_has_events(conn: asyncpg.Connection, org_id: str, patient_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM events WHERE org_id = $1 AND patient_id = $2)",
            org_id,
            patient_id,
        )
    )


async def pain_reports(
    conn: asyncpg.Connection,
    org_id: str,
    patient_id: str,
    frm: dt.date | None,
    to: dt.date | None,
) -> list[asyncpg.Record]:
    """event_id, local_date, payload of the patient's pain reports in [frm, to], by time."""
    return list(
        await conn.fetch(
            "SELECT event_id, local_date, payload FROM events"
            " WHERE org_id = $1 AND patient_id = $2 AND type = 'pain.reported'"
            " AND ($3::date IS NULL OR local_date >= $3) AND ($4::date IS NULL OR local_date <= $4)"
            " ORDER BY occurred_at",
            org_id,
            patient_id,
            frm,
            to,
        )
    )


async def clinical_payloads(
    conn: asyncpg.Connection,
    org_id: str,
    patient_id: str,
    types: Sequence[str],
    frm: dt.date | None,
    to: dt.date | None,
) -> list[str]:
    """The patient's stored events (JSON) of these types with a patient-local date in
    [frm, to] (either end open), by event time then event id (FHIR Observation export)."""
    rows = await conn.fetch(
        "SELECT payload::text AS p FROM events"
        " WHERE org_id = $1 AND patient_id = $2 AND type = ANY($3::text[])"
        " AND ($4::date IS NULL OR local_date >= $4) AND ($5::date IS NULL OR local_date <= $5)"
        " ORDER BY occurred_at, event_id",
        org_id,
        patient_id,
        list(types),
        frm,
        to,
    )
    return [r["p"] for r in rows]


async def event_payloads(
    conn: asyncpg.Connection,
    types: Iterable[str],
    patient_prefix: str | None = None,
    batch: int = 5000,
) -> AsyncIterator[list[str]]:
    """Stored events (JSON) of these types, of every organisation (each payload names its
    own), optionally of patients whose id starts with ``patient_prefix``, in lists of
    ``batch`` (a server-side cursor: memory stays flat)."""
    where, args = "type = ANY($1::text[])", [sorted(types)]
    if patient_prefix:
        where += " AND starts_with(patient_id, $2)"
        args.append(patient_prefix)  # type: ignore[arg-type]
    async with conn.transaction():
        out: list[str] = []
        async for r in conn.cursor(
            f"SELECT payload::text AS p FROM events WHERE {where}", *args, prefetch=batch
        ):
            out.append(r["p"])
            if len(out) >= batch:
                yield out
                out = []
        if out:
            yield out


async def count_stored(
    conn: asyncpg.Connection, ids: Sequence[str], org_id: str = DEFAULT_ORG
) -> int:
    """How many of these event ids of ``org_id`` are stored (the idempotency ledger)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM event_ids WHERE org_id = $2 AND event_id = ANY($1::text[])",
            list(ids),
            org_id,
        )
    )


async def count_by_type(
    conn: asyncpg.Connection, ids: Sequence[str], org_id: str = DEFAULT_ORG
) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT type, count(*) AS n FROM events WHERE org_id = $2"
        " AND event_id = ANY($1::text[]) GROUP BY type",
        list(ids),
        org_id,
    )
    return {r["type"]: int(r["n"]) for r in rows}


async def patients_events(
    conn: asyncpg.Connection, patient_ids: Sequence[str], org_id: str = DEFAULT_ORG
) -> list[asyncpg.Record]:
    """patient_id, payload of these patients' (of ``org_id``) events, per patient in
    arrival order."""
    return list(
        await conn.fetch(
            "SELECT patient_id, payload FROM events WHERE org_id = $2"
            " AND patient_id = ANY($1::text[]) ORDER BY patient_id, stored_at, occurred_at",
            list(patient_ids),
            org_id,
        )
    )


class EventStore(Pool):
    """The pool, with the gateway's writes and reads of the events table."""

    async def insert_events(self, events: Sequence[Event]) -> WriteResult:
        """Store each (organisation, event_id) once, however often it is delivered
        (``insert_new_events``, in one transaction)."""
        if not events:
            return WriteResult(0, 0)
        async with self.acquire() as conn, conn.transaction():
            stored = len(await insert_new_events(conn, events))
        return WriteResult(stored=stored, duplicates=len(events) - stored)

    async def known_event_ids(self, org_id: str, ids: Sequence[str]) -> set[str]:
        """Which of these event ids ``org_id`` has stored (another organisation's are not
        its duplicates, and are not told)."""
        rows = await self._by_ids(
            "SELECT event_id FROM event_ids WHERE org_id = $1 AND event_id = ANY($2::text[])",
            org_id,
            ids,
        )
        return {r["event_id"] for r in rows}

    async def time_log_patients(self, org_id: str, ids: Sequence[str]) -> dict[str, str]:
        """event_id -> patient_id of those of ``ids`` that are time logs ``org_id``'s ledger
        holds (what a correction's ``supersedes`` may name)."""
        rows = await self._by_ids(
            "SELECT event_id, patient_id FROM billing_time_logs"
            " WHERE org_id = $1 AND event_id = ANY($2::text[])",
            org_id,
            ids,
        )
        return {r["event_id"]: r["patient_id"] for r in rows}

    async def _by_ids(self, sql: str, org_id: str, ids: Sequence[str]) -> list[asyncpg.Record]:
        """A request's lookup of an organisation's rows by a list of ids, planned for this
        call's values (``plan_cache_mode``). A connection's cached generic plan, made while
        the table was small, read the organisation's rows through the index's first column
        and compared each with every id: 95 ms a 500-event request at 3,700 stored events,
        growing with the table, against 1-4 ms planned for the ids (docs/benchmarks.md,
        ninth round)."""
        async with self.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            return list(await conn.fetch(sql, org_id, list(ids)))
