"""`rtm billing`: the billing rules offline (``evaluate``, ``readiness``) and the commands
that need the database.

Each command parses its options, calls a use case of ``streams.services.claims`` (preview,
submit, profiles, demographics, fees, payer claim numbers) or ``streams.services.billing``
(reconcile, backfill, summary), and prints. They talk to the database only
(``RTM_DATABASE_URL`` / ``RTM_PG_*`` or ``--dsn``): no worker, no Kafka. Each applies the
SQL migrations first (idempotent). "Now" is the process's clock (``RTM_CLOCK_NOW`` when
set).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import getpass
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import asyncpg
import click
import orjson
from pydantic import ValidationError

from billing.claims837 import FREQUENCY_NAMES
from billing.config import DEFAULT_CONFIG
from billing.demographics import parse_demographics_csv
from billing.denials import CSV_COLUMNS, Denial
from billing.evaluate import parse_stream_modes, run_evaluate, run_readiness
from billing.export import csv_row, render_export, write_sidecar
from billing.fees import FeeScheduleError, parse_fee_schedule
from billing.profile import BillingProfile, missing_fields
from billing.readiness import DEFAULT_READINESS_CONFIG, STREAMS, Stream, StreamMode
from billing.remit import parse_835
from billing.submission import Format, LineId, SubmissionRefused, line_text
from rtm.cli.db import require_org
from rtm.cli.options import parse_instant
from rtm.files import write_private
from streams.clock import SYSTEM_CLOCK, Clock, FixedClock, clock_for
from streams.db.claims import get_profiles, list_submissions
from streams.db.pool import migrate
from streams.db.readiness import Modes, stream_modes, streams_seen
from streams.services import billing as ledger
from streams.services import claims, readiness
from streams.services.claims import ExportResult, Requester, SubmissionResult
from streams.settings import Settings

T = TypeVar("T")
FORMAT_CHOICE = click.Choice(["csv", "x12", "fhir"])


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


def _clock(ctx: click.Context) -> Clock:
    return clock_for(_settings(ctx))


def _as_of(value: str | None, clock: Clock) -> dt.datetime:
    """``--as-of``, or the process's clock when it is not given."""
    return clock.now() if value is None else parse_instant(value, "--as-of")


def _parse_date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {value!r}", param_hint=name) from None


def _date_range(date_from: str, date_to: str) -> tuple[dt.date, dt.date]:
    d_from, d_to = _parse_date(date_from, "--from"), _parse_date(date_to, "--to")
    if d_to < d_from:
        raise click.BadParameter("--to is before --from", param_hint="--to")
    return d_from, d_to


def _dsn(ctx: click.Context, dsn: str | None) -> str:
    return dsn or _settings(ctx).db.dsn


async def _connect(dsn: str) -> asyncpg.Connection:
    await migrate(dsn)
    return await asyncpg.connect(dsn)


async def _with_conn(dsn: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    conn = await _connect(dsn)
    try:
        return await fn(conn)
    finally:
        await conn.close()


def _run(
    ctx: click.Context, dsn: str | None, fn: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    return asyncio.run(_with_conn(_dsn(ctx, dsn), fn))


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (e.g. a container without a passwd entry)
        return "unknown"


# --- export (a preview) ----------------------------------------------------------------------


async def run_export(
    dsn: str,
    *,
    date_from: dt.date,
    date_to: dt.date,
    fmt: Format,
    as_of: dt.datetime,
    include_open: bool = False,
    record: bool = True,
    created_by: str = "unknown",
    org_id: str | None = None,
) -> tuple[str, ExportResult]:
    """Export body shared by the command and tests: returns (text, ExportResult). An
    export is one organisation's (``org_id``, default DEFAULT_ORG: a patient_id means a
    patient only within an organisation); recorded when ``record`` (never with
    ``include_open``), audited either way."""
    by = Requester.cli(created_by, org_id, "rtm billing export")
    clock = FixedClock(as_of)

    async def go(conn: asyncpg.Connection) -> ExportResult:
        if record and not include_open:
            return await claims.export(
                conn, clock, by, date_from=date_from, date_to=date_to, fmt=fmt
            )
        return await claims.preview(
            conn,
            clock,
            org_id=by.org_id,
            date_from=date_from,
            date_to=date_to,
            include_open=include_open,
            fmt=fmt,
            audit_as=by,
        )

    result = await _with_conn(dsn, go)
    return render_export(result.lines, fmt, as_of), result


@click.command("export")
@click.option("--from", "date_from", required=True, help="first date of service (YYYY-MM-DD)")
@click.option("--to", "date_to", required=True, help="last date of service (YYYY-MM-DD)")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="csv", show_default=True)
@click.option(
    "--include-open",
    is_flag=True,
    help="preview open periods/months too (status preview); nothing is recorded",
)
@click.option("--as-of", "as_of", default=None, help="'now' for closing periods (default: clock)")
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
    fmt: Format,
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
    d_from, d_to = _date_range(date_from, date_to)
    text, result = asyncio.run(
        run_export(
            _dsn(ctx, dsn),
            date_from=d_from,
            date_to=d_to,
            fmt=fmt,
            as_of=_as_of(as_of, _clock(ctx)),
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
        f"{len(result.lines)} lines ({by_code}), {recorded}, {result.elapsed_s:.2f}s", err=True
    )
    for ln in result.withdrawn:
        click.echo(
            "WITHDRAWN (billed earlier, no longer billable; void it): " + ",".join(csv_row(ln)),
            err=True,
        )


# --- reconcile, backfill ------------------------------------------------------------------------


async def reconcile(
    dsn: str, as_of: dt.datetime, patient_prefix: str | None = None, out: TextIO | None = None
) -> int:
    """Compare ledger states and claims with a recomputation from raw events; returns the
    number of differences (each printed to ``out``, then a summary line)."""
    out = out or sys.stdout
    diffs, summary_line = await _with_conn(
        dsn, lambda conn: ledger.reconcile(conn, as_of, patient_prefix)
    )
    for line in [*diffs, summary_line]:
        out.write(line + "\n")
    return len(diffs)


@click.command("reconcile")
@click.option("--as-of", "as_of", default=None, help="'now' for the claims (default: clock)")
@click.option("--patient-prefix", default=None, help="only patients whose id starts so")
@click.option("--dsn", default=None, help="database URL (default: settings)")
@click.pass_context
def billing_reconcile(
    ctx: click.Context, as_of: str | None, patient_prefix: str | None, dsn: str | None
) -> None:
    """Recompute every period and month from the raw events and compare with the ledger.
    Prints each difference; exits 1 on any."""
    n = asyncio.run(reconcile(_dsn(ctx, dsn), _as_of(as_of, _clock(ctx)), patient_prefix))
    sys.exit(1 if n else 0)


async def backfill(dsn: str, patient_prefix: str | None = None) -> tuple[int, int, int]:
    """Write the ledger from the raw events hypertable (idempotent): for events stored
    before the billing agent ran. Returns the rows newly inserted."""
    return await _with_conn(dsn, lambda conn: ledger.backfill(conn, patient_prefix))


@click.command("backfill")
@click.option("--patient-prefix", default=None)
@click.option("--dsn", default=None)
@click.pass_context
def billing_backfill(ctx: click.Context, patient_prefix: str | None, dsn: str | None) -> None:
    """Fill the billing ledger from the raw events table (idempotent)."""
    days, logs, eps = asyncio.run(backfill(_dsn(ctx, dsn), patient_prefix))
    click.echo(f"new ledger rows: {days} data days, {logs} time logs, {eps} episode events")


# --- issue 20: claim readiness, offline ---------------------------------------------------------


@click.command("readiness")
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
@click.option(
    "--streams",
    "streams_path",
    type=click.Path(path_type=Path),
    default=None,
    help='stream modes, JSON {"ORG": {"consent": "not_sent"}} (default: every stream auto)',
)
def billing_readiness(
    events_path: Path,
    as_of: str,
    fees_path: Path,
    locality: str | None,
    include_open: bool,
    streams_path: Path | None,
) -> None:
    """The claims CSV of `rtm billing evaluate` (KX in modifiers) with each line's
    readiness (blocked, warn, ready) and the checks that fired. Offline: reads the
    files only. Exit 2 on unreadable or invalid input, --as-of without offset, an
    ambiguous locality or a therapy line without fee."""
    try:
        ts = dt.datetime.fromisoformat(as_of.replace("Z", "+00:00"))
    except ValueError:
        click.echo(f"error: --as-of: not a timestamp: {as_of!r}", err=True)
        sys.exit(2)
    streams = DEFAULT_READINESS_CONFIG
    if streams_path is not None:
        try:
            streams = parse_stream_modes(streams_path.read_bytes())
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            click.echo(f"error: --streams {streams_path}: {first}", err=True)
            sys.exit(2)
    sys.exit(
        run_readiness(
            events_path,
            ts,
            fees_path,
            sys.stdout,
            locality=locality,
            include_open=include_open,
            streams=streams,
        )
    )


# --- issue 12: profile, demographics, fees -------------------------------------------------


@click.group("profile")
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
    try:
        raw = orjson.loads(file.read_bytes())
        prof = BillingProfile.model_validate({**raw, "org_id": org_id, "billing_npi": npi})
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    by = Requester.cli(_default_user(), org_id, "rtm billing profile set")
    _run(ctx, dsn, lambda conn: claims.set_profile(conn, by, prof))
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
    profiles = _run(ctx, dsn, lambda conn: get_profiles(conn, org_id))
    click.echo(
        orjson.dumps(
            [p.model_dump(mode="json") for p in profiles.values()], option=orjson.OPT_INDENT_2
        ).decode()
    )


@click.group("demographics")
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
    rows, errors = parse_demographics_csv(file.read_text(encoding="utf-8-sig"))
    by = Requester.cli(_default_user(), org_id, "rtm billing demographics load")
    n = _run(ctx, dsn, lambda conn: claims.load_demographics(conn, by, rows, len(errors)))
    for e in errors:
        click.echo(e, err=True)
    click.echo(f"loaded demographics of {n} patients, {len(errors)} errors")
    if errors:
        sys.exit(1)


@click.group("fees")
def fees() -> None:
    """The versioned fee schedule (charges of the 837P)."""


@fees.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dsn", default=None)
@click.pass_context
def fees_load(ctx: click.Context, file: Path, dsn: str | None) -> None:
    """Load a fee-schedule file (version,cpt,locality,effective_from,effective_to,amount)."""
    try:
        entries = parse_fee_schedule(file.read_text(encoding="utf-8"))
    except FeeScheduleError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    user = _default_user()
    try:
        n = _run(ctx, dsn, lambda conn: claims.load_fee_schedule(conn, entries, f"cli:{user}"))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    versions = sorted({e.version for e in entries})
    click.echo(f"{n} new fee entries ({len(entries)} in the file; versions {', '.join(versions)})")


# --- issue 12: submit, history, payer claim numbers -------------------------------------------


async def run_submit(
    dsn: str,
    *,
    org_id: str,
    date_from: dt.date,
    date_to: dt.date,
    fmt: Format,
    as_of: dt.datetime,
    created_by: str,
    test: bool = False,
    dry_run: bool = False,
    created: dt.datetime | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> SubmissionResult:
    """Submit body shared by the command and tests (audited); returns the SubmissionResult.
    ``created`` (the file's time) defaults to the ``clock``'s now."""
    by = Requester.cli(created_by, org_id, "rtm billing submit")
    return await _with_conn(
        dsn,
        lambda conn: claims.submit(
            conn,
            clock,
            by,
            date_from=date_from,
            date_to=date_to,
            as_of=as_of,
            fmt=fmt,
            usage="T" if test else "P",
            dry_run=dry_run,
            created=created,
        ),
    )


@click.command("submit")
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
    fmt: Format,
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
    d_from, d_to = _date_range(date_from, date_to)
    clock = _clock(ctx)
    try:
        result = asyncio.run(
            run_submit(
                _dsn(ctx, dsn),
                org_id=org_id,
                date_from=d_from,
                date_to=d_to,
                fmt=fmt,
                as_of=_as_of(as_of, clock),
                created_by=by or _default_user(),
                test=test,
                dry_run=dry_run,
                clock=clock,
            )
        )
    except SubmissionRefused as exc:
        for p in exc.problems:
            click.echo(f"missing: {p}", err=True)
        raise click.ClickException(
            "submission refused: the billing profile is incomplete (rtm billing profile set)"
        ) from None
    _print_submission(result, out)


def _print_submission(result: SubmissionResult, out: Path | None) -> None:
    for p in result.problems:
        click.echo(f"NOT SUBMITTED: {p.text()}", err=True)
    for a in result.refused:  # blocked: not written, kept for the next run
        click.echo(f"refused {line_text(a.line)}: {a.checks_text}", err=True)
    if result.refused:
        click.echo(
            f"{len(result.refused)} blocked lines refused (kept for the next run;"
            " rtm billing override --line 'PATIENT EPISODE CPT DOS' --reason TEXT)",
            err=True,
        )
    if not result.claims:
        click.echo("nothing to submit", err=True)
        sys.exit(1 if result.problems or result.refused else 0)
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


@click.command("submissions")
@click.option("--org", "org_id", required=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--dsn", default=None)
@click.pass_context
def submissions(ctx: click.Context, org_id: str, as_json: bool, dsn: str | None) -> None:
    """The export history: every submission, who, when, what; newest first."""
    rows = _run(ctx, dsn, lambda conn: list_submissions(conn, org_id))
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


@click.command("submission-file")
@click.argument("submission_id", type=int)
@click.option("--org", "org_id", required=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--dsn", default=None)
@click.pass_context
def submission_file_cmd(
    ctx: click.Context, submission_id: int, org_id: str, out: Path | None, dsn: str | None
) -> None:
    """Download a submitted file again (byte for byte what was submitted)."""
    by = Requester.cli(_default_user(), org_id, "rtm billing submission-file")
    found = _run(ctx, dsn, lambda conn: claims.submission_file(conn, by, submission_id))
    if found is None:
        raise click.ClickException(f"no file for submission {submission_id} of {org_id}")
    name, _, text = found
    if out is not None:
        write_private(out, text)
        click.echo(f"wrote {name} to {out}", err=True)
    else:
        sys.stdout.write(text)


@click.group("claims")
def claims_group() -> None:
    """Submitted claims: the payer's claim control numbers."""


@claims_group.command("set-icn")
@click.argument("claim_id")
@click.argument("payer_claim_number")
@click.option("--org", "org_id", required=True)
@click.option("--dsn", default=None)
@click.pass_context
def set_icn(
    ctx: click.Context, claim_id: str, payer_claim_number: str, org_id: str, dsn: str | None
) -> None:
    """Record the payer's claim control number (ICN/DCN) of a submitted claim."""
    source = f"cli:{_default_user()}"
    unknown = _run(
        ctx,
        dsn,
        lambda conn: claims.record_payer_claim_numbers(
            conn, org_id, [(claim_id, payer_claim_number)], source
        ),
    )
    if unknown:
        raise click.ClickException(f"{org_id} submitted no claim {claim_id}")
    click.echo(f"claim {claim_id}: payer claim control number {payer_claim_number}")


@click.group("remit")
def remit() -> None:
    """835 remittances."""


def _load_remit(
    ctx: click.Context, file: Path, org_id: str, dsn: str | None, cmd: str
) -> claims.RemitResult:
    """The 835 loaded through ``streams.services.claims.load_remit``; unknown claims and
    denied lines matching no submitted line named on stderr."""
    try:
        text = file.read_text(encoding="utf-8")
        parse_835(text)  # a clear error before connecting
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        click.echo(f"error: {file}: {exc}", err=True)
        sys.exit(2)
    by = Requester.cli(_default_user(), org_id, cmd)
    done = _run(ctx, dsn, lambda conn: claims.load_remit(conn, by, text, file.name))
    for cid in done.unknown:
        click.echo(f"unknown claim {cid} (not submitted by {org_id}); skipped", err=True)
    for u in done.unmatched:
        click.echo(f"unmatched denied line {u.text()} (no such submitted line)", err=True)
    if done.remit_id is None:
        click.echo(f"{file.name} was loaded before: nothing stored again", err=True)
    return done


@remit.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--org", "org_id", required=True)
@click.option("--dsn", default=None)
@click.pass_context
def remit_load(ctx: click.Context, file: Path, org_id: str, dsn: str | None) -> None:
    """Load an 835: CLP01 (our CLM01) and CLP07 (the payer's claim control number), each
    claim paid or denied, and the denied service lines (see escaped-denials)."""
    done = _load_remit(ctx, file, org_id, dsn, "rtm billing remit load")
    click.echo(f"{done.claims} payer claim control numbers recorded")
    click.echo(f"{len(done.denials)} denials ({_outcomes(done.denials)})")


def _outcomes(denials: list[Denial]) -> str:
    counts = Counter(d.outcome for d in denials)
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in ("caught", "escaped", "uncovered"))


@click.command("escaped-denials")
@click.option(
    "--remit",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="the 835 remittance",
)
@click.option("--org", "org_id", required=True)
@click.option("--dsn", default=None)
@click.pass_context
def escaped_denials_cmd(ctx: click.Context, file: Path, org_id: str, dsn: str | None) -> None:
    """Each denied service line of an 835 matched to the line submitted (CLP01, SVC code
    and date), its CARC/RARC mapped to the readiness gates: caught (a mapped check was on
    the line at submission), escaped (none fired) or uncovered (no gate speaks of it).
    CSV on stdout; the 835 is loaded as `remit load` does (stored once)."""
    done = _load_remit(ctx, file, org_id, dsn, "rtm billing escaped-denials")
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(CSV_COLUMNS)
    for d in done.denials:
        out.writerow(d.row())
    click.echo(f"{len(done.denials)} denials ({_outcomes(done.denials)})", err=True)


# --- issue 20 item 4: overrides -------------------------------------------------------------------


def parse_line(text: str) -> LineId:
    """``PATIENT EPISODE CPT DOS`` as a refused line is printed; BadParameter otherwise."""
    parts = text.split()
    if len(parts) != 4:
        raise click.BadParameter("give the line as printed: 'PATIENT EPISODE CPT DOS'")
    try:
        dos = dt.date.fromisoformat(parts[3])
    except ValueError:
        raise click.BadParameter(f"date of service {parts[3]!r} is not YYYY-MM-DD") from None
    return (parts[0], parts[1], parts[2], dos)


@click.command("override")
@click.option("--org", "org_id", required=True)
@click.option("--line", "line", required=True, help="'PATIENT EPISODE CPT DOS' as printed")
@click.option("--reason", "reason", required=True, help="why (at least 10 characters)")
@click.option("--as-of", "as_of", default=None, help="judge the line as of (default: now)")
@click.option("--by", "by", default=None, help="who overrides (recorded); default: OS user")
@click.option("--dsn", default=None)
@click.pass_context
def override_cmd(
    ctx: click.Context,
    org_id: str,
    line: str,
    reason: str,
    as_of: str | None,
    by: str | None,
    dsn: str | None,
) -> None:
    """Let a blocked claim line out of the next submissions, with a reason: recorded and
    audited (who, when, the line, its blocked codes, the reason), never edited. It holds
    while the line's blocked codes stay among those it was given for."""
    key = parse_line(line)
    clock = _clock(ctx)
    who = Requester.cli(by or _default_user(), org_id, "rtm billing override")
    when = _as_of(as_of, clock)
    try:
        done = _run(
            ctx,
            dsn,
            lambda conn: claims.override(conn, clock, who, line=key, reason=reason, as_of=when),
        )
    except claims.OverrideRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"override {done.override_id}: {done.line} let out ({'+'.join(done.codes)})")


# --- issue 20 item 1: the stream switch -----------------------------------------------------------


@click.group("streams")
def streams_group() -> None:
    """Which readiness fact streams an organisation sends (docs/billing-readiness.md)."""


@streams_group.command("set")
@click.option("--org", "org_id", required=True)
@click.option("--stream", type=click.Choice(STREAMS), required=True)
@click.option("--mode", type=click.Choice(("auto", "sent", "not_sent")), required=True)
@click.option("--by", "by", default=None, help="who sets it (recorded); default: OS user")
@click.option("--dsn", default=None)
@click.pass_context
def streams_set(
    ctx: click.Context,
    org_id: str,
    stream: Stream,
    mode: StreamMode,
    by: str | None,
    dsn: str | None,
) -> None:
    """Set one stream's mode for an organisation: auto (sent once any of its facts
    arrived), sent, or not_sent (its gates skipped, a *_UNKNOWN warning instead). Audited;
    the organisation's stored line readiness is assessed again at once, and exports and
    submissions use it from now on."""
    who = Requester.cli(by or _default_user(), org_id, "rtm billing streams set")

    async def body(conn: asyncpg.Connection) -> tuple[StreamMode, int]:
        await require_org(conn, org_id)
        return await readiness.set_stream_mode(conn, _clock(ctx), who, stream, mode)

    before, n = _run(ctx, dsn, body)
    click.echo(f"{org_id}: {stream} {before} -> {mode}; {n} claim lines assessed again")


@streams_group.command("show")
@click.option("--org", "org_id", required=True)
@click.option("--json", "as_json", is_flag=True, help="the modes as `readiness --streams` reads")
@click.option("--dsn", default=None)
@click.pass_context
def streams_show(ctx: click.Context, org_id: str, as_json: bool, dsn: str | None) -> None:
    """Each stream's mode for the organisation, and for auto whether it has sent any."""

    async def body(conn: asyncpg.Connection) -> tuple[Modes, set[tuple[str, Stream]]]:
        await require_org(conn, org_id)
        return await stream_modes(conn, [org_id]), await streams_seen(conn, [org_id])

    modes, seen = _run(ctx, dsn, body)
    if as_json:
        mine = modes.get(org_id, {})
        click.echo(orjson.dumps({org_id: {s: mine.get(s, "auto") for s in STREAMS}}).decode())
        return
    for stream in STREAMS:
        mode = modes.get(org_id, {}).get(stream, "auto")
        note = ""
        if mode == "auto":
            note = " (sent)" if (org_id, stream) in seen else " (none received: not sent)"
        click.echo(f"{stream:<10} {mode}{note}")


@click.command("readiness-backfill")
@click.option("--org", "org_id", default=None, help="one organisation (default: every one)")
@click.option("--dsn", default=None)
@click.pass_context
def readiness_backfill(ctx: click.Context, org_id: str | None, dsn: str | None) -> None:
    """Store every claim line's readiness from the event log, as of now (what the worker
    keeps as it streams; for data stored before it did). Idempotent."""
    done = _run(ctx, dsn, lambda conn: readiness.backfill(conn, _clock(ctx), org_id))
    for org, n in done.items():
        click.echo(f"{org}: {n} claim lines assessed")


BILLING_COMMANDS: tuple[click.Command, ...] = (
    readiness_backfill,
    streams_group,
    override_cmd,
    billing_export,
    billing_reconcile,
    billing_backfill,
    billing_readiness,
    profile,
    demographics,
    fees,
    submit,
    submissions,
    submission_file_cmd,
    claims_group,
    remit,
    escaped_denials_cmd,
)


@click.group()
def billing() -> None:
    """RTM billing."""


@billing.command("evaluate")
@click.option(
    "--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True
)
@click.option("--as-of", "as_of", required=True)
@click.option("--include-open", is_flag=True)
def billing_evaluate(events_path: Path, as_of: str, include_open: bool) -> None:
    """Print the claims CSV the rules give for a JSONL file, periods closed as of --as-of."""
    sys.exit(run_evaluate(events_path, parse_instant(as_of, "--as-of"), include_open, sys.stdout))


for _command in BILLING_COMMANDS:
    billing.add_command(_command)

COMMANDS: tuple[click.Command, ...] = (billing,)


# --- demo summary -----------------------------------------------------------------------------


async def summary(
    dsn: str, now: dt.datetime, patient_ids: list[str] | None = None
) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = await _with_conn(dsn, lambda conn: ledger.summary(conn, now, patient_ids))
    out["billing_summary_s"] = round(time.perf_counter() - t0, 2)
    return out


def billing_summary(settings: Settings, patient_ids: list[str] | None = None) -> dict[str, Any]:
    """Demo summary section: billable lines by code, patients on track for 98977
    (for `patient_ids`, or every patient in the ledger)."""
    return asyncio.run(summary(settings.db.dsn, clock_for(settings).now(), patient_ids))
