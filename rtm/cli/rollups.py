"""`rtm rollups backfill`: the dashboard's daily adherence rows from the stored events.

Migration 010 filled open-alert counts and last activity from what was stored;
``patient_daily_adherence`` fills only as new events arrive (each batch writes its patients'
last days). This recomputes every episode day of every stored patient from the raw events
with the same pure functions (``alerts.rollup.adherence_history``) and writes the rows that
are missing or differ: idempotent (a second run writes nothing), safe beside a running
worker (streams.db.rollups.backfill_adherence_chunk).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import asyncpg
import click

from rtm.cli.options import settings_of
from streams.clock import clock_for
from streams.db.pool import migrate
from streams.db.rollups import backfill_adherence_chunk, backfill_patients


async def backfill(
    dsn: str,
    patient_prefix: str | None = None,
    chunk: int = 500,
    log: bool = False,
    now: dt.datetime | None = None,
) -> tuple[int, int, int]:
    """(patients, rows computed, rows written); open episodes run to the patient-local day
    of ``now`` (the stream's and the API's today) when given."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        patients = await backfill_patients(conn, patient_prefix)
        computed = written = 0
        t0 = time.monotonic()
        for i in range(0, len(patients), chunk):
            c, w = await backfill_adherence_chunk(conn, patients[i : i + chunk], now=now)
            computed, written = computed + c, written + w
            if log:
                done = min(i + chunk, len(patients))
                click.echo(
                    f"{done:,}/{len(patients):,} patients, {written:,} rows written "
                    f"({time.monotonic() - t0:.0f} s)",
                    err=True,
                )
    finally:
        await conn.close()
    return len(patients), computed, written


@click.group()
def rollups() -> None:
    """The dashboard's per-patient rollups."""


@rollups.command("backfill")
@click.option("--patient-prefix", default=None, help="only patients whose id starts so")
@click.option("--chunk", type=click.IntRange(1, 10_000), default=500, show_default=True)
@click.option("--dsn", default=None)
@click.pass_context
def rollups_backfill(
    ctx: click.Context, patient_prefix: str | None, chunk: int, dsn: str | None
) -> None:
    """Fill patient_daily_adherence from the stored events (idempotent)."""
    settings = settings_of(ctx)
    patients, computed, written = asyncio.run(
        backfill(
            dsn or settings.db.dsn, patient_prefix, chunk, log=True, now=clock_for(settings).now()
        )
    )
    click.echo(
        f"daily adherence: {patients:,} patients, {computed:,} days computed, "
        f"{written:,} rows written (missing or different)"
    )


COMMANDS: tuple[click.Command, ...] = (rollups,)
