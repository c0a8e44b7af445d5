"""intake-rules.md, Safety: an ``intake.submitted`` with any red flag fires a critical
``red_flag`` alert at once, unrouted (no episode can exist yet; no grace period), for the
clinic-wide recipient, triggered by the intake event and naming its intake; once per
event_id (a later-superseded version's too), never twice on a replay. The offline
evaluator and the worker's step give the same alert."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from alerts.evaluate import run_alerts_evaluate
from alerts.models import CLINIC_WIDE
from alerts.state import state_from_dict, state_to_dict
from schemas.events import EVENT_ADAPTER, Event
from tests.unit.test_alert_rules import P, feed, mk, start
from tests.unit.test_step_in_process import NOW, Step


def intake(at: str, eid: str, red_flags: tuple[str, ...] = (), **over: Any) -> Event:
    fields: dict[str, Any] = {
        "intake_id": "in-1",
        "timezone": "America/Chicago",
        "body_region": "neck",
        "red_flags": list(red_flags),
        "answers": {"nprs": 6},
    }
    fields.update(over)
    return mk("intake.submitted", at, eid, **fields)


def test_a_red_flag_at_intake_fires_a_critical_unrouted_alert_at_once() -> None:
    s, changes = feed(
        [intake("2026-11-02T10:00:00-06:00", "i-1", ("saddle_anesthesia", "cancer_history"))]
    )
    [ch] = changes
    a = ch.alert
    assert (ch.change, a.kind, a.severity, a.status) == ("fired", "red_flag", "critical", "open")
    assert a.unrouted and a.clinician_id == CLINIC_WIDE and a.episode_id == ""
    assert a.details == ("saddle_anesthesia", "cancer_history")
    assert a.event_ids == ("i-1",) and a.intake_id == "in-1"
    assert a.fired_at.isoformat() == "2026-11-02T10:00:00-06:00"
    assert not s.pending  # not parked for the grace period as a symptom report would be
    # the state round-trips with the alert's intake
    assert state_from_dict(json.loads(json.dumps(state_to_dict(s)))).alerts == s.alerts


def test_an_intake_without_red_flags_fires_nothing() -> None:
    _, changes = feed([intake("2026-11-02T10:00:00-06:00", "i-1")])
    assert changes == []


def test_each_version_with_a_flag_fires_once_and_a_replay_fires_nothing() -> None:
    first = intake("2026-11-02T10:00:00-06:00", "i-1", ("major_trauma",))
    amended = intake("2026-11-02T11:00:00-06:00", "i-2", ("major_trauma",))
    s, changes = feed([first, amended])
    assert [c.alert.event_ids for c in changes] == [("i-1",), ("i-2",)]
    _, again = feed([first, amended], s)
    assert again == []


def test_an_intake_red_flag_fires_beside_an_open_episode_too() -> None:
    """A patient in an episode who is screened again: the intake's flag still fires at once
    (the screening names no episode), and the episode's own red flags are unaffected."""
    _, changes = feed(
        [
            start(),
            intake("2026-11-04T10:00:00-06:00", "i-1", ("fever",)),
        ]
    )
    assert [(c.alert.kind, c.alert.unrouted) for c in changes] == [("red_flag", True)]


def _jsonl(tmp_path: Path, events: list[dict[str, Any]]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


async def test_the_worker_step_and_the_offline_evaluator_agree(tmp_path: Path) -> None:
    events = [
        json.loads(EVENT_ADAPTER.dump_json(e, exclude_none=True))
        for e in (
            intake("2026-11-02T10:00:00-06:00", "i-1", ("bladder_dysfunction",)),
            intake("2026-11-02T10:05:00-06:00", "i-2"),
        )
    ]
    step = Step()
    await step.events(*events)
    await step.tick(NOW)  # the offline evaluator's as-of
    streamed = sorted(
        (a.kind, a.event_ids, a.details, a.intake_id, a.clinician_id)
        for a in step.store.alerts.values()
    )
    out = io.StringIO()
    assert run_alerts_evaluate(_jsonl(tmp_path, events), NOW, out) == 0
    offline = sorted(
        (
            a["kind"],
            tuple(a["event_ids"]),
            tuple(a["details"]),
            a.get("intake_id"),
            a["clinician_id"],
        )
        for a in map(json.loads, out.getvalue().splitlines())
    )
    # the amendment (no flag) is the version in force: not contacted, it is overdue too
    assert streamed == offline
    assert streamed == [
        ("intake_overdue", ("i-2",), (), "in-1", CLINIC_WIDE),
        ("red_flag", ("i-1",), ("bladder_dysfunction",), "in-1", CLINIC_WIDE),
    ]
    published = {a["alert"]["kind"]: a["alert"] for a in step.topics.alerts}
    flag = published["red_flag"]  # rtm.alerts carries the intake and the patient
    assert (flag["intake_id"], flag["patient_id"]) == ("in-1", P)
