"""Pain reports and exercise sessions as FHIR R4 Observations in a searchset Bundle
(alerts/fhir.py), validated by HAPI FHIR's R4 validator offline (tests/fhir/hapi.py): 0
errors on a simulated cohort's bundles; negative controls (a string pain score, a status
outside the required value set, an Observation without code) are refused. The mapping's
fields are checked without the JVM."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from alerts.fhir import (
    EVENT_ID_SYSTEM,
    date_range,
    observation_bundle,
    patient_reference,
    resource_id,
)
from rtm.simulate import simulate
from schemas.events import Event, validate_event
from tests.fhir import hapi

AT = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def _cohort() -> list[Event]:
    out = []
    for obj in simulate(4, 30, seed=7):
        ev = validate_event(obj)
        if not isinstance(ev, list):
            out.append(ev)
    return out


def _patient_bundle(events: list[Event]) -> dict[str, Any]:
    patient = sorted({e.patient_id for e in events if e.type == "pain.reported"})[0]
    return observation_bundle(
        [e for e in events if e.patient_id == patient],
        AT,
        self_url=f"https://rtm.example/fhir/Observation?patient={patient}",
    )


def _ev(**over: Any) -> Event:
    base: dict[str, Any] = {
        "event_id": "e:1_x",
        "schema_version": 1,
        "type": "pain.reported",
        "patient_id": "p-001",
        "occurred_at": "2026-10-03T23:30:00-05:00",
        "received_at": "2026-10-04T04:30:01Z",
        "score": 6,
        "context": "activity",
    }
    base.update(over)
    ev = validate_event({k: v for k, v in base.items() if v is not None})
    assert not isinstance(ev, list), ev
    return ev


def test_a_pain_report_maps_to_the_loinc_nprs_observation() -> None:
    bundle = observation_bundle([_ev()], AT)
    assert bundle["type"] == "searchset" and bundle["total"] == 1
    [entry] = bundle["entry"]
    obs = entry["resource"]
    assert entry["search"] == {"mode": "match"}
    assert entry["fullUrl"] == f"urn:uuid:{obs['id']}" == f"urn:uuid:{resource_id('e:1_x')}"
    assert obs["status"] == "final"
    assert obs["code"]["coding"] == [
        {
            "system": "http://loinc.org",
            "code": "72514-3",
            "display": "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
        }
    ]
    assert obs["category"][0]["coding"][0]["code"] == "survey"
    assert obs["valueInteger"] == 6
    assert obs["effectiveDateTime"] == "2026-10-03T23:30:00-05:00"  # the producer's offset
    assert obs["issued"] == "2026-10-04T04:30:01+00:00"
    assert obs["subject"] == {"reference": "Patient/p-001"}
    assert obs["identifier"] == [{"system": EVENT_ID_SYSTEM, "value": "e:1_x"}]


def test_an_exercise_session_maps_to_an_activity_observation_and_others_are_left_out() -> None:
    ex = _ev(
        type="exercise.completed",
        score=None,
        context=None,
        exercise_id="bridge",
        sets=3,
        reps=10,
        duration_s=240,
        event_id="e-2",
        occurred_at="2026-10-03T08:00:00-05:00",
    )
    symptom = _ev(type="symptom.reported", score=None, context=None, event_id="e-3")
    bundle = observation_bundle([_ev(), symptom, ex], AT)
    assert [e["resource"]["identifier"][0]["value"] for e in bundle["entry"]] == ["e-2", "e:1_x"]
    obs = bundle["entry"][0]["resource"]
    assert obs["category"][0]["coding"][0]["code"] == "activity"
    assert obs["code"]["coding"][0]["code"] == "73985-4"
    assert obs["valueCodeableConcept"]["text"] == "bridge"
    parts = {c["code"].get("text"): c for c in obs["component"]}
    assert parts["Exercise duration"]["valueQuantity"]["value"] == 240
    assert parts["Sets"]["valueInteger"] == 3 and parts["Repetitions"]["valueInteger"] == 10


def test_a_patient_id_outside_fhirs_id_grammar_is_referenced_by_identifier() -> None:
    assert patient_reference("p_1:a") == {
        "identifier": {"system": "urn:rtm:patient-id", "value": "p_1:a"}
    }
    assert patient_reference("p-1.a") == {"reference": "Patient/p-1.a"}


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], (None, None)),
        (["ge2026-10-01", "le2026-10-31"], (dt.date(2026, 10, 1), dt.date(2026, 10, 31))),
        (["2026-10-05"], (dt.date(2026, 10, 5), dt.date(2026, 10, 5))),
        (["eq2026-10-05"], (dt.date(2026, 10, 5), dt.date(2026, 10, 5))),
        (["gt2026-10-01", "lt2026-10-31"], (dt.date(2026, 10, 2), dt.date(2026, 10, 30))),
        (["ge2026-10-01", "ge2026-10-10"], (dt.date(2026, 10, 10), None)),
    ],
)
def test_date_search_values(values: list[str], expected: tuple[Any, Any]) -> None:
    assert date_range(values) == expected


@pytest.mark.parametrize("value", ["sa2026-10-01", "ge2026-13-01", "ge2026-10-01T10:00", "x"])
def test_date_search_values_it_cannot_take_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="date"):
        date_range([value])


pytestmark_hapi = pytest.mark.skipif(
    hapi.missing_tools() is not None, reason=hapi.missing_tools() or ""
)


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    events = _cohort()
    cohort = observation_bundle(events, AT)
    one = _patient_bundle(events)
    small = observation_bundle([_ev(), _ev(context=None, event_id="e-4", score=0)], AT)
    empty = observation_bundle([], AT, self_url="https://rtm.example/fhir/Observation?patient=x")
    string_score = copy.deepcopy(small)
    string_score["entry"][0]["resource"]["valueInteger"] = "6"
    bad_status = copy.deepcopy(small)
    bad_status["entry"][0]["resource"]["status"] = "done"
    no_code = copy.deepcopy(small)
    del no_code["entry"][0]["resource"]["code"]
    resources = {
        "cohort": cohort,
        "one_patient": one,
        "small": small,
        "empty": empty,
        "string_score": string_score,
        "bad_status": bad_status,
        "no_code": no_code,
    }
    return {"bundles": resources, "messages": hapi.validate(resources)}


@pytestmark_hapi
@pytest.mark.parametrize("name", ["cohort", "one_patient", "small", "empty"])
def test_observation_bundles_have_no_errors(results: dict[str, Any], name: str) -> None:
    bundle = results["bundles"][name]
    assert hapi.errors(results["messages"][name]) == []
    if name == "cohort":  # both kinds, many of them: the check covers the mapping
        kinds = {e["resource"]["code"]["coding"][0]["code"] for e in bundle["entry"]}
        assert kinds == {"72514-3", "73985-4"} and bundle["total"] > 100


@pytestmark_hapi
def test_the_validator_refuses_broken_observations(results: dict[str, Any]) -> None:
    msgs = results["messages"]
    assert hapi.errors(msgs["string_score"]), msgs["string_score"]
    assert any("done" in m.text for m in hapi.errors(msgs["bad_status"])), msgs["bad_status"]
    assert any("code" in m.text for m in hapi.errors(msgs["no_code"])), msgs["no_code"]
