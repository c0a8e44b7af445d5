"""Outcome measures and visits as FHIR R4 through the real gateway, worker, Kafka and
PostgreSQL (issue 19 item 6): forms and visits posted at the gateway come back from ``GET
/fhir/QuestionnaireResponse``, ``/fhir/Observation`` (the score of a valid form, derived from
its response) and ``/fhir/Encounter``, scoped (another clinician's patient answers 404) and
audited; the offline ``rtm fhir assessments|encounters`` over the stored events give the same
resources; HAPI FHIR's R4 validator finds 0 errors in every new resource type
(Questionnaire, QuestionnaireResponse, Observation, Encounter, PlanDefinition)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from rtm.cli.root import main
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.fhir import hapi
from tests.integration.browser import fetch
from tests.integration.conftest import Stack, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration
PATHWAY = Path(__file__).resolve().parents[1] / "fixtures" / "pathways" / "msk-default-v1.json"
# a small cohort with every CarePlan and Task status (tests/fixtures/pathways/care.jsonl)
COHORT = PATHWAY.with_name("care.jsonl")
COHORT_AS_OF = "2026-02-04T00:00:00-06:00"
ODI = {f"s{i}": v for i, v in enumerate([3, None, 2, 1, 0, 5, 4, 3, 2, 1], start=1)}


def _form(f: EventFactory, pid: str, at: str, instrument: str, answers: Any) -> dict[str, Any]:
    return f.symptom(
        pid,
        at,
        type="assessment.completed",
        instrument=instrument,
        answers=answers,
        episode_id=f"{pid}-ep1",
    )


def _visit(f: EventFactory, pid: str, at: str, mode: str) -> dict[str, Any]:
    return f.symptom(
        pid, at, type="visit.completed", episode_id=f"{pid}-ep1", mode=mode, clinician_id="c-01"
    )


@pytest.fixture(scope="module")
def stack(base_settings: Settings) -> Iterator[tuple[Stack, dict[str, str]]]:
    with running_stack(base_settings) as s:
        f = EventFactory()
        mine, other = f.patient(1), f.patient(2)
        episodes = [
            f.episode_started(
                mine, at="2026-10-01T09:00:00-05:00", clinician_id="c-01", body_region="low_back"
            ),
            f.episode_started(
                other, at="2026-10-01T09:00:00-05:00", clinician_id=f"c-{uuid.uuid4().hex[:6]}"
            ),
        ]
        data = [
            _form(f, mine, "2026-10-02T10:00:00-05:00", "odi", ODI),
            _form(f, mine, "2026-10-03T10:00:00-05:00", "psfs", {"a1": 4, "a2": None}),  # invalid
            _form(f, mine, "2026-10-04T10:00:00-05:00", "nprs", {"nprs": 6}),
            _visit(f, mine, "2026-10-05T15:00:00-05:00", "in_person"),
            _visit(f, mine, "2026-10-12T15:00:00-05:00", "virtual"),
            _form(f, other, "2026-10-02T10:00:00-05:00", "nprs", {"nprs": 2}),
        ]
        assert s.post(episodes).json()["accepted"] == 2
        resp = s.post(data)
        assert resp.json()["accepted"] == len(data), resp.text

        async def stored() -> bool:
            rows = await fetch(
                s.settings, "SELECT 1 FROM events WHERE patient_id = ANY($1::text[])", [mine, other]
            )
            return len(rows) == len(data) + 2

        run_in_thread(wait_for(stored, 90, "events stored"))
        yield s, {"mine": mine, "other": other}


def _get(s: Stack, path: str, headers: dict[str, str], params: Any = None) -> httpx.Response:
    return httpx.get(f"{s.url}/fhir/{path}", params=params, headers=headers, timeout=30)


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])]


def test_responses_scores_and_encounters_of_a_patient(stack: tuple[Stack, dict[str, str]]) -> None:
    s, p = stack
    admin = s.user_headers("admin")
    qrs = _resources(_get(s, "QuestionnaireResponse", admin, {"patient": p["mine"]}).json())
    assert [q["questionnaire"] for q in qrs] == [
        "urn:rtm-stream:questionnaire:odi|1",
        "urn:rtm-stream:questionnaire:psfs|1",
        "urn:rtm-stream:questionnaire:nprs|1",
    ]
    assert [i["linkId"] for i in qrs[0]["item"]] == ["s1", *[f"s{i}" for i in range(3, 11)]]
    obs = _resources(_get(s, "Observation", admin, {"patient": p["mine"]}).json())
    scores = [o for o in obs if o["category"][0]["coding"][0]["code"] == "survey"]
    # the ODI score and the NPRS form; the invalid PSFS has none
    assert [
        (
            o["code"]["coding"][0]["code"],
            o.get("valueQuantity", {}).get("value", o.get("valueInteger")),
        )
        for o in scores
    ] == [
        ("odi", 46.7),
        ("72514-3", 6),
    ]
    assert scores[0]["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{qrs[0]['id']}"}]
    enc = _resources(
        _get(s, "Encounter", admin, [("patient", p["mine"]), ("date", "ge2026-10-06")]).json()
    )
    assert [e["class"]["code"] for e in enc] == ["VR"]
    assert [
        e["class"]["code"]
        for e in _resources(_get(s, "Encounter", admin, {"patient": p["mine"]}).json())
    ] == ["AMB", "VR"]
    questionnaires = _get(s, "Questionnaire", admin).json()
    assert questionnaires["total"] == 6
    odi = _get(s, "Questionnaire/odi", admin).json()
    assert all("text" not in i for i in odi["item"])
    assert _get(s, "Questionnaire/sf36", admin).status_code == 404


def test_scope_and_audit(stack: tuple[Stack, dict[str, str]]) -> None:
    s, p = stack
    clinician = s.user_headers("clinician")  # c-01: treats "mine", not "other"
    for path in ("QuestionnaireResponse", "Encounter", "CarePlan", "Task"):
        assert _get(s, path, clinician, {"patient": p["mine"]}).status_code == 200
        denied = _get(s, path, clinician, {"patient": p["other"]})
        assert denied.status_code == 404 and denied.json()["resourceType"] == "OperationOutcome"
        assert _get(s, path, {}, {"patient": p["mine"]}).status_code == 401
        assert _get(s, path, s.user_headers("billing"), {"patient": p["mine"]}).status_code == 403
    rows = run_in_thread(
        fetch(
            s.settings,
            "SELECT actor, resource FROM audit_log WHERE patient_ids @> ARRAY[$1::text]"
            " AND resource LIKE 'GET /fhir/%'",
            p["mine"],
        )
    )
    assert {(r["actor"], r["resource"]) for r in rows} >= {
        ("user:clinician", "GET /fhir/QuestionnaireResponse"),
        ("user:clinician", "GET /fhir/Encounter"),
        ("user:clinician", "GET /fhir/CarePlan"),
        ("user:clinician", "GET /fhir/Task"),
    }


def _stored_events(s: Stack, patient_id: str, path: Path) -> Path:
    payloads = run_in_thread(
        fetch(s.settings, "SELECT payload::text AS p FROM events WHERE patient_id = $1", patient_id)
    )
    path.write_text("".join(r["p"] + "\n" for r in payloads))
    return path


def _offline(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    bundle: dict[str, Any] = json.loads(result.stdout)
    return bundle


def test_the_episode_as_a_care_plan_and_its_tasks(
    stack: tuple[Stack, dict[str, str]], tmp_path: Path
) -> None:
    s, p = stack
    admin = s.user_headers("admin")
    plans = _get(s, "CarePlan", admin, {"patient": p["mine"]}).json()
    (plan,) = _resources(plans)
    assert plan["status"] == "active"
    assert plan["instantiatesCanonical"] == ["urn:rtm-stream:pathway:msk-default|1"]
    assert plan["contained"][0]["identifier"][0]["value"] == f"{p['mine']}-ep1"
    tasks = _resources(_get(s, "Task", admin, {"patient": p["mine"]}).json())
    # started 2026-10-01 on low_back (ODI not licensed: PSFS, whose one form is invalid):
    # no baseline, so the three timepoint tasks are all past due and not done
    assert [
        (t["code"]["coding"][0]["code"], t["restriction"]["period"]["end"], t["status"])
        for t in tasks
    ] == [
        ("baseline_prom", "2026-10-08", "ready"),
        ("week4_prom", "2026-10-29", "ready"),
        ("week4_review", "2026-10-29", "ready"),
    ]
    assert all(t["businessStatus"]["coding"][0]["code"] == "overdue" for t in tasks)
    assert all(t["basedOn"] == [{"reference": f"CarePlan/{plan['id']}"}] for t in tasks)
    # the offline commands over the same events, as of the same instant, agree
    events = str(_stored_events(s, p["mine"], tmp_path / "mine.jsonl"))
    as_of = plans["timestamp"]
    offline = _offline("fhir", "careplans", "--events", events, "--as-of", as_of)
    assert _resources(offline) == [plan]
    offline_tasks = _offline("fhir", "tasks", "--events", events, "--as-of", as_of)
    assert _resources(offline_tasks) == tasks


def test_plan_definitions_of_the_organisation(
    stack: tuple[Stack, dict[str, str]], tmp_path: Path
) -> None:
    s, _ = stack
    admin = s.user_headers("admin")
    v2 = json.loads(PATHWAY.read_text())
    v2.update(id="care-plan-test", version=2)
    draft = tmp_path / "v2.json"
    draft.write_text(json.dumps(v2))
    published = CliRunner().invoke(main, ["pathways", "publish", str(draft), "--org", "default"])
    assert published.exit_code == 0, published.output
    listed = _resources(_get(s, "PlanDefinition", admin).json())
    ids = [r["id"] for r in listed]
    assert {"msk-default-1", "care-plan-test-2"} <= set(ids)
    builtin = _get(s, "PlanDefinition/msk-default-1", admin).json()
    assert builtin == _offline("fhir", "plan-definition", "--pathway", str(PATHWAY))
    mine = _get(s, "PlanDefinition/care-plan-test-2", admin).json()
    assert (mine["url"], mine["version"]) == ("urn:rtm-stream:pathway:care-plan-test", "2")
    assert _get(s, "PlanDefinition/care-plan-test-3", admin).status_code == 404


def test_offline_commands_agree_and_hapi_finds_no_errors(
    stack: tuple[Stack, dict[str, str]], tmp_path: Path
) -> None:
    s, p = stack
    admin = s.user_headers("admin")
    payloads = run_in_thread(
        fetch(s.settings, "SELECT payload::text AS p FROM events WHERE patient_id = $1", p["mine"])
    )
    events = tmp_path / "mine.jsonl"
    events.write_text("".join(r["p"] + "\n" for r in payloads))
    api_qr = _get(s, "QuestionnaireResponse", admin, {"patient": p["mine"]}).json()
    api_obs = _get(s, "Observation", admin, {"patient": p["mine"]}).json()
    api_enc = _get(s, "Encounter", admin, {"patient": p["mine"]}).json()
    offline = json.loads(
        CliRunner().invoke(main, ["fhir", "assessments", "--events", str(events)]).stdout
    )
    survey = [r for r in _resources(api_obs) if r["category"][0]["coding"][0]["code"] == "survey"]
    assert _resources(offline) == sorted(
        [*_resources(api_qr), *survey],
        key=lambda r: (
            r["identifier"]["value"]
            if r["resourceType"] == "QuestionnaireResponse"
            else r["identifier"][0]["value"],
            r["resourceType"] != "QuestionnaireResponse",
        ),
    )
    offline_enc = json.loads(
        CliRunner().invoke(main, ["fhir", "encounters", "--events", str(events)]).stdout
    )
    assert _resources(offline_enc) == _resources(api_enc)
    plan = json.loads(
        CliRunner().invoke(main, ["fhir", "plan-definition", "--pathway", str(PATHWAY)]).stdout
    )
    care_plans = _get(s, "CarePlan", admin, {"patient": p["mine"]}).json()
    tasks = _get(s, "Task", admin, {"patient": p["mine"]}).json()
    # an ended episode (exit reason on the EpisodeOfCare) and every task status, offline
    ended = _offline("fhir", "careplans", "--events", str(COHORT), "--as-of", COHORT_AS_OF)
    all_tasks = _offline("fhir", "tasks", "--events", str(COHORT), "--as-of", COHORT_AS_OF)
    assert {r["status"] for r in _resources(ended)} == {"active", "on-hold", "completed"}
    assert {(r["status"], "businessStatus" in r) for r in _resources(all_tasks)} == {
        ("ready", False),
        ("ready", True),
        ("completed", False),
        ("cancelled", False),
    }
    if hapi.missing_tools() is not None:
        pytest.skip(hapi.missing_tools() or "")
    resources = {
        "questionnaires": _get(s, "Questionnaire", admin).json(),
        "responses": api_qr,
        "observations": api_obs,
        "encounters": api_enc,
        "plan": plan,
        "offline": offline,
        "care_plans": care_plans,
        "tasks": tasks,
        "cohort_care_plans": ended,
        "cohort_tasks": all_tasks,
    }
    messages = hapi.validate(resources)
    assert {name: hapi.errors(m) for name, m in messages.items()} == {
        name: [] for name in resources
    }
    # the validator reads what it is given: a broken resource is an error
    a_task = _resources(tasks)[0]
    broken = {
        "plan": {**plan, "status": "published"},
        "care_plan": {**_resources(care_plans)[0], "status": "paused"},
        "task": {**a_task, "status": "overdue"},
        "task_without_intent": {k: v for k, v in a_task.items() if k != "intent"},
    }
    found = hapi.validate(broken)
    assert all(hapi.errors(found[name]) for name in broken), found
