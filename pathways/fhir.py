"""An episode on a pathway as FHIR R4 (4.0.1) ``CarePlan`` and ``Task``s, pure (issue 19
item 6; docs/pathways-and-outcomes.md, FHIR mapping). Built directly from the engine's view
of the episode (``pathways.engine.EpisodeView``), not through ``PlanDefinition/$apply``.

- **CarePlan** per episode: ``instantiatesCanonical`` the pathway version's PlanDefinition,
  ``urn:rtm-stream:pathway:<id>|<version>`` (``outcomes.fhir.plan_definition``); status
  ``active``, ``on-hold`` while the episode is paused on the as-of date, ``completed`` once it
  ended; ``period`` the episode's dates; the episode's decisions as ``note``s; an
  ``activity`` per task naming its Task. The episode itself is a contained ``EpisodeOfCare``
  (``supportingInfo``), as the NZ ICP keeps the exit: R4's EpisodeOfCare has no element for
  why it ended, so the exit reason is the extension ``EXIT_REASON_EXTENSION`` on it (code
  system ``urn:rtm:exit-reason``, the project's reasons).
- **Task** per task of the episode: ``basedOn`` the CarePlan, ``code`` the task kind
  (``urn:rtm:task-kind``, as the PlanDefinition's actions), ``restriction.period.end`` the
  due date; open -> ``ready``; done -> ``completed`` with ``executionPeriod.end`` the done
  date; cancelled -> ``cancelled``; overdue -> ``ready`` with ``businessStatus``
  ``overdue``.

Ids are UUIDv5 of (organisation, episode[, task kind and due date]): a re-export names the
same resources. Nothing here reads the clock or the database: the as-of instant is the
view's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from outcomes.fhir import (
    CLINICIAN_ID_SYSTEM,
    EPISODE_ID_SYSTEM,
    PATHWAY_URL,
    TASK_KIND_SYSTEM,
    checked,
    patient_reference,
    resource_id,
)
from pathways.engine import EpisodeView, Task

EXIT_REASON_EXTENSION = "urn:rtm:extension:exit-reason"
EXIT_REASON_SYSTEM = "urn:rtm:exit-reason"
BUSINESS_STATUS_SYSTEM = "urn:rtm:task-business-status"
_TASK_STATUS = {"open": "ready", "done": "completed", "cancelled": "cancelled", "overdue": "ready"}
_TITLES = {
    "baseline_prom": "Baseline PROM",
    "week4_prom": "Week-4 PROM",
    "week4_review": "Week-4 review",
    "in_person_visit": "In-person visit",
    "pause_review": "Pause review",
    "discharge_review": "Discharge review",
}


def care_plan_id(v: EpisodeView) -> str:
    return resource_id(f"{v.org_id}|{v.episode.episode_id}", "CarePlan")


def task_id(v: EpisodeView, task: Task) -> str:
    key = f"{v.org_id}|{v.episode.episode_id}|{task.kind}|{task.due_on.isoformat()}"
    return resource_id(key, "Task")


def canonical(v: EpisodeView) -> str:
    """The PlanDefinition the episode's version is: ``url|version``."""
    return f"{PATHWAY_URL}{v.pathway.id}|{v.pathway.version}"


def care_plan_status(v: EpisodeView) -> str:
    if v.episode.end_date is not None:
        return "completed"
    return "on-hold" if v.episode.paused_on(v.today) else "active"


def _episode_of_care(v: EpisodeView, status: str) -> dict[str, Any]:
    ep = v.episode
    period = {"start": ep.start_date.isoformat()}
    if ep.end_date is not None:
        period["end"] = ep.end_date.isoformat()
    out: dict[str, Any] = {
        "resourceType": "EpisodeOfCare",
        "id": "episode",
        "identifier": [{"system": EPISODE_ID_SYSTEM, "value": ep.episode_id}],
        "status": {"active": "active", "on-hold": "onhold", "completed": "finished"}[status],
        "patient": patient_reference(ep.patient_id),
        "period": period,
    }
    if ep.clinician_id is not None:
        out["careManager"] = {
            "identifier": {"system": CLINICIAN_ID_SYSTEM, "value": ep.clinician_id}
        }
    if v.exit_reason is not None:
        reason = v.exit_reason
        out["extension"] = [
            {
                "url": EXIT_REASON_EXTENSION,
                "valueCodeableConcept": {
                    "coding": [{"system": EXIT_REASON_SYSTEM, "code": reason}],
                    "text": reason.replace("_", " "),
                },
            }
        ]
    return out


def care_plan(v: EpisodeView) -> dict[str, Any]:
    """The CarePlan of an episode on its pathway version, as of the view's date."""
    status = care_plan_status(v)
    eoc = _episode_of_care(v, status)
    out: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": care_plan_id(v),
        "contained": [eoc],
        "identifier": [{"system": EPISODE_ID_SYSTEM, "value": v.episode.episode_id}],
        "instantiatesCanonical": [canonical(v)],
        "status": status,
        "intent": "plan",
        "title": f"{v.pathway.id} v{v.pathway.version}, {v.body_region.replace('_', ' ')}",
        "subject": patient_reference(v.episode.patient_id),
        "period": eoc["period"],
        "supportingInfo": [{"reference": "#episode"}],
    }
    if v.decisions:  # FHIR: an empty array is absent, not []
        out["note"] = [
            {"text": f"{d.on.isoformat()}: {d.decision.replace('_', ' ')} ({d.reason})"}
            for d in v.decisions
        ]
    if v.tasks:
        out["activity"] = [{"reference": {"reference": f"Task/{task_id(v, t)}"}} for t in v.tasks]
    return checked(out)


def task(v: EpisodeView, t: Task) -> dict[str, Any]:
    """The Task of one of the episode's tasks."""
    out: dict[str, Any] = {
        "resourceType": "Task",
        "id": task_id(v, t),
        "basedOn": [{"reference": f"CarePlan/{care_plan_id(v)}"}],
        "status": _TASK_STATUS[t.status],
        "intent": "plan",
        "code": {
            "coding": [{"system": TASK_KIND_SYSTEM, "code": t.kind, "display": _TITLES[t.kind]}]
        },
        "description": _TITLES[t.kind],
        "for": patient_reference(v.episode.patient_id),
        "restriction": {"period": {"end": t.due_on.isoformat()}},
    }
    if t.status == "overdue":
        out["businessStatus"] = {
            "coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": "overdue"}],
            "text": "overdue",
        }
    if t.done_on is not None and t.status == "done":
        out["executionPeriod"] = {"end": t.done_on.isoformat()}
    if v.episode.clinician_id is not None:
        out["owner"] = {
            "identifier": {"system": CLINICIAN_ID_SYSTEM, "value": v.episode.clinician_id}
        }
    return checked(out)


def missing_outcome(missing: list[str]) -> dict[str, Any]:
    """An OperationOutcome naming the episodes left out because their pathway version is
    unknown (a searchset's ``outcome`` entry: nothing is left out silently)."""
    out: dict[str, Any] = {
        "resourceType": "OperationOutcome",
        "id": resource_id("|".join(missing), "OperationOutcome"),
        "issue": [
            {"severity": "warning", "code": "not-found", "diagnostics": message}
            for message in missing
        ],
    }
    return checked(out)


def care_plans(views: Iterable[EpisodeView]) -> list[dict[str, Any]]:
    """Each episode's CarePlan, in the views' order."""
    return [care_plan(v) for v in views]


def tasks(views: Iterable[EpisodeView]) -> list[dict[str, Any]]:
    """Each episode's Tasks, by episode in the views' order, then due date and kind."""
    return [task(v, t) for v in views for t in v.tasks]
