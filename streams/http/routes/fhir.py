"""Clinical data as FHIR R4 on the gateway: ``GET /fhir/Observation?patient=<id>&date=ge<D>
&date=le<D>``, a ``searchset`` Bundle of the patient's pain reports and exercise sessions
(``alerts.fhir``), ``application/fhir+json``.

Scoped and audited like the JSON patient routes (``/v1/patients/{id}/pain``): the
``read_clinical`` permission, and a patient outside the caller's scope answers 404 (an
``OperationOutcome``), as an unknown one does, rather than an empty Bundle: an empty
Bundle would answer the same for "no data in these dates" and "not yours", and the
gateway's rule everywhere is 404. ``date`` values are patient-local dates with the
prefixes ``eq`` (or none), ``ge``, ``le``, ``gt``, ``lt``; anything else, a date outside
2000-2100 or a range of more than ``MAX_SPAN_DAYS`` days answers 422.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from alerts.fhir import CLINICAL_TYPES, date_range, observation_bundle
from schemas.events import YEAR_MAX, YEAR_MIN, parse_event_json
from streams.access import Principal
from streams.db.access import audit_principal, in_scope
from streams.db.events import clinical_payloads
from streams.http.deps import ClockDep, StoreDep, require
from streams.http.hardening import MAX_SPAN_DAYS, in_years

router = APIRouter()
FHIR_JSON = "application/fhir+json"
_PATIENT = r"^(?:Patient/)?[A-Za-z0-9._:-]{1,64}$"


def outcome(status: int, code: str, text: str, expression: str | None = None) -> Response:
    """An OperationOutcome answer (what a FHIR client reads on an error)."""
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": text}
    if expression is not None:
        issue["expression"] = [expression]
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)


@router.get(
    "/fhir/Observation",
    response_class=Response,
    responses={
        200: {"description": "a searchset Bundle", "content": {FHIR_JSON: {}}},
        404: {"description": "unknown patient, or outside the caller's scope"},
        422: {"description": "a search parameter it cannot take"},
    },
)
async def search_observations(
    request: Request,
    store: StoreDep,
    clock: ClockDep,
    patient: Annotated[str, Query(pattern=_PATIENT, description="<id> or Patient/<id>")],
    date: Annotated[
        list[str] | None,
        Query(description="patient-local date with eq|ge|le|gt|lt, e.g. ge2026-10-01"),
    ] = None,
    who: Principal = require("read_clinical"),
) -> Response:
    """Pain reports (LOINC 72514-3) and exercise sessions (LOINC 73985-4) of one patient
    as FHIR R4 Observations, oldest first."""
    patient_id = patient.removeprefix("Patient/")
    try:
        frm, to = date_range(date or [])
    except ValueError as exc:
        return outcome(422, "value", str(exc), "date")
    if any(d is not None and not in_years(d) for d in (frm, to)):
        return outcome(422, "value", f"date: must be between {YEAR_MIN} and {YEAR_MAX}", "date")
    if frm is not None and to is not None and (to - frm).days > MAX_SPAN_DAYS:
        return outcome(422, "value", f"date: at most {MAX_SPAN_DAYS} days per search", "date")
    async with store.acquire() as conn:
        if not await in_scope(conn, who.scope(), patient_id):
            return outcome(404, "not-found", f"unknown patient {patient_id}")
        rows = (
            []
            if frm is not None and to is not None and frm > to
            else await clinical_payloads(conn, who.org_id, patient_id, CLINICAL_TYPES, frm, to)
        )
        await audit_principal(
            conn,
            who,
            "read",
            "GET /fhir/Observation",
            [patient_id],
            {"count": len(rows), "date": date or []},
        )
    now, self_url = clock.now(), str(request.url)
    bundle = await asyncio.to_thread(  # a patient's whole history: off the event loop
        lambda: observation_bundle((parse_event_json(p) for p in rows), now, self_url=self_url)
    )
    return Response(orjson.dumps(bundle), media_type=FHIR_JSON)
