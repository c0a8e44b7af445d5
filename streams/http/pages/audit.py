"""``/ui/audit``: the organisation's audit log (admins), newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from streams.db.access import audit_principal, query_audit
from streams.http.deps import AuthenticateDep, StoreDep
from streams.http.pages.common import need, page_router, page_user, render

router = page_router()


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    authenticate: AuthenticateDep,
    store: StoreDep,
    actor: Annotated[str, Query(max_length=128)] = "",
    patient: Annotated[str, Query(max_length=64)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """The organisation's audit log (admins), newest first; reading it is audited too."""
    who = await page_user(request, authenticate)
    need(who, "read_audit")
    async with store.acquire() as conn:
        rows = await query_audit(
            conn,
            org_id=who.org_id,
            actor=actor or None,
            patient_id=patient or None,
            action=action or None,
            limit=200,
        )
        await audit_principal(
            conn,
            who,
            "read_audit",
            "GET /ui/audit",
            {p for r in rows for p in r["patient_ids"]},
            {"actor": actor, "patient": patient, "action": action},
        )
    return render(
        "audit.html",
        who=who,
        nav="audit",
        rows=rows,
        f={"actor": actor, "patient": patient, "action": action},
    )
