"""The care pathway's alerts (docs/alert-rules.md: ``task_overdue``, ``step_up``) as
``rtm alerts evaluate`` and the worker's refresh raise them (``pathway_alerts``): fired at
the local midnight after the due date, resolved when the task is done, or when the episode
ends with it still overdue (nobody can do an ended episode's task; the task itself stays
overdue in the episode's record)."""

from __future__ import annotations

import datetime as dt

from alerts.models import AlertChange
from alerts.rules import local_midnight
from pathways.alerting import pathway_alerts
from pathways.model import builtin
from pathways.offline import views
from schemas.events import Event
from tests.unit.pathway_events import DAY0, TZ, as_of, ended, pain, psfs, start


def midnight(day: int) -> dt.datetime:
    return local_midnight(DAY0 + dt.timedelta(days=day), TZ)


def changes(events: list[Event], day: int) -> dict[tuple[str, str], list[AlertChange]]:
    """The changes as of local midnight of ``day``, by (kind, task or reason)."""
    out: dict[tuple[str, str], list[AlertChange]] = {}
    for ch in pathway_alerts(events, {}, as_of(day)):
        out.setdefault((ch.alert.kind, ch.alert.details[0]), []).append(ch)
    return out


def test_a_missed_baseline_stays_open_while_the_episode_runs() -> None:
    events = [start(), pain(2, "p2", 4)]  # no baseline form: due day 7
    got = changes(events, 20)
    (fired,) = got[("task_overdue", "baseline_prom")]
    assert fired.change == "fired" and fired.alert.status == "open"
    assert fired.alert.fired_at == midnight(8)  # the midnight after its due date
    assert fired.alert.clinician_id == "c-1" and fired.alert.severity == "medium"


def test_an_ended_episodes_overdue_tasks_resolve_at_its_end() -> None:
    events = [start(), pain(2, "p2", 4), ended(20, "discharged")]
    got = changes(events, 30)
    fired, resolved = got[("task_overdue", "baseline_prom")]
    assert (fired.change, resolved.change) == ("fired", "resolved")
    assert resolved.alert.status == "resolved" and resolved.alert.resolved_at == midnight(20)
    # the week-4 tasks were due after the end: cancelled, never overdue, no alert
    assert ("task_overdue", "week4_prom") not in got
    # the task itself is still overdue in the episode's record
    (view,) = views(events, as_of(30), builtin())[0]
    assert {t.kind: t.status for t in view.tasks}["baseline_prom"] == "overdue"


def test_a_step_up_without_its_visit_resolves_when_the_episode_ends() -> None:
    """Baseline PSFS 3 (day 1), pain 8 (day 22), week-4 PSFS 3.3 (day 26): the step-up on
    day 26; its in-person visit (due day 29) never happens."""
    events = [start(), psfs(1, "f1", 3, 3, 3), pain(22, "p22", 8), psfs(26, "f26", 3, 3, 4)]
    running = changes(events, 35)
    (step,) = running[("step_up", "no_mcid_pain_7")]
    assert step.alert.status == "open" and step.alert.fired_at == midnight(26)
    assert running[("task_overdue", "in_person_visit")][0].alert.status == "open"
    after = changes([*events, ended(40, "dropped_out")], 45)
    assert [c.change for c in after[("step_up", "no_mcid_pain_7")]] == ["fired", "resolved"]
    assert after[("step_up", "no_mcid_pain_7")][1].alert.resolved_at == midnight(40)
    assert after[("task_overdue", "in_person_visit")][-1].alert.status == "resolved"
