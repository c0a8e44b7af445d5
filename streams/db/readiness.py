"""Claim readiness in PostgreSQL (migration 025; docs/billing-readiness.md): the
per-organisation stream switch (``billing_stream_modes``, `rtm billing streams set`), the
fact streams each organisation has sent (``billing_streams_seen``), each claim line's
readiness as the worker streams it (``billing_line_readiness``) and what the worker reads
to assess a batch's patients (``readiness_load``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import asyncpg
import orjson

from billing.fees import FeeEntry
from billing.readiness import STREAM_OF_TYPE, AssessedLine, Readiness, Stream, StreamMode
from billing.rules import ClaimLine
from billing.state import PatientBillingState
from schemas.events import Event, PatientKey, parse_event_json
from streams.db.claims import fee_entries
from streams.db.ledger import ledger_states

# The readiness facts' event types, and the episode starts naming each line's organisation.
READINESS_EVENT_TYPES: tuple[str, ...] = (*STREAM_OF_TYPE, "episode.started")
# the types as a SQL literal list: the predicate of the partial index events_readiness_facts
# (infra/migrations/037), which the planner uses only for the same literal list
_FACT_TYPES_SQL = ", ".join(f"'{t}'" for t in READINESS_EVENT_TYPES)

Modes = dict[str, dict[Stream, StreamMode]]


# --- the stream switch -----------------------------------------------------------------------


async def stream_modes(conn: asyncpg.Connection, org_ids: Sequence[str] | None = None) -> Modes:
    """The modes set (no row: ``auto``) of ``org_ids`` (None: every organisation)."""
    if org_ids is None:
        rows = await conn.fetch("SELECT org_id, stream, mode FROM billing_stream_modes")
    else:
        rows = await conn.fetch(
            "SELECT org_id, stream, mode FROM billing_stream_modes WHERE org_id = ANY($1::text[])",
            list(org_ids),
        )
    out: Modes = {}
    for r in rows:
        out.setdefault(r["org_id"], {})[cast(Stream, r["stream"])] = cast(StreamMode, r["mode"])
    return out


async def set_stream_mode(
    conn: asyncpg.Connection,
    org_id: str,
    stream: Stream,
    mode: StreamMode,
    by: str,
    at: dt.datetime,
) -> StreamMode:
    """Set the organisation's mode of a stream; returns the mode it had (``auto`` if none)."""
    before = await conn.fetchval(
        "SELECT mode FROM billing_stream_modes WHERE org_id = $1 AND stream = $2 FOR UPDATE",
        org_id,
        stream,
    )
    await conn.execute(
        "INSERT INTO billing_stream_modes (org_id, stream, mode, set_by, set_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, stream) DO UPDATE"
        " SET mode = EXCLUDED.mode, set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at",
        org_id,
        stream,
        mode,
        by,
        at,
    )
    return cast(StreamMode, before or "auto")


# --- the streams sent ------------------------------------------------------------------------


async def streams_seen(conn: asyncpg.Connection, org_ids: Sequence[str]) -> set[tuple[str, Stream]]:
    rows = await conn.fetch(
        "SELECT org_id, stream FROM billing_streams_seen WHERE org_id = ANY($1::text[])",
        list(org_ids),
    )
    return {(r["org_id"], cast(Stream, r["stream"])) for r in rows}


async def record_streams_seen(
    conn: asyncpg.Connection, first: Iterable[tuple[str, Stream, str]]
) -> None:
    """(organisation, stream, first event id): kept once (the first written stays)."""
    rows = sorted(first)
    if rows:
        await conn.executemany(
            "INSERT INTO billing_streams_seen (org_id, stream, first_event_id)"
            " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            rows,
        )


# --- what a batch reads to assess its patients --------------------------------------------------


@dataclass
class ReadinessLoad:
    """The stored inputs of the patients a batch assesses: their billing states (the
    ledger), their readiness facts and episode starts (the event log), their organisations'
    modes and the streams they have sent, the fee schedule and each organisation's
    localities by billing NPI (its billing profiles')."""

    patients: tuple[PatientKey, ...] = ()  # whose lines are assessed (and replaced)
    states: dict[PatientKey, PatientBillingState] = field(default_factory=dict)
    facts: dict[PatientKey, list[Event]] = field(default_factory=dict)
    modes: Modes = field(default_factory=dict)
    seen: set[tuple[str, Stream]] = field(default_factory=set)
    fees: list[FeeEntry] = field(default_factory=list)
    localities: dict[str, dict[str, str]] = field(default_factory=dict)


async def ledger_orgs(conn: asyncpg.Connection) -> list[str]:
    """Every organisation the billing ledger knows."""
    rows = await conn.fetch(
        "SELECT DISTINCT org_id FROM billing_episode_events"
        " UNION SELECT DISTINCT org_id FROM billing_data_days ORDER BY 1"
    )
    return [r["org_id"] for r in rows]


async def org_patients(conn: asyncpg.Connection, org_ids: Sequence[str]) -> list[PatientKey]:
    """Every patient of these organisations the ledger knows."""
    rows = await conn.fetch(
        "SELECT org_id, patient_id FROM billing_episode_events WHERE org_id = ANY($1::text[])"
        " UNION SELECT org_id, patient_id FROM billing_data_days WHERE org_id = ANY($1::text[])"
        " UNION SELECT org_id, patient_id FROM billing_time_logs WHERE org_id = ANY($1::text[])",
        list(org_ids),
    )
    return sorted((r["org_id"], r["patient_id"]) for r in rows)


async def _load_patients(
    conn: asyncpg.Connection, load: ReadinessLoad, patients: Sequence[PatientKey]
) -> None:
    """Add ``patients``' billing states and readiness facts to ``load``."""
    if not patients:
        return
    load.patients = tuple(sorted({*load.patients, *patients}))
    by_org: dict[str, list[str]] = {}
    for org, pid in patients:
        by_org.setdefault(org, []).append(pid)
    for org, pids in sorted(by_org.items()):
        load.states.update(await ledger_states(conn, org, pids))
    rows = await conn.fetch(
        "SELECT e.org_id, e.patient_id, e.payload::text AS p FROM events e"
        " JOIN unnest($1::text[], $2::text[]) AS k(org_id, patient_id)"
        "   ON e.org_id = k.org_id AND e.patient_id = k.patient_id"
        f" WHERE e.type IN ({_FACT_TYPES_SQL})",
        [k[0] for k in patients],
        [k[1] for k in patients],
    )
    for r in rows:
        load.facts.setdefault((r["org_id"], r["patient_id"]), []).append(parse_event_json(r["p"]))


async def readiness_load(conn: asyncpg.Connection, touched: Sequence[PatientKey]) -> ReadinessLoad:
    """What assessing the ``touched`` patients needs; when their facts hold an
    organisation's first fact of a stream (one it has not sent before), every patient of
    that organisation too (whose lines that changes)."""
    orgs = sorted({k[0] for k in touched})
    load = ReadinessLoad()
    load.seen = await streams_seen(conn, orgs)
    await _load_patients(conn, load, sorted(set(touched)))
    sent = {
        (k[0], STREAM_OF_TYPE[e.type])
        for k, es in load.facts.items()
        for e in es
        if e.type in STREAM_OF_TYPE
    }
    first = sorted({org for org, s in sent if (org, s) not in load.seen})
    if first:
        others = sorted(set(await org_patients(conn, first)) - set(load.patients))
        await _load_patients(conn, load, others)
    load.modes = await stream_modes(conn, orgs)
    load.fees = await fee_entries(conn)
    profiles = await conn.fetch(
        "SELECT org_id, billing_npi, profile->>'locality' AS locality FROM billing_profiles"
        " WHERE org_id = ANY($1::text[]) AND coalesce(profile->>'locality', '') <> ''",
        list(orgs),
    )
    for p in profiles:
        load.localities.setdefault(p["org_id"], {})[p["billing_npi"]] = p["locality"]
    return load


# --- the stored lines ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadinessWrite:
    """What a batch decided about readiness: the lines of ``patients`` (replaced whole:
    (organisation, line, when its period closes)), assessed at ``at``, and the streams sent
    for the first time ((organisation, stream, event id))."""

    patients: tuple[PatientKey, ...] = ()
    lines: tuple[tuple[str, AssessedLine, dt.datetime], ...] = ()
    first_streams: tuple[tuple[str, Stream, str], ...] = ()
    at: dt.datetime | None = None

    @property
    def empty(self) -> bool:
        return not (self.patients or self.first_streams)


async def write_readiness(conn: asyncpg.Connection, w: ReadinessWrite) -> None:
    await record_streams_seen(conn, w.first_streams)
    if w.at is not None:
        await write_line_readiness(conn, w.patients, w.lines, w.at)


@dataclass(frozen=True)
class StoredReadiness:
    org_id: str
    line: ClaimLine
    readiness: Readiness
    checks: tuple[str, ...]
    price: Decimal | None
    year_to_date: Decimal | None
    closes_at: dt.datetime  # when its period/month closes (``billing.rules.closes_at``)
    computed_at: dt.datetime


async def write_line_readiness(
    conn: asyncpg.Connection,
    patients: Sequence[PatientKey],
    lines: Sequence[tuple[str, AssessedLine, dt.datetime]],
    at: dt.datetime,
) -> None:
    """Replace the stored lines of ``patients`` with ``lines`` ((organisation, line, when
    its period closes))."""
    if not patients:
        return
    await conn.execute(
        "DELETE FROM billing_line_readiness r USING unnest($1::text[], $2::text[]) AS k(o, p)"
        " WHERE r.org_id = k.o AND r.patient_id = k.p",
        [k[0] for k in patients],
        [k[1] for k in patients],
    )
    rows: list[tuple[Any, ...]] = [
        (
            org,
            a.line.patient_id,
            a.line.episode_id,
            a.line.cpt,
            a.line.date_of_service,
            a.line.period_start,
            a.line.period_end,
            a.line.model_dump_json(exclude={"status"}),
            a.readiness,
            a.checks_text,
            a.price,
            a.year_to_date,
            closes,
            at,
        )
        for org, a, closes in lines
    ]
    if rows:
        # one statement for the batch's lines (unnest), not one round trip per line
        await conn.execute(
            "INSERT INTO billing_line_readiness (org_id, patient_id, episode_id, cpt,"
            " date_of_service, period_start, period_end, line, readiness, checks, price,"
            " year_to_date, closes_at, computed_at)"
            " SELECT o, p, e, c, d, ps, pe, l::jsonb, r, ch, pr, y, cl, ca FROM unnest("
            "$1::text[], $2::text[], $3::text[], $4::text[], $5::date[], $6::date[], $7::date[],"
            " $8::text[], $9::text[], $10::text[], $11::numeric[], $12::numeric[],"
            " $13::timestamptz[], $14::timestamptz[])"
            " AS t(o, p, e, c, d, ps, pe, l, r, ch, pr, y, cl, ca)"
            # another worker may write the same patient meanwhile (an organisation's first
            # fact of a stream reassesses every patient of it): the last commit wins
            " ON CONFLICT (org_id, patient_id, episode_id, cpt, date_of_service) DO UPDATE SET"
            " period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,"
            " line = EXCLUDED.line, readiness = EXCLUDED.readiness, checks = EXCLUDED.checks,"
            " price = EXCLUDED.price, year_to_date = EXCLUDED.year_to_date,"
            " closes_at = EXCLUDED.closes_at, computed_at = EXCLUDED.computed_at",
            *(list(c) for c in zip(*rows, strict=True)),
        )


async def line_readiness(
    conn: asyncpg.Connection, org_id: str, date_from: dt.date, date_to: dt.date
) -> list[StoredReadiness]:
    """The organisation's stored lines with a date of service in [date_from, date_to], in
    export order (patient, date of service, CPT, episode)."""
    rows = await conn.fetch(
        "SELECT org_id, line::text AS line, readiness, checks, price, year_to_date, closes_at,"
        " computed_at"
        " FROM billing_line_readiness WHERE org_id = $1 AND date_of_service BETWEEN $2 AND $3"
        " ORDER BY patient_id, date_of_service, cpt, episode_id, period_start",
        org_id,
        date_from,
        date_to,
    )
    return [
        StoredReadiness(
            r["org_id"],
            ClaimLine.model_validate(orjson.loads(r["line"])),
            cast(Readiness, r["readiness"]),
            tuple(c for c in r["checks"].split("+") if c),
            r["price"],
            r["year_to_date"],
            r["closes_at"],
            r["computed_at"],
        )
        for r in rows
    ]
