"""Clinical data as FHIR R4 on the gateway, ``application/fhir+json``: ``GET
/fhir/Observation?patient=<id>&date=ge<D>&date=le<D>``, a ``searchset`` Bundle of the
patient's pain reports, exercise sessions and assessment scores (``alerts.fhir``); ``GET
/fhir/QuestionnaireResponse`` and ``GET /fhir/Encounter`` with the same parameters, the
patient's outcome-measure forms and visits (``outcomes.fhir``); ``GET /fhir/Questionnaire``
and ``/fhir/Questionnaire/<instrument>``, the instrument registry; ``GET
/fhir/CarePlan?patient=<id>`` and ``/fhir/Task?patient=<id>``, the patient's episodes on
their pathways and their tasks as of now (``pathways.fhir``, through
``streams.services.outcomes``: the pure engine over the patient's stored events); ``GET
/fhir/PlanDefinition`` and ``/fhir/PlanDefinition/<id>-<version>``, the pathway versions the
organisation's episodes may name (built-in and published).

The patient searches are scoped and audited like the JSON patient routes
(``/v1/patients/{id}/pain``): the ``read_clinical`` permission, and a patient outside the
caller's scope answers 404 (an ``OperationOutcome``), as an unknown one does, rather than an
empty Bundle: an empty Bundle would answer the same for "no data in these dates" and "not
yours", and the gateway's rule everywhere is 404. ``date`` values are patient-local dates
with the prefixes ``eq`` (or none), ``ge``, ``le``, ``gt``, ``lt``; anything else, a date
outside 2000-2100 or a range of more than ``MAX_SPAN_DAYS`` days answers 422.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from alerts.fhir import CLINICAL_TYPES, date_range, observation
from outcomes.fhir import encounter, questionnaire, questionnaire_response, searchset
from outcomes.instruments import INSTRUMENTS
from schemas.events import (
    YEAR_MAX,
    YEAR_MIN,
    AssessmentCompleted,
    Event,
    VisitCompleted,
    parse_event_json,
)
from streams.access import Principal
from streams.db.access import audit_principal, in_scope
from streams.db.events import clinical_payloads
from streams.http.deps import ClockDep, StoreDep, require
from streams.http.hardening import MAX_SPAN_DAYS, in_years
from streams.services.outcomes import CareKind, patient_care, plan_definitions

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


_SEARCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "a searchset Bundle", "content": {FHIR_JSON: {}}},
    404: {"description": "unknown patient, or outside the caller's scope"},
    422: {"description": "a search parameter it cannot take"},
}
PatientParam = Annotated[str, Query(pattern=_PATIENT, description="<id> or Patient/<id>")]
DateParam = Annotated[
    list[str] | None,
    Query(description="patient-local date with eq|ge|le|gt|lt, e.g. ge2026-10-01"),
]
Build = Callable[[list[Event]], list[dict[str, Any]]]


async def _patient_search(
    request: Request,
    store: StoreDep,
    clock: ClockDep,
    who: Principal,
    patient: str,
    date: list[str] | None,
    search: tuple[str, tuple[str, ...], Build],
) -> Response:
    """One patient's resources of a type as a searchset Bundle: ``search`` is (resource
    type, the event types it is made from, the builder over those events in time order).
    Scoped (404 outside the caller's scope) and audited."""
    resource_type, types, build = search
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
            else await clinical_payloads(conn, who.org_id, patient_id, types, frm, to)
        )
        await audit_principal(
            conn,
            who,
            "read",
            f"GET /fhir/{resource_type}",
            [patient_id],
            {"count": len(rows), "date": date or []},
        )
    now, self_url = clock.now(), str(request.url)

    def bundle() -> dict[str, Any]:
        events = sorted(
            (parse_event_json(p) for p in rows), key=lambda e: (e.occurred_at, e.event_id)
        )
        return searchset(build(events), now, self_url)

    # a patient's whole history: off the event loop
    return Response(orjson.dumps(await asyncio.to_thread(bundle)), media_type=FHIR_JSON)


def _observations(events: list[Event]) -> list[dict[str, Any]]:
    return [o for o in map(observation, events) if o is not None]


def _responses(events: list[Event]) -> list[dict[str, Any]]:
    return [questionnaire_response(e) for e in events if isinstance(e, AssessmentCompleted)]


def _encounters(events: list[Event]) -> list[dict[str, Any]]:
    return [encounter(e) for e in events if isinstance(e, VisitCompleted)]


@router.get("/fhir/Observation", response_class=Response, responses=_SEARCH_RESPONSES)
async def search_observations(
    request: Request,
    store: StoreDep,
    clock: ClockDep,
    patient: PatientParam,
    date: DateParam = None,
    who: Principal = require("read_clinical"),
) -> Response:
    """Pain reports (LOINC 72514-3), exercise sessions (LOINC 73985-4) and the scores of
    valid assessments of one patient as FHIR R4 Observations, oldest first."""
    search = ("Observation", CLINICAL_TYPES, _observations)
    return await _patient_search(request, store, clock, who, patient, date, search)


@router.get("/fhir/QuestionnaireResponse", response_class=Response, responses=_SEARCH_RESPONSES)
async def search_responses(
    request: Request,
    store: StoreDep,
    clock: ClockDep,
    patient: PatientParam,
    date: DateParam = None,
    who: Principal = require("read_clinical"),
) -> Response:
    """One patient's outcome-measure forms (assessment.completed) as FHIR R4
    QuestionnaireResponses, oldest first (invalid forms too: what the patient answered)."""
    search = ("QuestionnaireResponse", ("assessment.completed",), _responses)
    return await _patient_search(request, store, clock, who, patient, date, search)


@router.get("/fhir/Encounter", response_class=Response, responses=_SEARCH_RESPONSES)
async def search_encounters(
    request: Request,
    store: StoreDep,
    clock: ClockDep,
    patient: PatientParam,
    date: DateParam = None,
    who: Principal = require("read_clinical"),
) -> Response:
    """One patient's visits (visit.completed) as FHIR R4 Encounters (class AMB in person,
    VR virtual), oldest first."""
    search = ("Encounter", ("visit.completed",), _encounters)
    return await _patient_search(request, store, clock, who, patient, date, search)


@router.get(
    "/fhir/Questionnaire",
    response_class=Response,
    responses={200: {"description": "a searchset Bundle", "content": {FHIR_JSON: {}}}},
)
async def search_questionnaires(
    request: Request, clock: ClockDep, who: Principal = require("read_clinical")
) -> Response:
    """The instrument registry's Questionnaires (no patient data: not audited)."""
    found = [questionnaire(i) for i in sorted(INSTRUMENTS)]
    base = str(request.base_url).rstrip("/") + "/fhir"
    bundle = searchset(found, clock.now(), str(request.url), base=base)
    return Response(orjson.dumps(bundle), media_type=FHIR_JSON)


@router.get(
    "/fhir/Questionnaire/{instrument_id}",
    response_class=Response,
    responses={
        200: {"description": "a Questionnaire", "content": {FHIR_JSON: {}}},
        404: {"description": "no such instrument"},
    },
)
async def read_questionnaire(
    instrument_id: str, who: Principal = require("read_clinical")
) -> Response:
    """One instrument's Questionnaire (licence-gated ones: linkIds without text)."""
    if instrument_id not in INSTRUMENTS:
        return outcome(404, "not-found", f"unknown instrument {instrument_id[:32]!r}")
    return Response(orjson.dumps(questionnaire(instrument_id)), media_type=FHIR_JSON)


async def _care_search(
    request: Request, store: StoreDep, clock: ClockDep, who: Principal, patient: str, kind: CareKind
) -> Response:
    """One patient's episodes (CarePlan) or tasks (Task) as of now as a searchset Bundle;
    scoped (404 outside the caller's scope) and audited."""
    patient_id = patient.removeprefix("Patient/")
    now = clock.now()
    async with store.acquire() as conn:
        if not await in_scope(conn, who.scope(), patient_id):
            return outcome(404, "not-found", f"unknown patient {patient_id}")
        found, count = await patient_care(conn, who.org_id, patient_id, now, kind)
        await audit_principal(
            conn, who, "read", f"GET /fhir/{kind}", [patient_id], {"count": count}
        )
    bundle = searchset(found, now, str(request.url))
    return Response(orjson.dumps(bundle), media_type=FHIR_JSON)


@router.get("/fhir/CarePlan", response_class=Response, responses=_SEARCH_RESPONSES)
async def search_care_plans(
    request: Request,
    store: StoreDep,
    clock: ClockDep,
    patient: PatientParam,
    who: Principal = require("read_clinical"),
) -> Response:
    """One patient's episodes on their pathway versions as FHIR R4 CarePlans as of now
    (active, on-hold while paused, completed with the exit reason on the contained
    EpisodeOfCare), by episode id; an episode on a version the organisation does not know is
    named in an OperationOutcome entry."""
    return await _care_search(request, store, clock, who, patient, "CarePlan")


@router.get("/fhir/Task", response_class=Response, responses=_SEARCH_RESPONSES)
async def search_tasks(
    request: Request,
    store: StoreDep,
    clock: ClockDep,
    patient: PatientParam,
    who: Principal = require("read_clinical"),
) -> Response:
    """One patient's pathway tasks as FHIR R4 Tasks as of now, each based on its episode's
    CarePlan (ready, completed, cancelled; overdue: ready with businessStatus overdue)."""
    return await _care_search(request, store, clock, who, patient, "Task")


@router.get(
    "/fhir/PlanDefinition",
    response_class=Response,
    responses={200: {"description": "a searchset Bundle", "content": {FHIR_JSON: {}}}},
)
async def search_plan_definitions(
    request: Request, store: StoreDep, clock: ClockDep, who: Principal = require("read_clinical")
) -> Response:
    """The PlanDefinition of each pathway version of the caller's organisation, built-in and
    published, by id then version (no patient data: not audited)."""
    async with store.acquire() as conn:
        found = await plan_definitions(conn, who.org_id)
    base = str(request.base_url).rstrip("/") + "/fhir"
    bundle = searchset(found, clock.now(), str(request.url), base=base)
    return Response(orjson.dumps(bundle), media_type=FHIR_JSON)


@router.get(
    "/fhir/PlanDefinition/{plan_id}",
    response_class=Response,
    responses={
        200: {"description": "a PlanDefinition", "content": {FHIR_JSON: {}}},
        404: {"description": "no such version in the caller's organisation"},
    },
)
async def read_plan_definition(
    plan_id: str, store: StoreDep, who: Principal = require("read_clinical")
) -> Response:
    """One pathway version's PlanDefinition, by its id ``<pathway>-<version>`` (e.g.
    ``msk-default-1``)."""
    async with store.acquire() as conn:
        found = [p for p in await plan_definitions(conn, who.org_id) if p["id"] == plan_id]
    if not found:
        return outcome(404, "not-found", f"unknown plan definition {plan_id[:64]!r}")
    return Response(orjson.dumps(found[0]), media_type=FHIR_JSON)
