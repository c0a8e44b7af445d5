"""`rtm`: the root group. It builds the one Settings object every command is given, and
adds the command families, one module each beside this one (as the FastAPI template's
``api/main.py`` only includes its routers)."""

from __future__ import annotations

import click

from rtm.cli import (
    access,
    alerts,
    bench,
    billing,
    events,
    fhir,
    instruments,
    intake,
    outcomes,
    pathways,
    programs,
    rollups,
    services,
)
from streams.settings import Settings


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """RTM event streaming: ingest, adherence, alerts and billing on Kafka + TimescaleDB."""
    try:
        ctx.obj = Settings()
    except Exception as exc:  # a clear one-line configuration error, not a traceback
        raise click.ClickException(f"configuration: {exc}") from None


FAMILIES = (
    services,
    events,
    alerts,
    billing,
    access,
    fhir,
    instruments,
    intake,
    outcomes,
    pathways,
    programs,
    rollups,
    bench,
)
for family in FAMILIES:
    for command in family.COMMANDS:
        main.add_command(command)
