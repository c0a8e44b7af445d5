"""Outcome measures, visits and pathways as FHIR R4 (4.0.1) resources, pure (issue 19 item 6;
docs/pathways-and-outcomes.md, FHIR mapping). Each resource is checked by fhir.resources'
R4B models (the same R4 structures for these types) as it is built; HAPI FHIR's R4 validator
finds no errors in them (tests/integration/test_fhir_outcomes.py).

- **Questionnaire** per instrument of the registry: ``url`` ``urn:rtm-stream:questionnaire:<id>``
  and ``version`` (QUESTIONNAIRE_VERSION), one ``integer`` item per item id with the answer
  range as the core ``minValue``/``maxValue`` extensions. A licence-gated instrument (ODI,
  NDI, QuickDASH) carries its ``linkId``s without text: the licensee supplies the text.
- **QuestionnaireResponse** per ``assessment.completed``: ``questionnaire`` the canonical
  ``url|version``, ``linkId`` = item id, ``valueInteger``, null items omitted; an invalid
  form too (what the patient answered), in the registry's item order.
- **Observation** (the score) for a *valid* assessment only: shaped as US Core's Screening
  Assessment (category ``survey``, status, code, subject, effective, value), without
  claiming the profile (US Core is not among the R4 definitions a receiver validates
  offline, as for alerts.fhir); LOINC where registered (NPRS 72514-3) else the project's
  local code; ``derivedFrom`` the QuestionnaireResponse. NPRS is ``valueInteger`` as the pain
  Observations; the others a UCUM ``valueQuantity`` rounded half away from zero to 0.1.
- **Encounter** per ``visit.completed``: ``finished``, class ``AMB`` (in person) or ``VR``
  (virtual), the episode as an ``EpisodeOfCare`` identifier, the clinician as a participant
  identifier.
- **PlanDefinition** of a pathway version (the pathway document as a Mapping): ``url``
  ``urn:rtm-stream:pathway:<id>``, ``version``; one ``action`` per task kind with its
  ``timingRange`` in days (from the episode's start; for the tasks a decision opens, from the
  decision's date) and, for those, an ``applicability`` ``condition`` naming the decision
  and its thresholds.

Resource ids are UUIDv5 of the event id (distinct per resource type within a Bundle), so a
re-export names the same resources. Nothing here reads the clock or the database.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from outcomes.instruments import INSTRUMENTS, Instrument, round_1, score_form
from schemas.events import AssessmentCompleted, Event, VisitCompleted

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
EVENT_ID_SYSTEM = "urn:rtm:event-id"
PATIENT_ID_SYSTEM = "urn:rtm:patient-id"  # as in the Claims (billing.export)
EPISODE_ID_SYSTEM = "urn:rtm:episode-id"
CLINICIAN_ID_SYSTEM = "urn:rtm:clinician-id"
TASK_KIND_SYSTEM = "urn:rtm:task-kind"
QUESTIONNAIRE_URL = "urn:rtm-stream:questionnaire:"
PATHWAY_URL = "urn:rtm-stream:pathway:"
QUESTIONNAIRE_VERSION = "1"  # the registry's item set; a changed item set is a new version
# a decision of the project's pathway engine (pathways/) by name, a CamelCase identifier (a
# CQL expression; no CQL library ships): R4's ExpressionLanguage value set, which HAPI's R4
# validator holds to, has only text/cql, text/fhirpath and application/x-fhir-query
DECISION_LANGUAGE = "text/cql"
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"
_NAMESPACE = uuid.UUID("6f1d4c1e-2b7a-5d8e-9a43-7c0e5b1f2a60")  # this system's resource ids
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}").fullmatch
# what a licensee supplies is not shipped; the free instruments' item labels
_FREE_TEXT = {
    "nprs": {"nprs": "Pain intensity, 0 (no pain) to 10 (worst pain imaginable)"},
    "psfs": {
        f"a{i}": f"Activity {i} (the patient names it), 0 (unable) to 10" for i in range(1, 6)
    },
}


def resource_id(event_id: str, kind: str = "") -> str:
    """The id of a resource made from an event: stable, within FHIR's id grammar. ``kind``
    tells apart two resources of one event (an assessment's response and its score)."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}|{event_id}" if kind else event_id))


def response_id(event_id: str) -> str:
    """The QuestionnaireResponse id of an assessment (its score Observation's is the plain
    ``resource_id``)."""
    return resource_id(event_id, "QuestionnaireResponse")


# FHIR's dateTime and instant take an offset of at most 14 hours (RFC 3339, and so the
# contract, up to 23:59); real zones run from -12:00 to +14:00
_FHIR_MAX_OFFSET = dt.timedelta(hours=14)


def fhir_time(at: dt.datetime) -> str:
    """A timestamp as FHIR's dateTime and instant write it: in its own offset, as sent, when
    FHIR can write that offset; otherwise the same instant in UTC (an offset beyond +-14:00
    names no real zone, and FHIR refuses it)."""
    offset = at.utcoffset()
    if offset is None:
        raise ValueError("timestamp must be timezone-aware")
    if abs(offset) > _FHIR_MAX_OFFSET:
        at = at.astimezone(dt.UTC)
    return at.isoformat()


def patient_reference(patient_id: str) -> dict[str, Any]:
    if _FHIR_ID(patient_id):
        return {"reference": f"Patient/{patient_id}"}
    return {"identifier": {"system": PATIENT_ID_SYSTEM, "value": patient_id}}


def checked(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as fhir.resources' model of its type reads and writes it (an error
    names a structure FHIR does not allow)."""
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    out: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return out


def questionnaire_url(instrument_id: str) -> str:
    return QUESTIONNAIRE_URL + instrument_id


def _item(inst: Instrument, link_id: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "extension": [
            {"url": MIN_VALUE, "valueInteger": inst.low},
            {"url": MAX_VALUE, "valueInteger": inst.high},
        ],
        "linkId": link_id,
        "type": "integer",
    }
    if inst.licence == "free":
        item["text"] = _FREE_TEXT.get(inst.id, {}).get(link_id, f"{inst.name}, item {link_id}")
    return item


def questionnaire(instrument_id: str) -> dict[str, Any]:
    """The Questionnaire of a registered instrument (KeyError for an unknown one)."""
    inst = INSTRUMENTS[instrument_id]
    out: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "id": instrument_id,
        "url": questionnaire_url(instrument_id),
        "version": QUESTIONNAIRE_VERSION,
        "name": re.sub(r"[^A-Za-z0-9]", "", inst.name),
        "title": inst.name,
        "status": "active",
        "subjectType": ["Patient"],
        "code": [_coding(inst)],
        "item": [_item(inst, link_id) for link_id in inst.items],
    }
    if inst.licence == "required":
        out["copyright"] = (
            "Licence-gated: item text is supplied by a licensee; scoring only ships here."
        )
    return checked(out)


def _coding(inst: Instrument) -> dict[str, Any]:
    display = (
        "Pain severity - 0-10 verbal numeric rating [Score] - Reported"
        if inst.code_system == LOINC
        else f"{inst.name} score"
    )
    return {"system": inst.code_system, "code": inst.code, "display": display}


def _identifier(event_id: str) -> dict[str, Any]:
    return {"system": EVENT_ID_SYSTEM, "value": event_id}


def questionnaire_response(event: AssessmentCompleted) -> dict[str, Any]:
    """The form as answered; null answers omitted; the registry's item order (unknown
    items after, by id)."""
    inst = INSTRUMENTS.get(event.instrument)
    order = {item: i for i, item in enumerate(inst.items if inst else ())}
    answered = sorted(
        ((k, v) for k, v in event.answers.items() if v is not None),
        key=lambda kv: (order.get(kv[0], len(order)), kv[0]),
    )
    patient = patient_reference(event.patient_id)
    canonical = questionnaire_url(event.instrument)
    out: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": response_id(event.event_id),
        "identifier": _identifier(event.event_id),
        "questionnaire": f"{canonical}|{QUESTIONNAIRE_VERSION}" if inst else canonical,
        "status": "completed",
        "subject": patient,
        "authored": fhir_time(event.occurred_at),
        "author": patient,
        "source": patient,
    }
    if answered:  # FHIR: an empty array is absent, not []
        out["item"] = [{"linkId": k, "answer": [{"valueInteger": v}]} for k, v in answered]
    return checked(out)


def score_observation(event: AssessmentCompleted) -> dict[str, Any] | None:
    """The score Observation of a valid assessment; None for an invalid one."""
    scored = score_form(event.instrument, event.answers)
    if scored.score is None:
        return None
    inst = INSTRUMENTS[event.instrument]
    patient = patient_reference(event.patient_id)
    coding = _coding(inst)
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": resource_id(event.event_id),
        "identifier": [_identifier(event.event_id)],
        "status": "final",
        "category": [
            {"coding": [{"system": OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}]}
        ],
        "code": {"coding": [coding], "text": coding["display"]},
        "subject": patient,
        "effectiveDateTime": fhir_time(event.occurred_at),
        "performer": [patient],
        "derivedFrom": [{"reference": f"QuestionnaireResponse/{response_id(event.event_id)}"}],
    }
    if event.received_at is not None:
        out["issued"] = fhir_time(event.received_at)
    if inst.id == "nprs":
        out["valueInteger"] = int(scored.score)
    else:
        value = Decimal(str(round_1(scored.score)))
        out["valueQuantity"] = {
            "value": value,
            "unit": inst.unit,
            "system": UCUM,
            "code": inst.unit,
        }
    return checked(out)


def assessment_resources(event: AssessmentCompleted) -> list[dict[str, Any]]:
    """The response and, for a valid form, its score Observation."""
    score = score_observation(event)
    return [questionnaire_response(event), *([score] if score is not None else [])]


def encounter(event: VisitCompleted) -> dict[str, Any]:
    """The Encounter of a visit: class AMB in person, VR virtual."""
    cls = (
        {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"}
        if event.mode == "in_person"
        else {"system": ACT_CODE, "code": "VR", "display": "virtual"}
    )
    at = fhir_time(event.occurred_at)
    out: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": resource_id(event.event_id),
        "identifier": [_identifier(event.event_id)],
        "status": "finished",
        "class": cls,
        "subject": patient_reference(event.patient_id),
        "episodeOfCare": [{"identifier": {"system": EPISODE_ID_SYSTEM, "value": event.episode_id}}],
        "period": {"start": at, "end": at},
    }
    if event.clinician_id is not None:
        out["participant"] = [
            {
                "individual": {
                    "identifier": {"system": CLINICIAN_ID_SYSTEM, "value": event.clinician_id}
                }
            }
        ]
    return checked(out)


def searchset(
    resources: Iterable[dict[str, Any]],
    timestamp: dt.datetime,
    self_url: str | None = None,
    base: str | None = None,
) -> dict[str, Any]:
    """A ``searchset`` Bundle of ``resources`` in the order given, each entry a ``match``
    (an OperationOutcome an ``outcome``); ``total`` counts the matches (no ``entry`` when
    none). A resource made from an event (a UUID id) has the ``fullUrl`` ``urn:uuid:<id>``;
    one with a server id (a Questionnaire) ``<base>/<type>/<id>``, so ``base`` (the FHIR base
    URL) is needed for those."""
    if timestamp.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    resources = list(resources)
    entries = [
        {"fullUrl": _full_url(r, base), "resource": r, "search": {"mode": _mode(r)}}
        for r in resources
    ]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": timestamp.isoformat(),
        "total": sum(_mode(r) == "match" for r in resources),
    }
    if self_url is not None:
        bundle["link"] = [{"relation": "self", "url": self_url}]
    if entries:  # FHIR: an empty array is absent, not []
        bundle["entry"] = entries
    return bundle


def _mode(resource: dict[str, Any]) -> str:
    """An OperationOutcome is the search's ``outcome`` (what it could not do), not a match."""
    return "outcome" if resource["resourceType"] == "OperationOutcome" else "match"


def _full_url(resource: dict[str, Any], base: str | None) -> str:
    rid = str(resource["id"])
    try:
        uuid.UUID(rid)
    except ValueError:
        if base is None:
            raise ValueError(
                f"{resource['resourceType']}/{rid}: a fullUrl needs the base URL"
            ) from None
        return f"{base.rstrip('/')}/{resource['resourceType']}/{rid}"
    return f"urn:uuid:{rid}"


# --- PlanDefinition ---------------------------------------------------------------------------


def _days(low: int, high: int) -> dict[str, Any]:
    return {
        "low": {"value": low, "unit": "d", "system": UCUM, "code": "d"},
        "high": {"value": high, "unit": "d", "system": UCUM, "code": "d"},
    }


def _action(kind: str, title: str, days: tuple[int, int], condition: str | None) -> dict[str, Any]:
    action: dict[str, Any] = {
        "id": kind,
        "title": title,
        "code": [{"coding": [{"system": TASK_KIND_SYSTEM, "code": kind}]}],
        "timingRange": _days(*days),
    }
    if condition is not None:
        name, text = condition.split(": ", 1)
        action["description"] = f"opened by the {name} decision; days from its date"
        action["condition"] = [
            {
                "kind": "applicability",
                "expression": {
                    "description": text,
                    "name": name.replace("_", "-"),  # an id: no underscore
                    "language": DECISION_LANGUAGE,
                    "expression": name.title().replace("_", ""),
                },
            }
        ]
    else:
        action["description"] = "days from the episode's start"
    return action


def _primary_text(primary: Mapping[str, Any]) -> str:
    return "; ".join(f"{region}: {', '.join(ids)}" for region, ids in primary.items())


def plan_definition(pathway: Mapping[str, Any]) -> dict[str, Any]:
    """The PlanDefinition of a pathway version (its document, as published): an action per
    task kind, with timingRange days and, for the tasks a decision opens, an applicability
    condition naming the decision with its thresholds. A KeyError names a missing field."""
    pid, version = str(pathway["id"]), int(pathway["version"])
    base, week4 = pathway["timepoints"]["baseline"], pathway["timepoints"]["week4"]
    review, step_up = pathway["review"], pathway["step_up"]
    pause, discharge = pathway["pause"], pathway["discharge_ready"]
    lo, hi = step_up["pain_days"]
    pause_on = (
        "a fall or a clinician's program.paused"
        if pause["on_fall"]
        else "a clinician's program.paused"
    )
    actions = [
        _action("baseline_prom", "Baseline PROM", (base["days"][0], base["due"]), None),
        _action("week4_prom", "Week-4 PROM", (week4["days"][0], week4["due"]), None),
        _action("week4_review", "Week-4 review", (review["from_day"], review["due"]), None),
        _action(
            "in_person_visit",
            "In-person visit",
            (0, step_up["due_in"]),
            f"step_up: a baseline exists, the week-4 change is below the MCID and some pain"
            f" report is at least {step_up['pain_at_least']} on days {lo}-{hi}",
        ),
        _action(
            "pause_review",
            "Pause review",
            (0, pause["due_in"]),
            f"pause: {pause_on} while not paused",
        ),
        _action(
            "discharge_review",
            "Discharge review",
            (0, discharge["due_in"]),
            "discharge_ready: the first score after the baseline with a change of at least the"
            f" MCID and adherence_7d of that day at least {discharge['adherence_at_least']:.0%}",
        ),
    ]
    out: dict[str, Any] = {
        "resourceType": "PlanDefinition",
        "id": f"{pid}-{version}",
        "url": PATHWAY_URL + pid,
        "version": str(version),
        "name": re.sub(r"[^A-Za-z0-9]", "", pid.title()),
        "title": f"{pid} v{version}",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/plan-definition-type",
                    "code": "clinical-protocol",
                    "display": "Clinical Protocol",
                }
            ]
        },
        "status": "active",
        "description": "Primary instrument by body region (the first free or licensed): "
        + _primary_text(pathway["primary"]),
        "action": actions,
    }
    return checked(out)


# --- offline: a JSONL file's resources --------------------------------------------------------


def file_resources(
    events: Iterable[Event], kind: str, patient_id: str | None = None
) -> list[dict[str, Any]]:
    """The resources of a file's events, as ``rtm fhir assessments|encounters`` print them:
    ``assessments``, each form's QuestionnaireResponse then, if valid, its score Observation;
    ``encounters``, each visit's Encounter. A resent event id counts once (the first arrival
    wins); in event time order, then event id; only ``patient_id``'s when given."""
    first: dict[tuple[str, str], Event] = {}
    for e in events:
        if patient_id is None or e.patient_id == patient_id:
            first.setdefault((e.patient_key[0], e.event_id), e)
    chosen = sorted(first.values(), key=lambda e: (e.occurred_at, e.event_id))
    if kind == "assessments":
        return [
            r for e in chosen if isinstance(e, AssessmentCompleted) for r in assessment_resources(e)
        ]
    if kind == "encounters":
        return [encounter(e) for e in chosen if isinstance(e, VisitCompleted)]
    raise ValueError(f"unknown kind {kind!r}")
