"""An episode on a pathway as FHIR R4 CarePlan and Tasks (issue 19 item 6; pathways/fhir.py):
the mapping table's status of each, the canonical of the version, the exit reason on the
EpisodeOfCare, and each task status with its due date, done date and business status."""

from __future__ import annotations

from typing import Any

import pytest

from outcomes.fhir import searchset
from pathways.engine import EpisodeView
from pathways.fhir import EXIT_REASON_EXTENSION, care_plan, care_plan_id, task
from pathways.model import builtin
from schemas.events import DEFAULT_ORG, Event
from streams.services.outcomes import Context, care_resources
from tests.unit.pathway_events import as_of, date, ended, fall, psfs, resumed, start
from tests.unit.test_pathways import B1, SAME26, STEP, S, run


def _plan(events: list[Event], t: int) -> tuple[EpisodeView, dict[str, Any]]:
    view = run(events, t)
    return view, care_plan(view)


def _tasks(view: EpisodeView) -> dict[str, dict[str, Any]]:
    return {t.kind: task(view, t) for t in view.tasks}


@pytest.mark.parametrize(
    ("events", "t", "status", "eoc_status"),
    [
        ([S, B1], 5, "active", "active"),
        ([S, B1, fall(10, "f")], 11, "on-hold", "onhold"),  # paused by a fall
        ([S, B1, fall(10, "f"), resumed(12, "r")], 13, "active", "active"),  # resumed
        ([S, B1, ended(20, "goals_met")], 21, "completed", "finished"),
    ],
)
def test_care_plan_status(events: list[Event], t: int, status: str, eoc_status: str) -> None:
    _, plan = _plan(events, t)
    assert plan["status"] == status
    (eoc,) = plan["contained"]
    assert (eoc["resourceType"], eoc["status"]) == ("EpisodeOfCare", eoc_status)
    assert plan["supportingInfo"] == [{"reference": "#episode"}]


def test_care_plan_instantiates_the_version_and_the_exit_reason_is_on_the_episode() -> None:
    view, plan = _plan([S, B1, ended(20, None)], 21)
    assert plan["instantiatesCanonical"] == ["urn:rtm-stream:pathway:msk-default|1"]
    assert plan["intent"] == "plan" and plan["subject"] == {"reference": "Patient/p-1"}
    assert plan["period"] == {"start": date(0), "end": date(20)}
    (eoc,) = plan["contained"]
    assert eoc["extension"] == [
        {
            "url": EXIT_REASON_EXTENSION,
            "valueCodeableConcept": {
                "coding": [{"system": "urn:rtm:exit-reason", "code": "other"}],
                "text": "other",
            },
        }
    ]
    assert plan["note"][-1] == {"text": f"{date(20)}: end (other)"}
    # every task is an activity of the plan, and based on it
    assert [a["reference"]["reference"] for a in plan["activity"]] == [
        f"Task/{t['id']}" for t in _tasks(view).values()
    ]
    assert all(
        t["basedOn"] == [{"reference": f"CarePlan/{care_plan_id(view)}"}]
        for t in _tasks(view).values()
    )


def test_an_active_plan_has_no_exit_reason() -> None:
    _, plan = _plan([S, B1], 5)
    assert "extension" not in plan["contained"][0]
    assert "end" not in plan["period"]


def test_task_statuses() -> None:
    # day 30: the baseline done on day 1, the week-4 PROM done on day 26, the week-4 review
    # (due day 28, nothing logged) overdue, the in-person visit of the day-26 step-up
    # (due day 29) overdue
    view = run(STEP, 30)
    got = _tasks(view)
    base = got["baseline_prom"]
    assert base["status"] == "completed"
    assert base["executionPeriod"] == {"end": date(1)}
    assert base["restriction"] == {"period": {"end": date(7)}}
    assert base["code"]["coding"][0] == {
        "system": "urn:rtm:task-kind",
        "code": "baseline_prom",
        "display": "Baseline PROM",
    }
    assert "businessStatus" not in base
    review = got["week4_review"]
    assert review["status"] == "ready"
    assert review["businessStatus"]["coding"] == [
        {"system": "urn:rtm:task-business-status", "code": "overdue"}
    ]
    assert review["restriction"] == {"period": {"end": date(28)}}
    assert "executionPeriod" not in review
    assert got["in_person_visit"]["restriction"] == {"period": {"end": date(29)}}


def test_open_and_cancelled_tasks() -> None:
    opened = _tasks(run([S], 3))["baseline_prom"]
    assert (opened["status"], "businessStatus" in opened) == ("ready", False)
    # ended on day 20: the week-4 PROM (due day 28) is cancelled, the baseline was done
    cancelled = _tasks(run([S, B1, SAME26, ended(20, "referred")], 40))
    assert cancelled["week4_prom"]["status"] == "cancelled"
    assert "executionPeriod" not in cancelled["week4_prom"]
    assert cancelled["baseline_prom"]["status"] == "completed"


def test_ids_are_stable_and_distinct() -> None:
    a, b = run(STEP, 30), run([*STEP, psfs(31, "late", 4, 4, 4)], 32)
    assert care_plan(a)["id"] == care_plan(b)["id"]
    ids = [t["id"] for t in _tasks(a).values()]
    assert len(set(ids)) == len(ids)
    assert ids == [t["id"] for k, t in _tasks(b).items() if k in _tasks(a)]


def test_an_episode_on_an_unknown_version_is_named_not_dropped() -> None:
    events = [
        S,
        ended(1, "other"),
        start("other", "ep-9", patient="p-1", day=2, pathway={"id": "msk-default", "version": 7}),
    ]
    payloads = [e.model_dump_json(exclude_none=True) for e in events]
    ctx = Context(builtin(), frozenset(), as_of(5))
    found = care_resources(DEFAULT_ORG, "p-1", payloads, ctx, "CarePlan")
    assert [r["resourceType"] for r in found] == ["CarePlan", "OperationOutcome"]
    assert found[1]["issue"] == [
        {
            "severity": "warning",
            "code": "not-found",
            "diagnostics": "episode ep-9: pathway msk-default@7 unknown",
        }
    ]
    bundle = searchset(found, as_of(5))
    assert bundle["total"] == 1
    assert [e["search"]["mode"] for e in bundle["entry"]] == ["match", "outcome"]
