"""Billing endpoints on the gateway: claims export and per-patient progress.

Claim lines carry member ids: billing staff, admins and reader keys of the organisation
see its patients only; recording an export (``record=true``) is for billing staff and
admins. A clinician sees a patient's billing progress within their scope (the patient
page's treatment minutes). Every answer leaves an audit row naming its patients.

- ``GET /v1/billing/claims?from=YYYY-MM-DD&to=YYYY-MM-DD&format=csv|x12|fhir``
  ``[&include_open=true][&as_of=TS][&record=true]``: the same lines as
  ``rtm billing export``. By default it is a **read-only look** (nothing recorded, so a
  GET stays safe to repeat: lines already recorded as billed are left out, changed ones
  show as ``amended``, the rest as ``new``). With ``record=true`` the export is recorded
  like the command's (``include_open`` is never recorded: previews bill nothing); the
  response carries ``X-Billing-Export-Id``. CSV starts with the conventions as ``#``
  lines; for X12/FHIR they are at ``GET /v1/billing/conventions``. The X12 of a look is a
  draft (test interchange, placeholder parties).
- ``POST /v1/billing/submissions`` (billing staff, admins; CSRF) ``{"from", "to",
  "format": "x12", "test": false}``: **submits** (``streams.db.billing.submit_export``):
  the real 837P, recorded with its file; ``GET /v1/billing/submissions`` the export
  history; ``GET /v1/billing/submissions/{id}/file`` the file again.
- ``GET /v1/patients/{patient_id}/billing[?as_of=TS]``: progress of the current 30-day
  period and calendar month (``billing.rules.billing_progress``) on the patient-local
  date of ``as_of`` (default: now). 404 for a patient the ledger does not know.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from streams.access import Principal
from streams.auth import require
from streams.db.access import audit_principal, in_scope

router = APIRouter()

_MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "x12": "application/edi-x12",
    "fhir": "application/fhir+json",
}


def _aware(value: dt.datetime | None, field: str) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
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


@router.get("/v1/billing/claims")
async def billing_claims(
    request: Request,
    date_from: Annotated[dt.date, Query(alias="from")],
    date_to: Annotated[dt.date, Query(alias="to")],
    fmt: Annotated[Literal["csv", "x12", "fhir"], Query(alias="format")] = "csv",
    include_open: bool = False,
    as_of: dt.datetime | None = None,
    record: bool = False,
    who: Principal = require("read_billing"),
) -> Response:
    from billing.export import render_export
    from streams.db.billing import export_claims

    if record and not who.may("record_export"):
        raise HTTPException(403, f"{who.role_text} may look at claim lines, not record an export")
    if date_to < date_from:
        raise HTTPException(
            422, [{"loc": ["query", "to"], "type": "value_error", "msg": "to is before from"}]
        )
    when = _aware(as_of, "as_of")
    async with request.app.state.store.acquire() as conn:
        result = await export_claims(
            conn,
            date_from=date_from,
            date_to=date_to,
            as_of=when,
            include_open=include_open,
            record=record,
            created_by=who.actor,
            fmt=fmt,
            org_id=who.org_id,
        )
        await audit_principal(
            conn,
            who,
            "export" if result.export_id is not None else "read",
            "GET /v1/billing/claims",
            [ln.patient_id for ln in result.lines],
            {
                "from": date_from.isoformat(),
                "to": date_to.isoformat(),
                "format": fmt,
                "lines": len(result.lines),
                "export_id": result.export_id,
            },
        )
    headers = {
        "X-Billing-Lines": str(len(result.lines)),
        "X-Billing-Withdrawn": str(len(result.withdrawn)),
    }
    if result.export_id is not None:
        headers["X-Billing-Export-Id"] = str(result.export_id)
    return Response(render_export(result.lines, fmt, when), media_type=_MEDIA[fmt], headers=headers)


class SubmissionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    date_from: dt.date = Field(alias="from")
    date_to: dt.date = Field(alias="to")
    format: Literal["x12", "csv", "fhir"] = "x12"
    test: bool = False  # ISA15 = T
    as_of: dt.datetime | None = None


def _claim_summary(c: Any) -> dict[str, Any]:
    from billing.claims837 import FREQUENCY_NAMES

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
    request: Request, body: SubmissionBody, who: Principal = require("record_export")
) -> JSONResponse:
    """Submit the organisation's next claims (billing staff and admins): records the lines
    as billed and keeps the file. 201 with the submission; 200 with ``submission_id``
    null when there is nothing to send; 422 naming the profile fields a submission lacks."""
    from streams.db.billing import SubmissionRefused, submit_export

    if body.date_to < body.date_from:
        raise HTTPException(
            422, [{"loc": ["body", "to"], "type": "value_error", "msg": "to is before from"}]
        )
    when = _aware(body.as_of, "as_of")
    async with request.app.state.store.acquire() as conn:
        try:
            result = await submit_export(
                conn,
                org_id=who.org_id,
                date_from=body.date_from,
                date_to=body.date_to,
                as_of=when,
                fmt=body.format,
                created_by=who.actor,
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
        await audit_principal(
            conn,
            who,
            "export" if result.submission_id is not None else "read",
            "POST /v1/billing/submissions",
            [c.first.patient_id for c in result.claims],
            {
                "from": body.date_from.isoformat(),
                "to": body.date_to.isoformat(),
                "format": body.format,
                "submission_id": result.submission_id,
                "control_number": result.control_number,
                "claims": len(result.claims),
            },
        )
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
    }
    return JSONResponse(answer, status_code=201 if result.submission_id is not None else 200)


@router.get("/v1/billing/submissions")
async def submissions(request: Request, who: Principal = require("record_export")) -> JSONResponse:
    """The organisation's export history, newest first (no file bodies)."""
    from streams.db.billing import list_submissions

    async with request.app.state.store.acquire() as conn:
        rows = await list_submissions(conn, who.org_id)
        await audit_principal(
            conn, who, "read", "GET /v1/billing/submissions", [], {"submissions": len(rows)}
        )
    return JSONResponse({"submissions": rows})


@router.get("/v1/billing/submissions/{submission_id}/file")
async def submission_file_route(
    request: Request,
    submission_id: Annotated[int, Path(ge=1)],
    who: Principal = require("record_export"),
) -> Response:
    """The file as submitted, byte for byte; 404 for another organisation's submission."""
    from streams.db.billing import submission_file, submission_patients

    async with request.app.state.store.acquire() as conn:
        found = await submission_file(conn, who.org_id, submission_id)
        if found is None:
            raise HTTPException(404, f"no submission file {submission_id}")
        await audit_principal(
            conn,
            who,
            "read",
            f"GET /v1/billing/submissions/{submission_id}/file",
            await submission_patients(conn, submission_id),
            {"submission_id": submission_id},
        )
    name, fmt, text = found
    return Response(
        text,
        media_type=_MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/v1/billing/conventions")
async def billing_conventions(who: Principal = require("read_billing")) -> PlainTextResponse:
    from billing.config import DEFAULT_CONFIG

    return PlainTextResponse(DEFAULT_CONFIG.header_text())


@router.get("/v1/patients/{patient_id}/billing")
async def patient_billing(
    request: Request,
    patient_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,64}$")],
    as_of: dt.datetime | None = None,
    who: Principal = require("read_billing", "read_clinical"),
) -> JSONResponse:
    from billing.rules import billing_progress, patient_local_date
    from streams.db.billing import load_states, patient_known

    now = _aware(as_of, "as_of")
    async with request.app.state.store.acquire() as conn:
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
