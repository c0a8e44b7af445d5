"""The organisation's home exercise program template library (issue 17 item 3): the one use
case behind `rtm programs templates add|list` and the dashboard's ``/ui/programs/templates``.

``add_template`` checks a template (its id, its name, its exercises as a program's: bounds,
distinct ids, at least one), stores the template's next version (1 for a new template; a
stored version is never changed: an edit is a new version) and leaves the audit row in the
caller's name, in one transaction. ``list_templates``: each template's newest version, or
every stored version."""

from __future__ import annotations

import asyncpg
from pydantic import TypeAdapter, ValidationError

from schemas.events import Exercise, Program
from streams.access import ID_PATTERN
from streams.db.access import audit
from streams.db.program_templates import (
    ProgramTemplate,
    add_version,
    latest_templates,
    template_versions,
)

_EXERCISES = TypeAdapter(list[Exercise])
MAX_NAME = 80


class TemplateRefused(ValueError):
    """A template that is not stored: the message names each bad field."""


def parse_exercises(raw: bytes, sessions_per_week: int) -> list[Exercise]:
    """The exercises of a template (a JSON array as in ``program.exercises``), checked as
    a program's; a TemplateRefused names each bad field."""
    try:
        exercises = _EXERCISES.validate_json(raw)
        Program(sessions_per_week=sessions_per_week, exercises=exercises)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'exercises'}: {e['msg']}" for e in exc.errors()
        )
        raise TemplateRefused(problems) from None
    if not exercises:
        raise TemplateRefused("exercises: a template needs at least one exercise")
    return exercises


def check_template(template_id: str, name: str, sessions_per_week: int) -> str:
    """The template's name, trimmed; a TemplateRefused for a bad id, name or frequency."""
    if not ID_PATTERN.match(template_id):
        raise TemplateRefused("template id: 1-64 of A-Z a-z 0-9 . _ : -")
    name = name.strip()
    if not name or len(name) > MAX_NAME or "\x00" in name:
        raise TemplateRefused(f"name: 1-{MAX_NAME} characters")
    if not 0 <= sessions_per_week <= 28:
        raise TemplateRefused("sessions per week: 0 to 28")
    return name


async def add_template(
    conn: asyncpg.Connection,
    *,
    org_id: str,
    template_id: str,
    name: str,
    sessions_per_week: int,
    exercises: bytes,
    actor: str,
    role: str,
    resource: str,
) -> int:
    """Store the template's next version in ``actor``'s name, audited; its number."""
    name = check_template(template_id, name, sessions_per_week)
    checked = parse_exercises(exercises, sessions_per_week)
    async with conn.transaction():
        version = await add_version(
            conn, org_id, template_id, name, checked, sessions_per_week, actor
        )
        await audit(
            conn,
            org_id=org_id,
            actor=actor,
            role=role,
            action="programs.template_added",
            resource=resource,
            detail={"template_id": template_id, "version": version},
        )
    return version


async def list_templates(
    conn: asyncpg.Connection, org_id: str, *, all_versions: bool = False
) -> list[ProgramTemplate]:
    """Each template's newest version (by name), or every stored version (oldest first
    per template)."""
    if all_versions:
        return await template_versions(conn, org_id)
    return await latest_templates(conn, org_id)
