"""The synthetic cohort generator: deterministic, contract-valid, and messy in the right ways."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from rtm.simulate import is_valid_npi, npi_check_digit, simulate, write_jsonl
from schemas.events import validate_event

# 2026-09-20 + 70 days spans the US DST change of 2026-11-01.
START = date(2026, 9, 20)


@pytest.fixture(scope="module")
def cohort() -> list[dict]:
    return list(simulate(300, 70, seed=11, start=START))


@pytest.fixture(scope="module")
def started(cohort: list[dict]) -> dict[str, dict]:
    return {e["episode_id"]: e for e in cohort if e["type"] == "episode.started"}


def _dt(s: str) -> datetime:
    return datetime.fromisoformat(s)


def test_npi_luhn() -> None:
    assert npi_check_digit("123456789") == "3"  # CMS's published example 1234567893
    assert is_valid_npi("1234567893")
    assert not is_valid_npi("1234567890")


def test_same_seed_same_bytes(tmp_path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    n = write_jsonl(simulate(40, 30, seed=5), a)
    assert write_jsonl(simulate(40, 30, seed=5), b) == n > 0
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_bytes().splitlines()) == n
    write_jsonl(simulate(40, 30, seed=6), c)
    assert a.read_bytes() != c.read_bytes()


def test_every_event_validates(cohort: list[dict]) -> None:
    for ev in cohort:
        res = validate_event(ev)
        assert not isinstance(res, list), (ev, res)


def test_counts_by_type_plausible(cohort: list[dict]) -> None:
    c = Counter(e["type"] for e in cohort)
    assert 300 <= c["episode.started"] <= 400  # every patient, some twice
    assert c["exercise.completed"] > 2 * c["pain.reported"] > 0
    assert c["clinician.time_logged"] > c["episode.started"]
    assert c["episode.ended"] > 20
    assert c["program.updated"] > 10
    assert c["symptom.reported"] > 50
    assert set(c) == {
        "episode.started",
        "program.updated",
        "exercise.completed",
        "pain.reported",
        "symptom.reported",
        "clinician.time_logged",
        "episode.ended",
    }


def test_ids_unique_pseudonymous_and_exact_duplicates(cohort: list[dict]) -> None:
    by_id: dict[str, list[dict]] = defaultdict(list)
    for e in cohort:
        by_id[e["event_id"]].append(e)
        assert e["patient_id"].startswith("p-") and len(e["patient_id"]) == 8
    dups = {k: v for k, v in by_id.items() if len(v) > 1}
    assert 0.003 < len(dups) / len(by_id) < 0.03
    for copies in dups.values():
        assert len(copies) == 2 and orjson.dumps(copies[0]) == orjson.dumps(copies[1])


def test_episode_fields(started: dict[str, dict]) -> None:
    roles = Counter(e["clinician_role"] for e in started.values())
    assert roles.most_common(1)[0][0] == "PT" and len(roles) >= 4
    tzs = {e["timezone"] for e in started.values()}
    assert {"America/New_York", "America/Phoenix", "Pacific/Honolulu"} <= tzs
    payers = Counter(e["billing"]["payer"] for e in started.values())
    assert payers["medicare"] > 0 and len(payers) > 2
    for e in started.values():
        assert is_valid_npi(e["billing"]["rendering_npi"])
        assert is_valid_npi(e["billing"]["billing_npi"])
        assert 3 <= e["program"]["sessions_per_week"] <= 7
        assert e["billing"]["place_of_service"] in ("11", "02", "10")
    assert {"M54.50", "M25.561", "M17.11"} & {
        c for e in started.values() for c in e["billing"]["diagnosis_codes"]
    }
    setup = [e["setup_education_completed"] for e in started.values()]
    assert 0.8 < sum(setup) / len(setup) < 1.0


def test_episode_started_arrives_first_and_episodes_never_overlap(
    cohort: list[dict], started: dict[str, dict]
) -> None:
    seen_start: set[str] = set()
    starts_seen: dict[str, list[datetime]] = defaultdict(list)
    ended: dict[str, dict] = {}
    for e in cohort:
        if e["type"] == "episode.started":
            seen_start.add(e["episode_id"])
            starts_seen[e["patient_id"]].append(_dt(e["occurred_at"]))
            continue
        if "episode_id" in e:
            assert e["episode_id"] in seen_start, e
        # Also events without episode_id: their episode's start has already arrived.
        at = _dt(e["occurred_at"])
        assert any(s < at for s in starts_seen[e["patient_id"]]), e
        if e["type"] == "episode.ended":
            ended[e["episode_id"]] = e
    # Per patient: episodes are sequential; the next starts on a later local date.
    per_patient: dict[str, list[dict]] = defaultdict(list)
    for s in started.values():
        per_patient[s["patient_id"]].append(s)
    seconds = 0
    for eps in per_patient.values():
        eps.sort(key=lambda s: _dt(s["occurred_at"]))
        for a, b in zip(eps, eps[1:], strict=False):
            seconds += 1
            end = ended[a["episode_id"]]
            assert _dt(end["occurred_at"]).date() < _dt(b["occurred_at"]).date()
    assert seconds >= 5  # some patients start a second episode


def test_patient_data_inside_its_episode(cohort: list[dict], started: dict[str, dict]) -> None:
    ended = {e["episode_id"]: e for e in cohort if e["type"] == "episode.ended"}
    spans: dict[str, list[tuple]] = defaultdict(list)
    for eid, s in started.items():
        end = ended.get(eid)
        spans[s["patient_id"]].append(
            (eid, _dt(s["occurred_at"]), _dt(end["occurred_at"]) if end else None)
        )
    without_episode = 0
    for e in cohort:
        if e["type"] in ("episode.started", "episode.ended"):
            continue
        at = _dt(e["occurred_at"])
        owners = [
            eid for eid, s, en in spans[e["patient_id"]] if s < at and (en is None or at < en)
        ]
        assert len(owners) == 1, e
        if "episode_id" in e:
            assert e["episode_id"] == owners[0]
        else:
            without_episode += 1
    assert without_episode > 100


def test_offsets_are_local_with_dst_change(cohort: list[dict], started: dict[str, dict]) -> None:
    tz_of = {s["patient_id"]: s["timezone"] for s in started.values()}
    offsets: dict[str, set[str]] = defaultdict(set)
    for e in cohort:
        at = _dt(e["occurred_at"])
        tz = ZoneInfo(tz_of[e["patient_id"]])
        assert at.utcoffset() == at.astimezone(tz).utcoffset(), e
        offsets[tz_of[e["patient_id"]]].add(e["occurred_at"][-6:])
    assert offsets["America/New_York"] == {"-04:00", "-05:00"}
    assert offsets["America/Los_Angeles"] == {"-07:00", "-08:00"}
    assert offsets["America/Phoenix"] == {"-07:00"}
    assert offsets["Pacific/Honolulu"] == {"-10:00"}


def test_late_evening_events_cross_utc_midnight(cohort: list[dict]) -> None:
    late = [
        e for e in cohort if e["type"] == "exercise.completed" and _dt(e["occurred_at"]).hour == 23
    ]
    assert len(late) > 50
    crossing = [
        e
        for e in late
        if _dt(e["occurred_at"]).astimezone(ZoneInfo("UTC")).date() != _dt(e["occurred_at"]).date()
    ]
    assert crossing
    assert any(_dt(e["occurred_at"]).strftime("%H:%M") >= "23:30" for e in late)


def test_late_synced_batches_and_out_of_order(cohort: list[dict]) -> None:
    late = [e for e in cohort if "recorded_at" in e]
    assert len(late) > 50
    lag_days = [(_dt(e["recorded_at"]) - _dt(e["occurred_at"])) / timedelta(days=1) for e in late]
    assert min(lag_days) > 0 and max(lag_days) > 2
    assert all(
        e["type"] in ("exercise.completed", "pain.reported", "symptom.reported") for e in late
    )
    # Arrival order is roughly chronological, yet many events arrive after a newer one.
    newest: dict[str, datetime] = {}
    behind = 0
    for e in cohort:
        at = _dt(e["occurred_at"])
        prev = newest.get(e["patient_id"])
        if prev is not None and at < prev:
            behind += 1
        else:
            newest[e["patient_id"]] = at
    assert len(late) < behind < len(cohort) * 0.1
    days = [_dt(e["occurred_at"]).date() for e in cohort if "recorded_at" not in e]
    inversions = sum(1 for a, b in zip(days, days[1:], strict=False) if b < a - timedelta(days=1))
    assert inversions < len(days) * 0.02


def test_adherence_pain_and_symptoms_vary(cohort: list[dict], started: dict[str, dict]) -> None:
    data_days: dict[str, set[date]] = defaultdict(set)
    pains: dict[str, list[tuple[date, int]]] = defaultdict(list)
    for e in cohort:
        if e["type"] in ("exercise.completed", "pain.reported", "symptom.reported"):
            data_days[e["patient_id"]].add(_dt(e["occurred_at"]).date())
        if e["type"] == "pain.reported":
            pains[e["patient_id"]].append((_dt(e["occurred_at"]).date(), e["score"]))
    # Inactivity: some patient has a gap of >= 4 local days between data days.
    gaps = 0
    for ds in data_days.values():
        s = sorted(ds)
        gaps += any((b - a).days >= 4 for a, b in zip(s, s[1:], strict=False))
    assert gaps > 20
    # Pain: high scores, and jumps of >= 2 over the median of the previous 7 local days.
    scores = [sc for v in pains.values() for _, sc in v]
    assert max(scores) >= 9 and min(scores) == 0
    jumps = 0
    for reports in pains.values():
        for d, sc in reports:
            window = [x for dd, x in reports if d - timedelta(days=7) <= dd < d]
            if len(window) >= 2 and sc >= statistics.median(window) + 2:
                jumps += 1
                break
    assert jumps > 10
    symptoms = [e for e in cohort if e["type"] == "symptom.reported"]
    assert any(e["red_flags"] for e in symptoms)
    assert any(e["fall"] for e in symptoms)
    flagged = {e["patient_id"] for e in symptoms if e["red_flags"] or e["fall"]}
    assert len(flagged) < 0.1 * len(started)
    sessions = Counter(e.get("session_id") for e in cohort if e["type"] == "exercise.completed")
    assert sessions[None] > 0
    assert statistics.mean(n for s, n in sessions.items() if s is not None) > 2


def test_clinician_minutes_cover_all_treatment_codes(cohort: list[dict]) -> None:
    minutes: Counter[tuple[str, str]] = Counter()
    interactive: set[tuple[str, str]] = set()
    roles = Counter()
    for e in cohort:
        if e["type"] == "clinician.time_logged":
            key = (e["patient_id"], e["occurred_at"][:7])
            minutes[key] += e["minutes"]
            roles[e["clinician_role"]] += 1
            if e["interactive"]:
                interactive.add(key)
    billable = [m for k, m in minutes.items() if k in interactive]
    assert any(10 <= m < 20 for m in billable)  # 98979
    assert any(20 <= m < 40 for m in billable)  # 98980
    assert any(m >= 60 for m in billable)  # 98980 + 2 x 98981
    assert any(m < 10 for m in minutes.values())
    assert any(k not in interactive and m >= 20 for k, m in minutes.items())
    assert roles["PTA"] > 0


def test_invalid_ratio_sprinkles_invalid_events_only() -> None:
    clean = list(simulate(40, 20, seed=3))
    mixed = list(simulate(40, 20, seed=3, invalid_ratio=0.05))
    invalid = [e for e in mixed if isinstance(validate_event(e), list)]
    assert 0.02 * len(clean) < len(invalid) < 0.1 * len(clean)
    # The valid stream does not depend on the invalid ratio.
    assert [e for e in mixed if not isinstance(validate_event(e), list)] == clean
    messages = " ".join(m.message for e in invalid for m in validate_event(e))
    for needle in ("occurred_at", "score", "type", "event_id", "patient_id", "schema_version"):
        assert needle in messages
    assert any("T" in e.get("occurred_at", "") and len(e["occurred_at"]) == 19 for e in invalid)
    assert any(e.get("score") == 11 for e in invalid)


def test_arguments_checked() -> None:
    with pytest.raises(ValueError):
        simulate(-1, 3, seed=1)
    with pytest.raises(ValueError):
        simulate(1, 3, seed=1, invalid_ratio=1.5)
    assert list(simulate(0, 10, seed=1)) == []
