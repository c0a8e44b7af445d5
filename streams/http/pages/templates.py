"""``/ui/programs/templates``: the organisation's home exercise program template library
(issue 17 item 3), the use case of `rtm programs templates add|list`
(``streams.services.program_templates``).

GET lists every template with all its versions, newest first (exercises with dosage,
sessions per week, who stored it and when); clinicians and admins read it. ``POST`` stores
a template's next version from the form (a new template, or an edit of the newest version:
an old version is never changed, and patients keep the version they were assigned), in the
signed-in user's name, CSRF-checked and audited; then back to the list."""

from __future__ import annotations

from itertools import groupby
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from streams.access import Principal
from streams.db.access import audit_principal
from streams.db.alerts import db_now
from streams.http.auth import form_fields
from streams.http.deps import AuthenticateDep, PrincipalDep, StoreDep
from streams.http.pages.common import (
    PageError,
    clinic_time,
    clinic_zone,
    need,
    page_router,
    page_user,
    render,
)
from streams.services.program_templates import TemplateRefused, add_template, list_templates

router = page_router()
ROWS = 8  # exercise rows a form carries (its existing exercises, then blank ones)
DOSAGE = ("sets", "reps", "hold_s")


def exercises_of(fields: dict[str, str]) -> bytes:
    """The form's exercise rows as the JSON array the service checks: a row without an
    exercise id is left out (that removes an exercise); blank dosage is absent."""
    rows: list[dict[str, Any]] = []
    for i in range(ROWS):
        exercise_id = fields.get(f"exercise_id-{i}", "").strip()
        if not exercise_id:
            continue
        row: dict[str, Any] = {"exercise_id": exercise_id}
        if name := fields.get(f"name-{i}", "").strip():
            row["name"] = name
        for f in DOSAGE:
            text = fields.get(f"{f}-{i}", "").strip()
            if text:
                row[f] = int(text) if text.isdigit() and len(text) < 6 else text
        rows.append(row)
    return orjson.dumps(rows)


@router.get("/programs/templates", response_class=HTMLResponse)
async def templates_page(
    request: Request, authenticate: AuthenticateDep, store: StoreDep
) -> HTMLResponse:
    """Every template of the organisation with all its versions, newest first."""
    who = await page_user(request, authenticate)
    need(who, "read_clinical")
    async with store.acquire() as conn:
        versions = await list_templates(conn, who.org_id, all_versions=True)
        zone = await clinic_zone(conn, who)
        now = await db_now(conn)
        await audit_principal(conn, who, "read", "GET /ui/programs/templates")
    library = []
    for template_id, group in groupby(versions, key=lambda t: t.template_id):
        newest_first = sorted(group, key=lambda t: t.version, reverse=True)
        library.append(
            {
                "template_id": template_id,
                "latest": newest_first[0],
                "versions": [
                    {"t": t, "when": clinic_time(t.created_at, now, zone)} for t in newest_first
                ],
            }
        )
    library.sort(key=lambda x: (x["latest"].name, x["template_id"]))
    return render(
        "templates.html",
        who=who,
        nav="templates",
        library=library,
        may_edit=who.may("manage_templates"),
        rows=ROWS,
    )


@router.post("/programs/templates", response_class=HTMLResponse)
async def template_form(request: Request, who: PrincipalDep, store: StoreDep) -> Response:
    """Store the template's next version (a new template's first); a refused one is a 422
    page naming each bad field, and nothing is stored."""
    _form_user(who)
    fields = form_fields(await request.body())
    template_id = fields.get("template_id", "").strip()
    spw = fields.get("sessions_per_week", "").strip()
    if not (spw.isdigit() and len(spw) < 3):
        raise PageError(422, "Not stored", "sessions per week: a whole number from 0 to 28")
    try:
        async with store.acquire() as conn:
            version = await add_template(
                conn,
                org_id=who.org_id,
                template_id=template_id,
                name=fields.get("name", ""),
                sessions_per_week=int(spw),
                exercises=exercises_of(fields),
                actor=who.actor,
                role=who.role_text,
                resource="POST /ui/programs/templates",
            )
    except TemplateRefused as exc:
        raise PageError(422, "Not stored", str(exc)) from None
    return RedirectResponse(f"/ui/programs/templates#tpl-{template_id}-v{version}", 303)


def _form_user(who: Principal) -> None:
    if who.kind != "user":
        raise PageError(403, "Not for machine keys")
    need(who, "manage_templates")
