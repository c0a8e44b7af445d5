"""``rtm pathways evaluate`` and ``rtm pathways diff`` (issue 19;
docs/pathways-and-outcomes.md), offline over a JSONL file: the same pure engine
(``pathways``) the worker is to run. Invalid lines, and episodes on a pathway version that
is not available, are reported on stderr and skipped; exit code 0 if nothing was skipped,
1 if something was (the output is still complete for the rest)."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable
from pathlib import Path

import click
import pydantic

from intake.evaluate import LineError, read_events
from pathways.engine import EpisodeView
from pathways.model import Pathway, builtin, parse_pathway
from pathways.offline import diff, evaluate_rows, render, views
from rtm.cli.options import parse_instant
from schemas.events import Event

EVENTS = click.option(
    "--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True
)
AS_OF = click.option("--as-of", "as_of", required=True, help="ignore events at or after this")
LICENSED = click.option(
    "--licensed",
    default="",
    help="licence-gated instruments the organisation may use as primary (e.g. odi,ndi)",
)
PATHWAY_FILES = click.option(
    "--pathway",
    "pathway_files",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="a pathway version's JSON beside the built-in ones (repeatable)",
)


def licences(value: str) -> frozenset[str]:
    return frozenset(x.strip() for x in value.split(",") if x.strip())


def load_version(ref: str) -> Pathway:
    """A built-in version (``msk-default@1``) or a version's JSON file."""
    known = builtin()
    if ref in known:
        return known[ref]
    path = Path(ref)
    if not path.is_file():
        raise click.BadParameter(
            f"{ref!r} is neither a built-in version ({', '.join(known)}) nor a file"
        )
    try:
        return parse_pathway(path.read_bytes())
    except pydantic.ValidationError as exc:
        raise click.BadParameter(f"{ref}: not a pathway version: {exc}") from None


def versions_with(files: Iterable[Path]) -> dict[str, Pathway]:
    """The built-in versions and those of the given files (a file may not redefine one)."""
    known = builtin()
    for f in files:
        p = load_version(str(f))
        if p.key in known and known[p.key] != p:
            raise click.BadParameter(f"{f}: {p.key} is published already with other content")
        known[p.key] = p
    return known


def read(events_path: Path, errors: list[LineError]) -> list[Event]:
    with events_path.open("rb") as fh:
        return list(read_events(fh, errors))


def report_skipped(events_path: Path, errors: list[LineError], missing: list[str]) -> None:
    for err in errors:
        click.echo(f"{events_path}:{err.line_no}: skipped: {err.message}", err=True)
    for message in missing:
        click.echo(f"skipped: {message}", err=True)


def episode_views(
    events_path: Path, as_of: str, licensed: str, pathway_files: Iterable[Path]
) -> tuple[list[EpisodeView], bool]:
    """The episodes of a file as of an instant (skipped lines and episodes reported), and
    whether anything was skipped."""
    when = parse_instant(as_of, "--as-of")
    versions = versions_with(pathway_files)
    errors: list[LineError] = []
    eps, missing = views(read(events_path, errors), when, versions, licences(licensed))
    report_skipped(events_path, errors, missing)
    return eps, bool(errors or missing)


def emit(rows: Iterable[dict[str, object]]) -> None:
    for row in rows:
        sys.stdout.write(render(row) + "\n")


@click.group()
def pathways() -> None:
    """Care pathways: tasks and decisions per episode, and what a new version would change."""


@pathways.command("evaluate")
@EVENTS
@AS_OF
@LICENSED
@PATHWAY_FILES
def pathways_evaluate(
    events_path: Path, as_of: str, licensed: str, pathway_files: tuple[Path, ...]
) -> None:
    """One JSON object per episode: episode_id, pathway, version, tasks [kind, due_on,
    done_on, status], decisions [on, decision, reason]."""
    eps, skipped = episode_views(events_path, as_of, licensed, pathway_files)
    emit(evaluate_rows(eps))
    sys.exit(1 if skipped else 0)


@pathways.command("diff")
@EVENTS
@AS_OF
@click.option("--from", "source", required=True, help="a version: msk-default@1 or a JSON file")
@click.option("--to", "target", required=True, help="a version: a JSON file or msk-default@1")
@LICENSED
def pathways_diff(events_path: Path, as_of: str, source: str, target: str, licensed: str) -> None:
    """Replay every episode under both versions; print each episode whose tasks or
    decisions differ (only_from / only_to), then the counts per decision. Read-only."""
    when: dt.datetime = parse_instant(as_of, "--as-of")
    old, new = load_version(source), load_version(target)
    errors: list[LineError] = []
    rows = diff(read(events_path, errors), when, old, new, licences(licensed))
    report_skipped(events_path, errors, [])
    emit(rows)
    sys.exit(1 if errors else 0)


COMMANDS: tuple[click.Command, ...] = (pathways,)
