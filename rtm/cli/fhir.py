"""`rtm fhir observations`: one patient's pain reports and exercise sessions as a FHIR R4
searchset Bundle (``alerts.fhir``), from TimescaleDB, the same Bundle the gateway's
``GET /fhir/Observation`` answers. Scoped to the organisation (``--org``: the patient must
be one of its patients, else "unknown patient", exit 1) and audited like the gateway's
reads (actor ``cli:<login>``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import Any

import asyncpg
import click
import orjson

from alerts.fhir import CLINICAL_TYPES, observation_bundle
from rtm.cli.options import settings_of
from rtm.files import write_private
from schemas.events import parse_event_json
from streams.access import Scope
from streams.clock import clock_for
from streams.db.access import audit, in_scope
from streams.db.events import clinical_payloads


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {value!r}", param_hint=name) from None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "unknown"


async def export_observations(
    dsn: str,
    *,
    org_id: str,
    patient_id: str,
    frm: dt.date | None,
    to: dt.date | None,
    actor: str,
    now: dt.datetime,
) -> dict[str, Any] | None:
    """The Bundle, or None for a patient outside the organisation (nothing audited)."""
    conn = await asyncpg.connect(dsn)
    try:
        if not await in_scope(conn, Scope(org_id, None), patient_id):
            return None
        rows = await clinical_payloads(conn, org_id, patient_id, CLINICAL_TYPES, frm, to)
        await audit(
            conn,
            org_id=org_id,
            actor=actor,
            role="cli",
            action="read",
            resource="rtm fhir observations",
            patient_ids=[patient_id],
            detail={
                "count": len(rows),
                "from": frm.isoformat() if frm else None,
                "to": to.isoformat() if to else None,
            },
        )
    finally:
        await conn.close()
    return observation_bundle((parse_event_json(p) for p in rows), now)


@click.group()
def fhir() -> None:
    """Clinical data as FHIR R4."""


@fhir.command("observations")
@click.option("--patient", "patient_id", required=True, help="the (pseudonymous) patient id")
@click.option("--from", "frm", default=None, help="first patient-local date, YYYY-MM-DD")
@click.option("--to", "to", default=None, help="last patient-local date, YYYY-MM-DD")
@click.option("--org", "org_id", default="default", show_default=True, help="organisation")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="default stdout")
@click.pass_context
def observations(
    ctx: click.Context,
    patient_id: str,
    frm: str | None,
    to: str | None,
    org_id: str,
    out: Path | None,
) -> None:
    """Pain reports and exercise sessions of a patient as a FHIR R4 searchset Bundle."""
    date_from, date_to = _date(frm, "--from"), _date(to, "--to")
    if date_from and date_to and date_from > date_to:
        raise click.BadParameter("--from is after --to", param_hint="--from")
    settings = settings_of(ctx)
    bundle = asyncio.run(
        export_observations(
            settings.db.dsn,
            org_id=org_id,
            patient_id=patient_id,
            frm=date_from,
            to=date_to,
            actor=f"cli:{_user()}",
            now=clock_for(settings).now(),
        )
    )
    if bundle is None:
        click.echo(f"unknown patient {patient_id} in organisation {org_id}", err=True)
        sys.exit(1)
    text = orjson.dumps(bundle, option=orjson.OPT_INDENT_2).decode() + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        write_private(out, text)
        click.echo(f"wrote {bundle['total']} observations to {out}", err=True)


COMMANDS: tuple[click.Command, ...] = (fhir,)
