"""`rtm programs templates`: an organisation's home exercise program templates (issue 17).

``rtm programs templates add --org O --id T --name N --sessions-per-week S --file F.json``
stores the template's next version (1 for a new one; a stored version is never changed, an
edit is a new version), audited; ``F.json`` is a JSON array of exercises as in
``program.exercises`` (docs/events.md), each field checked with its own error. ``rtm
programs templates list --org O [--all-versions]`` prints one JSON object per template (its
newest version), or per stored version.
"""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import click
import orjson
from pydantic import TypeAdapter, ValidationError

from rtm.cli.db import audit_change, check_id, cli_actor, require_org, run_db
from schemas.events import Exercise, Program
from streams.db.program_templates import (
    ProgramTemplate,
    add_version,
    latest_templates,
    template_versions,
)

_EXERCISES = TypeAdapter(list[Exercise])


def parse_exercises(raw: bytes, sessions_per_week: int) -> list[Exercise]:
    """The exercises of a template file, checked as a program's (bounds, distinct ids); a
    ValueError names each bad field."""
    try:
        exercises = _EXERCISES.validate_json(raw)
        Program(sessions_per_week=sessions_per_week, exercises=exercises)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(problems) from None
    if not exercises:
        raise ValueError("file: a template needs at least one exercise")
    return exercises


@click.group()
def programs() -> None:
    """Home exercise programs."""


@programs.group("templates")
def templates() -> None:
    """The organisation's template library (versioned, immutable per version)."""


@templates.command("add")
@click.option("--org", "org_id", required=True)
@click.option("--id", "template_id", required=True, help="the template's id (an edit: the same)")
@click.option("--name", required=True)
@click.option("--sessions-per-week", type=click.IntRange(0, 28), required=True)
@click.option(
    "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.pass_context
def templates_add(
    ctx: click.Context,
    org_id: str,
    template_id: str,
    name: str,
    sessions_per_week: int,
    path: Path,
) -> None:
    """Store the template's next version."""
    check_id(template_id, "template id")
    name = name.strip()
    if not name or len(name) > 80 or "\x00" in name:
        raise click.BadParameter("1-80 characters", param_hint="'--name'")
    try:
        exercises = parse_exercises(path.read_bytes(), sessions_per_week)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--file'") from None

    async def body(conn: asyncpg.Connection) -> int:
        await require_org(conn, org_id)
        version = await add_version(
            conn, org_id, template_id, name, exercises, sessions_per_week, cli_actor()
        )
        detail = {"template_id": template_id, "version": version}
        await audit_change(conn, org_id, "programs.template_added", detail)
        return version

    version = run_db(ctx, body)
    click.echo(f"{org_id}: template {template_id} version {version} stored")


def _as_json(t: ProgramTemplate) -> str:
    return json.dumps(
        {
            "template_id": t.template_id,
            "version": t.version,
            "name": t.name,
            "sessions_per_week": t.sessions_per_week,
            "exercises": [orjson.loads(e.model_dump_json(exclude_none=True)) for e in t.exercises],
            "created_by": t.created_by,
        }
    )


@templates.command("list")
@click.option("--org", "org_id", required=True)
@click.option("--all-versions", is_flag=True, help="every stored version, not only the newest")
@click.pass_context
def templates_list(ctx: click.Context, org_id: str, all_versions: bool) -> None:
    """Print one JSON object per template (its newest version) or per version."""

    async def body(conn: asyncpg.Connection) -> list[ProgramTemplate]:
        await require_org(conn, org_id)
        if all_versions:
            return await template_versions(conn, org_id)
        return await latest_templates(conn, org_id)

    for t in run_db(ctx, body):
        click.echo(_as_json(t))


COMMANDS: tuple[click.Command, ...] = (programs,)
