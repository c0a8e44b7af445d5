"""Event builders for the pathway tests: one patient-local calendar (America/Chicago, day 0
= 2026-01-05, a Monday, -06:00 all January and February), events by episode day."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from schemas.events import EVENT_ADAPTER, Event
from tests.unit.test_alert_rules import BILLING

DAY0 = dt.date(2026, 1, 5)
TZ = "America/Chicago"


def at(day: int, hour: int = 10) -> str:
    """An instant on episode day ``day`` (local time ``hour``)."""
    return f"{DAY0 + dt.timedelta(days=day)}T{hour:02d}:00:00-06:00"


def date(day: int) -> str:
    return (DAY0 + dt.timedelta(days=day)).isoformat()


def as_of(day: int, hour: int = 0) -> dt.datetime:
    """The instant ``hour``:00 local on day ``day`` (T is that day)."""
    return dt.datetime.fromisoformat(at(day, hour))


def raw(
    type_: str, day: int, eid: str, hour: int = 10, patient: str = "p-1", **f: Any
) -> dict[str, Any]:
    return {
        "event_id": eid,
        "schema_version": 1,
        "type": type_,
        "patient_id": patient,
        "occurred_at": at(day, hour),
        **f,
    }


def mk(type_: str, day: int, eid: str, hour: int = 10, patient: str = "p-1", **f: Any) -> Event:
    return EVENT_ADAPTER.validate_python(raw(type_, day, eid, hour, patient, **f))


def start(
    region: str | None = "other",
    episode: str = "ep-1",
    spw: int = 7,
    patient: str = "p-1",
    clinician: str = "c-1",
    day: int = 0,
    **f: Any,
) -> Event:
    extra = {"body_region": region} if region is not None else {}
    return mk(
        "episode.started",
        day,
        f"start-{episode}",
        8,
        patient,
        episode_id=episode,
        clinician_id=clinician,
        clinician_role="PT",
        timezone=TZ,
        program={"sessions_per_week": spw},
        billing=BILLING,
        **extra,
        **f,
    )


def psfs(day: int, eid: str, *values: int | None, hour: int = 10, patient: str = "p-1") -> Event:
    """A PSFS form (higher is better, MCID 2): a1.. the given values."""
    answers = {f"a{i}": v for i, v in enumerate(values, 1)}
    return mk("assessment.completed", day, eid, hour, patient, instrument="psfs", answers=answers)


def pain(day: int, eid: str, score: int, hour: int = 12, patient: str = "p-1") -> Event:
    return mk("pain.reported", day, eid, hour, patient, score=score)


def exercise(day: int, eid: str, patient: str = "p-1") -> Event:
    return mk("exercise.completed", day, eid, 9, patient, exercise_id="bridge", session_id=eid)


def ended(day: int, reason: str | None, episode: str = "ep-1", patient: str = "p-1") -> Event:
    extra = {"reason": reason} if reason is not None else {}
    return mk("episode.ended", day, f"end-{episode}", 18, patient, episode_id=episode, **extra)


def visit(day: int, eid: str, mode: str = "in_person", episode: str = "ep-1") -> Event:
    return mk("visit.completed", day, eid, 11, episode_id=episode, mode=mode)


def logged(day: int, eid: str) -> Event:
    return mk(
        "clinician.time_logged",
        day,
        eid,
        15,
        episode_id="ep-1",
        clinician_id="c-1",
        clinician_role="PT",
        minutes=10,
        activity="review",
        interactive=False,
    )


def fall(day: int, eid: str) -> Event:
    return mk("symptom.reported", day, eid, 10, fall=True)


def paused(day: int, eid: str) -> Event:
    return mk("program.paused", day, eid, 10, episode_id="ep-1", clinician_id="c-1")


def resumed(day: int, eid: str) -> Event:
    return mk("program.resumed", day, eid, 10, episode_id="ep-1", clinician_id="c-1")


def generated_cohort(seed: int, n: int) -> list[dict[str, Any]]:
    """A small cohort of ``n`` patients (one PSFS episode each, day 0 = DAY0) as raw event
    objects: a baseline on day 1, a week-4 form on day 26 (unchanged or improved by 2),
    three pains on days 18-31 with scores 4-9, sessions on random days, and some of:
    visits, a review, a fall and its resume, a late final form, an end with a reason."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        p, ep = f"p{i}", f"e{i}"
        out.append(
            start("other", ep, spw=rng.choice([3, 5, 7]), patient=p).model_dump(
                mode="json", exclude_none=True
            )
        )
        week4 = rng.choice([3, 5])
        forms = [(1, 3), (26, week4)] + (
            [(rng.randint(30, 45), rng.randint(2, 8))] if rng.random() < 0.5 else []
        )
        for day, value in forms:
            answers = {"a1": value, "a2": value, "a3": value}
            out.append(
                raw(
                    "assessment.completed",
                    day,
                    f"{ep}-f{day}",
                    10,
                    p,
                    instrument="psfs",
                    answers=answers,
                )
            )
        for k in range(3):
            out.append(
                raw(
                    "pain.reported",
                    rng.randint(18, 31),
                    f"{ep}-pain{k}",
                    12 + k,
                    p,
                    score=rng.randint(4, 9),
                )
            )
        for day in sorted(rng.sample(range(0, 50), rng.randint(5, 40))):
            out.append(
                raw(
                    "exercise.completed",
                    day,
                    f"{ep}-x{day}",
                    9,
                    p,
                    exercise_id="bridge",
                    session_id=f"{ep}-s{day}",
                )
            )
        if rng.random() < 0.5:
            out.append(
                raw(
                    "visit.completed",
                    rng.randint(20, 40),
                    f"{ep}-v",
                    11,
                    p,
                    episode_id=ep,
                    mode=rng.choice(["in_person", "virtual"]),
                )
            )
        if rng.random() < 0.5:
            out.append(
                raw(
                    "clinician.time_logged",
                    rng.randint(20, 40),
                    f"{ep}-t",
                    15,
                    p,
                    episode_id=ep,
                    clinician_id="c-1",
                    clinician_role="PT",
                    minutes=10,
                    activity="review",
                    interactive=False,
                )
            )
        if rng.random() < 0.3:
            day = rng.randint(5, 40)
            out.append(raw("symptom.reported", day, f"{ep}-fall", 10, p, fall=True))
            if rng.random() < 0.7:
                out.append(
                    raw(
                        "program.resumed",
                        day + rng.randint(1, 5),
                        f"{ep}-res",
                        10,
                        p,
                        episode_id=ep,
                        clinician_id="c-1",
                    )
                )
        if rng.random() < 0.5:
            reason = rng.choice(["goals_met", "discharged", "dropped_out", "referred", None])
            out.append(
                ended(rng.randint(35, 55), reason, ep, p).model_dump(mode="json", exclude_none=True)
            )
    return out
