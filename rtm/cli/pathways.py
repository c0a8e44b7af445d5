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

import asyncpg
import click
import pydantic

from intake.evaluate import LineError, read_events
from pathways.engine import EpisodeView
from pathways.model import Pathway, builtin, parse_pathway
from pathways.offline import diff, evaluate_rows, render, views
from rtm.cli.db import cli_actor, require_org, run_db
from rtm.cli.options import parse_instant
from schemas.events import Event
from streams.db.pathway_versions import StoredVersion, published_versions
from streams.services.pathways import VersionConflict, publish

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


@pathways.command("publish")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--org", "org_id", required=True)
@click.pass_context
def pathways_publish(ctx: click.Context, path: Path, org_id: str) -> None:
    """Publish a pathway version (JSON, as docs/pathways-and-outcomes.md) for the
    organisation, audited. A published version never changes: the same id and version with
    other content is refused."""
    pathway = load_version(str(path))

    async def body(conn: asyncpg.Connection) -> bool:
        await require_org(conn, org_id)
        try:
            return await publish(conn, org_id, pathway, cli_actor(), "cli")
        except VersionConflict as exc:
            raise click.ClickException(str(exc)) from None

    stored = run_db(ctx, body)
    click.echo(f"{org_id}: {pathway.key} " + ("published" if stored else "published already"))


def _listed(pathway: Pathway, stored: StoredVersion | None) -> str:
    return render(
        {
            "pathway": pathway.id,
            "version": pathway.version,
            "builtin": stored is None,
            "published_by": None if stored is None else stored.published_by,
            "published_at": None if stored is None else stored.published_at.isoformat(),
        }
    )


@pathways.command("list")
@click.option("--org", "org_id", required=True)
@click.pass_context
def pathways_list(ctx: click.Context, org_id: str) -> None:
    """One JSON object per version the organisation's episodes may name: the built-in ones,
    then those it published (by id, then version)."""

    async def body(conn: asyncpg.Connection) -> list[StoredVersion]:
        await require_org(conn, org_id)
        return await published_versions(conn, org_id)

    stored = run_db(ctx, body)
    for _, shipped in sorted(builtin().items()):
        click.echo(_listed(shipped, None))
    for s in stored:
        click.echo(_listed(s.pathway, s))


COMMANDS: tuple[click.Command, ...] = (pathways,)
