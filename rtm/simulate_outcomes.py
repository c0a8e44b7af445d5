"""Outcome measures, visits, pauses and exits for a simulated cohort (issue 19 item 7;
docs/pathways-and-outcomes.md), opt-in (``simulate(..., outcomes=True)``, ``rtm simulate
--outcomes``; the demo turns it on).

Each episode's plan is drawn from the patient's own outcome stream
(``rtm-sim:{seed}:outcomes:{idx}``), so the cohort without the option is unchanged. With it:

- ``episode.started`` gains its ``body_region`` (the simulator's regions mapped onto the
  contract's: lumbar -> low_back, hand -> wrist_hand, swallowing -> other);
- PROMs (``assessment.completed``) of the region's primary instrument under ``msk-default``
  v1 without licences (LEFS for hip and knee, else PSFS), at the timepoints: a baseline on
  days 0-7, week 4 on days 25-35, every 4 weeks after, and a final on the day the episode
  ends; some forms miss an item and stay valid (PSFS with 4-5 activities), a few are
  invalid (``INVALID_SHARE``: PSFS with 2 answers, LEFS with a missing item);
- visits (``visit.completed``): an in-person evaluation on day 0, then every 1-3 weeks, in
  person or virtual (``VIRTUAL_SHARE``);
- falls (the cohort's own, plus ``EXTRA_FALL_SHARE`` of episodes) each followed 1-4 days
  later by the clinician's ``program.resumed``; some clinician pauses (``program.paused``,
  ``CLINICIAN_PAUSE_SHARE``) and their resumes; no exercise on the days in between;
- exits with every reason of the contract: the simulator's ``non_adherence`` becomes
  ``dropped_out``, ``surgery`` ``referred``, and ``insurance`` in turn ``transferred``,
  ``not_eligible`` or ``other``;
- a planted effect: the improvement an episode's scores follow is larger for the cohort's PT
  with the most episodes (``STAR_BONUS``; simulate.star_clinician) and grows with the
  adherence profile (``ADHERENCE_EFFECT``), so the report by clinician and the adherence
  tertiles show it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

REGION = {
    "lumbar": "low_back",
    "knee": "knee",
    "shoulder": "shoulder",
    "neck": "neck",
    "hip": "hip",
    "hand": "wrist_hand",
    "swallow": "other",
}
# msk-default v1's primary instrument without licences: the first free one of the region's list
PRIMARY = {"hip": "lefs", "knee": "lefs", "ankle_foot": "lefs"}
EXIT = {
    "discharged": "discharged",
    "goals_met": "goals_met",
    "non_adherence": "dropped_out",
    "surgery": "referred",
}
INSURANCE_EXITS = ("transferred", "not_eligible", "other")
# the session probability factor of each adherence profile (simulate._Episode.session_prob)
PROFILE_ADHERENCE = {"high": 0.93, "medium": 0.62, "declining": 0.45, "dropout": 0.85}
STAR_BONUS = 0.4
ADHERENCE_EFFECT = 0.6
INVALID_SHARE = 0.03
VIRTUAL_SHARE = 0.4
EXTRA_FALL_SHARE = 0.05
CLINICIAN_PAUSE_SHARE = 0.04
TAU_DAYS = 15.0

Item = tuple[int, str, dict[str, Any], bool]  # (local secs, type, body, from the app)


@dataclass
class EpisodePlan:
    """What the option adds to one episode, by cohort day."""

    region: str
    instrument: str
    exit_reason: str | None
    fall_day: int | None = None
    paused: list[tuple[int, int]] = field(default_factory=list)  # (pause day, resume day)
    items: dict[int, list[Item]] = field(default_factory=dict)

    def add(self, day: int, item: Item) -> None:
        self.items.setdefault(day, []).append(item)

    def inactive(self, day: int) -> bool:
        """A paused day after the pause's own: the patient does not exercise."""
        return any(p < day < r for p, r in self.paused)


@dataclass(frozen=True)
class EpisodeFacts:
    """What the plan needs of a simulated episode (cohort day indexes)."""

    episode_id: str
    start: int
    start_secs: int  # episode.started's local time: day 0's items come after it
    end: int | None
    stop: int | None  # a drop-out's last day of data (exclusive)
    last_day: int  # the window's last cohort day
    region: str
    clinician_id: str
    star: bool
    profile: str
    reason: str | None
    fall_day: int | None


def gain(rng: random.Random, facts: EpisodeFacts) -> float:
    """The share of the possible improvement this episode's scores approach."""
    base = rng.gauss(0.15, 0.2)
    base += STAR_BONUS if facts.star else 0.0
    base += ADHERENCE_EFFECT * (PROFILE_ADHERENCE[facts.profile] - 0.62)
    return max(-0.15, min(0.95, base))


def _answers(rng: random.Random, instrument: str, value: float) -> dict[str, int | None]:
    """Item answers around ``value`` (PSFS mean 0-10, LEFS sum 0-80); some items missing,
    a few forms invalid."""
    invalid = rng.random() < INVALID_SHARE
    if instrument == "psfs":
        n = rng.choice((3, 4, 4, 5))
        out: dict[str, int | None] = {
            f"a{i}": max(0, min(10, round(value + rng.gauss(0.0, 0.7)))) for i in range(1, n + 1)
        }
        if invalid:
            for k in list(out)[2:]:
                out[k] = None  # two answers: too_many_missing
        elif n >= 4 and rng.random() < 0.15:
            out[f"a{n}"] = None  # a missing activity, still valid
        return out
    per_item = value / 20.0
    answers: dict[str, int | None] = {
        f"q{i}": max(0, min(4, round(per_item + rng.gauss(0.0, 0.5)))) for i in range(1, 21)
    }
    if invalid:
        answers[f"q{rng.randint(1, 20)}"] = None  # LEFS needs every item
    return answers


def _prom_days(rng: random.Random, f: EpisodeFacts) -> list[int]:
    """Cohort days of the PROMs: baseline, week 4, every 4 weeks after, the end's."""
    last = min(x for x in (f.end, f.stop, f.last_day + 1) if x is not None)
    if f.stop is not None or f.end is None:
        last -= 1  # a drop-out sends nothing from its stop day; an open one to the window
    offsets = [rng.choice((0, 0, 0, 1, 2, 3, 5, 7)), rng.randint(25, 35)]
    while offsets[-1] + 28 < (f.end or f.last_day) - f.start:
        offsets.append(offsets[-1] + 28 + rng.randint(-3, 3))
    days = [f.start + o for o in offsets if f.start + o <= last]
    if f.end is not None and f.end <= last and f.end - f.start > 7 and f.end not in days:
        days.append(f.end)  # the final, on the day the episode ends
    return sorted(set(days))


def _pauses(rng: random.Random, f: EpisodeFacts) -> tuple[int | None, list[tuple[int, int, str]]]:
    """The fall day (the cohort's, or an extra one) and the pauses: (day, resume, why)."""
    horizon = min(x for x in (f.end, f.stop, f.last_day) if x is not None)
    fall = f.fall_day
    if fall is None and rng.random() < EXTRA_FALL_SHARE and horizon - f.start > 12:
        fall = f.start + rng.randint(5, min(40, horizon - f.start - 4))
    out: list[tuple[int, int, str]] = []
    if fall is not None:
        out.append((fall, fall + rng.randint(1, 4), "fall"))
    if rng.random() < CLINICIAN_PAUSE_SHARE and horizon - f.start > 20:
        day = f.start + rng.randint(8, min(45, horizon - f.start - 10))
        if all(not (p - 2 <= day <= r + 2) for p, r, _ in out):
            out.append((day, day + rng.randint(3, 8), "clinician"))
    return fall, [(p, r, why) for p, r, why in out if r < horizon]


def plan_episode(rng: random.Random, f: EpisodeFacts, insurance_turn: int) -> EpisodePlan:
    """One episode's additions (see the module's docstring)."""
    region = REGION[f.region]
    instrument = PRIMARY.get(region, "psfs")
    reason = None if f.reason is None else EXIT.get(f.reason)
    if f.reason is not None and reason is None:
        reason = INSURANCE_EXITS[insurance_turn % len(INSURANCE_EXITS)]
    plan = EpisodePlan(region, instrument, reason)
    g = gain(rng, f)
    top = 10.0 if instrument == "psfs" else 80.0
    baseline = rng.uniform(1.5, 5.0) if instrument == "psfs" else rng.uniform(18.0, 48.0)
    noise = top / 16.0
    for day in _prom_days(rng, f):
        t = day - f.start
        value = baseline + (top - baseline) * g * (1.0 - math.exp(-t / TAU_DAYS))
        value = max(0.0, min(top, value + rng.gauss(0.0, noise)))
        body: dict[str, Any] = {"episode_id": f.episode_id, "instrument": instrument}
        body["answers"] = _answers(rng, instrument, value)
        secs = rng.randint(8 * 3600, 20 * 3600)
        if day == f.start:
            secs = f.start_secs + rng.randint(1800, 3600)
        elif day == f.end:
            secs = rng.randint(7 * 3600, 9 * 3600)  # before the episode.ended
        plan.add(day, (secs, "assessment.completed", body, True))
    _visits(rng, f, plan)
    fall, pauses = _pauses(rng, f)
    for day, resume, why in pauses:
        secs = rng.randint(9 * 3600, 17 * 3600)
        plan.paused.append((day, resume))
        if why == "clinician":
            body = {"episode_id": f.episode_id, "clinician_id": f.clinician_id}
            plan.add(day, (secs, "program.paused", {**body, "reason": "clinician_review"}, False))
        plan.add(
            resume,
            (
                secs,
                "program.resumed",
                {"episode_id": f.episode_id, "clinician_id": f.clinician_id},
                False,
            ),
        )
    plan.fall_day = fall
    return plan


def _visits(rng: random.Random, f: EpisodeFacts, plan: EpisodePlan) -> None:
    """An in-person evaluation on day 0, then a visit every 1-3 weeks, to the end."""
    horizon = min(x for x in (f.end, f.last_day) if x is not None)
    day, mode = f.start, "in_person"
    while day <= horizon:
        secs = rng.randint(13 * 3600, 17 * 3600) if day > f.start else f.start_secs + 600
        body = {"episode_id": f.episode_id, "mode": mode, "clinician_id": f.clinician_id}
        plan.add(day, (secs, "visit.completed", body, False))
        day += rng.randint(7, 21)
        mode = "virtual" if rng.random() < VIRTUAL_SHARE else "in_person"
