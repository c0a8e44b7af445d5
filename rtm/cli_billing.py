"""`rtm billing export|reconcile|backfill` (adapters over billing/ and the TimescaleDB ledger).

They talk to the database only (``RTM_DATABASE_URL`` / ``RTM_PG_*`` or ``--dsn``): no
worker, no Kafka. Each applies the SQL migrations first (idempotent).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import click

from streams.settings import Settings


def _parse_ts(value: str | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise click.BadParameter("timestamp needs an explicit UTC offset, e.g. 2027-03-01T00:00:00Z",
                                 param_hint="--as-of")
    return ts


def _parse_date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {value!r}", param_hint=name) from None


def _dsn(ctx: click.Context, dsn: str | None) -> str:
    if dsn:
        return dsn
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    return settings.dsn


async def _connect(dsn: str) -> asyncpg.Connection:
    from streams.db.events import migrate

    await migrate(dsn)
    return await asyncpg.connect(dsn)


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (e.g. a container without a passwd entry)
        return "unknown"


# --- export -----------------------------------------------------------------------------------


async def run_export(
    dsn: str,
    *,
    date_from: dt.date,
    date_to: dt.date,
    fmt: str,
    as_of: dt.datetime,
    include_open: bool = False,
    record: bool = True,
    created_by: str = "unknown",
    org_id: str | None = None,
) -> tuple[str, Any]:
    """Export body shared by the command and tests: returns (text, ExportResult). With
    ``org_id``, that organisation's patients only; audited either way."""
    from billing.export import render_export
    from streams.db.access import audit
    from streams.db.billing import export_claims

    conn = await _connect(dsn)
    try:
        result = await export_claims(
            conn, date_from=date_from, date_to=date_to, as_of=as_of, include_open=include_open,
            record=record, created_by=created_by, fmt=fmt, org_id=org_id)
        await audit(conn, org_id=org_id or "*", actor=f"cli:{created_by}", role="cli",
                    action="export" if result.export_id is not None else "read",
                    resource="rtm billing export",
                    patient_ids=[ln.patient_id for ln in result.lines],
                    detail={"from": date_from.isoformat(), "to": date_to.isoformat(),
                            "format": fmt, "lines": len(result.lines),
                            "export_id": result.export_id})
    finally:
        await conn.close()
    return render_export(result.lines, fmt, as_of), result


def _export_command(group: click.Group) -> None:
    @group.command("export")
    @click.option("--from", "date_from", required=True, help="first date of service (YYYY-MM-DD)")
    @click.option("--to", "date_to", required=True, help="last date of service (YYYY-MM-DD)")
    @click.option("--format", "fmt", type=click.Choice(["csv", "x12", "fhir"]), default="csv",
                  show_default=True)
    @click.option("--include-open", is_flag=True,
                  help="preview open periods/months too (status preview); nothing is recorded")
    @click.option("--as-of", "as_of", default=None, help="'now' for closing periods (default: clock)")
    @click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None)
    @click.option("--by", "by", default=None, help="who exports (recorded); default: OS user")
    @click.option("--dry-run", is_flag=True, help="compute and print, but do not record")
    @click.option("--org", "org_id", default=None,
                  help="this organisation's patients only (default: every organisation)")
    @click.option("--dsn", default=None, help="database URL (default: settings)")
    @click.pass_context
    def billing_export(ctx: click.Context, date_from: str, date_to: str, fmt: str,
                       include_open: bool, as_of: str | None, out: Path | None,
                       by: str | None, dry_run: bool, org_id: str | None,
                       dsn: str | None) -> None:
        """Export claim lines with a date of service in [--from, --to] and record the export.

        Lines already billed unchanged are left out; a changed period/month is re-sent whole
        with status `amended`. CSV starts with the conventions as `#` lines; X12/FHIR
        written to --out get a `.conventions.txt` sidecar.
        """
        from billing.config import DEFAULT_CONFIG
        from billing.export import csv_row, write_sidecar

        d_from, d_to = _parse_date(date_from, "--from"), _parse_date(date_to, "--to")
        if d_to < d_from:
            raise click.BadParameter("--to is before --from", param_hint="--to")
        ts = _parse_ts(as_of)
        text, result = asyncio.run(run_export(
            _dsn(ctx, dsn), date_from=d_from, date_to=d_to, fmt=fmt, as_of=ts,
            include_open=include_open, record=not dry_run, created_by=by or _default_user(),
            org_id=org_id))
        if out is not None:
            out.write_text(text, encoding="utf-8")
            if fmt != "csv":
                write_sidecar(out, DEFAULT_CONFIG)
        else:
            sys.stdout.write(text)
        counts = Counter(f"{ln.cpt}/{ln.status}" for ln in result.lines)
        recorded = (f"recorded as export {result.export_id}" if result.export_id is not None
                    else "not recorded (preview or dry run)")
        click.echo(f"{len(result.lines)} lines ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items())) or 'none'}),"
                   f" {recorded}, {result.elapsed_s:.2f}s", err=True)
        for ln in result.withdrawn:
            click.echo("WITHDRAWN (billed earlier, no longer billable; void it): "
                       + ",".join(csv_row(ln)), err=True)


# --- reconcile --------------------------------------------------------------------------------


async def events_states(conn: asyncpg.Connection, patient_prefix: str | None = None,
                        ) -> dict[str, Any]:
    """Fold the raw events hypertable with the pure reducer (received_at dropped)."""
    from billing.ledger import BILLING_EVENT_TYPES, fold_for_billing
    from schemas.events import parse_event_json
    from streams.db.events import event_payloads

    states: dict[str, Any] = {}
    async for payloads in event_payloads(conn, BILLING_EVENT_TYPES, patient_prefix):
        fold_for_billing([parse_event_json(p) for p in payloads], states)
    return states


async def reconcile(dsn: str, as_of: dt.datetime, patient_prefix: str | None = None,
                    out: TextIO | None = None) -> int:
    """Compare ledger states and claims with a recomputation from raw events; returns the
    number of differences (each printed)."""
    from streams.db.billing import load_states
    from billing.ledger import state_differences
    from billing.rules import compute_claims
    from billing.export import csv_row

    out = out or sys.stdout
    conn = await _connect(dsn)
    try:
        truth = await events_states(conn, patient_prefix)
        ledger = await load_states(conn)
    finally:
        await conn.close()
    if patient_prefix:
        ledger = {k: v for k, v in ledger.items() if k.startswith(patient_prefix)}
    n = 0
    for pid in sorted(truth.keys() | ledger.keys()):
        exp, act = truth.get(pid), ledger.get(pid)
        for diff in state_differences(exp, act):
            out.write(f"{pid}: {diff}\n")
            n += 1
    want = {tuple(csv_row(ln)) for ln in compute_claims(truth.values(), as_of, include_open=True)}
    got = {tuple(csv_row(ln)) for ln in compute_claims(ledger.values(), as_of, include_open=True)}
    for row in sorted(want - got):
        out.write("claim missing from the ledger's claims: " + ",".join(row) + "\n")
        n += 1
    for row in sorted(got - want):
        out.write("claim only in the ledger's claims: " + ",".join(row) + "\n")
        n += 1
    out.write(f"reconciled {len(truth.keys() | ledger.keys())} patients, {len(want)} claim lines"
              f" as of {as_of.isoformat()}: {n} difference{'s' if n != 1 else ''}\n")
    return n


def _reconcile_command(group: click.Group) -> None:
    @group.command("reconcile")
    @click.option("--as-of", "as_of", default=None, help="'now' for the claims (default: clock)")
    @click.option("--patient-prefix", default=None, help="only patients whose id starts so")
    @click.option("--dsn", default=None, help="database URL (default: settings)")
    @click.pass_context
    def billing_reconcile(ctx: click.Context, as_of: str | None, patient_prefix: str | None,
                          dsn: str | None) -> None:
        """Recompute every period and month from the raw events and compare with the ledger.
        Prints each difference; exits 1 on any."""
        n = asyncio.run(reconcile(_dsn(ctx, dsn), _parse_ts(as_of), patient_prefix))
        sys.exit(1 if n else 0)


# --- backfill ---------------------------------------------------------------------------------


async def backfill(dsn: str, patient_prefix: str | None = None) -> tuple[int, int, int]:
    """Write the ledger from the raw events hypertable (idempotent): for events stored
    before the billing agent ran. Returns the rows newly inserted."""
    from streams.db.billing import write_ledger
    from streams.db.events import event_payloads
    from billing.ledger import BILLING_EVENT_TYPES, ledger_rows
    from schemas.events import parse_event_json

    conn = await _connect(dsn)
    totals = [0, 0, 0]
    try:
        async for payloads in event_payloads(conn, BILLING_EVENT_TYPES, patient_prefix):
            new = await write_ledger(conn, ledger_rows([parse_event_json(p) for p in payloads]))
            totals = [a + b for a, b in zip(totals, new)]
    finally:
        await conn.close()
    return totals[0], totals[1], totals[2]


def _backfill_command(group: click.Group) -> None:
    @group.command("backfill")
    @click.option("--patient-prefix", default=None)
    @click.option("--dsn", default=None)
    @click.pass_context
    def billing_backfill(ctx: click.Context, patient_prefix: str | None, dsn: str | None) -> None:
        """Fill the billing ledger from the raw events table (idempotent)."""
        days, logs, eps = asyncio.run(backfill(_dsn(ctx, dsn), patient_prefix))
        click.echo(f"new ledger rows: {days} data days, {logs} time logs, {eps} episode events")


def register(group: click.Group) -> None:
    """Attach the billing commands that need the database to the `rtm billing` group."""
    _export_command(group)
    _reconcile_command(group)
    _backfill_command(group)


# --- demo summary -----------------------------------------------------------------------------


async def summary(dsn: str, now: dt.datetime | None = None,
                  patient_ids: list[str] | None = None) -> dict[str, Any]:
    from streams.db.billing import load_states
    from billing.rules import billing_progress, compute_claims, patient_local_date

    now = now or dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    conn = await _connect(dsn)
    try:
        states = await load_states(conn, patient_ids)
    finally:
        await conn.close()
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
        "billing_summary_s": round(time.perf_counter() - t0, 2),
    }


def billing_summary(settings: Settings, patient_ids: list[str] | None = None) -> dict[str, Any]:
    """Demo summary section: billable lines by code, patients on track for 98977
    (for `patient_ids`, or every patient in the ledger)."""
    return asyncio.run(summary(settings.dsn, patient_ids=patient_ids))
