"""The intake engine (issue 18 parts 2 and 4): amendments and arrival order, repeated
event ids, first contacts (also before their intake), breached as of a time, any arrival
order giving the same result (a property), and ``rtm intake evaluate`` on a fixture."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intake.engine import (
    IntakeState,
    apply,
    assess,
    fold,
    intake_key,
    new_state,
    result,
    results,
)
from intake.evaluate import evaluate, render
from intake.rules import DEFAULT_RULES, IntakeRules
from rtm.cli import main
from schemas.events import Event, validate_event

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "intake"
NY = "America/New_York"
AS_OF = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)


def ev(obj: dict[str, Any]) -> Event:
    out = validate_event(obj)
    assert not isinstance(out, list), out
    return out


def submitted(
    event_id: str,
    at: str,
    *,
    patient: str = "p-1",
    intake_id: str = "in-1",
    nprs: int = 3,
    flags: tuple[str, ...] = (),
    region: str = "knee",
    tz: str = NY,
) -> Event:
    return ev(
        {
            "event_id": event_id,
            "schema_version": 1,
            "type": "intake.submitted",
            "patient_id": patient,
            "occurred_at": at,
            "intake_id": intake_id,
            "timezone": tz,
            "body_region": region,
            "red_flags": list(flags),
            "answers": {"nprs": nprs},
        }
    )


def contacted(
    event_id: str, at: str, *, patient: str = "p-1", intake_id: str = "in-1", channel: str = "phone"
) -> Event:
    return ev(
        {
            "event_id": event_id,
            "schema_version": 1,
            "type": "intake.contacted",
            "patient_id": patient,
            "occurred_at": at,
            "intake_id": intake_id,
            "channel": channel,
        }
    )


def episode(
    event_id: str, at: str, *, patient: str = "p-1", intake_id: str | None = "in-1"
) -> Event:
    obj: dict[str, Any] = {
        "event_id": event_id,
        "schema_version": 1,
        "type": "episode.started",
        "patient_id": patient,
        "occurred_at": at,
        "episode_id": f"ep-{event_id}",
        "clinician_id": "c-01",
        "clinician_role": "PT",
        "timezone": NY,
        "program": {"sessions_per_week": 5, "exercise_ids": ["bridge"]},
        "billing": {
            "rendering_npi": "1234567893",
            "billing_npi": "1234567893",
            "payer": "medicare",
            "member_id": "1EG4TE5MK73",
            "diagnosis_codes": ["M54.50"],
            "place_of_service": "11",
        },
    }
    if intake_id is not None:
        obj["intake_id"] = intake_id
    return ev(obj)


def only(
    events: list[Event], as_of: dt.datetime = AS_OF, rules: IntakeRules = DEFAULT_RULES
) -> Any:
    (r,) = results(fold(events).values(), as_of, rules)
    return r


# --- amendments and arrival order ---------------------------------------------------------------


def test_a_later_version_amends_and_an_earlier_one_changes_nothing() -> None:
    v1 = submitted("e-1", "2026-11-09T10:00:00-05:00", nprs=9)  # in person
    v2 = submitted("e-2", "2026-11-09T11:00:00-05:00", nprs=2)  # digital
    for order in ([v1, v2], [v2, v1]):
        r = only(order)
        assert (r.event_id, r.route, r.reasons) == ("e-2", "digital_pt", ("default",))
        # the version in force sets the clock
        assert r.due_at.isoformat() == "2026-11-12T11:00:00-05:00"


def test_equal_instants_the_larger_event_id_wins_whatever_the_arrival_order() -> None:
    # the same instant, written in two offsets; "e-b" > "e-a" by code point
    a = submitted("e-a", "2026-11-09T15:00:00Z", nprs=9, tz="America/Chicago")
    b = submitted("e-b", "2026-11-09T10:00:00-05:00", nprs=2)
    for order in ([a, b], [b, a]):
        r = only(order)
        assert (r.event_id, r.route, r.timezone) == ("e-b", "digital_pt", NY)
    # code point, not natural order or case-folding: "E-z" < "e-a" < "e-b" and "e-10" < "e-9"
    upper = submitted("E-z", "2026-11-09T10:00:00-05:00", nprs=9)
    assert only([b, upper]).event_id == only([upper, b]).event_id == "e-b"
    ten = submitted("e-10", "2026-11-09T10:00:00-05:00", nprs=9)
    nine = submitted("e-9", "2026-11-09T10:00:00-05:00", nprs=2)
    assert only([nine, ten]).event_id == only([ten, nine]).event_id == "e-9"


def test_a_repeated_event_id_is_ignored_the_first_copy_counts() -> None:
    first = submitted("e-1", "2026-11-09T10:00:00-05:00", nprs=2)
    later_copy = submitted("e-1", "2026-11-09T12:00:00-05:00", nprs=9)  # would win as a version
    r = only([first, later_copy])
    assert (r.route, r.due_at.isoformat()) == ("digital_pt", "2026-11-12T10:00:00-05:00")
    # the state on its own ignores an event id it holds, too
    key = ("p-1", "in-1")
    state = apply(new_state(key), first)
    assert apply(state, later_copy) is state
    # a repeated contact id: its first copy is the contact
    call = contacted("c-1", "2026-11-12T09:00:00-05:00")
    late_copy = contacted("c-1", "2026-11-09T11:00:00-05:00")
    assert (
        only([first, call, late_copy]).first_contact_at.isoformat() == "2026-11-12T09:00:00-05:00"
    )


def test_an_event_id_is_one_event_across_intakes_and_types() -> None:
    """The event_id is the contract's idempotency key: reused by another intake or another
    type, the later use is a duplicate (the worker's events table drops it too)."""
    pain = ev(
        {
            "event_id": "x-1",
            "schema_version": 1,
            "type": "pain.reported",
            "patient_id": "p-1",
            "occurred_at": "2026-11-09T09:00:00-05:00",
            "score": 4,
        }
    )
    reused = submitted("x-1", "2026-11-09T10:00:00-05:00", intake_id="in-2")
    assert fold([pain, reused]) == {}
    intake = submitted("e-1", "2026-11-09T10:00:00-05:00")
    call = contacted("c-1", "2026-11-09T11:00:00-05:00")
    reused_call = contacted("c-1", "2026-11-09T10:30:00-05:00", intake_id="in-2")
    other = submitted("e-2", "2026-11-09T10:00:00-05:00", intake_id="in-2")
    by_intake = {
        r.intake_id: r for r in results(fold([intake, call, reused_call, other]).values(), AS_OF)
    }
    assert by_intake["in-1"].first_contact_at is not None
    assert by_intake["in-2"].first_contact_at is None


def test_contacts_before_their_intake_are_kept_and_count_once_it_arrives() -> None:
    call = contacted("c-1", "2026-11-09T11:00:00-05:00")
    states = fold([call])
    assert list(states) == [("p-1", "in-1")]
    assert results(states.values(), AS_OF) == []  # no intake yet: nothing to print
    intake = submitted("e-1", "2026-11-09T10:00:00-05:00")
    r = only([call, intake])
    assert r.first_contact_at.isoformat() == "2026-11-09T11:00:00-05:00" and not r.breached


def test_the_first_contact_is_the_earliest_of_any_channel_even_before_the_submission() -> None:
    intake = submitted("e-1", "2026-11-09T10:00:00-05:00")
    calls = [
        contacted("c-1", "2026-11-10T09:00:00-05:00", channel="video"),
        contacted(
            "c-2", "2026-11-09T09:30:00-05:00", channel="message"
        ),  # before: a scheduler's call
        contacted("c-3", "2026-11-11T09:00:00-05:00", channel="in_person"),
    ]
    r = only([*calls, intake])
    assert r.first_contact_at.isoformat() == "2026-11-09T09:30:00-05:00"
    assert not r.breached


def test_an_episode_with_the_intake_id_is_a_contact() -> None:
    intake = submitted("e-1", "2026-11-09T10:00:00-05:00")
    start = episode("ep-1", "2026-11-11T14:00:00-05:00")
    r = only([start, intake])
    assert r.first_contact_at.isoformat() == "2026-11-11T14:00:00-05:00" and not r.breached
    # without intake_id an episode is not the intake rules' business
    unlinked = episode("ep-2", "2026-11-10T09:00:00-05:00", intake_id=None)
    assert intake_key(unlinked) is None
    assert only([intake, unlinked]).first_contact_at is None
    # nor is another patient's contact with the same intake_id
    other = contacted("c-9", "2026-11-09T11:00:00-05:00", patient="p-2")
    assert only([intake, other]).first_contact_at is None


def test_a_contact_for_an_unknown_intake_gives_nothing() -> None:
    assert results(fold([contacted("c-1", "2026-11-09T11:00:00-05:00")]).values(), AS_OF) == []


def test_apply_refuses_an_event_of_another_intake() -> None:
    state = new_state(("p-1", "in-1"))
    with pytest.raises(ValueError):
        apply(state, submitted("e-1", "2026-11-09T10:00:00-05:00", intake_id="in-2"))
    with pytest.raises(ValueError):
        apply(state, episode("ep-1", "2026-11-09T10:00:00-05:00", intake_id=None))


# --- breached as of T ------------------------------------------------------------------------------


def test_a_contact_exactly_at_due_at_is_on_time() -> None:
    intake = submitted("e-1", "2026-11-09T10:00:00-05:00")  # due 2026-11-12T10:00-05:00
    exactly = contacted("c-1", "2026-11-12T15:00:00Z")
    assert only([intake, exactly]).breached is False
    a_second_late = contacted("c-2", "2026-11-12T10:00:01-05:00")
    assert only([intake, a_second_late]).breached is True
    # with a contact, as_of does not matter
    assert only([intake, exactly], as_of=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)).breached is False


def test_without_a_contact_as_of_decides() -> None:
    intake = submitted("e-1", "2026-11-09T10:00:00-05:00", flags=("saddle_anesthesia",))
    due = only([intake]).due_at
    assert due.isoformat() == "2026-11-09T11:00:00-05:00"
    assert only([intake], as_of=due).breached is False  # "now" exactly at due_at
    assert only([intake], as_of=due + dt.timedelta(microseconds=1)).breached is True
    assert only([intake], as_of=dt.datetime(2026, 11, 9, 15, tzinfo=dt.UTC)).breached is False
    with pytest.raises(ValueError, match="timezone-aware"):
        result(fold([intake])[("p-1", "in-1")], dt.datetime(2026, 11, 9, 12))


def test_a_result_records_the_rule_set_version() -> None:
    intake = submitted("e-1", "2026-11-09T10:00:00-05:00", nprs=7)
    assert only([intake]).rules_version == "intake-v1"
    parity = IntakeRules(version="clinic-7", nprs_in_person_at=7)
    r = only([intake], rules=parity)
    assert (r.rules_version, r.route, r.reasons) == ("clinic-7", "in_person_pt", ("nprs:high",))
    assert assess(intake, parity).rules_version == "clinic-7"  # type: ignore[arg-type]


def test_the_state_survives_json() -> None:
    """The worker will keep states in the database: a state read back is the same state."""
    state = fold(
        [
            contacted("c-1", "2026-11-09T09:00:00-06:00"),
            submitted("e-1", "2026-11-09T10:00:00-05:00"),
        ]
    )[("p-1", "in-1")]
    back = IntakeState.model_validate_json(state.model_dump_json())
    assert back == state
    assert result(back, AS_OF) == result(state, AS_OF)


# --- any arrival order gives the same result (property) ---------------------------------------------

PATIENTS = ["p-1", "p-2"]
INTAKES = ["in-1", "in-2"]
INSTANTS = [
    "2026-11-06T16:00:00-05:00",  # Friday afternoon
    "2026-11-06T21:00:00Z",  # the same instant in UTC
    "2026-11-06T15:00:00-06:00",  # and in Chicago's offset
    "2026-10-31T10:00:00-04:00",  # before the end of DST
    "2026-11-09T10:00:00-05:00",
    "2026-11-09T10:00:00.5-05:00",
]


@st.composite
def intake_events(draw: st.DrawFn) -> list[Event]:
    """A few intakes' versions, contacts and episodes with unique event ids, some sent
    twice (an exact re-send), contacts for intakes that never arrive."""
    out: list[Event] = []
    n = draw(st.integers(1, 9))
    for i in range(n):
        patient, intake_id = draw(st.sampled_from(PATIENTS)), draw(st.sampled_from(INTAKES))
        at = draw(st.sampled_from(INSTANTS))
        kind = draw(st.sampled_from(["submitted", "submitted", "contacted", "episode"]))
        eid = draw(st.sampled_from(["a", "b", "B", "10", "9"])) + f"-{i}"
        if kind == "submitted":
            region = draw(st.sampled_from(["low_back", "knee"]))
            body: dict[str, Any] = {"nprs": draw(st.integers(0, 10))}
            if region == "low_back" and draw(st.booleans()):
                body["sbst"] = {
                    str(k): draw(st.integers(0, 4 if k == 9 else 1)) for k in range(1, 10)
                }
            out.append(
                ev(
                    {
                        "event_id": eid,
                        "schema_version": 1,
                        "type": "intake.submitted",
                        "patient_id": patient,
                        "occurred_at": at,
                        "intake_id": intake_id,
                        "timezone": draw(st.sampled_from([NY, "America/Chicago", "Europe/London"])),
                        "body_region": region,
                        "red_flags": draw(
                            st.lists(
                                st.sampled_from(["fever", "saddle_anesthesia", "cancer_history"]),
                                unique=True,
                            )
                        ),
                        "answers": body,
                    }
                )
            )
        elif kind == "contacted":
            out.append(contacted(eid, at, patient=patient, intake_id=intake_id))
        else:
            out.append(episode(eid, at, patient=patient, intake_id=intake_id))
    out += draw(st.lists(st.sampled_from(out), max_size=3))  # exact re-sends
    return out


def lines_of(events: list[Event], as_of: dt.datetime) -> list[str]:
    return [render(r) for r in results(fold(events).values(), as_of, DEFAULT_RULES)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intake_events(), st.randoms(use_true_random=False), st.sampled_from(INSTANTS))
def test_any_arrival_order_gives_the_same_result(
    events: list[Event], random: Any, as_of_text: str
) -> None:
    as_of = dt.datetime.fromisoformat(as_of_text)
    expected = lines_of(events, as_of)
    shuffled = list(events)
    random.shuffle(shuffled)
    assert lines_of(shuffled, as_of) == expected
    assert lines_of(list(reversed(events)), as_of) == expected


def test_the_property_can_fail_if_arrival_order_decided() -> None:
    """Negative control: folding by "the last one wins" would differ between orders on
    these events, so the property above would catch it."""
    a = submitted("a-1", "2026-11-09T10:00:00-05:00", nprs=9)
    b = submitted("b-1", "2026-11-09T15:00:00Z", nprs=1)
    last_wins = [r.route for r in (only([a]), only([b]))]
    assert last_wins == ["in_person_pt", "digital_pt"]
    assert lines_of([a, b], AS_OF) == lines_of([b, a], AS_OF)


# --- the offline command ----------------------------------------------------------------------------


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["intake", "evaluate", *args])


def test_the_command_prints_the_documented_lines() -> None:
    out = run("--events", str(FIXTURES / "intakes.jsonl"), "--as-of", "2026-11-10T00:00:00Z")
    assert out.exit_code == 0, out.output
    assert out.stdout == (FIXTURES / "intakes.expected").read_text()
    assert "rules: intake-v1" in out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    for line in lines:
        assert list(line) == [
            "intake_id",
            "patient_id",
            "route",
            "reasons",
            "sbst",
            "due_at",
            "first_contact_at",
            "breached",
        ]
    # sorted by intake_id, then patient_id; the unknown intake in-999 prints nothing
    keys = [(line["intake_id"], line["patient_id"]) for line in lines]
    assert keys == sorted(keys) and ("in-001", "p-000") in keys
    assert all(line["intake_id"] != "in-999" for line in lines)


def test_the_fixture_in_reverse_arrival_order_prints_the_same() -> None:
    lines = (FIXTURES / "intakes.jsonl").read_text().splitlines()
    as_of = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)
    forward, errors = evaluate(lines, as_of)
    # reversing changes which copy of the repeated e-5 is first: keep that pair in order
    backward_lines = list(reversed([ln for ln in lines if '"event_id":"e-5"' not in ln]))
    backward_lines += [ln for ln in lines if '"event_id":"e-5"' in ln]
    backward, _ = evaluate(backward_lines, as_of)
    assert not errors and forward == backward


def test_as_of_is_now_only_for_intakes_without_a_contact() -> None:
    early = run("--events", str(FIXTURES / "intakes.jsonl"), "--as-of", "2026-11-02T15:30:00Z")
    rows = {
        (r["intake_id"], r["patient_id"]): r for r in map(json.loads, early.stdout.splitlines())
    }
    assert rows[("in-001", "p-000")]["breached"] is False  # due 2026-11-05, not yet
    assert rows[("in-006", "p-006")]["breached"] is True  # its contact came after due_at


def test_invalid_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    events = tmp_path / "mixed.jsonl"
    good = (FIXTURES / "intakes.jsonl").read_text().splitlines()[3]
    bad = json.loads(good) | {"event_id": "e-bad", "body_region": "neck"}
    events.write_text("\n".join([good, json.dumps(bad), "{not json", ""]) + "\n")
    out = run("--events", str(events), "--as-of", "2026-11-10T00:00:00Z")
    assert out.exit_code == 1
    assert len(out.stdout.splitlines()) == 1 and '"intake_id":"in-001"' in out.stdout
    assert f"{events}:2: skipped: answers.sbst:" in out.stderr
    assert f"{events}:3: skipped: not JSON" in out.stderr


def test_rules_from_a_file(tmp_path: Path) -> None:
    out = run(
        "--events",
        str(FIXTURES / "intakes.jsonl"),
        "--as-of",
        "2026-11-10T00:00:00Z",
        "--rules",
        str(FIXTURES / "rules-clinic-a.json"),
    )
    assert out.exit_code == 0, out.output
    assert "rules: clinic-a-2027-01" in out.stderr
    rows = {(r["intake_id"], r["patient_id"]): r for r in map(json.loads, out.stdout.splitlines())}
    # urgent within 30 minutes there: the call at 10:40 was late
    assert rows[("in-001", "p-001")]["due_at"] == "2026-11-02T10:30:00-05:00"
    assert rows[("in-001", "p-001")]["breached"] is True
    # the cancer history on a Friday 16:00: two business days of 09:00-13:00, Mon-Sat
    # (Saturday 4 h, Monday 4 h) -> Monday 13:00
    assert rows[("in-002", "p-002")]["due_at"] == "2026-11-09T13:00:00-05:00"
    # digital PT within 48 h
    assert rows[("in-001", "p-000")]["due_at"] == "2026-11-04T11:00:00-05:00"
    # what the rules did not change is the same as under intake-v1: in person within 72 h
    default = (FIXTURES / "intakes.expected").read_text().splitlines()
    assert out.stdout.splitlines()[3] == default[3] and '"in-003"' in default[3]


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"version": "intake-v1", "nprs_in_person_at": 7}', "version of their own"),
        ('{"version": "x", "calendar": {"open": "18:00"}}', "open must be before close"),
        ("not json", "Invalid JSON"),
    ],
)
def test_bad_rules_files_are_refused(tmp_path: Path, body: str, message: str) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(body)
    out = run(
        "--events",
        str(FIXTURES / "intakes.jsonl"),
        "--as-of",
        "2026-11-10T00:00:00Z",
        "--rules",
        str(rules),
    )
    assert out.exit_code == 2 and message in out.stderr and out.stdout == ""


@pytest.mark.parametrize("as_of", ["2026-11-10T00:00:00", "yesterday"])
def test_as_of_needs_an_offset(as_of: str) -> None:
    out = run("--events", str(FIXTURES / "intakes.jsonl"), "--as-of", as_of)
    assert out.exit_code == 2 and out.stdout == ""
