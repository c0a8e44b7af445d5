"""The care pathway's alerts (docs/alert-rules.md: ``task_overdue``, ``step_up``), pure:
from a patient's episode views as of an instant and its rule state, the alert changes. Each
fires once per (episode, task or decision) — ``fired`` holds the ids fired before, the
stream's from its stored alerts — and resolves when the task is done or cancelled, or its
episode ended; an alert that late events take back resolves at its firing instant.

Run by the worker's refresh (``streams.services.refresh``) as of the patient's rules clock
and by ``rtm alerts evaluate`` after the rules' tick (``pathway_alerts``), so the two agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from alerts.models import PATHWAY_KINDS, Alert, AlertChange, AlertKind
from alerts.rules import local_midnight
from alerts.state import PatientState, new_state
from pathways.engine import EpisodeView, Task
from pathways.model import Pathway, builtin
from pathways.offline import collect
from schemas.events import Event, PatientKey

_DAY = dt.timedelta(days=1)


def was_overdue(task: Task, end: dt.date | None) -> bool:
    """The task was overdue at some day boundary before T: its due date passed while it was
    not done, and the episode had not ended by its due date (that cancels it)."""
    if task.status == "overdue":
        return True
    late = task.done_on is None or task.done_on > task.due_on
    return task.status == "done" and late and (end is None or end > task.due_on)


def _alert(
    s: PatientState, v: EpisodeView, kind: AlertKind, trigger: str, at: dt.datetime, detail: str
) -> Alert:
    return Alert(
        id=s.alert_id(kind, trigger),
        patient_id=s.patient_id,
        org_id=s.org_id,
        episode_id=v.episode.episode_id,
        clinician_id=v.episode.clinician_id,
        kind=kind,
        severity="medium" if kind == "task_overdue" else "high",
        details=(detail,),
        fired_at=at,
    )


def _raise(
    s: PatientState,
    fired: set[str],
    alert: Alert,
    cleared: dt.datetime | None,
) -> list[AlertChange]:
    """Fire ``alert`` once (its id never fires twice), and resolve it at ``cleared``."""
    changes: list[AlertChange] = []
    if alert.id not in fired and alert.id not in s.alerts:
        fired.add(alert.id)
        s.alerts[alert.id] = alert
        changes.append(AlertChange(change="fired", alert=alert))
    current = s.alerts.get(alert.id)
    if cleared is not None and current is not None and current.status != "resolved":
        resolved = current.model_copy(
            update={"status": "resolved", "resolved_at": max(cleared, current.fired_at)}
        )
        s.alerts[alert.id] = resolved
        changes.append(AlertChange(change="resolved", alert=resolved))
    return changes


def _cleared(task: Task | None, v: EpisodeView) -> dt.datetime | None:
    """When a task stopped needing anyone: the local midnight of its done date, or of the
    episode's end when it was cancelled or the episode ended with it still overdue (nobody
    can do an ended episode's task any more: its alert leaves the worklist, and the task
    stays overdue in the episode's record, its FHIR Task and the outcomes); None while it
    is open, or overdue in a running episode."""
    if task is None or task.status == "open":
        return None
    if task.status == "overdue" and v.episode.end_date is None:
        return None
    day = task.done_on if task.done_on is not None else v.episode.end_date
    return None if day is None else local_midnight(day, v.episode.timezone)


def pathway_alert_changes(
    s: PatientState, views: list[EpisodeView], fired: dict[str, set[str]]
) -> list[AlertChange]:
    """``task_overdue`` (medium) for each task that became overdue, fired at the local
    midnight after its due date, and ``step_up`` (high) for the step-up decision, fired at
    the local midnight of its date, with the reason; each once per (episode, task or
    decision), routed to the episode's clinician; resolved when the task is done or
    cancelled, or the episode ended (the step-up's: its in-person visit's). ``s`` (a copy
    the caller owns) gets the alerts; ``fired`` the ids."""
    changes: list[AlertChange] = []
    for v in views:
        ep = v.episode
        ids = fired.setdefault(ep.episode_id, set())
        wanted: set[str] = set()
        for t in v.tasks:
            if was_overdue(t, ep.end_date):
                at = local_midnight(t.due_on + _DAY, ep.timezone)
                trigger = f"{ep.episode_id}:{t.kind}:{t.due_on.isoformat()}"
                alert = _alert(s, v, "task_overdue", trigger, at, t.kind)
                wanted.add(alert.id)
                changes += _raise(s, ids, alert, _cleared(t, v))
        step = next((d for d in v.decisions if d.decision == "step_up"), None)
        if step is not None:
            visit = next((t for t in v.tasks if t.kind == "in_person_visit"), None)
            at = local_midnight(step.on, ep.timezone)
            alert = _alert(s, v, "step_up", f"{ep.episode_id}:step_up", at, step.reason)
            wanted.add(alert.id)
            changes += _raise(s, ids, alert, _cleared(visit, v))
        changes += _withdraw(s, ep.episode_id, wanted)
    return changes


def _withdraw(s: PatientState, episode_id: str, wanted: set[str]) -> list[AlertChange]:
    """Resolve the episode's unresolved pathway alerts the view no longer raises (events
    that arrived late show the task was done in time, or take the step-up back), at their
    firing instant."""
    changes: list[AlertChange] = []
    for aid, a in sorted(s.alerts.items()):
        if a.kind not in PATHWAY_KINDS or a.episode_id != episode_id or a.status == "resolved":
            continue
        if aid in wanted:
            continue
        resolved = a.model_copy(update={"status": "resolved", "resolved_at": a.fired_at})
        s.alerts[aid] = resolved
        changes.append(AlertChange(change="resolved", alert=resolved))
    return changes


def pathway_alerts(
    events: Iterable[Event],
    states: dict[PatientKey, PatientState],
    as_of: dt.datetime,
    versions: Mapping[str, Pathway] | None = None,
    licensed: frozenset[str] = frozenset(),
) -> list[AlertChange]:
    """``rtm alerts evaluate``'s care-pathway alerts as of ``as_of``, added to ``states``
    (after the rules' tick): each patient's episodes as of then, nothing fired before."""
    known = builtin() if versions is None else versions
    changes: list[AlertChange] = []
    for key, kept in collect(e for e in events if e.occurred_at < as_of).items():
        views, _ = kept.as_of(as_of, known, licensed)
        s = (states.get(key) or new_state(key[1], key[0])).copy_for_update()
        got = pathway_alert_changes(s, views, {})
        if got:
            states[key] = s
            changes += got
    return changes
