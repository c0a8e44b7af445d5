"""``intake_overdue`` (issue 18 item 3): an intake not contacted by its due time raises an
alert at that time (high; critical for an urgent intake), unrouted for the organisation's
recipient, once per intake; a contact resolves it; a contact on time, or one that came
before the intake, keeps it silent. The due time is the intake engine's (the version in
force, under ``AlertConfig.intake_rules``): a short configured service level moves it."""

from __future__ import annotations

import datetime as dt
import json

from alerts.models import DEFAULT_CONFIG, AlertConfig
from alerts.rules import on_tick
from alerts.state import state_from_dict, state_to_dict
from intake.engine import assess
from intake.rules import DEFAULT_RULES
from schemas.events import IntakeSubmitted
from tests.unit.test_alert_rules import feed, mk, start
from tests.unit.test_intake_red_flag import intake

SECOND = dt.timedelta(seconds=1)


def contact(at: str, eid: str, intake_id: str = "in-1") -> object:
    return mk("intake.contacted", at, eid, intake_id=intake_id, channel="phone", clinician_id="c-1")


def due(event: object, config: AlertConfig = DEFAULT_CONFIG) -> dt.datetime:
    assert isinstance(event, IntakeSubmitted)
    return assess(event, config.intake_rules).due_at


def test_an_urgent_intake_not_contacted_raises_a_critical_alert_at_its_due_time() -> None:
    screened = intake("2026-11-02T10:00:00-06:00", "i-1", ("saddle_anesthesia",))
    s, _ = feed([screened])
    at = due(screened)
    s, before = on_tick(s, at - SECOND)
    assert before == []
    s, changes = on_tick(s, at)
    [ch] = changes
    a = ch.alert
    assert (ch.change, a.kind, a.severity, a.status) == (
        "fired",
        "intake_overdue",
        "critical",
        "open",
    )
    assert a.fired_at == at and a.unrouted and a.intake_id == "in-1" and a.event_ids == ("i-1",)
    s, again = on_tick(s, at + dt.timedelta(hours=5))
    assert again == []  # once per intake
    # stored and read back, the timer still knows it looked
    s2 = state_from_dict(json.loads(json.dumps(state_to_dict(s))))
    assert s2 == s and on_tick(s2, at + dt.timedelta(days=2))[1] == []


def test_a_routine_intake_is_high_and_a_contact_resolves_it() -> None:
    screened = intake("2026-11-02T10:00:00-06:00", "i-1")
    s, _ = feed([screened])
    s, [fired] = on_tick(s, due(screened) + SECOND)
    assert fired.alert.severity == "high"
    s, [resolved] = feed([contact("2026-11-06T09:00:00-06:00", "c-1")], s)
    assert resolved.change == "resolved" and resolved.alert.id == fired.alert.id
    assert resolved.alert.resolved_by_event_id == "c-1"


def test_a_contact_on_time_or_before_the_intake_keeps_it_silent() -> None:
    on_time = intake("2026-11-02T10:00:00-06:00", "i-1")
    s, _ = feed([on_time, contact("2026-11-02T10:30:00-06:00", "c-1")])
    assert on_tick(s, due(on_time) + dt.timedelta(days=3))[1] == []
    # the scheduler's call came first, the intake after it
    other = intake("2026-11-02T10:00:00-06:00", "i-2", intake_id="in-2")
    s, _ = feed([contact("2026-11-02T09:30:00-06:00", "c-2", "in-2"), other])
    assert on_tick(s, due(other) + dt.timedelta(days=3))[1] == []


def test_an_episode_naming_its_intake_is_a_contact() -> None:
    screened = intake("2026-11-02T10:00:00-06:00", "i-1")
    episode = start("2026-11-02T11:00:00-06:00")
    assert episode.type == "episode.started"
    s, _ = feed([screened, episode.model_copy(update={"intake_id": "in-1"})])
    changes = on_tick(s, due(screened) + SECOND)[1]
    assert [c.alert.kind for c in changes if c.alert.kind == "intake_overdue"] == []


def test_the_version_in_force_sets_the_due_time_whatever_the_arrival_order() -> None:
    first = intake("2026-11-02T10:00:00-06:00", "i-1", ("saddle_anesthesia",))  # urgent
    amended = intake("2026-11-02T10:10:00-06:00", "i-2")  # routine: later due
    for order in ([first, amended], [amended, first]):
        s, _ = feed(order)
        assert on_tick(s, due(first) + SECOND)[1] == []  # not yet due under the amendment
        [fired] = on_tick(s, due(amended))[1]
        assert fired.alert.severity == "high" and fired.alert.event_ids == ("i-2",)


def test_a_configured_service_level_moves_the_due_time() -> None:
    """The worker's rule set (RTM_INTAKE_RULES_FILE) sets the clock: with urgent at 36 s
    instead of an hour, the alert fires 36 s after the intake."""
    rules = DEFAULT_RULES.model_copy(
        update={
            "version": "test-fast",
            "service_levels": {
                **DEFAULT_RULES.service_levels,
                "urgent": DEFAULT_RULES.service_levels["urgent"].model_copy(update={"hours": 0.01}),
            },
        }
    )
    config = AlertConfig(intake_rules=rules)
    screened = intake("2026-11-02T10:00:00-06:00", "i-1", ("saddle_anesthesia",))
    s, _ = feed([screened], config=config)
    at = due(screened, config)
    assert at - screened.occurred_at == dt.timedelta(seconds=36)
    assert on_tick(s, at - SECOND, config)[1] == []
    [fired] = on_tick(s, at, config)[1]
    assert fired.alert.fired_at == at and fired.alert.severity == "critical"
