"""Intakes for a simulated cohort (issue 18; docs/intake-rules.md): the front door before
the first episode, opt-in (``simulate(..., intakes=SHARE)``, ``rtm simulate --intakes``).

Who: a patient whose first episode starts at least a week into the window (``MIN_START_DAY``:
they came through the door during it) is screened with probability ``share``, drawn from
the patient's own intake stream (``rtm-sim:{seed}:intake:{idx}``), so the cohort's other
events are the same with or without intakes (only the ``episode.started`` that answers an
intake gains its ``intake_id``).

What: ``intake.submitted`` 0-6 days before the first episode, in the episode's body region
(low-back ones with STarT Back answers). The route cycles through ``ROUTE_CYCLE`` from a
seeded offset, so any eight consecutive intakes cover every route; the answers are drawn to
produce it under ``intake-v1``: an emergency red flag (``urgent``), a serious-pathology flag
(``physician_review``), STarT Back high or NPRS >= 8 (``in_person_pt``), otherwise
``digital_pt``.

First contact (``OUTCOME_CYCLE``, from its own seeded offset): 8 in 11 on time, 2 late, 1
never. A PT route is contacted by the ``episode.started`` naming the intake (on time: the
episode 0-2 days after the submission; late: 4-6 days) or by an ``intake.contacted``;
``urgent`` and ``physician_review`` by an ``intake.contacted`` before or after ``due_at``
(computed with ``intake.service``). A contact after the window's last day has not happened
yet and is left out. Every event is valid against the contract
(tests/unit/test_simulate_intakes.py).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from intake.rules import DEFAULT_RULES, Route
from intake.sbst import score_sbst
from intake.service import due_at
from schemas.events import SbstAnswers

MIN_START_DAY = 7
ROUTE_CYCLE: tuple[Route, ...] = (
    "digital_pt",
    "in_person_pt",
    "urgent",
    "physician_review",
    "digital_pt",
    "in_person_pt",
    "digital_pt",
    "physician_review",
)
# first contacts, cycled as the routes (11 is prime to 8: every route meets every outcome)
OUTCOME_CYCLE = (
    "on_time",
    "on_time",
    "late",
    "on_time",
    "on_time",
    "on_time",
    "never",
    "on_time",
    "on_time",
    "late",
    "on_time",
)
REFERRALS = (("self", 50), ("primary_care", 30), ("specialist", 10), ("employer", 5), ("payer", 5))
# the simulator's episode regions as intake body regions
BODY_REGIONS = {
    "lumbar": "low_back",
    "knee": "knee",
    "shoulder": "shoulder",
    "neck": "neck",
    "hip": "hip",
    "hand": "elbow_wrist_hand",
    "swallow": "other",
}
EMERGENCY: list[str] = sorted(DEFAULT_RULES.emergency_flags)
SERIOUS: list[str] = sorted(DEFAULT_RULES.serious_flags)
HOUR = 3600.0


class Candidate(NamedTuple):
    """What the intake plan needs of a patient and its first episode."""

    idx: int  # patient index (its intake stream)
    patient_id: str
    timezone: str
    app_source: dict[str, str] | None
    start_day: int  # cohort day index of the first episode
    start_epoch: float  # episode.started's instant (UTC epoch seconds)
    region: str  # the simulator's region of the episode
    clinician_id: str


class IntakePlan(NamedTuple):
    intake_id: str
    route: Route
    outcome: str  # on_time | late | never
    episode_names_it: bool  # the first episode.started carries intake_id
    events: list[tuple[int, float, dict[str, Any]]]  # (local cohort day, arrival, event)


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def plan_intakes(
    candidates: list[Candidate], seed: int, share: float, start: dt.date, days: int
) -> dict[int, IntakePlan]:
    """The intake of each screened patient, by patient index."""
    cycles = random.Random(f"rtm-sim:{seed}:intakes")
    offset = cycles.randrange(len(ROUTE_CYCLE))
    outcome_offset = cycles.randrange(len(OUTCOME_CYCLE))
    plans: dict[int, IntakePlan] = {}
    for c in candidates:
        rng = random.Random(f"rtm-sim:{seed}:intake:{c.idx}")
        if rng.random() >= share or c.start_day < MIN_START_DAY:
            continue
        j = len(plans)
        route = ROUTE_CYCLE[(offset + j) % len(ROUTE_CYCLE)]
        outcome = OUTCOME_CYCLE[(outcome_offset + j) % len(OUTCOME_CYCLE)]
        plans[c.idx] = _plan(rng, c, route, outcome, start, days)
    return plans


def _plan(
    rng: random.Random, c: Candidate, route: Route, outcome: str, start: dt.date, days: int
) -> IntakePlan:
    zone = ZoneInfo(c.timezone)
    intake_id = f"in-{c.patient_id}-1"
    by_episode = route in ("in_person_pt", "digital_pt") and outcome != "never"
    by_episode = by_episode and rng.random() < 0.6
    episode_start = dt.datetime.fromtimestamp(c.start_epoch, zone)
    if by_episode:
        k = rng.choice((0, 1, 2)) if outcome == "on_time" else rng.choice((4, 5, 6))
    else:
        k = rng.randint(1, 6)
    day = episode_start.date() - dt.timedelta(days=k)
    local_secs = episode_start.hour * 3600 + episode_start.minute * 60 + episode_start.second
    latest = 21 * 3600 if k else local_secs - 1800  # same day: half an hour before the start
    secs = rng.randint(7 * 3600, max(7 * 3600, latest))
    submitted = dt.datetime.combine(day, dt.time(), zone) + dt.timedelta(seconds=secs)
    submitted = submitted.astimezone(dt.UTC).astimezone(zone)  # the zone's offset then
    events = [_submitted(rng, c, intake_id, route, submitted, start)]
    if outcome != "never" and not by_episode:
        contact = _contact_time(rng, route, outcome, submitted, c.timezone)
        event = _contacted(rng, c, intake_id, route, contact, start)
        if event[0] < days:  # a contact after the window has not happened yet
            events.append(event)
    return IntakePlan(intake_id, route, outcome, by_episode, events)


def _local_day(when: dt.datetime, start: dt.date) -> int:
    return (when.date() - start).days


def _submitted(
    rng: random.Random,
    c: Candidate,
    intake_id: str,
    route: Route,
    when: dt.datetime,
    start: dt.date,
) -> tuple[int, float, dict[str, Any]]:
    region = BODY_REGIONS[c.region]
    referral = _weighted(rng, REFERRALS)
    flags: list[str] = []
    sbst: dict[str, int] | None = None
    if route == "urgent":
        flags = rng.sample(EMERGENCY, 1) + (rng.sample(SERIOUS, 1) if rng.random() < 0.3 else [])
        nprs = rng.randint(5, 10)
    elif route == "physician_review":
        flags = rng.sample(SERIOUS, rng.choice((1, 1, 2)))
        nprs = rng.randint(3, 9)
    elif route == "in_person_pt":
        nprs = rng.randint(8, 10) if region != "low_back" else rng.randint(4, 10)
    else:
        nprs = rng.randint(2, 7) if region != "low_back" else rng.randint(2, 9)
    if region == "low_back" and (route in ("in_person_pt", "digital_pt") or rng.random() < 0.5):
        tier = {"in_person_pt": ("high",), "digital_pt": ("low", "medium")}.get(route)
        sbst = _sbst(rng, tier)
    event: dict[str, Any] = {
        "event_id": f"{c.patient_id}-i1",
        "schema_version": 1,
        "type": "intake.submitted",
        "patient_id": c.patient_id,
        "occurred_at": when.isoformat(),
        "intake_id": intake_id,
        "timezone": c.timezone,
        "body_region": region,
    }
    if referral == "self":  # the patient app's self-screen
        event["source"] = c.app_source or {"kind": "app", "id": "intake-web"}
    else:  # a scheduling desk's screening script
        event["source"] = {"kind": "ehr", "id": "scheduling"}
    event["referral_source"] = referral
    event["red_flags"] = sorted(flags)
    event["answers"] = {"nprs": nprs} | ({"sbst": sbst} if sbst is not None else {})
    arrival = when.timestamp() + rng.uniform(0.2, 8.0)
    return _local_day(when, start), arrival, event


def _sbst(rng: random.Random, tiers: tuple[str, ...] | None) -> dict[str, int]:
    """STarT Back answers whose tier is one of ``tiers`` (any tier when None)."""
    while True:
        answers = {str(i): rng.randint(0, 1) for i in range(1, 9)} | {"9": rng.randint(0, 4)}
        if tiers is None or score_sbst(SbstAnswers.model_validate(answers)).tier in tiers:
            return answers


def _contact_time(
    rng: random.Random, route: Route, outcome: str, submitted: dt.datetime, timezone: str
) -> dt.datetime:
    due = due_at(submitted, route, timezone, DEFAULT_RULES)
    window = (due - submitted).total_seconds()
    if outcome == "on_time":
        delay = rng.uniform(0.1, 0.9) * min(window, 48 * HOUR)
    elif route == "urgent":
        delay = window + rng.uniform(0.25, 4.0) * HOUR
    else:
        delay = window + rng.uniform(0.5, 30.0) * HOUR
    return (submitted + dt.timedelta(seconds=round(delay))).astimezone(dt.UTC)


def _contacted(
    rng: random.Random,
    c: Candidate,
    intake_id: str,
    route: Route,
    when_utc: dt.datetime,
    start: dt.date,
) -> tuple[int, float, dict[str, Any]]:
    when = when_utc.astimezone(ZoneInfo(c.timezone))
    channels = (
        ("phone", "video") if route in ("urgent", "physician_review") else ("phone", "message")
    )
    event: dict[str, Any] = {
        "event_id": f"{c.patient_id}-i2",
        "schema_version": 1,
        "type": "intake.contacted",
        "patient_id": c.patient_id,
        "occurred_at": when.isoformat(),
        "source": {"kind": "clinician_portal", "id": "portal-web"},
        "intake_id": intake_id,
        "channel": rng.choice(channels),
    }
    if route in ("in_person_pt", "digital_pt"):
        event["clinician_id"] = c.clinician_id
    return _local_day(when, start), when.timestamp() + rng.uniform(0.1, 3.0), event
