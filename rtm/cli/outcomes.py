"""The road and the mirror's offline commands (issue 19; docs/pathways-and-outcomes.md):

``rtm assessments score --events FILE.jsonl [--as-of TS]`` prints one JSON object per
assessment (``outcomes.score``): its instrument's score rounded to one decimal, or why the
form is invalid. Invalid lines are reported on stderr and skipped; exit code 0 if every line
was valid, 1 if some were skipped (the output is still complete for the valid ones).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from intake.evaluate import LineError, read_events
from outcomes.score import render, score_rows
from rtm.cli.options import parse_instant


@click.group()
def assessments() -> None:
    """Outcome measures (PROMs): scoring."""


@assessments.command("score")
@click.option(
    "--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True
)
@click.option("--as-of", "as_of", default=None, help="ignore events at or after this instant")
def assessments_score(events_path: Path, as_of: str | None) -> None:
    """Print one JSON object per assessment.completed of a JSONL file: event_id,
    patient_id, instrument, score, valid, reason (sorted by event_id)."""
    when = parse_instant(as_of) if as_of is not None else None
    errors: list[LineError] = []
    with events_path.open("rb") as fh:
        rows = score_rows(read_events(fh, errors), when)
    for err in errors:
        click.echo(f"{events_path}:{err.line_no}: skipped: {err.message}", err=True)
    for row in rows:
        sys.stdout.write(render(row) + "\n")
    sys.exit(1 if errors else 0)


COMMANDS: tuple[click.Command, ...] = (assessments,)
