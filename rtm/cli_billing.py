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

from rtm.files import write_private
from streams.settings import Settings


def _parse_ts(value: str | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise click.BadParameter(
            "timestamp needs an explicit UTC offset, e.g. 2027-03-01T00:00:00Z",
            param_hint="--as-of",
        )
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
    """Export body shared by the command and tests: returns (text, ExportResult). An
    export is one organisation's (``org_id``, default DEFAULT_ORG: a patient_id means a
    patient only within an organisation); audited either way."""
    from billing.export import render_export
    from schemas.events import DEFAULT_ORG
    from streams.db.access import audit
    from streams.db.billing import export_claims

    org_id = org_id or DEFAULT_ORG
    conn = await _connect(dsn)
    try:
        result = await export_claims(
            conn,
            date_from=date_from,
            date_to=date_to,
            as_of=as_of,
            include_open=include_open,
            record=record,
            created_by=created_by,
            fmt=fmt,
            org_id=org_id,
        )
        await audit(
            conn,
            org_id=org_id,
            actor=f"cli:{created_by}",
            role="cli",
            action="export" if result.export_id is not None else "read",
            resource="rtm billing export",
            patient_ids=[ln.patient_id for ln in result.lines],
            detail={
                "from": date_from.isoformat(),
                "to": date_to.isoformat(),
                "format": fmt,
                "lines": len(result.lines),
                "export_id": result.export_id,
            },
        )
    finally:
        await conn.close()
    return render_export(result.lines, fmt, as_of), result


def _export_command(group: click.Group) -> None:
    @group.command("export")
    @click.option("--from", "date_from", required=True, help="first date of service (YYYY-MM-DD)")
    @click.option("--to", "date_to", required=True, help="last date of service (YYYY-MM-DD)")
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["csv", "x12", "fhir"]),
        default="csv",
        show_default=True,
    )
    @click.option(
        "--include-open",
        is_flag=True,
        help="preview open periods/months too (status preview); nothing is recorded",
    )
    @click.option(
        "--as-of", "as_of", default=None, help="'now' for closing periods (default: clock)"
    )
    @click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None)
    @click.option("--by", "by", default=None, help="who exports (recorded); default: OS user")
    @click.option(
        "--dry-run",
        is_flag=True,
        hidden=True,
        help="accepted for compatibility: every export is a preview now",
    )
    @click.option(
        "--org",
        "org_id",
        default=None,
        help="the organisation whose patients to export (default: the default organisation)",
    )
    @click.option("--dsn", default=None, help="database URL (default: settings)")
    @click.pass_context
    def billing_export(
        ctx: click.Context,
        date_from: str,
        date_to: str,
        fmt: str,
        include_open: bool,
        as_of: str | None,
        out: Path | None,
        by: str | None,
        dry_run: bool,
        org_id: str | None,
        dsn: str | None,
    ) -> None:
        """Preview claim lines with a date of service in [--from, --to] (nothing recorded).

        Lines already submitted unchanged are left out; a changed period/month shows whole
        with status `amended`. CSV starts with the conventions as `#` lines; X12/FHIR
        written to --out get a `.conventions.txt` sidecar. The X12 here is a draft (test
        interchange, placeholders): `rtm billing submit` writes and records the real 837P.
        """
        from billing.config import DEFAULT_CONFIG
        from billing.export import csv_row, write_sidecar

        d_from, d_to = _parse_date(date_from, "--from"), _parse_date(date_to, "--to")
        if d_to < d_from:
            raise click.BadParameter("--to is before --from", param_hint="--to")
        ts = _parse_ts(as_of)
        text, result = asyncio.run(
            run_export(
                _dsn(ctx, dsn),
                date_from=d_from,
                date_to=d_to,
                fmt=fmt,
                as_of=ts,
                include_open=include_open,
                record=False,
                created_by=by or _default_user(),
                org_id=org_id,
            )
        )
        if out is not None:
            write_private(out, text)
            if fmt != "csv":
                write_sidecar(out, DEFAULT_CONFIG)
        else:
            sys.stdout.write(text)
        counts = Counter(f"{ln.cpt}/{ln.status}" for ln in result.lines)
        recorded = (
            f"recorded as export {result.export_id}"
            if result.export_id is not None
            else "not recorded (a preview; `rtm billing submit` records)"
        )
        by_code = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
        click.echo(
            f"{len(result.lines)} lines ({by_code}), {recorded}, {result.elapsed_s:.2f}s",
            err=True,
        )
        for ln in result.withdrawn:
            click.echo(
                "WITHDRAWN (billed earlier, no longer billable; void it): " + ",".join(csv_row(ln)),
                err=True,
            )


# --- reconcile --------------------------------------------------------------------------------


async def events_states(
    conn: asyncpg.Connection,
    patient_prefix: str | None = None,
) -> dict[Any, Any]:
    """Fold the raw events hypertable with the pure reducer (received_at dropped), by
    (organisation, patient_id)."""
    from billing.ledger import BILLING_EVENT_TYPES
    from billing.state import fold_events
    from schemas.events import parse_event_json
    from streams.db.events import event_payloads

    states: dict[Any, Any] = {}
    async for payloads in event_payloads(conn, BILLING_EVENT_TYPES, patient_prefix):
        fold_events([parse_event_json(p) for p in payloads], states)
    return states


async def reconcile(
    dsn: str, as_of: dt.datetime, patient_prefix: str | None = None, out: TextIO | None = None
) -> int:
    """Compare ledger states and claims with a recomputation from raw events; returns the
    number of differences (each printed)."""
    from billing.export import csv_row
    from billing.ledger import state_differences
    from billing.rules import compute_claims
    from streams.db.billing import ledger_states

    out = out or sys.stdout
    conn = await _connect(dsn)
    try:
        truth = await events_states(conn, patient_prefix)
        ledger = await ledger_states(conn)
    finally:
        await conn.close()
    if patient_prefix:
        ledger = {k: v for k, v in ledger.items() if k[1].startswith(patient_prefix)}
    n = 0
    for key in sorted(truth.keys() | ledger.keys()):
        exp, act = truth.get(key), ledger.get(key)
        for diff in state_differences(exp, act):
            out.write(f"{key[0]}/{key[1]}: {diff}\n")
            n += 1
    want = {tuple(csv_row(ln)) for ln in compute_claims(truth.values(), as_of, include_open=True)}
    got = {tuple(csv_row(ln)) for ln in compute_claims(ledger.values(), as_of, include_open=True)}
    for row in sorted(want - got):
        out.write("claim missing from the ledger's claims: " + ",".join(row) + "\n")
        n += 1
    for row in sorted(got - want):
        out.write("claim only in the ledger's claims: " + ",".join(row) + "\n")
        n += 1
    out.write(
        f"reconciled {len(truth.keys() | ledger.keys())} patients, {len(want)} claim lines"
        f" as of {as_of.isoformat()}: {n} difference{'s' if n != 1 else ''}\n"
    )
    return n


def _reconcile_command(group: click.Group) -> None:
    @group.command("reconcile")
    @click.option("--as-of", "as_of", default=None, help="'now' for the claims (default: clock)")
    @click.option("--patient-prefix", default=None, help="only patients whose id starts so")
    @click.option("--dsn", default=None, help="database URL (default: settings)")
    @click.pass_context
    def billing_reconcile(
        ctx: click.Context, as_of: str | None, patient_prefix: str | None, dsn: str | None
    ) -> None:
        """Recompute every period and month from the raw events and compare with the ledger.
        Prints each difference; exits 1 on any."""
        n = asyncio.run(reconcile(_dsn(ctx, dsn), _parse_ts(as_of), patient_prefix))
        sys.exit(1 if n else 0)


# --- backfill ---------------------------------------------------------------------------------


async def backfill(dsn: str, patient_prefix: str | None = None) -> tuple[int, int, int]:
    """Write the ledger from the raw events hypertable (idempotent): for events stored
    before the billing agent ran. Returns the rows newly inserted."""
    from billing.ledger import BILLING_EVENT_TYPES, ledger_rows
    from schemas.events import parse_event_json
    from streams.db.billing import write_ledger
    from streams.db.events import event_payloads

    conn = await _connect(dsn)
    totals = [0, 0, 0]
    try:
        async for payloads in event_payloads(conn, BILLING_EVENT_TYPES, patient_prefix):
            new = await write_ledger(conn, ledger_rows([parse_event_json(p) for p in payloads]))
            totals = [a + b for a, b in zip(totals, new, strict=True)]
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
    """Attach the billing commands that need the database to the `rtm billing` group (and
    the offline `rtm billing readiness`)."""
    _export_command(group)
    _reconcile_command(group)
    _backfill_command(group)
    _claims_commands(group)
    _readiness_command(group)


# --- issue 20: claim readiness, offline ---------------------------------------------------------


def _readiness_command(group: click.Group) -> None:
    @group.command("readiness")
    @click.option("--events", "events_path", type=click.Path(path_type=Path), required=True)
    @click.option(
        "--as-of",
        "as_of",
        required=True,
        help="closes periods and drops later facts, with its UTC offset (2027-01-05T00:00:00Z)",
    )
    @click.option(
        "--fees",
        "fees_path",
        type=click.Path(path_type=Path),
        required=True,
        help="fee-schedule CSV (version,cpt,locality,effective_from,effective_to,amount)",
    )
    @click.option("--locality", default=None, help="default: the fee file's only locality")
    @click.option("--include-open", is_flag=True, help="open periods/months too (preview)")
    def billing_readiness(
        events_path: Path,
        as_of: str,
        fees_path: Path,
        locality: str | None,
        include_open: bool,
    ) -> None:
        """The claims CSV of `rtm billing evaluate` (KX in modifiers) with each line's
        readiness (blocked, warn, ready) and the checks that fired. Offline: reads the
        files only. Exit 2 on unreadable or invalid input, --as-of without offset, an
        ambiguous locality or a therapy line without fee."""
        from billing.evaluate import run_readiness

        try:
            ts = dt.datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError:
            click.echo(f"error: --as-of: not a timestamp: {as_of!r}", err=True)
            sys.exit(2)
        sys.exit(
            run_readiness(
                events_path,
                ts,
                fees_path,
                sys.stdout,
                locality=locality,
                include_open=include_open,
            )
        )


# --- issue 12: profile, demographics, fees, submit, history, payer claim numbers ---------------


async def _with_conn(dsn: str, fn: Any) -> Any:
    conn = await _connect(dsn)
    try:
        return await fn(conn)
    finally:
        await conn.close()


async def run_submit(
    dsn: str,
    *,
    org_id: str,
    date_from: dt.date,
    date_to: dt.date,
    fmt: str,
    as_of: dt.datetime,
    created_by: str,
    test: bool = False,
    dry_run: bool = False,
    created: dt.datetime | None = None,
) -> Any:
    """Submit body shared by the command and tests (audited); returns the SubmissionResult."""
    from streams.db.access import audit
    from streams.db.billing import submit_export

    async def go(conn: asyncpg.Connection) -> Any:
        result = await submit_export(
            conn,
            org_id=org_id,
            date_from=date_from,
            date_to=date_to,
            as_of=as_of,
            fmt=fmt,
            created_by=created_by,
            usage="T" if test else "P",
            created=created,
            dry_run=dry_run,
        )
        await audit(
            conn,
            org_id=org_id,
            actor=f"cli:{created_by}",
            role="cli",
            action="export" if result.submission_id is not None else "read",
            resource="rtm billing submit",
            patient_ids=[c.first.patient_id for c in result.claims],
            detail={
                "from": date_from.isoformat(),
                "to": date_to.isoformat(),
                "format": fmt,
                "submission_id": result.submission_id,
                "control_number": result.control_number,
                "claims": len(result.claims),
                "problems": len(result.problems),
            },
        )
        return result

    return await _with_conn(dsn, go)


def _claims_commands(group: click.Group) -> None:
    from billing.claims837 import FREQUENCY_NAMES

    @group.group("profile")
    def profile() -> None:
        """The billing profile per organisation and billing NPI (837P parties, payer ids)."""

    @profile.command("set")
    @click.option("--org", "org_id", required=True)
    @click.option("--npi", "npi", required=True, help="the billing NPI")
    @click.option(
        "--file",
        "file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=True,
        help="profile JSON (fields of billing.profile.BillingProfile)",
    )
    @click.option("--dsn", default=None)
    @click.pass_context
    def profile_set(ctx: click.Context, org_id: str, npi: str, file: Path, dsn: str | None) -> None:
        """Set (replace) a billing profile; reports the fields a production 837P still needs."""
        import orjson
        from pydantic import ValidationError

        from billing.profile import BillingProfile, missing_fields
        from streams.db.access import audit
        from streams.db.billing import set_profile

        try:
            raw = orjson.loads(file.read_bytes())
            prof = BillingProfile.model_validate({**raw, "org_id": org_id, "billing_npi": npi})
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise click.ClickException(f"{file}: {exc}") from None
        user = _default_user()

        async def go(conn: asyncpg.Connection) -> None:
            await set_profile(conn, prof, f"cli:{user}")
            await audit(
                conn,
                org_id=org_id,
                actor=f"cli:{user}",
                role="cli",
                action="billing.profile_set",
                resource="rtm billing profile set",
                detail={"billing_npi": npi},
            )

        asyncio.run(_with_conn(_dsn(ctx, dsn), go))
        missing = missing_fields(prof, prof.payers, prof.rendering_providers, npi)
        click.echo(
            f"billing profile of {org_id} / {npi} stored"
            + (f"; still missing for production: {', '.join(missing)}" if missing else "")
        )

    @profile.command("show")
    @click.option("--org", "org_id", required=True)
    @click.option("--dsn", default=None)
    @click.pass_context
    def profile_show(ctx: click.Context, org_id: str, dsn: str | None) -> None:
        """Print the organisation's billing profiles (JSON)."""
        import orjson

        from streams.db.billing import get_profiles

        profiles = asyncio.run(_with_conn(_dsn(ctx, dsn), lambda c: get_profiles(c, org_id)))
        click.echo(
            orjson.dumps(
                [p.model_dump(mode="json") for p in profiles.values()], option=orjson.OPT_INDENT_2
            ).decode()
        )

    @group.group("demographics")
    def demographics() -> None:
        """Patient demographics for claims (PHI; used only by the 837P export)."""

    @demographics.command("load")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--org", "org_id", required=True)
    @click.option("--dsn", default=None)
    @click.pass_context
    def demographics_load(ctx: click.Context, file: Path, org_id: str, dsn: str | None) -> None:
        """Load a practice-management CSV keyed by patient_id; bad rows are listed and
        skipped (exit 1 if any)."""
        from billing.demographics import parse_demographics_csv
        from streams.db.access import audit
        from streams.db.billing import load_demographics

        rows, errors = parse_demographics_csv(file.read_text(encoding="utf-8-sig"))
        user = _default_user()

        async def go(conn: asyncpg.Connection) -> int:
            n = await load_demographics(conn, org_id, rows, f"cli:{user}")
            await audit(
                conn,
                org_id=org_id,
                actor=f"cli:{user}",
                role="cli",
                action="billing.demographics_load",
                resource="rtm billing demographics load",
                patient_ids=[r.patient_id for r in rows],
                detail={"rows": n, "errors": len(errors)},
            )
            return n

        n = asyncio.run(_with_conn(_dsn(ctx, dsn), go))
        for e in errors:
            click.echo(e, err=True)
        click.echo(f"loaded demographics of {n} patients, {len(errors)} errors")
        if errors:
            sys.exit(1)

    @group.group("fees")
    def fees() -> None:
        """The versioned fee schedule (charges of the 837P)."""

    @fees.command("load")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--dsn", default=None)
    @click.pass_context
    def fees_load(ctx: click.Context, file: Path, dsn: str | None) -> None:
        """Load a fee-schedule file (version,cpt,locality,effective_from,effective_to,amount)."""
        from billing.fees import FeeScheduleError, parse_fee_schedule
        from streams.db.billing import load_fee_schedule

        try:
            entries = parse_fee_schedule(file.read_text(encoding="utf-8"))
        except FeeScheduleError as exc:
            raise click.ClickException(f"{file}: {exc}") from None
        user = _default_user()
        try:
            n = asyncio.run(
                _with_conn(_dsn(ctx, dsn), lambda c: load_fee_schedule(c, entries, f"cli:{user}"))
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        versions = sorted({e.version for e in entries})
        click.echo(
            f"{n} new fee entries ({len(entries)} in the file; versions {', '.join(versions)})"
        )

    @group.command("submit")
    @click.option("--org", "org_id", required=True)
    @click.option("--from", "date_from", required=True)
    @click.option("--to", "date_to", required=True)
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["x12", "csv", "fhir"]),
        default="x12",
        show_default=True,
    )
    @click.option("--test", "test", is_flag=True, help="a test interchange (ISA15=T)")
    @click.option("--dry-run", is_flag=True, help="the file that would go, not recorded")
    @click.option("--as-of", "as_of", default=None)
    @click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None)
    @click.option("--by", "by", default=None, help="who submits (recorded); default: OS user")
    @click.option("--dsn", default=None)
    @click.pass_context
    def submit(
        ctx: click.Context,
        org_id: str,
        date_from: str,
        date_to: str,
        fmt: str,
        test: bool,
        dry_run: bool,
        as_of: str | None,
        out: Path | None,
        by: str | None,
        dsn: str | None,
    ) -> None:
        """Submit the next claims: originals, whole-claim replacements, voids. This records
        the lines as billed and keeps the file (`rtm billing submissions`). A claim that
        lacks demographics, a fee or the payer's claim control number is listed and left
        for the next submission; a missing profile field refuses the submission."""
        from streams.db.billing import SubmissionRefused

        d_from, d_to = _parse_date(date_from, "--from"), _parse_date(date_to, "--to")
        if d_to < d_from:
            raise click.BadParameter("--to is before --from", param_hint="--to")
        try:
            result = asyncio.run(
                run_submit(
                    _dsn(ctx, dsn),
                    org_id=org_id,
                    date_from=d_from,
                    date_to=d_to,
                    fmt=fmt,
                    as_of=_parse_ts(as_of),
                    created_by=by or _default_user(),
                    test=test,
                    dry_run=dry_run,
                )
            )
        except SubmissionRefused as exc:
            for p in exc.problems:
                click.echo(f"missing: {p}", err=True)
            raise click.ClickException(
                "submission refused: the billing profile is incomplete (rtm billing profile set)"
            ) from None
        for p in result.problems:
            click.echo(f"NOT SUBMITTED: {p.text()}", err=True)
        if not result.claims:
            click.echo("nothing to submit", err=True)
            sys.exit(1 if result.problems else 0)
        if out is not None:
            write_private(out, result.text)
        else:
            sys.stdout.write(result.text)
        kinds = Counter(FREQUENCY_NAMES[c.frequency] for c in result.claims)
        what = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
        where = (
            f"submission {result.submission_id} ({result.file_name})"
            if result.submission_id is not None
            else "dry run, not recorded"
        )
        ctl = f", ISA13 {result.control_number:09d}" if result.control_number else ""
        click.echo(
            f"{len(result.claims)} claims ({what}), {len(result.lines)} lines{ctl}, {where}",
            err=True,
        )

    @group.command("submissions")
    @click.option("--org", "org_id", required=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--dsn", default=None)
    @click.pass_context
    def submissions(ctx: click.Context, org_id: str, as_json: bool, dsn: str | None) -> None:
        """The export history: every submission, who, when, what; newest first."""
        import orjson

        from streams.db.billing import list_submissions

        rows = asyncio.run(_with_conn(_dsn(ctx, dsn), lambda c: list_submissions(c, org_id)))
        if as_json:
            click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
            return
        for r in rows:
            click.echo(
                f"{r['submission_id']:>6}  {r['created_at'][:19]}  {r['created_by']:<16}"
                f" {r['format']:<4} {r['usage'] or '-'}  {r['date_from']}..{r['date_to']}"
                f"  {r['line_count']} lines  {r['claim_count'] or '-'} claims"
                f"  ISA13 {r['control_number'] or '-'}  {r['file_name'] or '(no file)'}"
            )

    @group.command("submission-file")
    @click.argument("submission_id", type=int)
    @click.option("--org", "org_id", required=True)
    @click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None)
    @click.option("--dsn", default=None)
    @click.pass_context
    def submission_file_cmd(
        ctx: click.Context, submission_id: int, org_id: str, out: Path | None, dsn: str | None
    ) -> None:
        """Download a submitted file again (byte for byte what was submitted)."""
        from streams.db.access import audit
        from streams.db.billing import submission_file, submission_patients

        user = _default_user()

        async def go(conn: asyncpg.Connection) -> Any:
            found = await submission_file(conn, org_id, submission_id)
            if found is not None:
                await audit(
                    conn,
                    org_id=org_id,
                    actor=f"cli:{user}",
                    role="cli",
                    action="read",
                    resource="rtm billing submission-file",
                    patient_ids=await submission_patients(conn, submission_id),
                    detail={"submission_id": submission_id},
                )
            return found

        found = asyncio.run(_with_conn(_dsn(ctx, dsn), go))
        if found is None:
            raise click.ClickException(f"no file for submission {submission_id} of {org_id}")
        name, _, text = found
        if out is not None:
            write_private(out, text)
            click.echo(f"wrote {name} to {out}", err=True)
        else:
            sys.stdout.write(text)

    @group.group("claims")
    def claims() -> None:
        """Submitted claims: the payer's claim control numbers."""

    @claims.command("set-icn")
    @click.argument("claim_id")
    @click.argument("payer_claim_number")
    @click.option("--org", "org_id", required=True)
    @click.option("--dsn", default=None)
    @click.pass_context
    def set_icn(
        ctx: click.Context, claim_id: str, payer_claim_number: str, org_id: str, dsn: str | None
    ) -> None:
        """Record the payer's claim control number (ICN/DCN) of a submitted claim."""
        from streams.db.billing import set_payer_claim_number

        ok = asyncio.run(
            _with_conn(
                _dsn(ctx, dsn),
                lambda c: set_payer_claim_number(
                    c, org_id, claim_id, payer_claim_number, f"cli:{_default_user()}"
                ),
            )
        )
        if not ok:
            raise click.ClickException(f"{org_id} submitted no claim {claim_id}")
        click.echo(f"claim {claim_id}: payer claim control number {payer_claim_number}")

    @group.group("remit")
    def remit() -> None:
        """835 remittances."""

    @remit.command("load")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--org", "org_id", required=True)
    @click.option("--dsn", default=None)
    @click.pass_context
    def remit_load(ctx: click.Context, file: Path, org_id: str, dsn: str | None) -> None:
        """Read CLP01 (our CLM01) and CLP07 (the payer's claim control number) of an 835."""
        from billing.remit import parse_835
        from streams.db.billing import set_payer_claim_number

        try:
            payments = parse_835(file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise click.ClickException(f"{file}: {exc}") from None

        async def go(conn: asyncpg.Connection) -> list[str]:
            unknown = []
            for p in payments:
                if not await set_payer_claim_number(
                    conn, org_id, p.claim_id, p.payer_claim_number, f"835:{file.name}"
                ):
                    unknown.append(p.claim_id)
            return unknown

        unknown = asyncio.run(_with_conn(_dsn(ctx, dsn), go))
        for cid in unknown:
            click.echo(f"unknown claim {cid} (not submitted by {org_id}); skipped", err=True)
        click.echo(f"{len(payments) - len(unknown)} payer claim control numbers recorded")


# --- demo summary -----------------------------------------------------------------------------


async def summary(
    dsn: str, now: dt.datetime | None = None, patient_ids: list[str] | None = None
) -> dict[str, Any]:
    from billing.rules import billing_progress, compute_claims, patient_local_date
    from streams.db.billing import ledger_states

    now = now or dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    conn = await _connect(dsn)
    try:
        states = await ledger_states(conn, None, patient_ids)
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
