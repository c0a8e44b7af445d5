"""`rtm schema|simulate|produce|demo`: the event contract for producers, synthetic
cohorts, posting a file through the gateway, and the main job end to end."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path

import click
import orjson

from rtm.cli.options import settings_of
from rtm.files import write_private
from rtm.produce import produce_file
from rtm.simulate import (
    DEFAULT_START,
    demographics_csv,
    simulate,
    synthetic_demographics,
    write_jsonl,
)
from rtm.simulate_readiness import add_readiness_facts
from schemas.events import json_schema


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=None)
def schema(out: Path | None) -> None:
    """Write the JSON Schema of the event contract (for producers)."""
    text = orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    if out:
        out.write_text(text + "\n")
    else:
        click.echo(text)


@click.command("simulate")
@click.option("--patients", type=int, default=200, show_default=True)
@click.option("--days", type=int, default=45, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--invalid-ratio", type=float, default=0.0, show_default=True)
@click.option(
    "--intakes",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="screen this share of the patients whose first episode starts a week or more into"
    " the window (intake.submitted, then contacts: on time, late or never; every route)",
)
@click.option(
    "--outcomes",
    is_flag=True,
    help="episodes with a body region, PROMs at the timepoints, visits, falls and clinician"
    " pauses with resumes, every exit reason, and a planted effect (the busiest PT's and the"
    " more adherent patients improve more)",
)
@click.option(
    "--readiness-facts",
    is_flag=True,
    help="also consent, plan-of-care, procedure, RPM and therapy-spend facts for most"
    " episodes, with a few planted problems (missing consent, expired plan of care, header"
    " ICD-10 code M54.5, RPM overlap, a patient crossing the KX threshold)",
)
@click.option(
    "--demographics-out",
    type=click.Path(path_type=Path),
    default=None,
    help="also write clearly synthetic demographics of the cohort (CSV for"
    " `rtm billing demographics load`)",
)
def simulate_command(
    patients: int,
    days: int,
    seed: int,
    out: Path,
    invalid_ratio: float,
    intakes: float,
    outcomes: bool,
    readiness_facts: bool,
    demographics_out: Path | None,
) -> None:
    """Write a synthetic cohort as JSONL, in arrival order."""
    events = list(
        simulate(
            patients, days, seed, invalid_ratio=invalid_ratio, intakes=intakes, outcomes=outcomes
        )
    )
    if readiness_facts:
        end = DEFAULT_START + dt.timedelta(days=max(days - 1, 0))
        events = list(add_readiness_facts(events, seed, end))
    n = write_jsonl(events, out)
    click.echo(f"wrote {n} events to {out}", err=True)
    if demographics_out is not None:
        ids = {e["patient_id"] for e in events if isinstance(e.get("patient_id"), str)}
        write_private(demographics_out, demographics_csv(synthetic_demographics(ids, seed)))
        click.echo(
            f"wrote synthetic demographics of {len(ids)} patients to {demographics_out}", err=True
        )


@click.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--url", default=None, help="gateway base URL (default from settings)")
@click.option("--batch", type=int, default=500, show_default=True)
@click.option("--concurrency", type=int, default=4, show_default=True)
@click.pass_context
def produce(ctx: click.Context, file: Path, url: str | None, batch: int, concurrency: int) -> None:
    """Post a JSONL file through the gateway in batches."""
    result = asyncio.run(
        produce_file(settings_of(ctx), file, url, batch, concurrency, progress=True)
    )
    click.echo(orjson.dumps(result.as_dict()).decode())


@click.command()
@click.option("--patients", type=int, default=200, show_default=True)
@click.option("--days", type=int, default=45, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.pass_context
def demo(ctx: click.Context, patients: int, days: int, seed: int) -> None:
    """Main job end to end: services, worker, gateway, a cohort posted, a summary printed."""
    # deferred: the demo ticks through streams.kafka.producer (aiokafka, ~0.2 s at CLI start)
    from rtm.demo import run_demo

    sys.exit(run_demo(settings_of(ctx), patients, days, seed))


COMMANDS: tuple[click.Command, ...] = (schema, simulate_command, produce, demo)
