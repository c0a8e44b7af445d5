"""The billing view of the dashboard (billing staff and admins of the organisation).

- ``GET /ui/billing?month=YYYY-MM``: patients close to 16 data days in their current
  period ("needs 3 more days in 5"), the month's lines still to bill per code with NPIs
  and payer (the same choice of lines as ``rtm billing export``: already-billed lines are
  left out, changed ones shown as ``amended``), export buttons and the export history;
- ``POST /ui/billing/export`` (form: month, format, csrf_token): records the export, like
  ``POST /v1/billing/exports``, and downloads it (a month that is not YYYY-MM in 2000-2100
  is 422 before anything is recorded; the file name is built from the parsed month);
- ``GET /ui/billing/exports/{id}``: a recorded export again, its lines as billed then.

The lines are ``streams.services.claims.preview`` and ``export`` (which writes the export's
audit row), at the database's "now"; the page audits what it shows.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import re
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from billing.export import render_export
from billing.rules import billing_progress, patient_local_date
from billing.submission import FORMATS
from schemas.events import YEAR_MAX, YEAR_MIN
from streams.access import Principal
from streams.clock import FixedClock
from streams.db.access import audit_principal, patients_in_scope
from streams.db.alerts import db_now
from streams.db.claims import export_history, exported_lines
from streams.db.ledger import load_states
from streams.http.auth import form_fields, principal, reject_unknown_query
from streams.http.hardening import INT64_MAX, in_years
from streams.http.pages.clinic import PageError, need, page_user, render
from streams.services import claims
from streams.services.claims import Requester

router = APIRouter(prefix="/ui/billing", dependencies=[Depends(reject_unknown_query)])
Month = Annotated[str, Query(pattern=r"^[0-9]{4}-[0-9]{2}$")]
MONTH_RE = re.compile(r"[0-9]{4}-[0-9]{2}")
_MEDIA = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "x12": ("application/edi-x12", "x12"),
    "fhir": ("application/fhir+json", "json"),
}
CLOSE_LIMIT = 100


def month_range(month: str | None, today: dt.date) -> tuple[str, dt.date, dt.date]:
    """(YYYY-MM, first day, last day) of a month given as YYYY-MM (default: today's), in
    2000-2100; anything else is 422. The text returned is rebuilt from the parsed date,
    never the input (it goes into a Content-Disposition header)."""
    if not month:
        month = today.strftime("%Y-%m")
    try:
        if not MONTH_RE.fullmatch(month):
            raise ValueError(month)
        first = dt.date(int(month[:4]), int(month[5:7]), 1)
        if not in_years(first):
            raise ValueError(month)
    except ValueError:
        raise PageError(
            422, "Bad month", f"month must be YYYY-MM between {YEAR_MIN} and {YEAR_MAX}"
        ) from None
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    return first.strftime("%Y-%m"), first, last


def close_to_full(progress: list[Any]) -> list[dict[str, Any]]:
    """Patients whose current period can still reach 16 data days but has not yet, least
    slack first (days left minus days still needed), then fewest days left."""
    rows = [
        {
            "patient_id": p.patient_id,
            "period_start": p.period.period_start,
            "period_end": p.period.period_end,
            "days_needed": p.period.days_needed,
            "days_left": p.period.days_left,
            "summary": p.period.summary,
        }
        for p in progress
        if p.period is not None and 0 < p.period.days_needed <= p.period.days_left
    ]
    rows.sort(key=lambda r: (r["days_left"] - r["days_needed"], r["days_left"], r["patient_id"]))
    return rows[:CLOSE_LIMIT]


@router.get("", response_class=HTMLResponse)
async def billing_page(request: Request, month: Month | None = None) -> HTMLResponse:
    who = await page_user(request)
    need(who, "read_billing")
    async with request.app.state.store.acquire() as conn:
        now = await db_now(conn)
        month, first, last = month_range(month, now.date())
        states = await load_states(conn, who.org_id, await patients_in_scope(conn, who.scope()))
        close = await asyncio.to_thread(  # every patient of the organisation: off the loop
            lambda: close_to_full(
                [billing_progress(s, patient_local_date(s, now)) for s in states.values()]
            )
        )
        # a look (nothing recorded), audited below with the page's other patients
        result = await claims.preview(
            conn, FixedClock(now), org_id=who.org_id, date_from=first, date_to=last
        )
        history = await export_history(conn, who.org_id)
        await audit_principal(
            conn,
            who,
            "read",
            "GET /ui/billing",
            {*(c["patient_id"] for c in close), *(ln.patient_id for ln in result.lines)},
            {"month": month, "lines": len(result.lines)},
        )
    per_code = sorted(Counter(ln.cpt for ln in result.lines).items())
    return render(
        "billing.html",
        who=who,
        nav="billing",
        month=month,
        month_label=first.strftime("%B %Y"),
        close=close,
        lines=result.lines,
        per_code=per_code,
        history=history,
        may_export=who.may("record_export"),
        csrf=who.csrf_token,
    )


@router.post("/export")
async def export_form(request: Request, who: Principal = Depends(principal)) -> Response:
    if who.kind != "user":
        raise PageError(403, "Not for machine keys")
    need(who, "record_export")
    fields = form_fields(await request.body())
    fmt = next((f for f in FORMATS if f == fields.get("format")), None)
    if fmt is None:
        raise PageError(422, "Bad format", "format must be csv, x12 or fhir")
    if fields.get("month"):  # a bad month is refused before anything is read or recorded
        month_range(fields["month"], dt.date(YEAR_MIN, 1, 1))
    async with request.app.state.store.acquire() as conn:
        now = await db_now(conn)
        month, first, last = month_range(fields.get("month"), now.date())
        result = await claims.export(
            conn,
            FixedClock(now),  # the page's "now" is the database's
            Requester.of(who, "POST /ui/billing/export"),
            date_from=first,
            date_to=last,
            fmt=fmt,
        )
    media, ext = _MEDIA[fmt]
    return Response(
        render_export(result.lines, fmt, now),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="rtm-{month}-{result.export_id}.{ext}"',
            "X-Billing-Export-Id": str(result.export_id),
            "X-Billing-Lines": str(len(result.lines)),
        },
    )


@router.get("/exports/{export_id}")
async def export_again(
    request: Request, export_id: Annotated[int, Path(ge=1, le=INT64_MAX)]
) -> Response:
    who = await page_user(request)
    need(who, "read_billing")
    async with request.app.state.store.acquire() as conn:
        found = await exported_lines(conn, who.org_id, export_id)
        if found is None:
            raise PageError(404, "Unknown export", f"No export #{export_id}.")
        head, lines = found
        await audit_principal(
            conn,
            who,
            "read",
            f"GET /ui/billing/exports/{export_id}",
            [ln.patient_id for ln in lines],
            {"export_id": export_id},
        )
    media, ext = _MEDIA[head["format"]]
    return Response(
        render_export(lines, head["format"], head["as_of"]),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="rtm-export-{export_id}.{ext}"'},
    )
