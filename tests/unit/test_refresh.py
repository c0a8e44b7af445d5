"""The refresh off the ingest path (``streams.services.refresh``) on the in-memory store,
through ``Ingest.record_batch``: the outcome rows it keeps are what ``rtm outcomes episodes``
prints over the same events as of the same instant, whatever the batches and their order;
a batch marks only its own patients; the timer's run drains every mark and marks again
the open episodes whose rows are older than a day. (The queue's semantics in PostgreSQL:
tests/integration/test_refresh_queue.py.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import orjson

from alerts.models import PATHWAY_KINDS
from pathways.alerting import pathway_alerts
from pathways.model import builtin
from pathways.offline import episode_rows, views
from schemas.events import EVENT_ADAPTER, Event
from streams.clock import FixedClock
from streams.services.refresh import Committed, Tuning, refresh_due, refresh_once
from tests.unit.pathway_events import as_of, at, generated_cohort
from tests.unit.test_step_in_process import NOW, Step, Topics

COHORT = generated_cohort(seed=21, n=12)


def offline(events: list[dict[str, object]], as_of: dt.datetime) -> list[dict[str, object]]:
    eps, missing = views([EVENT_ADAPTER.validate_python(e) for e in events], as_of, builtin())
    assert missing == []
    return sorted(episode_rows(eps), key=lambda r: str(r["episode_id"]))


def kept(step: Step) -> list[dict[str, object]]:
    rows = [o.row.output() for rows in step.store.outcome_rows.values() for o in rows]
    return sorted(rows, key=lambda r: str(r["episode_id"]))


def offline_as_kept(step: Step, events: list[dict[str, object]]) -> list[dict[str, object]]:
    """``rtm outcomes episodes`` over ``events`` as of each kept row's instant, that row's
    episode."""
    out = []
    for rows in step.store.outcome_rows.values():
        for o in rows:
            (want,) = [r for r in offline(events, o.as_of) if r["episode_id"] == o.row.episode_id]
            out.append(want)
    return sorted(out, key=lambda r: str(r["episode_id"]))


async def drain(step: Step) -> int:
    n = 0
    while k := await refresh_once(step.store, step.clock):
        n += k
    return n


async def test_the_kept_rows_are_the_offline_commands_whatever_the_batches() -> None:
    expected = offline(COHORT, NOW)
    assert {r["mcid_reached"] for r in expected} == {True, False}  # the cohort tells apart
    for seed in range(3):
        step = Step()
        shuffled = random.Random(seed).sample(COHORT, len(COHORT))
        cut = len(shuffled) // 3
        for batch in (shuffled[:cut], shuffled[cut : 2 * cut], shuffled[2 * cut :]):
            await step.events(*batch)
            await drain(step)  # refreshed between batches too: later batches replace rows
        await step.events(*shuffled[:5])  # a re-delivery: nothing new, nothing marked
        assert step.store.refresh_marks == {}
        assert kept(step) == offline_as_kept(step, COHORT), seed
        assert len(kept(step)) == len(expected)


async def test_a_batch_marks_its_patients_and_the_refresh_serves_each_once() -> None:
    step = Step()
    mine = [e for e in COHORT if e["patient_id"] in ("p1", "p2")]
    await step.events(*mine)
    assert sorted(k[1] for k in step.store.refresh_marks) == ["p1", "p2"]
    assert step.store.outcome_rows == {}  # nothing folded in the batch
    assert await drain(step) == 2
    assert step.store.refresh_marks == {} and await drain(step) == 0
    assert kept(step) == offline_as_kept(step, mine)


async def test_a_tick_moves_the_pathways_time_rows_and_alerts_as_rtm_alerts_evaluate() -> None:
    step = Step()
    await step.events(*COHORT)
    await drain(step)
    later = NOW + dt.timedelta(days=2)
    await step.tick(later)  # every running episode's day moves: its patient is marked
    marked = set(step.store.refresh_marks)
    assert marked
    await drain(step)
    assert kept(step) == offline_as_kept(step, COHORT)
    at = later + dt.timedelta(microseconds=1)  # as of the rules clock, its instant included
    assert {o.as_of for k in marked for o in step.store.outcome_rows[k]} == {at}
    # the pathway's alerts are rtm alerts evaluate's as of the same instant
    events = [EVENT_ADAPTER.validate_python(e) for e in COHORT]
    offline_alerts: dict[str, str] = {}
    for ch in pathway_alerts(events, {}, at):
        offline_alerts[ch.alert.id] = ch.alert.status
    streamed = {a.id: a.status for a in step.store.alerts.values() if a.kind in PATHWAY_KINDS}
    assert streamed == offline_alerts
    assert {a.kind for a in step.store.alerts.values() if a.id in streamed} == set(PATHWAY_KINDS)
    queued = {orjson.loads(q.payload)["alert"]["id"] for _, q in step.store.outbox.values()}
    assert set(streamed) <= queued  # in the rtm.alerts outbox (its timer publishes them)
    assert {d[0] for d in step.store.deliveries} >= set(streamed)  # and to the webhooks


async def test_without_a_tick_the_rows_follow_the_calendar_and_the_alerts_the_rules_clock() -> None:
    """No tick has moved the patients' rules clocks past their newest event (a worker with
    its timer off, or between two ticks): the report's rows are as of the refresh's now, as
    ``rtm outcomes episodes --as-of`` then; the pathway's alerts stay as of each patient's
    rules clock, as ``rtm alerts evaluate`` raises them."""
    early = [e for e in COHORT if str(e["occurred_at"]) < at(20)]  # the week-4 form not due
    later = as_of(40)  # ... and overdue
    step = Step()
    await step.events(*early)
    while await refresh_once(step.store, FixedClock(later)):
        pass
    assert {o.as_of for rows in step.store.outcome_rows.values() for o in rows} == {later}
    assert kept(step) == offline(early, later)
    events = [EVENT_ADAPTER.validate_python(e) for e in early]
    by_patient: dict[tuple[str, str], list[Event]] = {}
    for e in events:
        by_patient.setdefault(e.patient_key, []).append(e)
    expected: dict[str, str] = {}
    calendar: dict[str, str] = {}
    for mine in by_patient.values():
        clock = max(e.occurred_at for e in mine) + dt.timedelta(microseconds=1)
        expected |= {ch.alert.id: ch.alert.status for ch in pathway_alerts(mine, {}, clock)}
        calendar |= {ch.alert.id: ch.alert.status for ch in pathway_alerts(mine, {}, later)}
    streamed = {a.id: a.status for a in step.store.alerts.values() if a.kind in PATHWAY_KINDS}
    assert streamed == expected
    assert calendar != expected  # the cohort tells the two instants apart


async def test_the_refresh_hands_its_changes_to_the_worker_which_sends_each_once() -> None:
    """The refresh runs in a process without a producer: it returns the outbox seqs of the
    alert changes it committed, and the worker sends those right after the run, not when
    the outbox's timer finds them left behind (5 s later). The timer and this send take
    turns, so a change goes to rtm.alerts once whichever of them reads it first."""
    step = Step()
    await step.events(*COHORT)
    assert step.store.outbox == {}  # the batches' own changes were sent by their step
    committed = Committed()
    while await refresh_once(step.store, step.clock, committed=committed):
        pass
    queued = committed.seqs
    # and the patients whose states it wrote: each has a change, and its state is stored
    changed = {
        tuple(orjson.loads(q.payload)["alert"][f] for f in ("org_id", "patient_id"))
        for _, q in step.store.outbox.values()
    }
    assert set(committed.states) == changed <= set(step.store.states)
    assert queued and queued == sorted(queued) and set(queued) == set(step.store.outbox)
    payloads = sorted(q.payload for _, q in step.store.outbox.values())
    kinds = {orjson.loads(p)["alert"]["kind"] for p in payloads}
    assert kinds and kinds <= set(PATHWAY_KINDS)
    topics = step.ingest.publisher.topic = Yielding()
    # the timer's sweep of everything and the refresh's send at once: one of them sends it
    n_timer, n_refresh = await asyncio.gather(
        step.ingest.publisher.publish_left_behind(0.0),
        step.ingest.publisher.publish_queued(queued, limit=2),  # two at a time: turns
    )
    assert n_timer + n_refresh == len(queued) and step.store.outbox == {}
    sent = sorted(orjson.dumps(c, option=orjson.OPT_SORT_KEYS) for c in topics.alerts)
    assert sent == sorted(
        orjson.dumps(orjson.loads(p), option=orjson.OPT_SORT_KEYS) for p in payloads
    )
    assert await step.ingest.publisher.publish_queued(queued) == 0  # sent: not again


class Yielding(Topics):
    """rtm.alerts whose acks take a turn of the event loop (another send may start)."""

    async def publish_alerts(self, records: Any) -> None:
        await asyncio.sleep(0)
        await super().publish_alerts(records)


class Recording:
    """A store that records what the timer's run asks of it (nothing is due)."""

    def __init__(self) -> None:
        self.claims: list[tuple[int, dt.timedelta, dt.timedelta]] = []

    async def claim(
        self, limit: int, settle: dt.timedelta, max_wait: dt.timedelta, stale: dt.timedelta
    ) -> tuple[list[object], None]:
        self.claims.append((limit, settle, max_wait))
        return [], None


async def test_while_ingestion_is_busy_only_a_few_marks_past_the_longest_wait_are_taken() -> None:
    five_s, five_min = dt.timedelta(seconds=5), dt.timedelta(minutes=5)
    tuning = Tuning(limit=100, busy_limit=10, settle=five_s, max_wait=five_min)
    store = Recording()
    await refresh_due(store, FixedClock(NOW), tuning, busy=True)  # type: ignore[arg-type]
    assert store.claims == [(10, five_min, five_min)]  # a bounded share of the cores
    await refresh_due(store, FixedClock(NOW), tuning, busy=False)  # type: ignore[arg-type]
    assert store.claims[-1] == (100, five_s, five_min)
