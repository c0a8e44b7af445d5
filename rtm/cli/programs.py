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

from rtm.cli.db import check_id, cli_actor, require_org, run_db
from streams.db.program_templates import ProgramTemplate
from streams.services.program_templates import (
    TemplateRefused,
    add_template,
    check_template,
    list_templates,
    parse_exercises,
)


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
    """Store the template's next version (the dashboard's templates page does the same)."""
    check_id(template_id, "template id")
    raw = path.read_bytes()
    try:  # checked before connecting: a bad file names its fields
        name = check_template(template_id, name, sessions_per_week)
        parse_exercises(raw, sessions_per_week)
    except TemplateRefused as exc:
        hint = "'--name'" if str(exc).startswith("name") else "'--file'"
        raise click.BadParameter(str(exc), param_hint=hint) from None

    async def body(conn: asyncpg.Connection) -> int:
        await require_org(conn, org_id)
        return await add_template(
            conn,
            org_id=org_id,
            template_id=template_id,
            name=name,
            sessions_per_week=sessions_per_week,
            exercises=raw,
            actor=cli_actor(),
            role="cli",
            resource="rtm programs templates add",
        )

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
        return await list_templates(conn, org_id, all_versions=all_versions)

    for t in run_db(ctx, body):
        click.echo(_as_json(t))


COMMANDS: tuple[click.Command, ...] = (programs,)
