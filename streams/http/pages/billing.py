"""The billing view of the dashboard (billing staff and admins of the organisation).

Reviewing is separate from billing: a look records nothing; only a confirmed submission
records lines as billed, through the same use case as ``rtm billing submit``.

- ``GET /ui/billing?month=YYYY-MM``: patients close to 16 data days in their current
  period ("needs 3 more days in 5"), the month's lines still to bill per code with NPIs
  and payer (already-billed lines are left out, changed ones shown as ``amended``), the
  preview buttons, the month's submissions, the month's denials from loaded 835s with
  their escaped-denial outcome, the export history (``submitted=ID``: the submission just
  made, named at the top) and the link to the month-end queue;
- ``GET /ui/billing/preview?month=YYYY-MM&format=csv|fhir|x12``: the month's lines as a
  file, **recorded nothing** (``streams.services.claims.preview``, audited as a read); the
  X12 is a test draft (placeholder parties, no charges), labelled so;
- ``GET /ui/billing/submit?month=YYYY-MM`` (billing staff, admins): the confirmation step,
  a dry run of ``streams.services.claims.submit`` for the month (profile, fees,
  demographics): the claims, their lines, payers and charges, the claims refused (each
  naming its field), the lines the readiness gates block (each with its codes and a form
  to override it with a reason), or the profile fields that refuse the whole submission;
- ``POST /ui/billing/override`` (form: month, line, reason, csrf_token; billing staff,
  admins): ``rtm billing override --line LINE --reason TEXT`` as of the database's now
  (``streams.services.claims.override``: recorded, audited, never edited), then the
  confirmation again (303); refused (422) without a reason of 10 characters or for a line
  that is not blocked;
- ``POST /ui/billing/submit`` (form: month, confirm, csrf_token): submits the X12 837P of
  the month as ``rtm billing submit --from <first> --to <last>`` would, provided ``confirm``
  is the fingerprint of the plan shown (``billing.submission.plan_fingerprint``). Without
  it nothing is recorded and the confirmation is shown (303); a plan that changed since is
  shown again to confirm (409), nothing recorded;
- ``GET /ui/billing/queue?month=YYYY-MM&status=S&check=CODE`` (billing staff, admins): the
  month-end queue (``streams.services.claims.month_queue``): each line Blocked, Ready,
  Submitted, Paid or Denied (from loaded 835s), its readiness and checks in words, filtered
  by status and check code; the blocked lines' override forms (``back=queue``), the way to
  the confirmation step, the month's submissions (ISA13, the file) and denials with their
  escaped-denial outcome. Records nothing; audited as a read by the service;
- ``GET /ui/billing/exports/{id}``: a recorded export's lines as billed then;
  ``GET /ui/billing/submissions/{id}/file``: a submission's file, byte for byte.

"Now" is the database's; every answer that shows patients leaves an audit row (the
services write those of previews and submissions).
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from billing.claims837 import FREQUENCY_NAMES
from billing.export import render_export
from billing.queue import STATUS_TEXT, STATUSES, Status, filter_queue, status_counts
from billing.readiness import CHECK_TEXT, SEVERITY
from billing.rules import DEVICE_MIN_DAYS, billing_progress, patient_local_date
from billing.submission import SubmissionRefused, line_text
from schemas.events import YEAR_MAX, YEAR_MIN
from streams.access import Principal
from streams.clock import FixedClock
from streams.db.access import audit_principal, patients_in_scope
from streams.db.alerts import db_now
from streams.db.claims import export_history, exported_lines
from streams.db.events import EventStore
from streams.db.ledger import load_states
from streams.db.remits import month_denials
from streams.http.auth import form_fields, reject_unknown_query
from streams.http.deps import AuthenticateDep, PrincipalDep, StoreDep
from streams.http.hardening import INT64_MAX, in_years
from streams.http.pages.common import (
    PageError,
    clinic_time,
    clinic_zone,
    need,
    page_user,
    render,
)
from streams.services import claims
from streams.services.claims import PlanChanged, Requester, SubmissionResult

router = APIRouter(prefix="/ui/billing", dependencies=[Depends(reject_unknown_query)])
Month = Annotated[str, Query(pattern=r"^[0-9]{4}-[0-9]{2}$")]
MONTH_RE = re.compile(r"[0-9]{4}-[0-9]{2}")
PreviewFormat = Literal["csv", "fhir", "x12"]
_MEDIA = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "x12": ("application/edi-x12", "x12"),
    "fhir": ("application/fhir+json", "json"),
}
CLOSE_LIMIT = 100
# "Close to 16 data days": at most this many still missing (and still reachable)
CLOSE_DAYS = 5
CHANGED = (
    "The claims changed since you reviewed them (new data, a closed period or another"
    " submission): nothing was submitted. Review them again below."
)


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


def check_month(month: str | None) -> None:
    """422 for a month given that is not YYYY-MM in 2000-2100, before anything is read."""
    if month:
        month_range(month, dt.date(YEAR_MIN, 1, 1))


@dataclass(frozen=True)
class PeriodWatch:
    """The billing view's two lists of current periods, each with its full count (a list
    is cut at CLOSE_LIMIT rows, and says so)."""

    close: list[dict[str, Any]]  # within CLOSE_DAYS data days of 98977, still reachable
    close_total: int
    nothing: list[dict[str, Any]]  # fewer than 2 data days: the period bills nothing yet
    nothing_total: int


def _period_row(p: Any) -> dict[str, Any]:
    return {
        "patient_id": p.patient_id,
        "period_start": p.period.period_start,
        "period_end": p.period.period_end,
        "days_needed": p.period.days_needed,
        "days_left": p.period.days_left,
        "data_days": p.period.data_days,
        "summary": p.period.codes,
    }


def watch_periods(progress: list[Any]) -> PeriodWatch:
    """Patients close to 16 data days (at most CLOSE_DAYS missing and still reachable),
    least slack first (days left minus days still needed), then fewest days left; and the
    patients whose period has fewer than 2 data days so far (nothing billable yet: 98985
    needs 2), fewest days left first."""
    periods = [p for p in progress if p.period is not None]
    close = [
        _period_row(p)
        for p in periods
        if 0 < p.period.days_needed <= min(CLOSE_DAYS, p.period.days_left)
    ]
    close.sort(key=lambda r: (r["days_left"] - r["days_needed"], r["days_left"], r["patient_id"]))
    nothing = [_period_row(p) for p in periods if p.period.data_days < DEVICE_MIN_DAYS]
    nothing.sort(key=lambda r: (r["days_left"], r["data_days"], r["patient_id"]))
    return PeriodWatch(close[:CLOSE_LIMIT], len(close), nothing[:CLOSE_LIMIT], len(nothing))


def _kind(h: Any) -> str:
    if h["has_file"]:
        isa = f", ISA13 {h['control_number']:09d}" if h["control_number"] else ""
        usage = " (test)" if h["usage"] == "T" else ""
        return f"Submitted{usage}: {h['format'].upper()}{isa}"
    return f"Recorded export: {h['format'].upper()} (no file kept)"


@router.get("", response_class=HTMLResponse)
async def billing_page(
    request: Request,
    authenticate: AuthenticateDep,
    store: StoreDep,
    month: Month | None = None,
    submitted: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
) -> HTMLResponse:
    who = await page_user(request, authenticate)
    need(who, "read_billing")
    check_month(month)
    async with store.acquire() as conn:
        now = await db_now(conn)
        month, first, last = month_range(month, now.date())
        states = await load_states(conn, who.org_id, await patients_in_scope(conn, who.scope()))
        watch = await asyncio.to_thread(  # every patient of the organisation: off the loop
            lambda: watch_periods(
                [billing_progress(s, patient_local_date(s, now)) for s in states.values()]
            )
        )
        # a look (nothing recorded), audited below with the page's other patients
        result = await claims.preview(
            conn, FixedClock(now), org_id=who.org_id, date_from=first, date_to=last
        )
        zone = await clinic_zone(conn, who)
        history = [
            dict(h) | {"kind": _kind(h), "created_text": clinic_time(h["created_at"], now, zone)}
            for h in await export_history(conn, who.org_id)
        ]
        denials = await month_denials(conn, who.org_id, first, last)
        await audit_principal(
            conn,
            who,
            "read",
            "GET /ui/billing",
            {
                *(c["patient_id"] for c in watch.close + watch.nothing),
                *(ln.patient_id for ln in result.lines),
                *(d["patient_id"] for d in denials),
            },
            {"month": month, "lines": len(result.lines)},
        )
    per_code = sorted(Counter(ln.cpt for ln in result.lines).items())
    return render(
        "billing.html",
        who=who,
        nav="billing",
        month=month,
        month_label=first.strftime("%B %Y"),
        watch=watch,
        close_days=CLOSE_DAYS,
        lines=result.lines,
        per_code=per_code,
        history=history,
        month_submissions=[
            h for h in history if h["has_file"] and h["date_from"] <= last and first <= h["date_to"]
        ],
        just=next((h for h in history if h["export_id"] == submitted), None),
        denials=denials,
        may_submit=who.may("record_export"),
    )


@router.get("/preview")
async def preview_file(
    request: Request,
    authenticate: AuthenticateDep,
    store: StoreDep,
    fmt: Annotated[PreviewFormat, Query(alias="format")],
    month: Month | None = None,
) -> Response:
    """The month's lines as a file: a look, nothing recorded (audited as a read)."""
    who = await page_user(request, authenticate)
    need(who, "read_billing")
    check_month(month)
    async with store.acquire() as conn:
        now = await db_now(conn)
        month, first, last = month_range(month, now.date())
        result = await claims.preview(
            conn,
            FixedClock(now),
            org_id=who.org_id,
            date_from=first,
            date_to=last,
            fmt=fmt,
            audit_as=Requester.of(who, "GET /ui/billing/preview"),
        )
    media, ext = _MEDIA[fmt]
    what = "test-draft-not-recorded" if fmt == "x12" else "preview-not-recorded"
    text = await asyncio.to_thread(render_export, result.lines, fmt, now)
    return Response(
        text,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="rtm-{month}-{what}.{ext}"',
            "X-Billing-Lines": str(len(result.lines)),
        },
    )


# --- submitting: a confirmation step, then the submission ---------------------------------------


def _claim_rows(result: SubmissionResult) -> list[dict[str, Any]]:
    return [
        {
            "claim_id": c.claim_id,
            "kind": FREQUENCY_NAMES[c.frequency],
            "patient_id": c.first.patient_id,
            "payer": c.first.payer,
            "member_id": c.first.member_id,
            "lines": c.record,
            "charge": result.charges.get(c.claim_id),
        }
        for c in result.claims
    ]


async def _review(
    store: EventStore, who: Principal, month_text: str | None, *, resource: str, code: int = 200
) -> HTMLResponse:
    """The confirmation page: a dry run of the month's submission (audited as a read)."""
    async with store.acquire() as conn:
        now = await db_now(conn)
        month, first, last = month_range(month_text, now.date())
        refused: list[str] = []
        result: SubmissionResult | None = None
        try:
            result = await claims.submit(
                conn,
                FixedClock(now),
                Requester.of(who, resource),
                date_from=first,
                date_to=last,
                dry_run=True,
            )
        except SubmissionRefused as exc:
            refused = exc.problems
    rows = _claim_rows(result) if result else []
    charges = [r["charge"] for r in rows if r["charge"] is not None]
    return render(
        "billing_submit.html",
        code,
        who=who,
        nav="billing",
        month=month,
        month_label=first.strftime("%B %Y"),
        first=first,
        last=last,
        notice=CHANGED if code == 409 else "",
        refused=refused,
        claims=rows,
        line_count=sum(len(r["lines"]) for r in rows),
        payers=sorted(Counter(r["payer"] for r in rows).items()),
        total=sum(charges, Decimal(0)),
        problems=result.problems if result else [],
        blocked=[
            {"line": line_text(a.line), "checks": a.checks, "patient_id": a.line.patient_id}
            for a in (result.refused if result else [])
        ],
        confirm=result.fingerprint if result else "",
        csrf=who.csrf_token,
    )


@router.get("/submit", response_class=HTMLResponse)
async def review_submission(
    request: Request, authenticate: AuthenticateDep, store: StoreDep, month: Month | None = None
) -> HTMLResponse:
    """What submitting the month would send and record; nothing is recorded here."""
    who = await page_user(request, authenticate)
    need(who, "record_export")
    check_month(month)
    return await _review(store, who, month, resource="GET /ui/billing/submit")


@router.post("/submit")
async def submit_form(request: Request, who: PrincipalDep, store: StoreDep) -> Response:
    """Submit the month's claims as confirmed (see the module's docstring)."""
    if who.kind != "user":
        raise PageError(403, "Not for machine keys")
    need(who, "record_export")
    fields = form_fields(await request.body())
    if not fields.get("month"):
        raise PageError(422, "Bad month", "the month to submit is required")
    month, first, last = month_range(fields["month"], dt.date(YEAR_MIN, 1, 1))
    confirm = fields.get("confirm", "")
    if not confirm:  # no confirmation step: nothing recorded, the confirmation instead
        return RedirectResponse(f"/ui/billing/submit?month={month}", 303)
    try:
        async with store.acquire() as conn:
            now = await db_now(conn)
            result = await claims.submit(
                conn,
                FixedClock(now),  # as of the database's now, as the page showed it
                Requester.of(who, "POST /ui/billing/submit"),
                date_from=first,
                date_to=last,
                expect=confirm,
            )
    except PlanChanged:
        return await _review(store, who, month, resource="POST /ui/billing/submit", code=409)
    except SubmissionRefused:
        return await _review(store, who, month, resource="POST /ui/billing/submit", code=422)
    done = f"&submitted={result.submission_id}" if result.submission_id is not None else ""
    return RedirectResponse(f"/ui/billing?month={month}{done}", 303)


@router.post("/override")
async def override_form(request: Request, who: PrincipalDep, store: StoreDep) -> Response:
    """Let a blocked line out with a reason (see the module's docstring)."""
    if who.kind != "user":
        raise PageError(403, "Not for machine keys")
    need(who, "record_export")
    fields = form_fields(await request.body())
    if not fields.get("month"):
        raise PageError(422, "Bad month", "the month of the submission is required")
    month, _, _ = month_range(fields["month"], dt.date(YEAR_MIN, 1, 1))
    parts = fields.get("line", "").split()
    try:
        line = (parts[0], parts[1], parts[2], dt.date.fromisoformat(parts[3]))
    except (IndexError, ValueError):
        raise PageError(422, "Bad line", "the line is PATIENT EPISODE CPT DOS") from None
    if len(parts) != 4:
        raise PageError(422, "Bad line", "the line is PATIENT EPISODE CPT DOS")
    try:
        async with store.acquire() as conn:
            now = await db_now(conn)
            await claims.override(
                conn,
                FixedClock(now),
                Requester.of(who, "POST /ui/billing/override"),
                line=line,
                reason=fields.get("reason", ""),
            )
    except claims.OverrideRefused as exc:
        raise PageError(422, "Override refused", str(exc)) from None
    if fields.get("back") == "queue":
        return RedirectResponse(f"/ui/billing/queue?month={month}&status=blocked", 303)
    return RedirectResponse(f"/ui/billing/submit?month={month}", 303)


# --- the month-end queue ---------------------------------------------------------------------

Filter = Annotated[str | None, Query(max_length=40)]  # "" (the form's "Any"): no filter


@router.get("/queue", response_class=HTMLResponse)
async def queue_page(
    request: Request,
    authenticate: AuthenticateDep,
    store: StoreDep,
    month: Month | None = None,
    status: Filter = None,
    check: Filter = None,
) -> HTMLResponse:
    """The biller's month-end queue (see the module's docstring)."""
    who = await page_user(request, authenticate)
    need(who, "record_export")
    check_month(month)
    wanted: Status | None = next((s for s in STATUSES if s == status), None)
    if status and wanted is None:
        raise PageError(422, "Unknown status", f"status is one of {', '.join(STATUSES)}")
    if check and check not in SEVERITY:
        raise PageError(422, "Unknown check", "no such readiness check")
    async with store.acquire() as conn:
        now = await db_now(conn)
        month, first, last = month_range(month, now.date())
        queue = await claims.month_queue(
            conn, Requester.of(who, "GET /ui/billing/queue"), first, last, now
        )
        history = await export_history(conn, who.org_id)
    shown = filter_queue(queue.lines, wanted, check or None)
    reasons: dict[tuple[Any, ...], list[str]] = {}
    for d in queue.denials:
        key = (d["claim_id"], d["cpt"], d["date_of_service"])
        reasons.setdefault(key, []).append(f"{d['carc']} ({d['outcome']})")
    codes = sorted({c.code for q in queue.lines for c in q.checks})
    return render(
        "billing_queue.html",
        who=who,
        nav="billing",
        month=month,
        month_label=first.strftime("%B %Y"),
        status=status or "",
        check=check or "",
        statuses=[(s, STATUS_TEXT[s]) for s in STATUSES],
        status_text=STATUS_TEXT,
        counts=status_counts(queue.lines),
        codes=[(c, CHECK_TEXT.get(c, c)) for c in codes],
        lines=shown,
        total=len(queue.lines),
        denials=queue.denials,
        reasons=reasons,
        submissions=[
            dict(h) | {"kind": _kind(h)}
            for h in history
            if h["has_file"] and h["date_from"] <= last and first <= h["date_to"]
        ],
        csrf=who.csrf_token,
    )


# --- files again -----------------------------------------------------------------------------


@router.get("/exports/{export_id}")
async def export_again(
    request: Request,
    export_id: Annotated[int, Path(ge=1, le=INT64_MAX)],
    authenticate: AuthenticateDep,
    store: StoreDep,
) -> Response:
    who = await page_user(request, authenticate)
    need(who, "read_billing")
    async with store.acquire() as conn:
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


@router.get("/submissions/{submission_id}/file")
async def submission_file(
    request: Request,
    submission_id: Annotated[int, Path(ge=1, le=INT64_MAX)],
    authenticate: AuthenticateDep,
    store: StoreDep,
) -> Response:
    """A submission's file as submitted (audited as a read by the service)."""
    who = await page_user(request, authenticate)
    need(who, "record_export")
    by = Requester.of(who, f"GET /ui/billing/submissions/{submission_id}/file")
    async with store.acquire() as conn:
        found = await claims.submission_file(conn, by, submission_id)
    if found is None:
        raise PageError(404, "Unknown submission", f"No submission file #{submission_id}.")
    name, fmt, text = found
    return Response(
        text,
        media_type=_MEDIA[fmt][0],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
