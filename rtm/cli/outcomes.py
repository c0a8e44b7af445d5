"""The road and the mirror's offline commands (issue 19; docs/pathways-and-outcomes.md):

``rtm assessments score --events FILE.jsonl [--as-of TS]`` prints one JSON object per
assessment (``outcomes.score``): its instrument's score rounded to one decimal, or why the
form is invalid. ``rtm outcomes episodes`` and ``rtm outcomes report --by …`` print the
outcome rows and the report (``pathways.outcomes``; the options as ``rtm pathways``').
Invalid lines are reported on stderr and skipped; exit code 0 if every line was valid, 1 if
some were skipped (the output is still complete for the valid ones).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from intake.evaluate import LineError, read_events
from outcomes.score import render, score_rows
from pathways.offline import episode_rows, report_rows
from pathways.outcomes import GROUP_BY, GroupBy
from rtm.cli.options import parse_instant
from rtm.cli.pathways import AS_OF, EVENTS, LICENSED, PATHWAY_FILES, emit, episode_views


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


@click.group()
def outcomes() -> None:
    """Outcomes per episode and the report (offline, over a JSONL file)."""


@outcomes.command("episodes")
@EVENTS
@AS_OF
@LICENSED
@PATHWAY_FILES
def outcomes_episodes(
    events_path: Path, as_of: str, licensed: str, pathway_files: tuple[Path, ...]
) -> None:
    """One JSON object per episode: its primary scores, change, MCID, visits, exit,
    drop-out and adherence (docs/pathways-and-outcomes.md, Outcomes per episode)."""
    eps, skipped = episode_views(events_path, as_of, licensed, pathway_files)
    emit(episode_rows(eps))
    sys.exit(1 if skipped else 0)


@outcomes.command("report")
@EVENTS
@AS_OF
@click.option("--by", "by", type=click.Choice(GROUP_BY), required=True)
@LICENSED
@PATHWAY_FILES
def outcomes_report(
    events_path: Path, as_of: str, by: GroupBy, licensed: str, pathway_files: tuple[Path, ...]
) -> None:
    """One JSON object per pathway version, clinician, organisation or body region: MCID,
    resolution, drop-out rates with their counts, median days to discharge, and the MCID
    rate by adherence tertile."""
    eps, skipped = episode_views(events_path, as_of, licensed, pathway_files)
    emit(report_rows(eps, by))
    sys.exit(1 if skipped else 0)


COMMANDS: tuple[click.Command, ...] = (assessments, outcomes)
