"""Claim readiness as it streams, and its use cases (docs/billing-readiness.md).

- ``decide_readiness`` (pure): the readiness of the lines of the patients the refresh
  claimed (``streams.services.refresh``), from what ``streams.db.readiness.readiness_load``
  read of them, as of the worker's clock (facts are never later than their arrival), with
  ``auto`` streams resolved per organisation (``billing.readiness.resolved_config``). An
  organisation's first fact of a stream changes every line of it: the load then holds all
  its patients.
- ``readiness_lines``: the stored lines of an organisation's month with their readiness and
  checks (the month queue, ``GET /v1/billing/readiness``), audited as a read of their
  patients.
- ``set_stream_mode`` (`rtm billing streams set`): the switch, audited, and the
  organisation's stored lines assessed again in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from billing.config import DEFAULT_CONFIG
from billing.readiness import (
    SEVERITY,
    STREAM_OF_TYPE,
    AssessedLine,
    ReadinessFacts,
    Stream,
    StreamMode,
    assess,
    config_for,
    fold_facts,
    resolved_config,
)
from billing.rules import ClaimLine, closes_at, compute_claims, month_bounds
from billing.state import PatientBillingState
from schemas.events import PatientKey
from streams.clock import Clock
from streams.db import readiness as db
from streams.db.readiness import ReadinessLoad, ReadinessWrite, StoredReadiness
from streams.services.claims import Requester, audit_requester


def decide_readiness(load: ReadinessLoad, now: dt.datetime) -> ReadinessWrite:
    """The lines of ``load.patients`` as of ``now`` from their stored billing states and
    facts (pure; the load is read, not changed), and the streams their facts send for the
    first time (each with its smallest event id)."""
    if not load.patients:
        return ReadinessWrite()
    first: dict[tuple[str, Stream], str] = {}
    for key, events in load.facts.items():
        for e in events:
            if e.type in STREAM_OF_TYPE:
                sent = (key[0], STREAM_OF_TYPE[e.type])
                if sent not in load.seen and (sent not in first or e.event_id < first[sent]):
                    first[sent] = e.event_id
    seen = load.seen | first.keys()
    by_org: dict[str, list[PatientKey]] = {}
    for patient in load.patients:
        by_org.setdefault(patient[0], []).append(patient)
    lines: list[tuple[str, AssessedLine, dt.datetime]] = []
    for org, keys in sorted(by_org.items()):
        states: dict[str, PatientBillingState] = {}
        facts = ReadinessFacts()
        for key in keys:
            states[key[1]] = load.states.get(key) or PatientBillingState(patient_id=key[1])
            fold_facts(load.facts.get(key, []), facts)
        # as of every fact held (one may occur within the future skew of its arrival): what
        # the log gives once the clock passes it
        as_of = max([now, *(f.occurred_at for f in facts.facts.values())])
        lines += [
            (org, a, line_closes_at(states[a.line.patient_id], a.line))
            for a in assess_org(org, states, facts, load, seen, as_of)
        ]
    return ReadinessWrite(
        tuple(load.patients),
        tuple(lines),
        tuple((org, s, eid) for (org, s), eid in sorted(first.items())),
        now,
    )


def line_closes_at(state: PatientBillingState, line: ClaimLine) -> dt.datetime:
    """When the line's period (or month) closes, in its episode's timezone: from then on
    it is billable (``billing.rules.closes_at``)."""
    episode = state.book.episodes[line.episode_id]
    return closes_at(line.period_end, episode.timezone, DEFAULT_CONFIG)


def assess_org(
    org: str,
    states: dict[str, PatientBillingState],
    facts: ReadinessFacts,
    load: ReadinessLoad,
    seen: set[tuple[str, Stream]],
    now: dt.datetime,
) -> list[AssessedLine]:
    """Every line of ``states`` (one organisation's patients; open periods too), assessed as
    of ``now`` with the organisation's streams resolved. Lines without a fee are assessed
    without a price, as a submission assesses them."""
    config = config_for(org, resolved_config(load.modes, seen, [org]).streams[org])
    localities = load.localities.get(org, {})

    def locality_of(_org: str, line: ClaimLine) -> str | None:
        return localities.get(line.billing_npi) or None

    claims = compute_claims(states.values(), now, include_open=True)
    return assess(claims, states, facts, now, load.fees, locality_of, config, strict_fees=False)


# --- use cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthReadiness:
    month: dt.date  # its first day
    lines: list[StoredReadiness]


async def readiness_lines(
    conn: asyncpg.Connection,
    org_id: str,
    month: dt.date,
    *,
    audit_as: Requester | None = None,
) -> MonthReadiness:
    """The stored lines of the organisation with a date of service in ``month`` (any day of
    it), each with its readiness and checks, in export order. Audited as a read of their
    patients when ``audit_as`` names who asks (a page that audits its whole view itself
    passes none)."""
    first, last = month_bounds(month)
    lines = await db.line_readiness(conn, org_id, first, last)
    if audit_as is not None:
        await audit_requester(
            conn,
            audit_as,
            "read",
            sorted({s.line.patient_id for s in lines}),
            {"billing_readiness_month": first.isoformat()[:7], "lines": len(lines)},
        )
    return MonthReadiness(first, lines)


async def summary(
    conn: asyncpg.Connection, org_id: str, patient_ids: Sequence[str], top: int = 5
) -> dict[str, dict[str, int]]:
    """The demo's section: the stored lines of ``patient_ids`` by readiness, and the blocking
    codes that fired most (each line counted once per code)."""
    wanted = set(patient_ids)
    lines = [
        s
        for s in await db.line_readiness(conn, org_id, dt.date(2000, 1, 1), dt.date(2100, 12, 31))
        if s.line.patient_id in wanted
    ]
    by = Counter(s.readiness for s in lines)
    codes = Counter(c for s in lines for c in s.checks if SEVERITY[c] == "blocked")
    return {
        "claim_lines_by_readiness": {r: by.get(r, 0) for r in ("ready", "warn", "blocked")},
        "top_blocking_codes": dict(codes.most_common(top)) or {"none": 0},
    }


async def reassess_org(conn: asyncpg.Connection, org_id: str, now: dt.datetime) -> int:
    """Assess every stored line of the organisation again (after its switch changed);
    returns the number of lines stored."""
    patients = await db.org_patients(conn, [org_id])
    load = await db.readiness_load(conn, patients)
    w = decide_readiness(load, now)
    await db.write_readiness(conn, w)
    return len(w.lines)


async def backfill(
    conn: asyncpg.Connection, clock: Clock, org_id: str | None = None
) -> dict[str, int]:
    """Store the readiness of every claim line of ``org_id`` (None: of every organisation
    the ledger knows) from the log, as of now: for lines stored before the worker kept
    readiness (migration 025). One transaction per organisation; returns lines by
    organisation."""
    orgs = [org_id] if org_id is not None else await db.ledger_orgs(conn)
    out: dict[str, int] = {}
    for org in orgs:
        async with conn.transaction():
            out[org] = await reassess_org(conn, org, clock.now())
    return out


async def set_stream_mode(
    conn: asyncpg.Connection,
    clock: Clock,
    by: Requester,
    stream: Stream,
    mode: StreamMode,
) -> tuple[StreamMode, int]:
    """Set ``by``'s organisation's mode of a stream, audited, and its stored lines assessed
    again, in one transaction; returns (the mode before, the lines assessed)."""
    now = clock.now()
    async with conn.transaction():
        before = await db.set_stream_mode(conn, by.org_id, stream, mode, by.actor, now)
        await audit_requester(
            conn,
            by,
            "billing.streams_set",
            (),
            {"stream": stream, "mode": mode, "before": before},
        )
        n = await reassess_org(conn, by.org_id, now)
    return before, n
