"""The simulator's outcome measures (issue 19 item 7; rtm/simulate_outcomes.py): behind
``outcomes=True`` a cohort gets body regions, PROMs of the region's primary instrument at the
timepoints (some with missing items, a few invalid), visits in person and virtual, falls
followed by a clinician's resume, every exit reason, and a planted effect that the events
themselves show when scored with outcomes/score.py: the busiest PT's patients and the more
adherent patients reach the MCID more often. Off, the cohort is byte for byte what it was."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter, defaultdict
from fractions import Fraction
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from outcomes.instruments import INSTRUMENTS, change, score_form
from outcomes.score import score_rows
from rtm.cli.root import main
from rtm.simulate import simulate
from schemas.events import EXIT_REASONS, validate_event

SEED, PATIENTS, DAYS = 7, 400, 120
START = dt.date(2026, 9, 1)
PRIMARY = {"hip": "lefs", "knee": "lefs", "ankle_foot": "lefs"}  # else psfs (no licences)


@pytest.fixture(scope="module")
def cohort() -> list[dict[str, Any]]:
    return list(simulate(PATIENTS, DAYS, SEED, start=START, outcomes=True))


@pytest.fixture(scope="module")
def episodes(cohort: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["episode_id"]: e for e in cohort if e["type"] == "episode.started"}


def _day(e: dict[str, Any], episode: dict[str, Any]) -> int:
    return (
        dt.datetime.fromisoformat(e["occurred_at"]).date()
        - dt.datetime.fromisoformat(episode["occurred_at"]).date()
    ).days


def test_off_the_cohort_is_unchanged() -> None:
    # sha256 of the JSONL of simulate(60, 75, 4, invalid_ratio=0.01, intakes=0.3) as main
    # (5aca495) wrote it before the option existed
    def digest(events: Any) -> str:
        return hashlib.sha256(b"".join(orjson.dumps(e) + b"\n" for e in events)).hexdigest()

    off = list(simulate(60, 75, 4, invalid_ratio=0.01, intakes=0.3))
    assert digest(off) == "6aba9b2177d0df116224ede67859fe542a3f9bce71fd639afce6acf7ad220b21"
    new_types = {"assessment.completed", "visit.completed", "program.paused", "program.resumed"}
    assert not [e for e in off if e.get("type") in new_types]
    assert not [e for e in off if e.get("type") == "episode.started" and "body_region" in e]


def test_every_event_is_valid_and_each_kind_occurs(cohort: list[dict[str, Any]]) -> None:
    for e in cohort:
        assert not isinstance(validate_event(e), list), e
    types = Counter(e["type"] for e in cohort)
    assert types["assessment.completed"] > 2 * types["episode.started"]
    ended = Counter(e["reason"] for e in cohort if e["type"] == "episode.ended")
    assert set(ended) == set(EXIT_REASONS)  # every exit reason of the contract
    modes = Counter(e["mode"] for e in cohort if e["type"] == "visit.completed")
    assert modes["in_person"] > modes["virtual"] > 0
    assert types["program.paused"] > 0


def test_proms_at_the_timepoints_of_the_primary_instrument(
    cohort: list[dict[str, Any]], episodes: dict[str, dict[str, Any]]
) -> None:
    by_episode: dict[str, list[dict[str, Any]]] = defaultdict(list)
    ends = {e["episode_id"]: e for e in cohort if e["type"] == "episode.ended"}
    for e in cohort:
        if e["type"] == "assessment.completed":
            by_episode[e["episode_id"]].append(e)
    reasons: Counter[str | None] = Counter()
    missing_but_valid = 0
    for ep_id, forms in by_episode.items():
        ep = episodes[ep_id]
        assert {f["instrument"] for f in forms} == {PRIMARY.get(ep["body_region"], "psfs")}
        days = sorted({_day(f, ep) for f in forms})
        assert 0 <= days[0] <= 7  # the baseline
        end = _day(ends[ep_id], ep) if ep_id in ends else None
        if len(days) > 1:
            assert 25 <= days[1] <= 35 or days[1] == end  # week 4, or a short episode's final
        if end is not None and end > 7 and ep_id in ends:
            assert days[-1] <= end
        for f in forms:
            scored = score_form(f["instrument"], f["answers"])
            reasons[scored.reason] += 1
            missing_but_valid += scored.valid and None in f["answers"].values()
    assert reasons["too_many_missing"] > 0 and missing_but_valid > 0
    assert reasons["too_many_missing"] < 0.06 * sum(reasons.values())  # "a few"


def test_each_fall_is_followed_by_a_clinicians_resume(
    cohort: list[dict[str, Any]], episodes: dict[str, dict[str, Any]]
) -> None:
    resumes = {e["episode_id"]: e for e in cohort if e["type"] == "program.resumed"}
    falls = [e for e in cohort if e["type"] == "symptom.reported" and e.get("fall")]
    followed = [
        f
        for f in falls
        if f.get("episode_id") in resumes
        and resumes[f["episode_id"]]["occurred_at"] > f["occurred_at"]
        and resumes[f["episode_id"]]["clinician_id"] == episodes[f["episode_id"]]["clinician_id"]
    ]
    assert len(falls) >= 5 and len(followed) >= 0.8 * len(falls)


def _outcomes(
    cohort: list[dict[str, Any]], episodes: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per episode with a baseline and a later score (scored by ``rtm assessments score``'s
    outcomes.score): its clinician, MCID reached, and its adherence (sessions on distinct
    days over the prescribed ones)."""
    forms = [validate_event(e) for e in cohort if e["type"] == "assessment.completed"]
    scored = {
        r["event_id"]: r["score"] for r in score_rows(f for f in forms if not isinstance(f, list))
    }
    scores: dict[str, list[tuple[str, Fraction]]] = defaultdict(list)
    session_days: dict[str, set[str]] = defaultdict(set)
    last: dict[str, str] = {}
    for e in sorted(cohort, key=lambda e: (e["occurred_at"], e["event_id"])):
        ep_id = e.get("episode_id")
        if ep_id not in episodes:
            continue
        last[ep_id] = e["occurred_at"]
        if e["type"] == "exercise.completed":
            session_days[ep_id].add(e["occurred_at"][:10])
        if e["type"] == "assessment.completed":
            if scored[e["event_id"]] is not None:
                scores[ep_id].append((e["occurred_at"], Fraction(str(scored[e["event_id"]]))))
    rows = []
    for ep_id, series in scores.items():
        ep = episodes[ep_id]
        base = [(t, v) for t, v in series if _day({"occurred_at": t}, ep) <= 7]
        if not base or series[-1][0] <= base[0][0]:
            continue
        instrument = ep["body_region"] in PRIMARY and "lefs" or "psfs"
        delta = change(instrument, base[0][1], series[-1][1])
        span = max(1, _day({"occurred_at": last[ep_id]}, ep) + 1)
        prescribed = span * ep["program"]["sessions_per_week"] / 7
        rows.append(
            {
                "clinician": ep["clinician_id"],
                "mcid": delta >= INSTRUMENTS[instrument].mcid,
                "adherence": min(1.0, len(session_days[ep_id]) / prescribed),
                "episode_id": ep_id,
            }
        )
    return rows


def _rate(rows: list[dict[str, Any]]) -> float:
    return sum(r["mcid"] for r in rows) / len(rows)


def test_the_planted_effects_are_in_the_events(
    cohort: list[dict[str, Any]], episodes: dict[str, dict[str, Any]]
) -> None:
    rows = _outcomes(cohort, episodes)
    # the star: the PT with the most episodes (the lowest id of a tie)
    pts = Counter(e["clinician_id"] for e in episodes.values() if e["clinician_role"] == "PT")
    star = min(pts, key=lambda c: (-pts[c], c))
    mine = [r for r in rows if r["clinician"] == star]
    others = [r for r in rows if r["clinician"] != star]
    by_clinician: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in others:
        by_clinician[r["clinician"]].append(r)
    assert len(mine) >= 8, len(mine)
    # the star's MCID rate is above everyone else's together and above each clinician's
    # with at least half as many episodes
    assert _rate(mine) > _rate(others) + 0.2, (_rate(mine), _rate(others))
    peers = [v for v in by_clinician.values() if 2 * len(v) >= len(mine)]
    assert peers and all(_rate(mine) > _rate(v) for v in peers)
    ordered = sorted(rows, key=lambda r: (r["adherence"], r["episode_id"]))
    n = len(ordered)
    tertiles = [[r for i, r in enumerate(ordered) if 3 * i // n == k] for k in range(3)]
    rates = [_rate(t) for t in tertiles]
    assert rates[2] > rates[0] + 0.1, rates


def test_the_command_line_option(tmp_path: Any) -> None:
    out = tmp_path / "c.jsonl"
    args = ["simulate", "--patients", "20", "--days", "40", "--seed", "3", "--out", str(out)]
    assert CliRunner().invoke(main, [*args, "--outcomes"]).exit_code == 0
    with_option = Counter(orjson.loads(line)["type"] for line in out.read_bytes().splitlines())
    assert CliRunner().invoke(main, args).exit_code == 0
    without = Counter(orjson.loads(line)["type"] for line in out.read_bytes().splitlines())
    assert with_option["assessment.completed"] > 0 and with_option["visit.completed"] > 0
    assert without["assessment.completed"] == without["visit.completed"] == 0
