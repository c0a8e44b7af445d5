"""``/ui/audit``: the organisation's audit log (admins), newest first, one page at a time.

Filters match by prefix (``actor=user:`` finds every user's rows, ``patient=p-00`` every
row naming a patient whose id starts so, ``action=read`` ``read`` and ``read_audit``);
``from``/``to`` are dates in the clinic's zone, both included (the rows' times are shown in
that zone, with their age); ``size`` rows a page (default 50, at most
200), ``before``/``after`` an ``audit_id`` to page older/newer. The query is bounded in SQL
(``streams.db.access.audit_page``). Every view of the page is itself audited.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from streams.db.access import audit_page, audit_principal
from streams.db.alerts import db_now
from streams.http.deps import AuthenticateDep, StoreDep
from streams.http.hardening import INT64_MAX, Day
from streams.http.pages.common import (
    PageError,
    clinic_time,
    clinic_zone,
    need,
    page_router,
    page_user,
    render,
)

router = page_router()
PAGE_SIZE = 50
SHOWN_PATIENTS = 12  # per row; the rest as a count (filter by patient to see a row's own)

AuditId = Annotated[int | None, Query(ge=1, le=INT64_MAX)]


def _start(day: dt.date | None, zone: ZoneInfo, plus_days: int = 0) -> dt.datetime | None:
    """The instant a clinic-local day starts (``plus_days`` later)."""
    if day is None:
        return None
    day += dt.timedelta(days=plus_days)
    return dt.datetime(day.year, day.month, day.day, tzinfo=zone)


def _shown(rows: list[dict[str, Any]], now: dt.datetime, zone: ZoneInfo) -> list[dict[str, Any]]:
    for r in rows:
        r["at_text"] = clinic_time(r["at"], now, zone)
        ids = r["patient_ids"]
        r["patients_shown"] = ids[:SHOWN_PATIENTS]
        r["patients_more"] = max(len(ids) - SHOWN_PATIENTS, 0)
    return rows


@router.get("/audit", response_class=HTMLResponse)
async def audit_log_page(
    request: Request,
    authenticate: AuthenticateDep,
    store: StoreDep,
    actor: Annotated[str, Query(max_length=128)] = "",
    patient: Annotated[str, Query(max_length=64)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    date_from: Annotated[Day | None, Query(alias="from")] = None,
    date_to: Annotated[Day | None, Query(alias="to")] = None,
    size: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE,
    before: AuditId = None,
    after: AuditId = None,
) -> HTMLResponse:
    """One page of the organisation's audit log (admins); reading it is audited too."""
    who = await page_user(request, authenticate)
    need(who, "read_audit")
    if date_from and date_to and date_to < date_from:
        raise PageError(422, "Bad dates", "to is before from")
    if before is not None and after is not None:
        raise PageError(422, "Bad paging", "give before or after, not both")
    async with store.acquire() as conn:
        zone = await clinic_zone(conn, who)
        now = await db_now(conn)
        rows, more = await audit_page(
            conn,
            who.org_id,
            actor=actor,
            patient=patient,
            action=action,
            since=_start(date_from, zone),
            until=_start(date_to, zone, 1),
            size=size,
            before=before,
            after=after,
        )
        f: dict[str, Any] = {
            "actor": actor,
            "patient": patient,
            "action": action,
            "from": date_from.isoformat() if date_from else "",
            "to": date_to.isoformat() if date_to else "",
        }
        await audit_principal(
            conn,
            who,
            "read_audit",
            "GET /ui/audit",
            {p for r in rows for p in r["patient_ids"]},
            {**f, "size": size, "before": before, "after": after, "rows": len(rows)},
        )
    kept = {k: v for k, v in f.items() if v} | ({"size": size} if size != PAGE_SIZE else {})
    # older: past the last row shown; newer: before the first (none on the newest page)
    has_older = more if after is None else True
    has_newer = (before is not None) if after is None else more
    return render(
        "audit.html",
        who=who,
        nav="audit",
        rows=_shown(rows, now, zone),
        zone=zone.key,
        f=f,
        size=size,
        older=urlencode({**kept, "before": rows[-1]["audit_id"]}) if rows and has_older else "",
        newer=urlencode({**kept, "after": rows[0]["audit_id"]}) if rows and has_newer else "",
    )
