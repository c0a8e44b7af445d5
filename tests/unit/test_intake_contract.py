"""The intake events of the contract (issue 18 part 1): intake.submitted, intake.contacted,
episode.started's optional intake_id, and the key scopes that may post them. Each refusal
names its field (docs/events.md, docs/intake-rules.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from schemas.events import (
    EVENT_TYPES,
    EpisodeStarted,
    FieldError,
    IntakeContacted,
    IntakeSubmitted,
    dump_event,
    json_schema,
    parse_event_json,
    validate_event,
)
from streams.access import Principal
from streams.http.app import create_app
from streams.http.deps import Deps
from streams.settings import Settings
from tests.unit.test_gateway import KEY, FakeProducer, FakeStore, _as_app_key

SBST = {str(i): 0 for i in range(1, 10)}


def intake(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": "i-1",
        "schema_version": 1,
        "type": "intake.submitted",
        "patient_id": "p-001",
        "occurred_at": "2026-11-02T10:00:00-06:00",
        "intake_id": "in-1",
        "timezone": "America/Chicago",
        "body_region": "low_back",
        "referral_source": "self",
        "red_flags": [],
        "answers": {"nprs": 5, "sbst": dict(SBST)},
    }
    ev.update(over)
    return {k: v for k, v in ev.items() if v is not None}


def contact(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": "c-1",
        "schema_version": 1,
        "type": "intake.contacted",
        "patient_id": "p-001",
        "occurred_at": "2026-11-02T12:00:00-06:00",
        "intake_id": "in-1",
        "channel": "phone",
        "clinician_id": "c-01",
    }
    ev.update(over)
    return {k: v for k, v in ev.items() if v is not None}


def errors(ev: dict[str, Any]) -> list[FieldError]:
    result = validate_event(ev)
    assert isinstance(result, list), f"accepted: {result!r}"
    return result


def fields(ev: dict[str, Any]) -> set[str]:
    return {e.field for e in errors(ev)}


def test_a_full_intake_is_accepted_and_round_trips() -> None:
    ev = validate_event(intake(red_flags=["cancer_history", "fever"]))
    assert isinstance(ev, IntakeSubmitted)
    assert ev.answers.sbst is not None and ev.answers.sbst.items == (0,) * 9
    assert ev.red_flags == ["cancer_history", "fever"]
    # the item ids stay "1".."9" on the way out (the stored and produced JSON)
    raw = dump_event(ev)
    assert json.loads(raw)["answers"]["sbst"] == SBST
    assert parse_event_json(raw) == ev


def test_the_optional_parts_may_be_left_out() -> None:
    ev = validate_event(intake(body_region="knee", referral_source=None, answers={"nprs": 0}))
    assert isinstance(ev, IntakeSubmitted)
    assert ev.referral_source is None and ev.answers.sbst is None
    # an explicit null is "not answered", also outside low_back
    assert isinstance(
        validate_event(intake(body_region="neck", answers={"nprs": 3, "sbst": None})),
        IntakeSubmitted,
    )


def test_sbst_items_keep_their_order() -> None:
    answers = {**SBST, "1": 1, "5": 1, "9": 4}
    ev = validate_event(intake(answers={"nprs": 2, "sbst": answers}))
    assert isinstance(ev, IntakeSubmitted) and ev.answers.sbst is not None
    assert ev.answers.sbst.items == (1, 0, 0, 0, 1, 0, 0, 0, 4)


def test_integral_floats_are_the_integers() -> None:
    ev = validate_event(intake(answers={"nprs": 6.0, "sbst": {**SBST, "9": 3.0}}))
    assert isinstance(ev, IntakeSubmitted) and ev.answers.sbst is not None
    assert ev.answers.nprs == 6 and type(ev.answers.nprs) is int
    assert ev.answers.sbst.items[8] == 3


@pytest.mark.parametrize(
    "override, field",
    [
        # the STarT Back tool is for low back pain only: the error is on answers.sbst
        ({"body_region": "neck"}, "answers.sbst"),
        ({"body_region": "other"}, "answers.sbst"),
        # answers out of range
        ({"answers": {"nprs": 5, "sbst": {**SBST, "1": 2}}}, "answers.sbst.1"),
        ({"answers": {"nprs": 5, "sbst": {**SBST, "8": -1}}}, "answers.sbst.8"),
        ({"answers": {"nprs": 5, "sbst": {**SBST, "9": 5}}}, "answers.sbst.9"),
        ({"answers": {"nprs": 5, "sbst": {**SBST, "4": True}}}, "answers.sbst.4"),
        ({"answers": {"nprs": 5, "sbst": {**SBST, "4": 0.5}}}, "answers.sbst.4"),
        ({"answers": {"nprs": 5, "sbst": {**SBST, "4": "1"}}}, "answers.sbst.4"),
        # keys exactly "1".."9"
        (
            {"answers": {"nprs": 5, "sbst": {k: v for k, v in SBST.items() if k != "9"}}},
            "answers.sbst.9",
        ),
        ({"answers": {"nprs": 5, "sbst": {**SBST, "10": 0}}}, "answers.sbst.10"),
        ({"answers": {"nprs": 5, "sbst": {**SBST, "0": 0}}}, "answers.sbst.0"),
        ({"answers": {"nprs": 5, "sbst": {**SBST, "item1": 0}}}, "answers.sbst.item1"),
        ({"answers": {"nprs": 5, "sbst": {**SBST, "01": 0}}}, "answers.sbst.01"),
        ({"answers": {"nprs": 5, "sbst": [0] * 9}}, "answers.sbst"),
        # nprs: an integer 0-10, required
        ({"answers": {"nprs": 11}}, "answers.nprs"),
        ({"answers": {"nprs": -1}}, "answers.nprs"),
        ({"answers": {"nprs": 6.5}}, "answers.nprs"),
        ({"answers": {"nprs": "6"}}, "answers.nprs"),
        ({"answers": {"nprs": True}}, "answers.nprs"),
        ({"answers": {"sbst": SBST}}, "answers.nprs"),
        ({"answers": {"nprs": 5, "pain_now": 3}}, "answers.pain_now"),
        # red flags: the intake's vocabulary, each at most once, the list required
        ({"red_flags": ["headache"]}, "red_flags.0"),
        ({"red_flags": ["fever", "fever"]}, "red_flags"),
        ({"red_flags": ["cancer_history", "fever", "cancer_history"]}, "red_flags"),
        ({"red_flags": "fever"}, "red_flags"),
        ({"red_flags": None}, "red_flags"),
        # the rest of the intake
        ({"body_region": "lower_back"}, "body_region"),
        ({"body_region": None}, "body_region"),
        ({"referral_source": "friend"}, "referral_source"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),
        ({"timezone": None}, "timezone"),
        ({"intake_id": "in 1"}, "intake_id"),
        ({"intake_id": "x" * 65}, "intake_id"),
        ({"intake_id": None}, "intake_id"),
        ({"episode_id": "ep-1"}, "episode_id"),  # unknown fields are refused
        ({"answers": None}, "answers"),
    ],
)
def test_bad_intake_submitted_names_the_field(override: dict[str, Any], field: str) -> None:
    found = errors(intake(**override))
    assert field in {e.field for e in found}, found
    assert all(e.message.startswith(f"{e.field}: ") for e in found)


def test_the_region_refusal_says_why() -> None:
    (err,) = errors(intake(body_region="knee"))
    assert err.field == "answers.sbst" and "low_back" in err.message


def test_a_duplicate_flag_is_named() -> None:
    (err,) = errors(intake(red_flags=["fever", "major_trauma", "fever"]))
    assert err.field == "red_flags" and "'fever'" in err.message


def test_cancer_history_is_an_intake_flag_only() -> None:
    assert isinstance(validate_event(intake(red_flags=["cancer_history"])), IntakeSubmitted)
    symptom = {
        "event_id": "s-1",
        "schema_version": 1,
        "type": "symptom.reported",
        "patient_id": "p-001",
        "occurred_at": "2026-11-02T10:00:00-06:00",
        "red_flags": ["cancer_history"],
    }
    assert "red_flags.0" in fields(symptom)


def test_every_symptom_flag_is_an_intake_flag() -> None:
    flags = [
        "saddle_anesthesia",
        "bladder_dysfunction",
        "bowel_incontinence",
        "bilateral_leg_symptoms",
        "progressive_weakness",
        "fever",
        "unexplained_weight_loss",
        "constant_night_pain",
        "major_trauma",
        "cancer_history",
    ]
    ev = validate_event(intake(red_flags=flags))
    assert isinstance(ev, IntakeSubmitted) and ev.red_flags == flags


def test_intake_contacted() -> None:
    ev = validate_event(contact())
    assert isinstance(ev, IntakeContacted) and ev.channel == "phone"
    assert isinstance(validate_event(contact(clinician_id=None)), IntakeContacted)
    for channel in ("phone", "video", "message", "in_person"):
        assert isinstance(validate_event(contact(channel=channel)), IntakeContacted)


@pytest.mark.parametrize(
    "override, field",
    [
        ({"channel": "email"}, "channel"),
        ({"channel": None}, "channel"),
        ({"intake_id": None}, "intake_id"),
        ({"intake_id": "in/1"}, "intake_id"),
        ({"clinician_id": "c 1"}, "clinician_id"),
        ({"minutes": 5}, "minutes"),
    ],
)
def test_bad_intake_contacted_names_the_field(override: dict[str, Any], field: str) -> None:
    assert field in fields(contact(**override))


def test_episode_started_may_name_its_intake() -> None:
    ep: dict[str, Any] = {
        "event_id": "e-1",
        "schema_version": 1,
        "type": "episode.started",
        "patient_id": "p-001",
        "occurred_at": "2026-11-02T09:00:00-06:00",
        "episode_id": "ep-001",
        "clinician_id": "c-01",
        "clinician_role": "PT",
        "timezone": "America/Chicago",
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
    plain = validate_event(ep)
    assert isinstance(plain, EpisodeStarted) and plain.intake_id is None
    # left out of the stored JSON when absent: episodes stored before it read the same
    assert b"intake_id" not in dump_event(plain)
    linked = validate_event({**ep, "intake_id": "in-1"})
    assert isinstance(linked, EpisodeStarted) and linked.intake_id == "in-1"
    assert "intake_id" in fields({**ep, "intake_id": "in 1"})


def test_the_published_schema_has_the_intake_types_and_the_region_rule() -> None:
    schema = json_schema()
    assert {"intake.submitted", "intake.contacted"} <= set(schema["discriminator"]["mapping"])
    defs = schema["$defs"]
    sub = defs["IntakeSubmitted"]
    assert sub["properties"]["red_flags"]["uniqueItems"] is True
    assert "cancer_history" in sub["properties"]["red_flags"]["items"]["enum"]
    assert sub["if"]["properties"]["body_region"] == {"not": {"const": "low_back"}}
    assert defs["SbstAnswers"]["required"] == [str(i) for i in range(1, 10)]
    assert defs["SbstAnswers"]["additionalProperties"] is False
    assert "cancer_history" not in json.dumps(defs["SymptomReported"])


def key(*scopes: str) -> Principal:
    return Principal("key", "k", "org-a", frozenset(scopes))


def test_key_scopes() -> None:
    producer, integration, reader = key("producer"), key("integration"), key("reader")
    assert "intake.submitted" in producer.postable_types()
    assert "intake.contacted" not in producer.postable_types()
    assert {"intake.submitted", "intake.contacted"} <= integration.postable_types()
    assert not reader.postable_types()
    # the producer's other types are unchanged; the integration's too
    assert producer.postable_types() == {
        "exercise.completed",
        "pain.reported",
        "symptom.reported",
        "intake.submitted",
        "assessment.completed",  # a PROM form (issue 19)
    }
    assert integration.postable_types() == set(EVENT_TYPES) - {
        "exercise.completed",
        "pain.reported",
        "symptom.reported",
    }


async def test_a_patient_app_posts_an_intake_but_not_a_contact(tmp_path: Path) -> None:
    """Through the gateway (Kafka and the database faked): the producer key's self-screen
    is accepted, a bad one is rejected naming answers.sbst, a contact is out of scope."""
    producer = FakeProducer()
    app = create_app(
        Settings(state_dir=tmp_path),
        Deps(
            producer=producer,
            store=FakeStore(),  # type: ignore[arg-type]
            registry=CollectorRegistry(),
            authenticate=_as_app_key,
        ),
    )
    now = dt.datetime.now(dt.UTC).isoformat()
    good = intake(event_id="i-ok", occurred_at=now)
    neck = intake(event_id="i-neck", occurred_at=now, body_region="neck")
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        resp = await client.post("/v1/events", content=orjson.dumps([good, neck]), headers=auth)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["accepted"] == 1
        (rejected,) = body["rejected"]
        assert rejected["event_id"] == "i-neck"
        assert [e["field"] for e in rejected["errors"]] == ["answers.sbst"]
        refused = await client.post(
            "/v1/events",
            content=orjson.dumps([contact(event_id="c-x", occurred_at=now)]),
            headers=auth,
        )
        assert refused.status_code == 403
        assert "intake.contacted" in refused.json()["error"]
    assert [e.event_id for e in producer.events] == ["i-ok"]
