"""Billing endpoints on the gateway: claims export and per-patient progress.

Each job is a use case of ``streams.services.claims`` (preview, export, submit, a file
again), which writes its audit row; the routes parse, call it and answer. Claim lines
carry member ids: billing staff, admins and reader keys of the organisation see its
patients only; recording an export is for billing staff and admins, and only through a
POST (a GET never changes anything: a cross-site link cannot bill). A clinician sees a
patient's billing progress within their scope (the patient page's treatment minutes).
Every answer leaves an audit row naming its patients. Dates are 2000-2100 and a
range spans at most ``streams.http.hardening.MAX_SPAN_DAYS`` days (422 otherwise).

- ``GET /v1/billing/claims?from=YYYY-MM-DD&to=YYYY-MM-DD&format=csv|x12|fhir``
  ``[&include_open=true][&as_of=TS]``: the same lines as ``rtm billing export``, a
  **read-only look** (nothing recorded, so a GET stays safe to repeat: lines already
  recorded as billed are left out, changed ones show as ``amended``, the rest as ``new``).
  CSV starts with the conventions as ``#`` lines; for X12/FHIR they are at ``GET
  /v1/billing/conventions``. The X12 of a look is a draft (test interchange, placeholder
  parties). ``record`` is no longer taken (422, as any unknown parameter).
- ``POST /v1/billing/exports`` (billing staff, admins; CSRF) ``{"from", "to", "format",
  "as_of"}``: the same lines, **recorded** as an export with claim ids (what ``GET
  ?record=true`` did; the dashboard records only confirmed submissions, ``POST
  /ui/billing/submit``); the response carries ``X-Billing-Export-Id``.
- ``POST /v1/billing/submissions`` (billing staff, admins; CSRF) ``{"from", "to",
  "format": "x12", "test": false}``: **submits** (``streams.services.claims.submit``):
  the real 837P, recorded with its file; ``GET /v1/billing/submissions`` the export
  history; ``GET /v1/billing/submissions/{id}/file`` the file again.
- ``GET /v1/billing/readiness?month=YYYY-MM`` (billing staff, admins, reader and
  integration keys): the organisation's claim lines with a date of service in the month as
  the worker stored them (open periods too), each with its readiness and checks
  (docs/billing-readiness.md), and the count by readiness.
- ``GET /v1/patients/{patient_id}/billing[?as_of=TS]``: progress of the current 30-day
  period and calendar month (``billing.rules.billing_progress``) on the patient-local
  date of ``as_of`` (default: now). 404 for a patient the ledger does not know.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from billing.claims837 import FREQUENCY_NAMES, PlannedClaim
from billing.config import DEFAULT_CONFIG
from billing.export import render_export
from billing.rules import billing_progress, patient_local_date
from billing.submission import SubmissionRefused, line_text
from streams.access import Principal
from streams.db.access import audit_principal, in_scope
from streams.db.claims import list_submissions
from streams.db.ledger import load_states, patient_known
from streams.http.deps import ClockDep, StoreDep, require
from streams.http.hardening import ID_REGEX, INT64_MAX, Day, Instant, check_span
from streams.services import claims, readiness
from streams.services.claims import Requester

router = APIRouter()

_MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "x12": "application/edi-x12",
    "fhir": "application/fhir+json",
}


def _aware(value: dt.datetime | None, field: str) -> dt.datetime | None:
    """``value`` when it carries a UTC offset (422 otherwise); None: the clock's now."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["query", field],
                    "type": "timezone_aware",
                    "msg": f"{field} must carry a UTC offset, e.g. 2027-03-01T00:00:00Z",
                }
            ],
        )
    return value


def _dates(date_from: dt.date, date_to: dt.date, where: str) -> None:
    if date_to < date_from:
        raise HTTPException(
            422, [{"loc": [where, "to"], "type": "value_error", "msg": "to is before from"}]
        )
    check_span(date_from, date_to, where)


Format = Literal["csv", "x12", "fhir"]


@router.get("/v1/billing/claims")
async def billing_claims(
    store: StoreDep,
    clock: ClockDep,
    date_from: Annotated[Day, Query(alias="from")],
    date_to: Annotated[Day, Query(alias="to")],
    fmt: Annotated[Format, Query(alias="format")] = "csv",
    include_open: bool = False,
    as_of: Instant | None = None,
    who: Principal = require("read_billing"),
) -> Response:
    """The claim lines of [from, to], a look: nothing is recorded (POST /v1/billing/exports
    records)."""
    _dates(date_from, date_to, "query")
    when = _aware(as_of, "as_of")
    async with store.acquire() as conn:
        result = await claims.preview(
            conn,
            clock,
            org_id=who.org_id,
            date_from=date_from,
            date_to=date_to,
            as_of=when,
            include_open=include_open,
            fmt=fmt,
            audit_as=Requester.of(who, "GET /v1/billing/claims"),
        )
    return await _claims_file(result, fmt)


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    date_from: Day = Field(alias="from")
    date_to: Day = Field(alias="to")
    format: Format = "csv"
    as_of: Instant | None = None


@router.post("/v1/billing/exports")
async def record_claims_export(
    body: ExportBody, store: StoreDep, clock: ClockDep, who: Principal = require("record_export")
) -> Response:
    """Record an export of the organisation's claim lines of [from, to] (billing staff and
    admins; a signed-in user sends X-CSRF-Token): the lines count as billed, with the claim
    ids a submission would give them. Answers the lines, with X-Billing-Export-Id."""
    _dates(body.date_from, body.date_to, "body")
    when = _aware(body.as_of, "as_of")
    async with store.acquire() as conn:
        result = await claims.export(
            conn,
            clock,
            Requester.of(who, "POST /v1/billing/exports"),
            date_from=body.date_from,
            date_to=body.date_to,
            as_of=when,
            fmt=body.format,
        )
    return await _claims_file(result, body.format)


async def _claims_file(result: claims.ExportResult, fmt: Format) -> Response:
    headers = {
        "X-Billing-Lines": str(len(result.lines)),
        "X-Billing-Withdrawn": str(len(result.withdrawn)),
    }
    if result.export_id is not None:
        headers["X-Billing-Export-Id"] = str(result.export_id)
        headers["X-Billing-Refused"] = str(len(result.refused))  # blocked: not recorded
    text = await asyncio.to_thread(render_export, result.lines, fmt, result.as_of)
    return Response(text, media_type=_MEDIA[fmt], headers=headers)


class SubmissionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    date_from: Day = Field(alias="from")
    date_to: Day = Field(alias="to")
    format: Literal["x12", "csv", "fhir"] = "x12"
    test: bool = False  # ISA15 = T
    as_of: Instant | None = None


def _claim_summary(c: PlannedClaim) -> dict[str, Any]:
    return {
        "claim_id": c.claim_id,
        "frequency": c.frequency,
        "kind": FREQUENCY_NAMES[c.frequency],
        "patient_id": c.first.patient_id,
        "lines": [
            {"cpt": ln.cpt, "date_of_service": ln.date_of_service.isoformat(), "status": ln.status}
            for ln in c.lines
        ],
    }


@router.post("/v1/billing/submissions", status_code=201)
async def submit(
    body: SubmissionBody,
    store: StoreDep,
    clock: ClockDep,
    who: Principal = require("record_export"),
) -> JSONResponse:
    """Submit the organisation's next claims (billing staff and admins): records the lines
    as billed and keeps the file. 201 with the submission; 200 with ``submission_id``
    null when there is nothing to send; 422 naming the profile fields a submission lacks."""
    _dates(body.date_from, body.date_to, "body")
    when = _aware(body.as_of, "as_of")
    async with store.acquire() as conn:
        try:
            result = await claims.submit(
                conn,
                clock,
                Requester.of(who, "POST /v1/billing/submissions"),
                date_from=body.date_from,
                date_to=body.date_to,
                as_of=when,
                fmt=body.format,
                usage="T" if body.test else "P",
            )
        except SubmissionRefused as exc:
            raise HTTPException(
                422,
                [
                    {"loc": ["profile", p], "type": "missing", "msg": f"billing profile: {p}"}
                    for p in exc.problems
                ],
            ) from None
    answer = {
        "submission_id": result.submission_id,
        "control_number": result.control_number,
        "file_name": result.file_name or None,
        "claims": [_claim_summary(c) for c in result.claims],
        "problems": [
            {
                "claim_id": p.claim_id,
                "patient_id": p.patient_id,
                "field": p.field,
                "message": p.message,
            }
            for p in result.problems
        ],
        # blocked by the readiness gates: not in the file, kept for the next submission
        "refused": [
            {
                "line": line_text(a.line),
                "readiness": a.readiness,
                "checks": list(a.checks),
            }
            for a in result.refused
        ],
    }
    return JSONResponse(answer, status_code=201 if result.submission_id is not None else 200)


@router.get("/v1/billing/submissions")
async def submissions(store: StoreDep, who: Principal = require("record_export")) -> JSONResponse:
    """The organisation's export history, newest first (no file bodies)."""
    async with store.acquire() as conn:
        rows = await list_submissions(conn, who.org_id)
        await audit_principal(
            conn, who, "read", "GET /v1/billing/submissions", [], {"submissions": len(rows)}
        )
    return JSONResponse({"submissions": rows})


@router.get("/v1/billing/submissions/{submission_id}/file")
async def submission_file_route(
    store: StoreDep,
    submission_id: Annotated[int, Path(ge=1, le=INT64_MAX)],
    who: Principal = require("record_export"),
) -> Response:
    """The file as submitted, byte for byte; 404 for another organisation's submission."""
    by = Requester.of(who, f"GET /v1/billing/submissions/{submission_id}/file")
    async with store.acquire() as conn:
        found = await claims.submission_file(conn, by, submission_id)
    if found is None:
        raise HTTPException(404, f"no submission file {submission_id}")
    name, fmt, text = found
    return Response(
        text,
        media_type=_MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/v1/billing/conventions")
async def billing_conventions(who: Principal = require("read_billing")) -> PlainTextResponse:
    return PlainTextResponse(DEFAULT_CONFIG.header_text())


class ReadinessLine(BaseModel):
    """A claim line (the columns of the claims CSV, KX in ``modifiers``) with its
    readiness as the worker stored it at ``computed_at``."""

    patient_id: str
    episode_id: str
    cpt: str
    modifiers: list[str]
    units: int
    date_of_service: dt.date
    period_start: dt.date
    period_end: dt.date
    data_days: int | None
    minutes: int | None
    rendering_npi: str
    billing_npi: str
    payer: str
    member_id: str
    diagnosis_codes: list[str]
    place_of_service: str
    readiness: Literal["blocked", "warn", "ready"]
    checks: list[str] = Field(description="the codes that fired, sorted")
    price: Decimal | None = Field(description="therapy lines: fee x units")
    year_to_date: Decimal | None = Field(description="therapy lines: the bucket's spend")
    closes_at: dt.datetime = Field(description="when its period/month closes (billable)")
    period_closed: bool = Field(description="closed as of this answer (the gateway's clock)")
    computed_at: dt.datetime


class MonthReadinessBody(BaseModel):
    month: str = Field(description="YYYY-MM")
    counts: dict[str, int] = Field(description="lines by readiness (blocked, warn, ready)")
    lines: list[ReadinessLine]


Month = Annotated[str, Query(pattern=r"^(20\d\d|2100)-(0[1-9]|1[0-2])$", description="YYYY-MM")]


@router.get("/v1/billing/readiness", response_model=MonthReadinessBody)
async def billing_readiness(
    store: StoreDep, clock: ClockDep, month: Month, who: Principal = require("read_readiness")
) -> MonthReadinessBody:
    """The organisation's claim lines of a month (by date of service) with each line's
    readiness and checks, as the worker stored them. Audited as a read of their patients."""
    first = dt.date.fromisoformat(f"{month}-01")
    now = clock.now()
    async with store.acquire() as conn:
        found = await readiness.readiness_lines(
            conn, who.org_id, first, audit_as=Requester.of(who, "GET /v1/billing/readiness")
        )
    lines = [
        ReadinessLine(
            **s.line.model_dump(exclude={"status"}),
            readiness=s.readiness,
            checks=list(s.checks),
            price=s.price,
            year_to_date=s.year_to_date,
            closes_at=s.closes_at,
            period_closed=s.closes_at <= now,
            computed_at=s.computed_at,
        )
        for s in found.lines
    ]
    counts = Counter(ln.readiness for ln in lines)
    return MonthReadinessBody(
        month=month,
        counts={r: counts.get(r, 0) for r in ("blocked", "warn", "ready")},
        lines=lines,
    )


@router.get("/v1/patients/{patient_id}/billing")
async def patient_billing(
    store: StoreDep,
    clock: ClockDep,
    patient_id: Annotated[str, Path(pattern=ID_REGEX)],
    as_of: Instant | None = None,
    who: Principal = require("read_billing", "read_clinical"),
) -> JSONResponse:
    now = _aware(as_of, "as_of") or clock.now()
    async with store.acquire() as conn:
        if not (
            await in_scope(conn, who.scope(), patient_id)
            and await patient_known(conn, who.org_id, patient_id)
        ):
            raise HTTPException(404, f"no billing data for patient {patient_id}")
        state = (await load_states(conn, who.org_id, [patient_id]))[patient_id]
        await audit_principal(
            conn, who, "read", f"GET /v1/patients/{patient_id}/billing", [patient_id]
        )
    progress = billing_progress(state, patient_local_date(state, now))
    body: dict[str, Any] = progress.model_dump(mode="json")
    body["as_of"] = now.isoformat()
    body["summary"] = progress.period.summary if progress.period else "no active episode"
    return JSONResponse(body)
