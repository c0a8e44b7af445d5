"""Outcome measures, visits and a pathway as FHIR R4 (issue 19 item 6; outcomes.fhir): what a
receiving EHR reads off each resource. HAPI's R4 validation of the same resources is in
tests/integration/test_fhir_outcomes.py."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from alerts.fhir import observation
from outcomes.fhir import (
    checked,
    encounter,
    file_resources,
    plan_definition,
    questionnaire,
    questionnaire_response,
    response_id,
    score_observation,
)
from outcomes.instruments import INSTRUMENTS
from rtm.cli.root import main
from rtm.simulate import simulate
from schemas.events import AssessmentCompleted, Event, VisitCompleted, validate_event

PATHWAY = Path(__file__).resolve().parents[1] / "fixtures" / "pathways" / "msk-default-v1.json"
BASE = {"schema_version": 1, "patient_id": "p-1", "occurred_at": "2026-10-01T09:00:00-05:00"}


def _event(**fields: Any) -> Event:
    e = validate_event({**BASE, **fields})
    assert not isinstance(e, list), e
    return e


def _assessment(
    event_id: str, instrument: str, answers: dict[str, int | None]
) -> AssessmentCompleted:
    e = _event(
        event_id=event_id, type="assessment.completed", instrument=instrument, answers=answers
    )
    assert isinstance(e, AssessmentCompleted)
    return e


ODI = {f"s{i}": v for i, v in enumerate([3, None, 2, 1, 0, 5, 4, 3, 2, 1], start=1)}


@pytest.mark.parametrize("instrument", sorted(INSTRUMENTS))
def test_questionnaire_per_instrument_gated_ones_without_text(instrument: str) -> None:
    q = questionnaire(instrument)
    inst = INSTRUMENTS[instrument]
    assert q["url"] == f"urn:rtm-stream:questionnaire:{instrument}" and q["version"] == "1"
    assert [i["linkId"] for i in q["item"]] == list(inst.items)
    assert all(i["type"] == "integer" for i in q["item"])
    ranges = {
        (i["extension"][0]["valueInteger"], i["extension"][1]["valueInteger"]) for i in q["item"]
    }
    assert ranges == {(inst.low, inst.high)}
    has_text = {"text" in i for i in q["item"]}
    assert has_text == ({False} if inst.licence == "required" else {True})


def test_questionnaire_response_omits_null_items_and_keeps_item_order() -> None:
    qr = questionnaire_response(_assessment("e-odi", "odi", ODI))
    assert qr["questionnaire"] == "urn:rtm-stream:questionnaire:odi|1"
    assert qr["status"] == "completed" and qr["subject"] == {"reference": "Patient/p-1"}
    assert [(i["linkId"], i["answer"][0]["valueInteger"]) for i in qr["item"]] == [
        ("s1", 3),
        ("s3", 2),
        ("s4", 1),
        ("s5", 0),
        ("s6", 5),
        ("s7", 4),
        ("s8", 3),
        ("s9", 2),
        ("s10", 1),
    ]
    assert qr["identifier"] == {"system": "urn:rtm:event-id", "value": "e-odi"}
    assert qr["authored"] == "2026-10-01T09:00:00-05:00"


def test_score_observation_of_a_valid_form_derived_from_its_response() -> None:
    e = _assessment("e-odi", "odi", ODI)
    obs = score_observation(e)
    assert obs is not None
    # 21 over 9 answered items: 21 / 45 x 100 = 46.666... -> 46.7 %
    assert obs["valueQuantity"] == {
        "value": 46.7,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert obs["category"][0]["coding"][0]["code"] == "survey"
    assert obs["code"]["coding"][0] == {
        "system": "urn:rtm-stream:instrument-score",
        "code": "odi",
        "display": "Oswestry Disability Index score",
    }
    assert obs["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{response_id('e-odi')}"}]
    assert obs["id"] != response_id("e-odi")
    nprs = score_observation(_assessment("e-n", "nprs", {"nprs": 6}))
    assert nprs is not None and nprs["valueInteger"] == 6
    assert nprs["code"]["coding"][0]["system"] == "http://loinc.org"
    assert nprs["code"]["coding"][0]["code"] == "72514-3"


@pytest.mark.parametrize(
    "instrument,answers",
    [("odi", {**ODI, "s1": None}), ("psfs", {"a1": 11, "a2": 3, "a3": 4}), ("sf36", {"q1": 1})],
)
def test_an_invalid_form_has_a_response_but_no_score(
    instrument: str, answers: dict[str, int | None]
) -> None:
    e = _assessment("e-bad", instrument, answers)
    assert score_observation(e) is None
    qr = questionnaire_response(e)
    assert len(qr["item"]) == sum(v is not None for v in answers.values())


@pytest.mark.parametrize(("mode", "code"), [("in_person", "AMB"), ("virtual", "VR")])
def test_encounter_class_by_mode(mode: str, code: str) -> None:
    v = _event(
        event_id="v1", type="visit.completed", episode_id="ep1", mode=mode, clinician_id="c-01"
    )
    assert isinstance(v, VisitCompleted)
    enc = encounter(v)
    assert enc["class"]["code"] == code and enc["status"] == "finished"
    assert enc["episodeOfCare"][0]["identifier"]["value"] == "ep1"
    assert enc["participant"][0]["individual"]["identifier"]["value"] == "c-01"


_TIMED = {
    "visit.completed": {"episode_id": "ep1", "mode": "virtual"},
    "assessment.completed": {"instrument": "nprs", "answers": {"nprs": 4}},
    "pain.reported": {"score": 6, "context": "rest"},
    "exercise.completed": {"exercise_id": "bridge", "sets": 3},
}


def _timed_resources(e: Event) -> list[dict[str, Any]]:
    if isinstance(e, VisitCompleted):
        return [encounter(e)]
    if isinstance(e, AssessmentCompleted):
        score = score_observation(e)
        assert score is not None
        return [questionnaire_response(e), score]
    obs = observation(e)
    assert obs is not None
    return [obs]


@pytest.mark.parametrize("kind", sorted(_TIMED))
@pytest.mark.parametrize(
    ("offset", "minutes"),
    [
        ("-05:00", -300),
        ("+14:00", 840),
        ("-13:59", -839),
        ("Z", 0),
        # the contract takes RFC 3339's offsets up to 23:59; FHIR refuses one beyond 14:00
        ("+23:59", 0),
        ("-14:30", 0),
    ],
)
def test_every_timestamp_the_contract_takes_is_a_valid_fhir_time(
    kind: str, offset: str, minutes: int
) -> None:
    """A fuzzer's visit at offset +23:59 made GET /fhir/Encounter answer 500: each resource
    made from an event is valid FHIR for any offset the contract takes, at the same instant,
    in the producer's own offset when FHIR can write it."""
    sent = f"2026-10-01T09:00:00{offset}"
    e = _event(event_id="t1", type=kind, occurred_at=sent, received_at=sent, **_TIMED[kind])
    for resource in _timed_resources(e):
        checked(resource)  # fhir.resources' model raises for a value FHIR refuses
        times = [
            v
            for k in ("effectiveDateTime", "issued", "authored")
            if isinstance(v := resource.get(k), str)
        ] + [v for v in resource.get("period", {}).values()]
        assert times, resource
        for t in times:
            at = dt.datetime.fromisoformat(t)
            assert at == e.occurred_at
            assert at.utcoffset() == dt.timedelta(minutes=minutes)


def test_plan_definition_an_action_per_task_and_the_decisions_as_conditions() -> None:
    pd = plan_definition(json.loads(PATHWAY.read_text()))
    assert (pd["url"], pd["version"]) == ("urn:rtm-stream:pathway:msk-default", "1")
    timing = {
        a["id"]: (a["timingRange"]["low"]["value"], a["timingRange"]["high"]["value"])
        for a in pd["action"]
    }
    assert timing == {
        "baseline_prom": (0, 7),
        "week4_prom": (25, 28),
        "week4_review": (25, 28),
        "in_person_visit": (0, 3),
        "pause_review": (0, 1),
        "discharge_review": (0, 3),
    }
    conditions = {
        a["id"]: a["condition"][0]["expression"] for a in pd["action"] if "condition" in a
    }
    assert {k: v["expression"] for k, v in conditions.items()} == {
        "in_person_visit": "StepUp",
        "pause_review": "Pause",
        "discharge_review": "DischargeReady",
    }
    assert "at least 7 on days 21-28" in conditions["in_person_visit"]["description"]
    assert "at least 50%" in conditions["discharge_review"]["description"]
    v2 = {
        **json.loads(PATHWAY.read_text()),
        "version": 2,
        "step_up": {"pain_at_least": 6, "pain_days": [21, 28], "due_in": 3},
    }
    assert (
        "at least 6 on days"
        in plan_definition(v2)["action"][3]["condition"][0]["expression"]["description"]
    )


def test_file_resources_first_arrival_wins_in_time_order() -> None:
    late = _event(
        event_id="a2",
        type="assessment.completed",
        instrument="nprs",
        answers={"nprs": 3},
        occurred_at="2026-10-05T09:00:00-05:00",
    )
    early = _assessment("a1", "nprs", {"nprs": 7})
    resent = _assessment("a1", "nprs", {"nprs": 1})
    other = _event(
        event_id="a3",
        type="assessment.completed",
        instrument="nprs",
        answers={"nprs": 2},
        patient_id="p-2",
    )
    found = file_resources([late, early, resent, other], "assessments", "p-1")
    assert [
        (
            r["resourceType"],
            r["identifier"] if r["resourceType"] == "QuestionnaireResponse" else r["valueInteger"],
        )
        for r in found
    ] == [
        ("QuestionnaireResponse", {"system": "urn:rtm:event-id", "value": "a1"}),
        ("Observation", 7),
        ("QuestionnaireResponse", {"system": "urn:rtm:event-id", "value": "a2"}),
        ("Observation", 3),
    ]


def test_cli_over_a_file(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    rows = [
        {
            **BASE,
            "event_id": "a1",
            "type": "assessment.completed",
            "instrument": "odi",
            "answers": ODI,
        },
        {
            **BASE,
            "event_id": "v1",
            "type": "visit.completed",
            "episode_id": "ep1",
            "mode": "virtual",
        },
    ]
    events.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    r = CliRunner().invoke(main, ["fhir", "assessments", "--events", str(events)])
    assert r.exit_code == 1 and ":3: skipped" in r.stderr
    bundle = json.loads(r.stdout)
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "QuestionnaireResponse",
        "Observation",
    ]
    r = CliRunner().invoke(main, ["fhir", "encounters", "--events", str(events)])
    assert json.loads(r.stdout)["entry"][0]["resource"]["class"]["code"] == "VR"
    r = CliRunner().invoke(main, ["fhir", "questionnaire", "--instrument", "ndi"])
    assert r.exit_code == 0 and json.loads(r.stdout)["id"] == "ndi"
    r = CliRunner().invoke(main, ["fhir", "questionnaire", "--instrument", "sf36"])
    assert r.exit_code == 2 and "unknown instrument 'sf36'" in r.output
    r = CliRunner().invoke(main, ["fhir", "plan-definition", "--pathway", str(PATHWAY)])
    assert r.exit_code == 0 and json.loads(r.stdout)["id"] == "msk-default-1"
    r = CliRunner().invoke(main, ["fhir", "plan-definition", "--pathway", str(events)])
    assert r.exit_code == 2 and "not a pathway document" in r.output


def test_file_resources_do_not_depend_on_arrival_order_or_resends() -> None:
    cohort = [
        e
        for e in (validate_event(o) for o in simulate(25, 60, 5, outcomes=True))
        if not isinstance(e, list)
    ]
    expected = {k: file_resources(cohort, k) for k in ("assessments", "encounters")}
    assert len(expected["assessments"]) > 50 and len(expected["encounters"]) > 50
    rng = random.Random(3)
    for _ in range(3):
        arrived = cohort + rng.sample(cohort, len(cohort) // 10)  # resent
        rng.shuffle(arrived)
        assert {k: file_resources(arrived, k) for k in expected} == expected
