"""Acting on an alert (issue 17, item 2): a disposition on every acknowledgement and a
bounded snooze, carried in-band on rtm.events (streams/kafka/control.py) and applied once
by the rules (alerts/batch.py), so the worker's state, the stored alert, rtm.alerts and the
webhooks carry them; a snooze's end is read against a clock, never written by the rules."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from alerts.batch import AckItem, EventItem, SnoozeItem, apply_batch
from alerts.models import DISPOSITIONS, Alert
from alerts.rollup import patient_rollup
from schemas.events import EVENT_ADAPTER, Event
from streams.kafka.control import Ack, Snooze, decode
from streams.services.ingest import decode as decode_records
from streams.settings import Settings, parse_duration
from tests.conftest import EventFactory

AT = dt.datetime(2026, 10, 22, 15, tzinfo=dt.UTC)
ORG = "org-a"


def _events(raw: list[dict[str, Any]]) -> list[Event]:
    return [EVENT_ADAPTER.validate_python({**r, "org_id": ORG}) for r in raw]


def _fired(red_flag: bool = False) -> tuple[Any, Alert]:
    """A patient's state with one open alert: pain_high, or a red flag."""
    f = EventFactory()
    raw = [
        f.episode_started("p-1", at="2026-10-01T09:00:00-05:00"),
        *f.daily_exercises("p-1", dt.date(2026, 10, 1), 17),
        (
            f.symptom("p-1", "2026-10-21T10:00:00-05:00", red_flags=["saddle_anesthesia"])
            if red_flag
            else f.pain("p-1", 9, "2026-10-21T10:00:00-05:00")
        ),
    ]
    result = apply_batch({}, [EventItem(e) for e in _events(raw)])
    (alert,) = [c.alert for c in result.changes if c.change == "fired"]
    return result.states, alert


def test_the_disposition_list_is_the_issues() -> None:
    assert DISPOSITIONS == (
        "contacted_patient",
        "left_message",
        "referred_physician",
        "sent_to_ed",
        "program_changed",
        "no_action_needed",
    )


def test_an_ack_record_carries_the_disposition_and_note_and_decodes_to_itself() -> None:
    ack = Ack("a-1", ORG, "p-1", AT, "dr-who", "sent_to_ed", "called, sent to ED")
    assert decode(ack.encode()) == ack
    # a record with a value outside the list (a producer writing by hand) carries none
    odd = ack.encode().replace(b"sent_to_ed", b"sent_home")
    decoded = decode(odd)
    assert isinstance(decoded, Ack) and decoded.disposition is None


def test_a_snooze_record_decodes_to_what_was_encoded() -> None:
    s = Snooze("a-1", ORG, "p-1", AT, "dr-who", AT + dt.timedelta(hours=4), "waiting for a call")
    assert decode(s.encode()) == s
    assert s.patient_key == (ORG, "p-1")


def test_the_rules_carry_the_disposition_into_the_snapshot_once() -> None:
    states, alert = _fired()
    item = AckItem("p-1", alert.id, AT, "dr-who", org_id=ORG, disposition="left_message")
    result = apply_batch(states, [item])
    (change,) = result.changes
    assert change.change == "acknowledged"
    assert (change.alert.disposition, change.alert.acknowledged_by) == ("left_message", "dr-who")
    assert result.states[(ORG, "p-1")].alerts[alert.id].disposition == "left_message"
    # the first acknowledgement counts: a second one with another disposition changes nothing
    again = AckItem("p-1", alert.id, AT, "dr-no", org_id=ORG, disposition="sent_to_ed")
    assert apply_batch(result.states, [again]).changes == []


def test_the_worker_decodes_the_ack_with_its_disposition_and_note() -> None:
    from streams.kafka.control import Record

    ack = Ack("a-1", ORG, "p-1", AT, "dr-who", "referred_physician", "to Dr. K")
    (item,) = decode_records([Record(ack.encode(), 0)], 600).items
    assert isinstance(item, AckItem)
    assert (item.disposition, item.note, item.org_id) == ("referred_physician", "to Dr. K", ORG)
    s = Snooze("a-1", ORG, "p-1", AT, "dr-who", AT + dt.timedelta(hours=4), "why")
    (snooze,) = decode_records([Record(s.encode(), 0)], 600).items
    assert snooze == SnoozeItem("p-1", "a-1", AT, "dr-who", s.until, "why", ORG)


def test_a_snooze_is_applied_once_and_acknowledging_a_snoozed_alert_works() -> None:
    states, alert = _fired()
    until = AT + dt.timedelta(hours=4)
    item = SnoozeItem("p-1", alert.id, AT, "dr-who", until, "waiting for the callback", ORG)
    result = apply_batch(states, [item])
    (change,) = result.changes
    assert change.change == "snoozed" and change.alert.status == "open"
    assert (change.alert.snoozed_until, change.alert.snoozed_by) == (until, "dr-who")
    assert change.alert.snooze_reason == "waiting for the callback"
    assert apply_batch(result.states, [item]).changes == []  # a replay: taken once
    # the rules read no clock: the snooze is stored as set; a reader decides it is over
    assert change.alert.is_snoozed(AT + dt.timedelta(hours=3))
    assert not change.alert.is_snoozed(until)
    # the rollup counts the snoozed alert, so the worklist places the patient as of now
    assert patient_rollup(result.states[(ORG, "p-1")], []).open_snoozed == 1
    acked = apply_batch(
        result.states,
        [AckItem("p-1", alert.id, AT, "dr-who", org_id=ORG, disposition="contacted_patient")],
    )
    assert [c.alert.status for c in acked.changes] == ["acknowledged"]
    assert patient_rollup(acked.states[(ORG, "p-1")], []).open_snoozed == 0


def test_a_red_flag_cannot_be_snoozed() -> None:
    states, alert = _fired(red_flag=True)
    until = AT + dt.timedelta(hours=4)
    assert alert.snooze_refusal(AT, until) == "a red flag alert cannot be snoozed"
    with pytest.raises(ValueError, match="red flag"):
        alert.snoozed(AT, "dr-who", until, "x")
    item = SnoozeItem("p-1", alert.id, AT, "dr-who", until, "x", ORG)  # written by hand
    assert apply_batch(states, [item]).changes == []


def test_a_snooze_is_bounded_and_only_for_an_open_alert() -> None:
    _, alert = _fired()
    assert alert.snooze_refusal(AT, AT + dt.timedelta(days=7)) is None
    assert alert.snooze_refusal(AT, AT + dt.timedelta(days=7, seconds=1)) == (
        "a snooze lasts at most 7 days"
    )
    assert alert.snooze_refusal(AT, AT) == "a snooze must end after it starts"
    acked = alert.acknowledged(AT, "dr-who", "no_action_needed")
    assert "only an open alert" in (acked.snooze_refusal(AT, AT + dt.timedelta(hours=4)) or "")


def test_the_snooze_durations_are_a_bounded_setting() -> None:
    assert list(Settings().alerting.snooze_choices) == ["4h", "24h", "3d"]
    assert Settings(snooze_durations="5s, 4h").alerting.snooze_choices == {
        "5s": dt.timedelta(seconds=5),
        "4h": dt.timedelta(hours=4),
    }
    assert parse_duration("3d") == dt.timedelta(days=3)
    for bad in ("8d", "4h,169h", "x", "0h", ""):
        with pytest.raises(ValueError):
            Settings(snooze_durations=bad)
