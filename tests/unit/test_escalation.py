"""The escalation ladder of a critical alert nobody acknowledges (issue 17, item 2): after
an offset from its firing to the rest of the patient's care team, after a second one to the
organisation-wide recipient; each step once; an acknowledgement stops it. The pure rule at
its boundaries, then the worker's step in process against the offline evaluator."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from alerts.evaluate import fold_changes
from alerts.models import Alert, AlertChange, AlertConfig
from alerts.rules import acknowledge, on_event, on_tick, snooze
from alerts.state import PatientState, new_state
from rtm.cli import main
from schemas.events import DEFAULT_ORG, EVENT_ADAPTER, parse_event_json
from streams.kafka.control import Ack, Record, patient_partition
from tests.conftest import EventFactory
from tests.unit.test_step_in_process import PARTITIONS, Step

CFG = AlertConfig(
    escalate_care_team_after=dt.timedelta(minutes=15),
    escalate_org_after=dt.timedelta(minutes=60),
)
REPORTED = "2026-11-03T10:00:00-06:00"
FIRED = dt.datetime(2026, 11, 3, 16, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)


def _fired(f: EventFactory, pain: int = 9) -> tuple[PatientState, Alert]:
    """A patient whose pain report of ``pain`` fired a critical pain_high at FIRED."""
    s = new_state("p-1", DEFAULT_ORG)
    for raw in (f.episode_started("p-1"), f.pain("p-1", pain, REPORTED)):
        s, _ = on_event(s, EVENT_ADAPTER.validate_python(raw), CFG)
    (alert,) = s.alerts.values()
    assert (alert.severity, alert.fired_at) == ("critical", FIRED)
    return s, alert


def _steps(changes: list[AlertChange]) -> list[tuple[dt.datetime, ...]]:
    return [c.alert.escalations for c in changes if c.change == "escalated"]


def test_not_before_the_offset_then_once_per_step(factory: EventFactory) -> None:
    s, alert = _fired(factory)
    s, ch = on_tick(s, FIRED + 15 * MIN - dt.timedelta(seconds=1), CFG)
    assert _steps(ch) == []
    s, ch = on_tick(s, FIRED + 15 * MIN, CFG)
    assert _steps(ch) == [(FIRED + 15 * MIN,)]
    assert s.alerts[alert.id].escalation_level == 1
    s, ch = on_tick(s, FIRED + 15 * MIN, CFG)  # the same tick again
    assert _steps(ch) == []
    s, ch = on_tick(s, FIRED + 59 * MIN, CFG)
    assert _steps(ch) == []
    s, ch = on_tick(s, FIRED + 60 * MIN, CFG)
    assert _steps(ch) == [(FIRED + 15 * MIN, FIRED + 60 * MIN)]
    s, ch = on_tick(s, FIRED + 600 * MIN, CFG)  # the ladder has two steps
    assert _steps(ch) == []
    assert s.alerts[alert.id].status == "open"  # escalating is not acknowledging


def test_a_late_tick_takes_both_steps_each_at_its_own_instant(factory: EventFactory) -> None:
    s, _ = _fired(factory)
    s, ch = on_tick(s, FIRED + 90 * MIN, CFG)
    assert _steps(ch) == [(FIRED + 15 * MIN,), (FIRED + 15 * MIN, FIRED + 60 * MIN)]


def test_an_acknowledgement_stops_the_ladder(factory: EventFactory) -> None:
    s, alert = _fired(factory)
    s, _ = acknowledge(s, alert.id, FIRED + 14 * MIN, "dr-who", config=CFG)
    s, ch = on_tick(s, FIRED + 90 * MIN, CFG)
    assert _steps(ch) == []

    s, alert = _fired(EventFactory())
    s, ch = on_tick(s, FIRED + 20 * MIN, CFG)
    assert _steps(ch) == [(FIRED + 15 * MIN,)]
    s, _ = acknowledge(s, alert.id, FIRED + 30 * MIN, "dr-who", config=CFG)
    s, ch = on_tick(s, FIRED + 90 * MIN, CFG)
    assert _steps(ch) == []  # step 2 never comes


def test_a_snooze_does_not_stop_the_ladder(factory: EventFactory) -> None:
    s, alert = _fired(factory)
    s, _ = snooze(s, alert.id, FIRED + MIN, "dr-who", FIRED + 600 * MIN, "calling back")
    s, ch = on_tick(s, FIRED + 15 * MIN, CFG)
    assert _steps(ch) == [(FIRED + 15 * MIN,)]


def test_only_critical_alerts_climb(factory: EventFactory) -> None:
    s = new_state("p-1", DEFAULT_ORG)
    s, _ = on_event(s, EVENT_ADAPTER.validate_python(factory.episode_started("p-1")), CFG)
    # days without data: inactivity (medium) fires; it never escalates
    s, ch = on_tick(s, dt.datetime(2026, 11, 20, tzinfo=dt.UTC), CFG)
    assert ch and all(c.alert.severity != "critical" for c in ch)
    s, ch = on_tick(s, dt.datetime(2026, 11, 21, tzinfo=dt.UTC), CFG)
    assert _steps(ch) == []


def test_the_offsets_are_configured(factory: EventFactory) -> None:
    short = AlertConfig(
        escalate_care_team_after=dt.timedelta(seconds=3),
        escalate_org_after=dt.timedelta(seconds=6),
    )
    s, _ = _fired(factory)
    s, ch = on_tick(s, FIRED + dt.timedelta(seconds=6), short)
    sec = dt.timedelta(seconds=1)
    assert _steps(ch) == [(FIRED + 3 * sec,), (FIRED + 3 * sec, FIRED + 6 * sec)]


async def test_the_worker_step_and_the_offline_evaluator_agree(factory: EventFactory) -> None:
    """Through ``Ingest.record_batch`` (decode, rules, store, outbox, publish) with ticks
    before, between and after the steps, and an acknowledgement that stops a second
    patient's ladder: the stored alerts are the offline evaluator's (events in order, one
    tick at as-of, the acknowledgement applied where the worker applied it)."""
    step = Step()
    step.ingest.config = CFG
    p1, p2 = factory.patient(1), factory.patient(2)
    events: list[dict[str, Any]] = []
    for p in (p1, p2):
        events += [factory.episode_started(p), factory.pain(p, 9, REPORTED)]
    await step.events(*events)
    for minutes in (10, 16):
        await step.tick(FIRED + minutes * MIN)
    (a2,) = [a for a in step.store.alerts.values() if a.patient_id == p2]
    ack = Ack(a2.id, DEFAULT_ORG, p2, FIRED + 20 * MIN, "dr-who").encode()
    await step.ingest.record_batch([Record(ack, patient_partition((DEFAULT_ORG, p2), PARTITIONS))])
    await step.tick(FIRED + 61 * MIN)
    stored = {a.patient_id: a for a in step.store.alerts.values()}
    assert stored[p1].escalations == (FIRED + 15 * MIN, FIRED + 60 * MIN)
    assert stored[p2].escalations == (FIRED + 15 * MIN,)  # stopped by the acknowledgement
    published = [c["change"] for c in step.topics.alerts if c["alert"]["patient_id"] == p1]
    assert published.count("escalated") == 2

    # offline: the same events, the acknowledgement, one tick at as-of
    states, _ = fold_changes(iter([parse_event_json(orjson.dumps(e)) for e in events]), CFG)
    key2 = (DEFAULT_ORG, p2)
    states[key2], _ = on_tick(states[key2], FIRED + 16 * MIN, CFG)
    states[key2], _ = acknowledge(states[key2], a2.id, FIRED + 20 * MIN, "dr-who", config=CFG)
    offline: dict[str, Alert] = {}
    for key in states:
        states[key], ch = on_tick(states[key], FIRED + 61 * MIN, CFG)
        offline.update({a.id: a for a in states[key].alerts.values()})
        offline.update({c.alert.id: c.alert for c in ch})
    assert {a.id: a.escalations for a in offline.values()} == {
        a.id: a.escalations for a in step.store.alerts.values()
    }


def test_rtm_alerts_evaluate_uses_the_workers_offsets(
    factory: EventFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offline evaluator reads RTM_ESCALATE_*_AFTER_S as the worker does."""
    events = tmp_path / "events.jsonl"
    raw = [factory.episode_started("p-1"), factory.pain("p-1", 9, REPORTED)]
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in raw))
    monkeypatch.setenv("RTM_ESCALATE_CARE_TEAM_AFTER_S", "3")
    monkeypatch.setenv("RTM_ESCALATE_ORG_AFTER_S", "6")
    as_of = (FIRED + dt.timedelta(seconds=5)).isoformat()
    result = CliRunner().invoke(
        main, ["alerts", "evaluate", "--events", str(events), "--as-of", as_of]
    )
    assert result.exit_code == 0, result.output
    (alert,) = [json.loads(line) for line in result.output.splitlines()]
    steps = [dt.datetime.fromisoformat(x) for x in alert["escalations"]]
    assert steps == [FIRED + dt.timedelta(seconds=3)]
