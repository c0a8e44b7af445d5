"""The billing ledger's own use cases: reconcile it with the raw events, backfill it from
them, and the demo's summary of it. Each takes a connection; the CLI (``rtm billing
reconcile|backfill``, ``rtm demo``) connects, calls, prints.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg

from billing.export import csv_row
from billing.ledger import BILLING_EVENT_TYPES, ledger_rows, state_differences
from billing.rules import billing_progress, compute_claims, patient_local_date
from billing.state import PatientBillingState, fold_events
from schemas.events import PatientKey, parse_event_json
from streams.db.events import event_payloads
from streams.db.ledger import ledger_states, write_ledger


async def events_states(
    conn: asyncpg.Connection, patient_prefix: str | None = None
) -> dict[PatientKey, PatientBillingState]:
    """Fold the raw events hypertable with the one reducer, by (organisation, patient_id)."""
    states: dict[PatientKey, PatientBillingState] = {}
    async for payloads in event_payloads(conn, BILLING_EVENT_TYPES, patient_prefix):
        fold_events([parse_event_json(p) for p in payloads], states)
    return states


async def reconcile(
    conn: asyncpg.Connection, as_of: dt.datetime, patient_prefix: str | None = None
) -> tuple[list[str], str]:
    """Compare ledger states and claims with a recomputation from raw events: (each
    difference, a closing summary line)."""
    truth = await events_states(conn, patient_prefix)
    ledger = await ledger_states(conn)
    if patient_prefix:
        ledger = {k: v for k, v in ledger.items() if k[1].startswith(patient_prefix)}
    diffs: list[str] = []
    for key in sorted(truth.keys() | ledger.keys()):
        exp, act = truth.get(key), ledger.get(key)
        diffs += [f"{key[0]}/{key[1]}: {d}" for d in state_differences(exp, act)]
    want = {tuple(csv_row(ln)) for ln in compute_claims(truth.values(), as_of, include_open=True)}
    got = {tuple(csv_row(ln)) for ln in compute_claims(ledger.values(), as_of, include_open=True)}
    diffs += ["claim missing from the ledger's claims: " + ",".join(r) for r in sorted(want - got)]
    diffs += ["claim only in the ledger's claims: " + ",".join(r) for r in sorted(got - want)]
    n = len(diffs)
    summary = (
        f"reconciled {len(truth.keys() | ledger.keys())} patients, {len(want)} claim lines"
        f" as of {as_of.isoformat()}: {n} difference{'s' if n != 1 else ''}"
    )
    return diffs, summary


async def backfill(
    conn: asyncpg.Connection, patient_prefix: str | None = None
) -> tuple[int, int, int]:
    """Write the ledger from the raw events hypertable (idempotent): for events stored
    before the billing agent ran. Returns the rows newly inserted."""
    totals = [0, 0, 0]
    async for payloads in event_payloads(conn, BILLING_EVENT_TYPES, patient_prefix):
        new = await write_ledger(conn, ledger_rows([parse_event_json(p) for p in payloads]))
        totals = [a + b for a, b in zip(totals, new, strict=True)]
    return totals[0], totals[1], totals[2]


async def summary(
    conn: asyncpg.Connection, now: dt.datetime, patient_ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """Billable lines by code (closed, and open as previews) and the patients on track for
    98977, of ``patient_ids`` or every patient in the ledger."""
    states = await ledger_states(conn, None, patient_ids)
    lines = compute_claims(states.values(), now, include_open=True)
    closed = Counter(ln.cpt for ln in lines if ln.status != "preview")
    preview = Counter(ln.cpt for ln in lines if ln.status == "preview")
    on_track = in_period = 0
    for st in states.values():
        prog = billing_progress(st, patient_local_date(st, now))
        if prog.period is not None:
            in_period += 1
            on_track += prog.period.on_track_for == "98977"
    codes = sorted(closed.keys() | preview.keys())
    return {
        "billing_lines_closed_by_code": {c: closed.get(c, 0) for c in codes},
        "billing_lines_open_preview_by_code": {c: preview.get(c, 0) for c in codes},
        "billing_patients_in_a_period": in_period,
        "billing_on_track_for_98977": on_track,
    }
