"""Issue 17: one adherence truth, whatever the arrival order. ``rtm adherence evaluate``
(``alerts.evaluate.run_adherence_evaluate``) over the file in any order, and the daily rows
the worker's step stores (``Ingest.record_batch`` on the in-memory store, the rollups of
each batch) for the same events in that order and any split into batches, are the rows of
the same events in event-time order: sessions that arrive before their ``episode.started``
(an EHR that enrols late) count, and a late episode event rewrites the days it shapes."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from alerts.evaluate import run_adherence_evaluate
from alerts.rollup import DailyAdherence
from alerts.rules import EPISODELESS_COMPLETION_DAYS, on_event
from alerts.state import new_state
from rtm.simulate import simulate
from schemas.events import DEFAULT_ORG, validate_event
from streams.clock import FixedClock
from streams.db.memory import MemoryIngestStore
from streams.kafka.control import Record, Tick, patient_partition
from streams.metrics import WorkerMetrics
from streams.services.alerts import Publisher
from streams.services.ingest import DeadLetterGuard, Ingest
from tests.conftest import EventFactory

PARTITIONS = 2
NOW = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)  # after the cohort: nothing is from the future
EPISODE_TYPES = {"episode.started", "program.updated", "episode.ended"}
# 3 patients over 50 days: second episodes, program changes, ends mid-way, late syncs
COHORT = list(simulate(3, 50, 1, start=dt.date(2026, 9, 1)))


class _Topics:
    async def dead_letter(self, key: bytes, value: bytes) -> None:
        pass

    async def publish_alerts(self, records: Any) -> None:
        pass


def _event_time(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (dt.datetime.fromisoformat(e["occurred_at"]), e["type"]))


def _episodes_last(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's feed: every session, report and log first, the enrolment (episode
    events) only at the end."""
    return [e for e in events if e["type"] not in EPISODE_TYPES] + [
        e for e in events if e["type"] in EPISODE_TYPES
    ]


def evaluated(events: Sequence[dict[str, Any]]) -> list[str]:
    """``rtm adherence evaluate``'s CSV rows over the events in this (file) order."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
        out, err = io.StringIO(), io.StringIO()
        assert run_adherence_evaluate(path, out, err=err) == 0, err.getvalue()
    return out.getvalue().splitlines()[1:]


def streamed(
    events: Sequence[dict[str, Any]], sizes: Sequence[int], tick_at: dt.datetime | None = None
) -> list[str]:
    """The daily rows the worker's step stores for the events in this arrival order, in
    batches of these sizes (cycled), as CSV rows; with ``tick_at``, the last batch ends
    with a tick of the timer at that instant."""
    clock = FixedClock(NOW)
    store = MemoryIngestStore(clock=clock)
    topics, metrics = _Topics(), WorkerMetrics(CollectorRegistry())
    ingest = Ingest(
        store,
        topics,
        Publisher(store, topics, metrics, clock),
        metrics,
        clock,
        partitions=PARTITIONS,
        max_future_skew_s=300.0,
        guard=DeadLetterGuard(100, 1.0, 60.0, 1000),
    )
    records = [
        Record(orjson.dumps(e), patient_partition((DEFAULT_ORG, e["patient_id"]), PARTITIONS))
        for e in events
    ]
    batches, i, k = [], 0, 0
    while i < len(records):
        n = sizes[k % len(sizes)]
        batches.append(records[i : i + n])
        i, k = i + n, k + 1
    if tick_at is not None:
        batches[-1] = batches[-1] + [Record(Tick(tick_at).encode(), p) for p in range(PARTITIONS)]

    async def run() -> None:
        for batch in batches:
            await ingest.record_batch(batch)

    asyncio.run(run())
    return [_csv(d) for _, d in sorted(store.adherence.items())]


def _csv(d: DailyAdherence) -> str:
    ratio = "" if d.adherence_7d is None else f"{d.adherence_7d:.4f}"
    return f"{d.patient_id},{d.date.isoformat()},{d.prescribed:.4f},{d.completed},{ratio}"


REFERENCE = evaluated(_event_time(COHORT))


def test_the_cohort_is_one_the_old_prune_got_wrong() -> None:
    """The cohort spans more than the month an episode-less completion used to be kept,
    and has the shapes the property is about."""
    days = {dt.datetime.fromisoformat(e["occurred_at"]).date() for e in COHORT}
    assert (max(days) - min(days)).days > 31
    assert (max(days) - min(days)).days < EPISODELESS_COMPLETION_DAYS
    types = {e["type"] for e in COHORT}
    assert EPISODE_TYPES <= types and "exercise.completed" in types
    assert len(REFERENCE) > 80 and any(not r.endswith(",0,0.0000") for r in REFERENCE)


def test_enrolment_arriving_last_counts_every_session() -> None:
    """The issue's case: the same events with the episodes last give the same rows, in the
    evaluator and in the stream (one batch per 40 events)."""
    late = _episodes_last(COHORT)
    assert evaluated(late) == REFERENCE
    assert streamed(late, [40]) == REFERENCE


async def _step(store: MemoryIngestStore, batches: Sequence[Sequence[Record]]) -> None:
    clock = FixedClock(NOW)
    topics, metrics = _Topics(), WorkerMetrics(CollectorRegistry())
    ingest = Ingest(
        store,
        topics,
        Publisher(store, topics, metrics, clock),
        metrics,
        clock,
        partitions=PARTITIONS,
        max_future_skew_s=300.0,
        guard=DeadLetterGuard(100, 1.0, 60.0, 1000),
    )
    for batch in batches:
        await ingest.record_batch(batch)


def test_a_late_episode_after_the_timer_moved_on_rewrites_no_day_it_cannot_compute() -> None:
    """Once a tick has moved the day cursor (and prune dropped the older sessions), a late
    earlier episode must not rewrite the later episode's older days from what is left: they
    keep the values written while their sessions were there (backfill recomputes the rest)."""
    f = EventFactory()
    p = f.patient(1)
    part = patient_partition((DEFAULT_ORG, p), PARTITIONS)

    def rec(*events: dict[str, Any]) -> list[Record]:
        return [Record(orjson.dumps(e), part) for e in events]

    second = f.episode_started(p, at="2026-10-01T09:00:00-05:00", episode_id=f"{p}-ep2")
    sessions = f.daily_exercises(p, dt.date(2026, 10, 1), 30)
    first = f.episode_started(p, at="2026-09-01T09:00:00-05:00", episode_id=f"{p}-ep1")
    ended = {
        **f.symptom(p, "2026-09-20T09:00:00-05:00"),
        "type": "episode.ended",
        "episode_id": f"{p}-ep1",
        "reason": "discharged",
    }
    store = MemoryIngestStore(clock=FixedClock(NOW))
    tick = [Record(Tick(dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)).encode(), part)]
    asyncio.run(_step(store, [rec(second, *sessions), tick]))
    written = {k[2]: v for k, v in store.adherence.items()}
    assert [written[dt.date(2026, 10, d)].completed for d in range(1, 31)] == [1] * 30
    asyncio.run(_step(store, [rec(first, ended)]))
    after = {k[2]: v for k, v in store.adherence.items()}
    for day in range(1, 31):
        d = dt.date(2026, 10, day)
        assert after[d] == written[d], d


ORDERS = ("arrival", "episodes last", "shuffled", "reversed")


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    order=st.sampled_from(ORDERS),
    seed=st.integers(0, 10**6),
    sizes=st.lists(st.integers(1, 120), min_size=1, max_size=5),
)
def test_evaluate_and_streamed_rollups_agree_for_any_arrival_order(
    order: str, seed: int, sizes: list[int]
) -> None:
    events = list(COHORT)
    if order == "episodes last":
        events = _episodes_last(events)
        random.Random(seed).shuffle(events)  # and everything else in any order before them
        events = _episodes_last(events)
    elif order == "shuffled":
        random.Random(seed).shuffle(events)
    elif order == "reversed":
        events.reverse()
    assert evaluated(events) == REFERENCE
    assert streamed(events, sizes) == REFERENCE


def test_sessions_without_an_episode_are_kept_only_for_the_bound() -> None:
    """The state of a patient who never gets an episode stays bounded: sessions are kept
    EPISODELESS_COMPLETION_DAYS behind the newest instant seen, then dropped."""
    f = EventFactory()
    p = f.patient(1)
    s = new_state(p)
    first = dt.date(2026, 1, 1)
    for raw in f.daily_exercises(p, first, 300):
        event = validate_event(raw)
        assert not isinstance(event, list), event
        s, _ = on_event(s, event)
    assert s.clock is not None
    days = sorted(c.local_date for c in s.completions.values())
    newest = s.clock.date()
    assert days[0] == newest - dt.timedelta(days=EPISODELESS_COMPLETION_DAYS)
    assert len(days) == EPISODELESS_COMPLETION_DAYS + 1  # one session a day
