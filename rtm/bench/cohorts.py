"""The bench's cohorts: simulated events under a run's ids, paced schedules, history
composed of simulated blocks, and the files they are written to."""

from __future__ import annotations

import datetime as dt
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rtm.simulate import simulate


def namespace_event(ev: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Prefix the ids simulate() repeats across seeds, so each run writes fresh events."""
    out = dict(ev)
    for k in ("event_id", "patient_id", "episode_id"):
        v = out.get(k)
        if isinstance(v, str):
            out[k] = prefix + v
    return out


def lane_of(patient_id: Any, lanes: int) -> int:
    """Same patient, same lane (as rtm produce): per-patient order survives concurrency."""
    return zlib.crc32(str(patient_id).encode()) % lanes


def paced_schedule(
    events: Sequence[dict[str, Any]], rate: float, tick_s: float, lanes: int
) -> list[tuple[float, int, list[dict[str, Any]]]]:
    """(send offset s, lane, events): `rate` events/s, a tick every `tick_s`, per-patient lanes."""
    per_tick = max(1, round(rate * tick_s))
    out: list[tuple[float, int, list[dict[str, Any]]]] = []
    for k, start in enumerate(range(0, len(events), per_tick)):
        split: dict[int, list[dict[str, Any]]] = {}
        for ev in events[start : start + per_tick]:
            split.setdefault(lane_of(ev.get("patient_id"), lanes), []).append(ev)
        for lane in sorted(split):
            out.append((k * tick_s, lane, split[lane]))
    return out


def cohort_start(days: int, today: dt.date, margin_days: int = 7) -> dt.date:
    """First day of the month that lets a `days`-long cohort end `margin_days` before today.

    The gateway refuses events dated in the future, so every cohort lies in the past; the
    1st of a month keeps the calendar (and so the cohort) the same for a month of runs.
    """
    return (today - dt.timedelta(days=days + margin_days)).replace(day=1)


def history_blocks(
    start: dt.date, days: int, block_days: int = 90, gap_days: int = 2
) -> list[tuple[dt.date, int]]:
    """Tile `days` calendar days from `start` into simulated blocks: [(block start, days)].

    simulate() puts a patient's episodes into the first ~60 % of the days it is given, so a
    year of history is composed of back-to-back blocks of about `block_days`; each block is
    followed by `gap_days` in which the bench ends the episodes still open (see
    `OpenEpisodes`), so the next block's episode.started is not a second active episode.
    """
    if days <= 0:
        return []
    n = max(1, math.ceil(days / block_days))
    spans = [days // n + (1 if k < days % n else 0) for k in range(n)]
    out: list[tuple[dt.date, int]] = []
    at = start
    for span in spans:
        if span > gap_days:
            out.append((at, span - gap_days))
        at += dt.timedelta(days=span)
    return out


def rebase_event(ev: dict[str, Any], patient_prefix: str, id_prefix: str) -> dict[str, Any]:
    """One simulated block under a cohort's patient ids and the block's own event, episode
    and session ids (simulate() restarts them for every call)."""
    out = dict(ev)
    v = out.get("patient_id")
    if isinstance(v, str):
        out["patient_id"] = patient_prefix + v
    for k in ("event_id", "episode_id", "session_id"):
        v = out.get(k)
        if isinstance(v, str):
            out[k] = id_prefix + v
    return out


class OpenEpisodes:
    """Episodes started and not ended in a stream of events; `close()` ends them."""

    def __init__(self) -> None:
        self.open: dict[str, str] = {}  # episode_id -> patient_id

    def see(self, ev: Mapping[str, Any]) -> None:
        ep = ev.get("episode_id")
        if not isinstance(ep, str):
            return
        if ev.get("type") == "episode.started":
            self.open[ep] = str(ev["patient_id"])
        elif ev.get("type") == "episode.ended":
            self.open.pop(ep, None)

    def close(self, on: dt.date, reason: str = "discharged") -> list[dict[str, Any]]:
        """episode.ended for each open episode at 12:00 UTC on `on`: the morning of that
        local date in every US zone, after all data of the day before."""
        out = [
            {
                "event_id": f"{ep}.end",
                "schema_version": 1,
                "type": "episode.ended",
                "patient_id": pid,
                "occurred_at": f"{on.isoformat()}T12:00:00+00:00",
                "source": {"kind": "clinician_portal", "id": "portal-web"},
                "episode_id": ep,
                "reason": reason,
            }
            for ep, pid in self.open.items()
        ]
        self.open.clear()
        return out


def auto_history_patients(
    pipeline_events_per_s: float | None,
    history_days: int,
    budget_s: float = 120.0,
    events_per_patient_day: float = 1.55,
    lo: int = 100,
    hi: int = 2000,
) -> int:
    """Patients per history cohort so that posting the long cohort's history takes about
    `budget_s` at the pipeline's rate (clamped): each cohort's timed windows then last ~5 s
    together whatever the worker's speed (since the fourteenth round; 45 s gave ~2 s, in
    which one slow second swung the ratio by a third), short enough for the default run."""
    if not pipeline_events_per_s or history_days <= 0:
        return 300
    n = round(pipeline_events_per_s * budget_s / (events_per_patient_day * history_days))
    return max(lo, min(hi, n))


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with `prefix` (backslash escapes)."""
    return re.sub(r"([\\%_])", r"\\\1", prefix) + "%"


@dataclass
class HistoryCohort:
    """A history cohort written to two files: what is posted first (untimed) and the new
    events that are timed."""

    name: str
    history_days: int
    patient_prefix: str
    seed_path: Path
    new_path: Path
    seed_events: int = 0
    seed_distinct: int = 0
    new_events: int = 0
    new_distinct: int = 0
    seed_newest: dt.datetime | None = None
    new_newest: dt.datetime | None = None
    # where each simulated block of the history ends in ``seed_path`` (its events so far)
    # and its newest event: the bench ticks there, as a year's daily ticks would have
    segment_ends: list[tuple[int, dt.datetime | None]] = field(default_factory=list)


def write_history_cohort(
    c: HistoryCohort,
    patients: int,
    seed: int,
    start: dt.date,
    long_days: int,
    short_days: int,
    new_days: int,
) -> HistoryCohort:
    """Compose `c.history_days` of history per patient, then `new_days` of new events.

    Every cohort ends with the same recent block R = simulate(patients, short_days +
    new_days) starting `long_days - short_days` after `start`: its first `short_days`
    (by patient-local date) are history, the rest the new events. A longer history is
    prepended as back-to-back simulate() blocks (same seed, so each patient keeps its
    time zone and habits), each followed by the end of the episodes it left open.
    """
    r_start = start + dt.timedelta(days=long_days - short_days)
    cut = (r_start + dt.timedelta(days=short_days)).isoformat()
    prepend = c.history_days - short_days
    seed_ids: set[str] = set()
    new_ids: set[str] = set()

    def newest(cur: dt.datetime | None, ev: dict[str, Any]) -> dt.datetime | None:
        at = dt.datetime.fromisoformat(ev["occurred_at"])
        return at if cur is None or at > cur else cur

    opt = orjson.OPT_APPEND_NEWLINE
    with (
        c.seed_path.open("wb", buffering=1 << 20) as seed_fh,
        c.new_path.open("wb", buffering=1 << 20) as new_fh,
    ):
        for k, (b_start, b_days) in enumerate(
            history_blocks(r_start - dt.timedelta(days=prepend), prepend)
        ):
            episodes = OpenEpisodes()
            block: Iterable[dict[str, Any]] = simulate(patients, b_days, seed, start=b_start)
            for raw in block:
                ev = rebase_event(raw, c.patient_prefix, f"{c.patient_prefix}k{k}.")
                episodes.see(ev)
                seed_fh.write(orjson.dumps(ev, option=opt))
                seed_ids.add(ev["event_id"])
                c.seed_events += 1
                c.seed_newest = newest(c.seed_newest, ev)
            for ev in episodes.close(b_start + dt.timedelta(days=b_days)):
                seed_fh.write(orjson.dumps(ev, option=opt))
                seed_ids.add(ev["event_id"])
                c.seed_events += 1
                c.seed_newest = newest(c.seed_newest, ev)
            c.segment_ends.append((c.seed_events, c.seed_newest))
        for raw in simulate(patients, short_days + new_days, seed, start=r_start):
            ev = rebase_event(raw, c.patient_prefix, f"{c.patient_prefix}r.")
            if ev["occurred_at"][:10] < cut:  # by patient-local date
                seed_fh.write(orjson.dumps(ev, option=opt))
                seed_ids.add(ev["event_id"])
                c.seed_events += 1
                c.seed_newest = newest(c.seed_newest, ev)
            else:
                new_fh.write(orjson.dumps(ev, option=opt))
                new_ids.add(ev["event_id"])
                c.new_events += 1
                c.new_newest = newest(c.new_newest, ev)
    c.segment_ends.append((c.seed_events, c.seed_newest))
    c.seed_distinct, c.new_distinct = len(seed_ids), len(new_ids)
    return c


def distinct_ids(events: Iterable[dict[str, Any]]) -> list[str]:
    """The events' ids, each once, in order of first appearance."""
    seen: dict[str, None] = {}
    for e in events:
        seen.setdefault(e["event_id"], None)
    return list(seen)


def cohort(
    patients: int, days: int, seed: int, prefix: str, today: dt.date
) -> list[dict[str, Any]]:
    """A simulated cohort ending before ``today`` (``cohort_start``), under ``prefix``."""
    start = cohort_start(days, today)
    return [namespace_event(e, prefix) for e in simulate(patients, days, seed, start=start)]


def latency_events(
    patients: int, seed: int, prefix: str, count: int, today: dt.date
) -> list[dict[str, Any]]:
    """Arrival-ordered cohort events; every symptom report in it carries a red flag."""
    out: list[dict[str, Any]] = []
    for e in simulate(patients, 365, seed, start=cohort_start(365, today)):
        e = namespace_event(e, prefix)
        if e["type"] == "symptom.reported" and e.get("episode_id") and not e.get("red_flags"):
            e["red_flags"] = ["fever"]
        out.append(e)
        if len(out) >= count:
            break
    return out


def split_by_patient(c: HistoryCohort, parts: int) -> list[tuple[Path, int]]:
    """The cohort's new events in ``parts`` files, each patient's events whole in one of
    them (by the patient's id within the cohort, so every cohort of a run is split the
    same way: their timed parts hold the same events under other ids); per part (path,
    distinct events), in order."""
    paths = [c.new_path.with_name(f"{c.name}-new-{k}.jsonl") for k in range(parts)]
    ids: list[set[str]] = [set() for _ in range(parts)]
    cut = len(c.patient_prefix)
    with c.new_path.open("rb") as src:
        outs = [p.open("wb", buffering=1 << 20) for p in paths]
        try:
            for line in src:
                if not line.strip():
                    continue
                ev = orjson.loads(line)
                k = zlib.crc32(str(ev["patient_id"])[cut:].encode()) % parts
                outs[k].write(line)
                ids[k].add(ev["event_id"])
        finally:
            for fh in outs:
                fh.close()
    return [(p, len(s)) for p, s in zip(paths, ids, strict=True)]


def history_segments(c: HistoryCohort) -> list[tuple[Path, int, dt.datetime | None]]:
    """The cohort's history in the files of its blocks (``segment_ends``), in order; per
    block (path, distinct events, newest event). Posted one after the other with a tick
    after each, a year of history is pruned as it goes, as the daily ticks of a year would
    have pruned it, instead of a whole year held in every state until one tick at its end."""
    out: list[tuple[Path, int, dt.datetime | None]] = []
    with c.seed_path.open("rb") as src:
        done = 0
        for k, (end, newest) in enumerate(c.segment_ends):
            path = c.seed_path.with_name(f"{c.name}-history-{k}.jsonl")
            ids: set[str] = set()
            with path.open("wb", buffering=1 << 20) as fh:
                while done < end:
                    line = src.readline()
                    if not line:
                        break
                    if not line.strip():
                        continue
                    fh.write(line)
                    ids.add(orjson.loads(line)["event_id"])
                    done += 1
            out.append((path, len(ids), newest))
    return out
