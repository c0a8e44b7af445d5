"""`rtm instruments`: licences of licence-gated outcome measures (issue 19 item 2;
docs/pathways-and-outcomes.md, Licences).

``rtm instruments activate --org O --instrument I --licence-ref REF [--until TS]`` appends an
activation (never edited: a renewal is a new one), audited in the OS user's name; a free
instrument (nothing to activate) or an unknown one is refused with a clear error (exit 2).
``rtm instruments list --org O`` prints one JSON object per instrument of the registry: its
licence status, whether the organisation may use it as a pathway's primary instrument now,
and the organisation's activations of it.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import click
import orjson

from outcomes.instruments import INSTRUMENTS
from outcomes.licences import Activation, LicenceError, activatable, usable_as_primary
from rtm.cli.db import audit_change, check_id, cli_actor, require_org, run_db
from rtm.cli.options import parse_instant, settings_of
from streams.clock import clock_for
from streams.db.instruments import activations, add_activation


@click.group()
def instruments() -> None:
    """Outcome measures (PROMs): the registry and the organisation's licences."""


@instruments.command("activate")
@click.option("--org", "org_id", required=True)
@click.option("--instrument", "instrument_id", required=True, help="e.g. odi, ndi, quickdash")
@click.option("--licence-ref", "licence_ref", required=True, help="the licence's reference")
@click.option("--until", default=None, help="the licence ends at this instant (RFC 3339)")
@click.pass_context
def activate(
    ctx: click.Context, org_id: str, instrument_id: str, licence_ref: str, until: str | None
) -> None:
    """Record the organisation's licence of a licence-gated instrument (from now)."""
    check_id(org_id, "organisation")
    try:
        activatable(instrument_id)
    except LicenceError as exc:
        raise click.BadParameter(str(exc), param_hint="'--instrument'") from None
    licence_ref = licence_ref.strip()
    if not licence_ref or len(licence_ref) > 200 or "\x00" in licence_ref:
        raise click.BadParameter("1-200 characters", param_hint="'--licence-ref'")
    now = clock_for(settings_of(ctx)).now()
    valid_until = parse_instant(until, "'--until'") if until is not None else None
    if valid_until is not None and valid_until <= now:
        raise click.BadParameter("the licence would end before it starts", param_hint="'--until'")
    activation = Activation(org_id, instrument_id, licence_ref, now, valid_until)

    async def body(conn: asyncpg.Connection) -> int:
        await require_org(conn, org_id)
        activation_id = await add_activation(conn, activation, cli_actor())
        detail = {
            "activation_id": activation_id,
            "instrument": instrument_id,
            "licence_ref": licence_ref,
            "valid_until": None if valid_until is None else valid_until.isoformat(),
        }
        await audit_change(conn, org_id, "instruments.activated", detail)
        return activation_id

    activation_id = run_db(ctx, body)
    until_text = "" if valid_until is None else f" until {valid_until.isoformat()}"
    click.echo(
        f"{org_id}: {instrument_id} activated (licence {licence_ref}{until_text},"
        f" activation {activation_id})"
    )


def _iso(ts: dt.datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


@instruments.command("list")
@click.option("--org", "org_id", required=True)
@click.pass_context
def list_instruments(ctx: click.Context, org_id: str) -> None:
    """Print one JSON object per instrument: id, name, licence, usable_as_primary (now),
    activations (the organisation's, oldest first)."""
    check_id(org_id, "organisation")

    async def body(conn: asyncpg.Connection) -> list[tuple[Activation, str]]:
        await require_org(conn, org_id)
        return await activations(conn, org_id)

    rows = run_db(ctx, body)
    now = clock_for(settings_of(ctx)).now()
    held = [a for a, _ in rows]
    for inst in sorted(INSTRUMENTS.values(), key=lambda i: i.id):
        obj = {
            "id": inst.id,
            "name": inst.name,
            "licence": inst.licence,
            "usable_as_primary": usable_as_primary(inst.id, org_id, now, held),
            "activations": [
                {
                    "licence_ref": a.licence_ref,
                    "activated_at": _iso(a.activated_at),
                    "valid_until": _iso(a.valid_until),
                    "activated_by": by,
                }
                for a, by in rows
                if a.instrument == inst.id
            ],
        }
        click.echo(orjson.dumps(obj).decode())


COMMANDS: tuple[click.Command, ...] = (instruments,)
