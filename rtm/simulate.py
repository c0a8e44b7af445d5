"""Deterministic synthetic RTM cohort: event dicts in the contract v1 JSON shape.

``simulate(patients, days, seed)`` yields events in ARRIVAL order, i.e. the order a gateway
would receive them, with everything the contract says producers do to us:

* episodes (``episode.started`` with a program, a billing block with a Luhn-valid NPI,
  Medicare/commercial payers, ICD-10 codes), ``program.updated``, ``episode.ended`` mid-way
  and second episodes after the first one ended;
* per-patient adherence profiles (high, medium, declining, drop-out) and multi-day breaks
  (so inactivity / adherence / billing-at-risk alerts fire), sessions of several
  ``exercise.completed`` sharing a ``session_id`` (some without one), pain trajectories that
  improve, plateau or flare (some >= 7, some +2 over the weekly median), rare red flags and
  falls, weekly empty check-ins;
* ``clinician.time_logged`` (reviews, messages, interactive calls/video, PTA/OTA time) with
  monthly totals spread over 0-90 minutes so 98979/98980/98981 all occur;
* patients in seven US time zones, ``occurred_at`` carrying the local UTC offset at that
  instant (a cohort spanning early November crosses the DST change), night-owl sessions at
  about 23:30 local (the next day in UTC);
* late-synced batches (phone offline 1-5 days: the data arrives at sync time with its
  original ``occurred_at`` and ``recorded_at`` = the sync time), exact duplicates (same
  dict re-sent, about 1%, shortly after the original) and out-of-order arrivals
  (network retries delaying single events by minutes to ~1.5 h).

Arrival model: every event gets an arrival instant (UTC epoch seconds); the output is sorted
by (arrival, generation sequence). Generation is lazy per cohort day, merged through a heap:
after generating local day *d* for every patient, all heap entries arriving before the
earliest instant any later local day can reach are emitted. An ``episode.started`` arrives
exactly at its ``occurred_at`` and every event of that episode occurs after it, so it always
precedes them in arrival order.

Determinism: one ``random.Random`` per patient seeded from ``(seed, patient index)`` (string
seeds hash with SHA-512, stable across runs and platforms); invalid events use a separate
stream so the valid events are the same, in the same order, whatever ``invalid_ratio`` is.
"""

from __future__ import annotations

import csv
import heapq
import io
import math
import random
import typing
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from rtm.files import open_private
from rtm.simulate_intakes import Candidate, IntakePlan, plan_intakes
from rtm.simulate_outcomes import EpisodeFacts, EpisodePlan, plan_episode
from schemas.codes import is_valid_npi, npi_check_digit
from schemas.events import RedFlag

__all__ = ["simulate", "write_jsonl", "npi_check_digit", "is_valid_npi", "TIMEZONES"]

TIMEZONES: tuple[tuple[str, int], ...] = (
    ("America/New_York", 30),
    ("America/Chicago", 22),
    ("America/Denver", 9),
    ("America/Phoenix", 8),
    ("America/Los_Angeles", 21),
    ("America/Anchorage", 5),
    ("Pacific/Honolulu", 5),
)

# region -> (ICD-10 codes, exercise ids)
REGIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "lumbar": (
        ("M54.50", "M54.51", "M54.59", "M54.16", "M51.26"),
        (
            "bridge",
            "bird-dog",
            "cat-cow",
            "pelvic-tilt",
            "dead-bug",
            "prone-press-up",
            "knee-to-chest",
        ),
    ),
    "knee": (
        ("M25.561", "M25.562", "M17.11", "M17.12", "S83.511A", "Z96.651"),
        (
            "quad-set",
            "straight-leg-raise",
            "heel-slide",
            "mini-squat",
            "step-up",
            "terminal-knee-extension",
            "clamshell",
        ),
    ),
    "shoulder": (
        ("M25.511", "M25.512", "M75.101", "M75.41", "M19.011"),
        (
            "pendulum",
            "wall-slide",
            "band-external-rotation",
            "scapular-retraction",
            "sleeper-stretch",
            "doorway-stretch",
        ),
    ),
    "neck": (
        ("M54.2", "M50.30", "M54.12"),
        (
            "chin-tuck",
            "upper-trap-stretch",
            "scapular-retraction",
            "cervical-isometrics",
            "thoracic-extension",
        ),
    ),
    "hip": (
        ("M25.551", "M25.552", "M16.11", "M16.12", "M70.61"),
        (
            "clamshell",
            "side-lying-abduction",
            "hip-bridge",
            "sit-to-stand",
            "standing-hip-extension",
        ),
    ),
    "hand": (
        ("G56.01", "G56.02", "M65.311", "M79.641", "S52.501D"),
        (
            "tendon-glides",
            "wrist-flexor-stretch",
            "putty-grip",
            "median-nerve-glide",
            "finger-opposition",
        ),
    ),
    "swallow": (
        ("R13.12", "R13.10", "I69.391"),
        ("chin-tuck-against-resistance", "shaker", "effortful-swallow", "masako", "mendelsohn"),
    ),
}
MSK_REGIONS = ("lumbar", "lumbar", "lumbar", "knee", "knee", "shoulder", "neck", "hip")

ROLE_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("PT", 68),
    ("PTA", 10),
    ("OT", 8),
    ("OTA", 4),
    ("SLP", 3),
    ("MD", 4),
    ("DO", 1),
    ("NP", 1),
    ("PA", 1),
)
POOL_ROLES = {"PT": 20, "PTA": 8, "OT": 6, "OTA": 3, "SLP": 3, "MD": 4, "DO": 1, "NP": 2, "PA": 1}
N_ORGS = 6

COMMERCIAL_PAYERS = ("aetna", "bcbs", "uhc", "cigna", "humana")
PLACES_OF_SERVICE = (("11", 70), ("02", 15), ("10", 15))
END_REASONS = ("discharged", "goals_met", "discharged", "goals_met", "surgery", "insurance")
RED_FLAGS: tuple[str, ...] = typing.get_args(RedFlag)  # the contract's vocabulary, in its order
PROFILES = (("high", 40), ("medium", 30), ("declining", 17), ("dropout", 13))
PAIN_TRENDS = (("improve", 55), ("plateau", 25), ("flare", 20))
# (low, high, weight) monthly clinician minutes: none, <10, 98979, 98980, 98980+98981 x1, x2+
MINUTE_TIERS = ((0, 0, 12), (1, 9, 14), (10, 19, 25), (20, 39, 25), (40, 59, 14), (60, 95, 10))
# Session slots, local seconds after midnight (start window). "late" ends around 23:30-23:59.
SLOTS = {
    "morning": (6 * 3600 + 1800, 9 * 3600 + 1800),
    "midday": (11 * 3600 + 1800, 13 * 3600 + 1800),
    "evening": (18 * 3600, 21 * 3600 + 1800),
    "late": (23 * 3600, 23 * 3600 + 35 * 60),
}
DAY_END = 86399
EARLIEST = 5 * 3600  # no event before 05:00 local: offsets are computed at noon (see _offset)

MBI_ALPHA = "ACDEFGHJKMNPQRTUVWXY"  # Medicare Beneficiary Identifier letters (no S L O I B Z)
MBI_ALNUM = MBI_ALPHA + "0123456789"

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


# --------------------------------------------------------------------------- helpers


def _npi(rng: random.Random, first: str) -> str:
    base = first + "".join(rng.choice("0123456789") for _ in range(8))
    return base + npi_check_digit(base)


def _mbi(rng: random.Random) -> str:
    c = rng.choice
    return "".join(
        (
            c("123456789"),
            c(MBI_ALPHA),
            c(MBI_ALNUM),
            c("0123456789"),
            c(MBI_ALPHA),
            c(MBI_ALNUM),
            c("0123456789"),
            c(MBI_ALPHA),
            c(MBI_ALPHA),
            c("0123456789"),
            c("0123456789"),
        )
    )


def _weighted(rng: random.Random, table: tuple[tuple[Any, int], ...]) -> Any:
    total = sum(w for _, w in table)
    x = rng.random() * total
    for value, w in table:
        x -= w
        if x < 0:
            return value
    return table[-1][0]


_OFFSETS: dict[tuple[str, int], tuple[str, int]] = {}
_ISO_DATES: dict[int, str] = {}


def _offset(tz: str, d: date) -> tuple[str, int]:
    """The zone's UTC offset on local date d, as '+HH:MM' and seconds.

    Taken at local noon: every generated local time is >= 05:00, after any US DST switch
    (02:00), so the noon offset is the offset at that instant.
    """
    key = (tz, d.toordinal())
    hit = _OFFSETS.get(key)
    if hit is None:
        off = datetime.combine(d, time(12), ZoneInfo(tz)).utcoffset()
        assert off is not None
        secs = int(off.total_seconds())
        a = abs(secs)
        hit = (f"{'-' if secs < 0 else '+'}{a // 3600:02d}:{a % 3600 // 60:02d}", secs)
        _OFFSETS[key] = hit
    return hit


def _stamp(tz: str, d: date, secs: int) -> tuple[str, float]:
    """RFC 3339 local timestamp with offset, and its UTC epoch seconds."""
    off_s, off = _offset(tz, d)
    o = d.toordinal()
    iso_d = _ISO_DATES.get(o)
    if iso_d is None:
        iso_d = _ISO_DATES[o] = d.isoformat()
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return (
        f"{iso_d}T{h:02d}:{m:02d}:{s:02d}{off_s}",
        float((o - _EPOCH_ORDINAL) * 86400 + secs - off),
    )


# --------------------------------------------------------------------------- cohort model


class _Clinician:
    __slots__ = ("id", "role", "npi", "org", "supervisor")

    def __init__(self, cid: str, role: str, npi: str, org: int) -> None:
        self.id = cid
        self.role = role
        self.npi = npi
        self.org = org
        self.supervisor: _Clinician | None = None


class _Cohort:
    """Shared, seed-determined world: organisations and clinicians."""

    def __init__(self, seed: int, start: date, days: int) -> None:
        rng = random.Random(f"rtm-sim:{seed}:world")
        self.start = start
        self.days = days
        self.dates = [start + timedelta(days=j) for j in range(days + 16)]
        self.org_npis = [_npi(rng, "1") for _ in range(N_ORGS)]  # type-2 (organisation) NPIs
        self.by_role: dict[str, list[_Clinician]] = {}
        n = 0
        for role, count in POOL_ROLES.items():
            for _ in range(count):
                n += 1
                c = _Clinician(f"c-{n:03d}", role, _npi(rng, rng.choice("12")), n % N_ORGS)
                self.by_role.setdefault(role, []).append(c)
        for role, sup_role in (("PTA", "PT"), ("OTA", "OT")):
            for c in self.by_role[role]:
                sup = rng.choice(self.by_role[sup_role])
                c.supervisor = sup
                c.org = sup.org


class _Episode:
    def __init__(
        self,
        pat: _Patient,
        k: int,
        s: int,
        e: int | None,
        profile: str,
        stop: int | None,
        reason: str | None,
    ) -> None:
        rng = pat.rng
        world = pat.world
        self.k = k
        self.id = f"ep-{pat.num:06d}-{k}"
        self.start = s
        self.end = e  # cohort day index of episode.ended (inclusive data date), or None
        self.reason = reason
        self.profile = profile
        self.stop = stop  # drop-out: no patient data from this day on
        self.start_secs = rng.randint(8 * 3600, 16 * 3600 + 1800)
        self.end_secs = rng.randint(10 * 3600, 18 * 3600 + 1800)

        role = _weighted(rng, ROLE_WEIGHTS)
        self.clin: _Clinician = rng.choice(world.by_role[role])
        self.assistant: _Clinician | None = None
        if role in ("PT", "OT") and rng.random() < 0.25:
            self.assistant = rng.choice(world.by_role["PTA" if role == "PT" else "OTA"])
        if role == "SLP":
            region = "swallow"
        elif role in ("OT", "OTA"):
            region = "hand" if rng.random() < 0.6 else "shoulder"
        else:
            region = rng.choice(MSK_REGIONS)
        self.region = region
        codes, exercises = REGIONS[region]
        self.exercise_pool = exercises
        self.spw = rng.randint(3, 7)
        self.exercises = rng.sample(exercises, rng.randint(3, min(6, len(exercises))))
        dx = [rng.choice(codes)]
        if rng.random() < 0.3:
            other = rng.choice(codes)
            if other != dx[0]:
                dx.append(other)
        renderer = self.clin.supervisor or self.clin  # assistants bill under their supervisor
        if rng.random() < 0.62:
            payer, member = "medicare", _mbi(rng)
        else:
            payer = rng.choice(COMMERCIAL_PAYERS)
            member = rng.choice("WXYZ") + "".join(rng.choice("0123456789") for _ in range(9))
        self.billing = {
            "rendering_npi": renderer.npi,
            "billing_npi": world.org_npis[renderer.org],
            "payer": payer,
            "member_id": member,
            "diagnosis_codes": dx,
            "place_of_service": _weighted(rng, PLACES_OF_SERVICE),
        }
        self.setup_done = rng.random() < 0.92
        self.started_source = (
            {"kind": "ehr", "id": f"ehr-org-{renderer.org + 1}"}
            if rng.random() < 0.4
            else {"kind": "clinician_portal", "id": "portal-web"}
        )

        last = (e if e is not None else world.days + 200) - s  # episode length in days
        horizon = min(last, world.days - 1 - s)  # last simulated episode day
        # Pain trajectory
        self.trend = _weighted(rng, PAIN_TRENDS)
        self.b0 = rng.choice((3, 4, 5, 5, 6, 6, 6, 7, 7, 8, 9))
        self.target = rng.uniform(0.5, 3.0)
        self.tau = rng.uniform(8.0, 25.0)
        self.flare_day = rng.randint(8, 35)
        self.flare_len = rng.randint(3, 8)
        self.flare_amp = rng.uniform(2.5, 4.5)
        self.pain_sd = rng.uniform(0.3, 0.9)
        self.pain_prob = rng.uniform(0.5, 0.95)
        # Inactivity breaks (no data at all for 3-7 days)
        self.breaks: list[tuple[int, int]] = []
        p_break = {"high": 0.1, "medium": 0.4, "declining": 0.35, "dropout": 0.1}[profile]
        if horizon > 10 and rng.random() < p_break:
            b = s + rng.randint(5, horizon - 3)
            self.breaks.append((b, b + rng.randint(3, 7)))
        self.decline_over = rng.uniform(21.0, 50.0)
        # Program update, symptoms
        self.update_day = s + rng.randint(10, 30) if rng.random() < 0.25 else None
        self.checkin_dow = rng.randint(0, 6) if rng.random() < 0.3 else None
        self.red_flag_day = s + rng.randint(2, 40) if rng.random() < 0.025 else None
        self.fall_day = s + rng.randint(2, 40) if rng.random() < 0.02 else None
        # Offline phone windows: (start_epoch, sync_epoch, sync_iso, newest_first)
        self.windows: list[list[Any]] = []
        if horizon > 4 and rng.random() < 0.15:
            for _ in range(rng.choice((1, 1, 2))):
                ws = s + rng.randint(2, horizon)
                sync_day = ws + rng.randint(1, 5)
                sync_iso, sync_ep = _stamp(
                    pat.tz, world.dates[sync_day], rng.randint(7 * 3600, 21 * 3600)
                )
                w0 = _stamp(pat.tz, world.dates[ws], 0)[1]
                self.windows.append([w0, sync_ep, sync_iso, rng.random() < 0.3, 0])
        self.month_plans: dict[tuple[int, int], dict[int, list[tuple[Any, ...]]]] = {}

    # ------------------------------------------------------------------ per-day pieces

    def session_prob(self, t: int) -> float:
        base = self.spw / 7.0
        if self.profile == "high":
            f = 0.93
        elif self.profile == "medium":
            f = 0.62
        elif self.profile == "declining":
            f = max(0.1, 0.95 - 0.85 * t / self.decline_over)
        else:
            f = 0.85
        return min(0.97, base * f)

    def pain(self, t: int, rng: random.Random) -> int:
        if self.trend == "plateau":
            base = float(self.b0)
        else:
            base = self.target + (self.b0 - self.target) * math.exp(-t / self.tau)
            if self.trend == "flare" and self.flare_day <= t < self.flare_day + self.flare_len:
                base += self.flare_amp * (1.0 - 0.5 * (t - self.flare_day) / self.flare_len)
        return max(0, min(10, round(base + rng.gauss(0.0, self.pain_sd))))

    def month_plan(self, pat: _Patient, i: int) -> dict[int, list[tuple[Any, ...]]]:
        d = pat.world.dates[i]
        key = (d.year, d.month)
        plan = self.month_plans.get(key)
        if plan is not None:
            return plan
        rng = pat.rng
        plan = {}
        self.month_plans = {key: plan}  # older months are done
        lo = max(self.start, i)  # first active day of the month from here
        month_end = date(d.year + (d.month == 12), d.month % 12 + 1, 1) - timedelta(days=1)
        hi = i + (month_end - d).days
        if self.end is not None:
            hi = min(hi, self.end)
        lo_t, hi_t, _ = _weighted(rng, tuple(((a, b, w), w) for a, b, w in MINUTE_TIERS))
        target = rng.randint(lo_t, hi_t)
        logs: list[tuple[int, str, bool]] = []
        left = target
        if target >= 10 and rng.random() < 0.88:
            act = "call" if rng.random() < 0.7 else "video"
            m = min(left, rng.randint(5, 20) if act == "call" else rng.randint(10, 25))
            logs.append((m, act, True))
            left -= m
        while left > 0:
            r = rng.random()
            if r < 0.55:
                act, m = "review", rng.randint(3, 10)
            elif r < 0.85:
                act, m = "message", rng.randint(1, 5)
            elif r < 0.95:
                act, m = "call", rng.randint(3, 12)
            else:
                act, m = "video", rng.randint(8, 20)
            m = min(m, left)
            # A call that only reached voicemail is not interactive; so is a rare mis-logged one.
            interactive = act in ("call", "video") and rng.random() < 0.9
            logs.append((m, act, interactive))
            left -= m
        for m, act, inter in logs:
            day = rng.randint(lo, hi)
            secs = rng.randint(8 * 3600, 18 * 3600)
            clin = self.clin
            if self.assistant is not None and rng.random() < 0.4:
                clin = self.assistant
            elif self.clin.supervisor is not None and rng.random() < 0.25:
                clin = self.clin.supervisor
            plan.setdefault(day, []).append((secs, m, act, inter, clin))
        return plan


class _Patient:
    def __init__(self, world: _Cohort, idx: int, seed: int, invalid_ratio: float) -> None:
        self.world = world
        self.num = idx + 1
        self.id = f"p-{self.num:06d}"
        self.rng = rng = random.Random(f"rtm-sim:{seed}:patient:{idx}")
        self.bad_rng = random.Random(f"rtm-sim:{seed}:invalid:{idx}") if invalid_ratio > 0 else None
        self.invalid_ratio = invalid_ratio
        self.n = 0  # event counter -> event ids
        self.n_bad = 0
        self.n_sess = 0
        self.tz = _weighted(rng, TIMEZONES)
        self.slot = _weighted(rng, (("morning", 35), ("midday", 15), ("evening", 38), ("late", 12)))
        self.legacy_app = rng.random() < 0.12  # omits episode_id on patient data
        self.no_session_ids = rng.random() < 0.1
        r = rng.random()
        if r < 0.08:
            self.source: dict[str, str] | None = None
        else:
            os_ = "ios" if r < 0.6 else "android"
            self.source = {"kind": "app", "id": f"{os_}-{rng.getrandbits(32):08x}"}

        days = world.days
        self.episodes: list[_Episode] = []
        s = int(rng.random() ** 1.6 * days * 0.6)
        k = 1
        while s < days and k <= 2:
            profile = _weighted(rng, PROFILES)
            e: int | None = s + rng.randint(21, 110)
            reason: str | None = rng.choice(END_REASONS)
            stop = None
            if profile == "dropout":
                stop = s + rng.randint(4, 25)
                if rng.random() < 0.5 and e is not None:
                    e = min(e, stop + rng.randint(8, 20))
                    reason = "non_adherence"
            if e is not None and e >= days:
                e = None  # still active at the end of the simulation
            ep = _Episode(self, k, s, e, profile, stop, reason)
            self.episodes.append(ep)
            if e is None or rng.random() >= 0.35:
                break
            s = e + rng.randint(2, 14)
            k += 1
        self.ep_idx = 0
        self.intake: IntakePlan | None = None  # opt-in: simulate(..., intakes=share)
        self.plans: dict[str, EpisodePlan] = {}  # opt-in: simulate(..., outcomes=True)

    def plan_outcomes(self, seed: int, star_id: str) -> None:
        """PROMs, visits, pauses and exit reasons of each episode (rtm/simulate_outcomes.py),
        from the patient's own outcome stream."""
        rng = random.Random(f"rtm-sim:{seed}:outcomes:{self.num - 1}")
        for ep in self.episodes:
            facts = EpisodeFacts(
                ep.id,
                ep.start,
                ep.start_secs,
                ep.end,
                ep.stop,
                self.world.days - 1,
                ep.region,
                ep.clin.id,
                ep.clin.id == star_id,
                ep.profile,
                ep.reason,
                ep.fall_day,
            )
            plan = plan_episode(rng, facts, self.num + ep.k)
            ep.fall_day = plan.fall_day
            self.plans[ep.id] = plan

    # ------------------------------------------------------------------ generation

    def day(self, i: int) -> list[tuple[float, dict[str, Any]]]:
        """Events whose patient-local date is cohort day i, with their arrival instants."""
        ep = self._episode_on(i)
        if ep is None:
            return []
        d = self.world.dates[i]
        t = i - ep.start
        # items: (local secs, type, body, patient_data)
        items: list[tuple[int, str, dict[str, Any], bool]] = []
        ep_ref = None if self.legacy_app else ep.id
        if i == ep.start:
            items.extend(self._start_items(ep, ep_ref))
        if ep.update_day == i:
            items.extend(self._program_update(ep))
        plan = self.plans.get(ep.id)
        active = (ep.stop is None or i < ep.stop) and not any(a <= i < b for a, b in ep.breaks)
        if active and not (plan is not None and plan.inactive(i)):
            items.extend(self._patient_items(ep, ep_ref, i, t, d))
        items.extend(self._time_logs(ep, i))
        if plan is not None:
            items.extend(plan.items.get(i, ()))
        if i == ep.start:
            items = [it for it in items if it[1] == "episode.started" or it[0] > ep.start_secs]
        if i == ep.end:
            items = [it for it in items if it[0] < ep.end_secs]
            reason = ep.reason if plan is None else plan.exit_reason
            items.append(
                (ep.end_secs, "episode.ended", {"episode_id": ep.id, "reason": reason}, False)
            )
        items.sort(key=lambda it: it[0])
        return self._envelope(ep, d, items)

    def _episode_on(self, i: int) -> _Episode | None:
        """The episode cohort day i belongs to (episodes ended before it are passed over
        for good), or None before its start and after the last one."""
        eps = self.episodes
        while self.ep_idx < len(eps):
            end = eps[self.ep_idx].end
            if end is None or end >= i:
                break
            self.ep_idx += 1
        if self.ep_idx >= len(eps):
            return None
        ep = eps[self.ep_idx]
        return None if i < ep.start else ep

    def _start_items(
        self, ep: _Episode, ep_ref: str | None
    ) -> list[tuple[int, str, dict[str, Any], bool]]:
        """episode.started, and the first pain report shortly after it."""
        base_secs = min(DAY_END, ep.start_secs + self.rng.randint(300, 1800))
        started: dict[str, Any] = {
            "episode_id": ep.id,
            "clinician_id": ep.clin.id,
            "clinician_role": ep.clin.role,
            "timezone": self.tz,
            "program": {
                "sessions_per_week": ep.spw,
                "exercise_ids": list(ep.exercises),
            },
            "billing": {
                **ep.billing,
                "diagnosis_codes": list(ep.billing["diagnosis_codes"]),
            },
            "setup_education_completed": ep.setup_done,
        }
        if ep.id in self.plans:
            started["body_region"] = self.plans[ep.id].region
        if ep.k == 1 and self.intake is not None and self.intake.episode_names_it:
            started["intake_id"] = self.intake.intake_id  # the episode answers the intake
        return [
            (ep.start_secs, "episode.started", started, False),
            (
                base_secs,
                "pain.reported",
                _body(ep_ref, score=ep.pain(0, self.rng), context="rest"),
                True,
            ),
        ]

    def _program_update(self, ep: _Episode) -> list[tuple[int, str, dict[str, Any], bool]]:
        """The clinician edits the programme (and logs the time it took)."""
        rng = self.rng
        ep.spw = max(3, min(7, ep.spw + rng.choice((-2, -1, 1, 2))))
        exs = list(ep.exercises)
        extra = [x for x in ep.exercise_pool if x not in exs]
        if extra and rng.random() < 0.7:
            exs[rng.randrange(len(exs))] = rng.choice(extra)
        ep.exercises = exs
        secs = rng.randint(9 * 3600, 17 * 3600)
        return [
            (
                secs,
                "program.updated",
                {
                    "episode_id": ep.id,
                    "program": {"sessions_per_week": ep.spw, "exercise_ids": list(exs)},
                },
                False,
            ),
            (
                secs + 60,
                "clinician.time_logged",
                {
                    "episode_id": ep.id,
                    "clinician_id": ep.clin.id,
                    "clinician_role": ep.clin.role,
                    "minutes": rng.randint(3, 8),
                    "activity": "program_edit",
                    "interactive": False,
                },
                False,
            ),
        ]

    def _patient_items(
        self, ep: _Episode, ep_ref: str | None, i: int, t: int, d: date
    ) -> list[tuple[Any, ...]]:
        """What the patient sends on an active day: sessions, pain, check-ins, red flags."""
        rng = self.rng
        items: list[tuple[Any, ...]] = []
        n_sess = 1 if rng.random() < ep.session_prob(t) else 0
        if n_sess and ep.spw >= 5 and rng.random() < 0.06:
            n_sess = 2
        slots = [self.slot if rng.random() < 0.8 else rng.choice(tuple(SLOTS))]
        if n_sess == 2:
            slots.append("evening" if slots[0] in ("morning", "midday") else "morning")
        for slot in slots[:n_sess]:
            items.extend(self._session(ep, ep_ref, t, slot))
        if not n_sess and rng.random() < 0.2:
            items.append(
                (
                    rng.randint(7 * 3600, 22 * 3600),
                    "pain.reported",
                    _body(
                        ep_ref,
                        score=ep.pain(t, rng),
                        context=rng.choice(("rest", "activity", None)),
                    ),
                    True,
                )
            )
        if ep.checkin_dow is not None and d.weekday() == ep.checkin_dow:
            items.append(
                (
                    rng.randint(8 * 3600, 20 * 3600),
                    "symptom.reported",
                    _body(ep_ref, red_flags=[], fall=False),
                    True,
                )
            )
        if ep.red_flag_day == i:
            flags = rng.sample(RED_FLAGS, rng.choice((1, 1, 2)))
            items.append(
                (
                    rng.randint(7 * 3600, 22 * 3600),
                    "symptom.reported",
                    _body(ep_ref, red_flags=flags, fall=False),
                    True,
                )
            )
        if ep.fall_day == i:
            flags = ["major_trauma"] if rng.random() < 0.2 else []
            items.append(
                (
                    rng.randint(7 * 3600, 22 * 3600),
                    "symptom.reported",
                    _body(ep_ref, red_flags=flags, fall=True),
                    True,
                )
            )
        return items

    def _time_logs(self, ep: _Episode, i: int) -> list[tuple[int, str, dict[str, Any], bool]]:
        """The clinicians' time logged on day i (the month's plan)."""
        items: list[tuple[int, str, dict[str, Any], bool]] = []
        for secs, m, act, inter, clin in ep.month_plan(self, i).get(i, ()):
            body = {"episode_id": ep.id} if self.rng.random() < 0.95 else {}
            body.update(
                clinician_id=clin.id,
                clinician_role=clin.role,
                minutes=m,
                activity=act,
                interactive=inter,
            )
            items.append((secs, "clinician.time_logged", body, False))
        return items

    def _session(
        self, ep: _Episode, ep_ref: str | None, t: int, slot: str
    ) -> list[tuple[Any, ...]]:
        rng = self.rng
        a, b = SLOTS[slot]
        start = rng.randint(a, b)
        self.n_sess += 1
        sid = None
        if not self.no_session_ids and rng.random() > 0.05:
            sid = f"{self.id}-s{self.n_sess}"
        chosen = rng.sample(ep.exercises, rng.randint(min(2, len(ep.exercises)), len(ep.exercises)))
        raw: list[tuple[int, dict[str, Any]]] = []
        off = 0
        for ex in chosen:
            body: dict[str, Any] = {} if ep_ref is None else {"episode_id": ep_ref}
            body["exercise_id"] = ex
            if sid is not None:
                body["session_id"] = sid
            r = rng.random()
            sets = rng.randint(1, 4)
            reps = rng.randint(6, 15)
            dur = min(900, sets * reps * rng.randint(3, 6))
            if r < 0.7:
                body.update(sets=sets, reps=reps, duration_s=dur)
            elif r < 0.85:
                body["duration_s"] = dur  # holds / stretches: time only
            elif r < 0.95:
                body.update(sets=sets, reps=reps)
            raw.append((off, body))
            off += dur + rng.randint(20, 90)
        pain_body = None
        if rng.random() < ep.pain_prob:
            pain_body = _body(
                ep_ref,
                score=ep.pain(t, rng),
                context="exercise" if rng.random() < 0.7 else "activity",
            )
            raw.append((off + rng.randint(30, 240), pain_body))
        span = raw[-1][0]
        start = max(EARLIEST, min(start, DAY_END - span))
        return [
            (start + o, "pain.reported" if body is pain_body else "exercise.completed", body, True)
            for o, body in raw
        ]

    def _envelope(
        self, ep: _Episode, d: date, items: list[tuple[Any, ...]]
    ) -> list[tuple[float, dict[str, Any]]]:
        rng = self.rng
        out: list[tuple[float, dict[str, Any]]] = []
        pid = self.id
        tz = self.tz
        for secs, typ, body, patient_data in items:
            iso, epoch = _stamp(tz, d, secs)
            self.n += 1
            ev: dict[str, Any] = {
                "event_id": f"{pid}-{self.n}",
                "schema_version": 1,
                "type": typ,
                "patient_id": pid,
                "occurred_at": iso,
            }
            if patient_data:
                arrival = None
                for w in ep.windows:
                    if w[0] <= epoch < w[1]:
                        ev["recorded_at"] = w[2]
                        w[4] += 1
                        arrival = w[1] + (600.0 - 0.001 * w[4] if w[3] else 0.001 * w[4])
                        break
                if arrival is None:
                    r = rng.random()
                    arrival = epoch + (
                        rng.uniform(0.2, 8.0) if r < 0.96 else rng.uniform(60.0, 5400.0)
                    )
                if self.source is not None:
                    ev["source"] = self.source
            elif typ == "episode.started":
                arrival = epoch  # exactly: every event of the episode occurs after it
                ev["source"] = ep.started_source
            else:
                arrival = epoch + rng.uniform(0.1, 3.0)
                ev["source"] = {"kind": "clinician_portal", "id": "portal-web"}
            ev.update(body)
            out.append((arrival, ev))
            if rng.random() < 0.01:  # retry after a lost ack: the exact same event again
                out.append((arrival + rng.uniform(0.5, 900.0), dict(ev)))
            if self.bad_rng is not None and self.bad_rng.random() < self.invalid_ratio:
                out.append((arrival + 0.25, self._invalid(ev)))
        return out

    def _invalid(self, ev: dict[str, Any]) -> dict[str, Any]:
        rng = self.bad_rng
        assert rng is not None
        self.n_bad += 1
        bad = dict(ev)
        bad["event_id"] = f"{self.id}-x{self.n_bad}"
        kind = rng.randrange(8)
        if kind == 0:
            bad["occurred_at"] = ev["occurred_at"][:19]  # naive timestamp
        elif kind == 1:
            bad = {k: bad[k] for k in ("event_id", "schema_version", "patient_id", "occurred_at")}
            bad.update(type="pain.reported", score=11)
        elif kind == 2:
            bad["type"] = "exercise.skipped"
        elif kind == 3:
            bad["event_id"] = f"{self.id} x{self.n_bad}/!"
        elif kind == 4:
            bad["patient_id"] = f"jane.doe{self.n_bad}@example.com"  # PHI-like, bad charset
        elif kind == 5:
            bad["schema_version"] = 2
        elif kind == 6:
            del bad["occurred_at"]
        else:
            bad = {k: bad[k] for k in ("event_id", "schema_version", "patient_id", "occurred_at")}
            bad.update(type="exercise.completed", exercise_id="bridge", sets=-1, reps=5000)
        return bad


def _body(ep_ref: str | None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {} if ep_ref is None else {"episode_id": ep_ref}
    for k, v in fields.items():
        if v is not None:
            body[k] = v
    return body


# --------------------------------------------------------------------------- API


DEFAULT_START = date(2026, 9, 1)


def simulate(
    patients: int,
    days: int,
    seed: int,
    start: date = DEFAULT_START,
    invalid_ratio: float = 0.0,
    intakes: float = 0.0,
    outcomes: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield a synthetic cohort's events (contract v1 dicts) in gateway arrival order.

    ``invalid_ratio``: after each valid event, with this probability, an invalid event
    (naive timestamp, score 11, unknown type, bad id, PHI-like patient id, schema_version 2,
    missing occurred_at, out-of-bounds sets/reps) is also sent. The valid events do not
    depend on it.

    ``intakes``: the share of the patients whose first episode starts at least a week into
    the window who were screened first (``intake.submitted``, then an ``intake.contacted``
    or the ``episode.started`` naming the intake, on time, late or never; every route):
    rtm/simulate_intakes.py. At 0 (the default) the cohort has no intake; otherwise only the
    intake events and the ``intake_id`` of the episodes that answer one are added.

    ``outcomes``: episodes get a body region, PROMs at the timepoints, visits, falls and
    clinician pauses followed by resumes, every exit reason, and a planted effect (the first
    PT with the most episodes and the more adherent patients improve more):
    rtm/simulate_outcomes.py. Off (the
    default), the cohort is the same as without the option.
    """
    if patients < 0 or days < 0:
        raise ValueError("patients and days must be >= 0")
    if not 0.0 <= invalid_ratio <= 1.0:
        raise ValueError("invalid_ratio must be within [0, 1]")
    if not 0.0 <= intakes <= 1.0:
        raise ValueError("intakes must be within [0, 1]")
    return _run(patients, days, seed, start, invalid_ratio, intakes, outcomes)


def star_clinician(pats: list[_Patient]) -> str:
    """The clinician whose patients improve more with ``outcomes`` on: the PT with the most
    episodes (the lowest id of a tie), so the effect shows with the most patients."""
    counts: dict[str, int] = {}
    for p in pats:
        for ep in p.episodes:
            if ep.clin.role == "PT":
                counts[ep.clin.id] = counts.get(ep.clin.id, 0) + 1
    return min(counts, key=lambda c: (-counts[c], c)) if counts else ""


def _intake_schedule(
    world: _Cohort, pats: list[_Patient], seed: int, share: float
) -> dict[int, list[tuple[float, dict[str, Any]]]]:
    """Plan the screened patients' intakes (``p.intake``); their events by cohort day."""
    candidates = []
    for p in pats:
        if not p.episodes:
            continue
        ep = p.episodes[0]
        epoch = _stamp(p.tz, world.dates[ep.start], ep.start_secs)[1]
        candidates.append(
            Candidate(p.num - 1, p.id, p.tz, p.source, ep.start, epoch, ep.region, ep.clin.id)
        )
    by_day: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    for idx, plan in plan_intakes(candidates, seed, share, world.start, world.days).items():
        pats[idx].intake = plan
        for day, arrival, ev in plan.events:
            by_day.setdefault(day, []).append((arrival, ev))
    return by_day


def _run(
    patients: int,
    days: int,
    seed: int,
    start: date,
    invalid_ratio: float,
    intakes: float,
    outcomes: bool,
) -> Iterator[dict[str, Any]]:
    world = _Cohort(seed, start, days)
    pats = [_Patient(world, k, seed, invalid_ratio) for k in range(patients)]
    if outcomes:
        star = star_clinician(pats)
        for p in pats:
            p.plan_outcomes(seed, star)
    intake_days = _intake_schedule(world, pats, seed, intakes) if intakes > 0 else {}
    heap: list[tuple[float, int, dict[str, Any]]] = []
    push, pop = heapq.heappush, heapq.heappop
    seq = 0
    start_ord = start.toordinal() - _EPOCH_ORDINAL
    for i in range(days):
        for p in pats:
            for arrival, ev in p.day(i):
                push(heap, (arrival, seq, ev))
                seq += 1
        for arrival, ev in intake_days.get(i, ()):  # each on its local date, as p.day(i)
            push(heap, (arrival, seq, ev))
            seq += 1
        # Later local dates start no earlier than UTC midnight of date i+1 minus 14 h
        # (UTC+14 is the largest offset there is); everything before that is final.
        watermark = (start_ord + i + 1) * 86400.0 - 14 * 3600
        while heap and heap[0][0] < watermark:
            yield pop(heap)[2]
    while heap:
        yield pop(heap)[2]


def write_jsonl(events: Iterable[dict[str, Any]], path: Path) -> int:
    """Write events as JSON Lines (orjson, one object per line); return how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    dumps = orjson.dumps
    opt = orjson.OPT_APPEND_NEWLINE
    with open_private(path, buffering=1 << 20) as fh:
        write = fh.write
        for ev in events:
            write(dumps(ev, option=opt))
            n += 1
    return n


NAMESPACED_FIELDS = ("event_id", "patient_id", "episode_id", "clinician_id", "intake_id")


def namespaced(events: Iterable[dict[str, Any]], prefix: str) -> Iterator[dict[str, Any]]:
    """The same cohort under other ids: ``simulate`` gives the same ids for every seed and
    size, so a demo run, a test or a bench phase prefixes them to stay apart."""
    for ev in events:
        ev = dict(ev)
        for f in NAMESPACED_FIELDS:
            if isinstance(ev.get(f), str):
                ev[f] = f"{prefix}{ev[f]}"
        yield ev


# --------------------------------------------------------------------------- demographics

_SYNTH_FIRST = (
    "ALPHA",
    "BRAVO",
    "CHARLIE",
    "DELTA",
    "ECHO",
    "FOXTROT",
    "GOLF",
    "HOTEL",
    "INDIA",
    "JULIETT",
    "KILO",
    "LIMA",
    "MIKE",
    "NOVEMBER",
    "OSCAR",
    "PAPA",
)
_SYNTH_STATES = ("CO", "IL", "NY", "TX", "AZ", "CA", "WA", "FL")
DEMOGRAPHICS_COLUMNS = (
    "patient_id",
    "last_name",
    "first_name",
    "middle_name",
    "birth_date",
    "sex",
    "address1",
    "address2",
    "city",
    "state",
    "zip",
    "member_id",
)


def synthetic_demographics(patient_ids: Iterable[str], seed: int = 1) -> list[dict[str, str]]:
    """Clearly fake demographics for a cohort (tests, the demo): every last name is
    ``SYNTHETIC``, cities are ``TESTVILLE``, streets ``TEST ST``, ZIP codes 99xxx (not
    assigned to any post office). Deterministic per seed and patient id."""
    out: list[dict[str, str]] = []
    for pid in sorted(set(patient_ids)):
        rng = random.Random(f"{seed}:{pid}")
        born = date(1938, 1, 1) + timedelta(days=rng.randrange(0, 365 * 27))
        out.append(
            {
                "patient_id": pid,
                "last_name": "SYNTHETIC",
                "first_name": rng.choice(_SYNTH_FIRST),
                "middle_name": "",
                "birth_date": born.isoformat(),
                "sex": rng.choice("MF"),
                "address1": f"{rng.randrange(1, 9999)} TEST ST",
                "address2": "",
                "city": "TESTVILLE",
                "state": rng.choice(_SYNTH_STATES),
                "zip": f"99{rng.randrange(0, 1000):03d}",
                "member_id": "",
            }
        )
    return out


def demographics_csv(rows: Iterable[dict[str, str]]) -> str:
    """The rows as the CSV ``rtm billing demographics load`` reads."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=DEMOGRAPHICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
