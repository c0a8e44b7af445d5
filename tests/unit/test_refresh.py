"""The refresh off the ingest path (``streams.services.refresh``) on the in-memory store,
through ``Ingest.record_batch``: the outcome rows it keeps are what ``rtm outcomes episodes``
prints over the same events as of the same instant, whatever the batches and their order;
a batch marks only its own patients; the timer's run drains every mark and marks again
the open episodes whose rows are older than a day. (The queue's semantics in PostgreSQL:
tests/integration/test_refresh_queue.py.)"""

from __future__ import annotations

import datetime as dt
import random

from pathways.model import builtin
from pathways.offline import episode_rows, views
from schemas.events import EVENT_ADAPTER
from streams.clock import FixedClock
from streams.services.refresh import Tuning, refresh_due, refresh_once
from tests.unit.pathway_events import generated_cohort
from tests.unit.test_step_in_process import NOW, Step

COHORT = generated_cohort(seed=21, n=12)


def offline(events: list[dict[str, object]], as_of: dt.datetime) -> list[dict[str, object]]:
    eps, missing = views([EVENT_ADAPTER.validate_python(e) for e in events], as_of, builtin())
    assert missing == []
    return sorted(episode_rows(eps), key=lambda r: str(r["episode_id"]))


def kept(step: Step) -> list[dict[str, object]]:
    rows = [o.row.output() for rows in step.store.outcome_rows.values() for o in rows]
    return sorted(rows, key=lambda r: str(r["episode_id"]))


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
        assert kept(step) == expected, seed


async def test_a_batch_marks_its_patients_and_the_refresh_serves_each_once() -> None:
    step = Step()
    mine = [e for e in COHORT if e["patient_id"] in ("p1", "p2")]
    await step.events(*mine)
    assert sorted(k[1] for k in step.store.refresh_marks) == ["p1", "p2"]
    assert step.store.outcome_rows == {}  # nothing folded in the batch
    assert await drain(step) == 2
    assert step.store.refresh_marks == {} and await drain(step) == 0
    assert kept(step) == offline(mine, NOW)


async def test_an_open_episodes_row_is_refreshed_a_day_later_as_of_then() -> None:
    step = Step()
    await step.events(*COHORT)
    tuning = Tuning(open_row_age=dt.timedelta(days=1))
    assert await refresh_due(step.store, step.clock, tuning) == len(
        {e["patient_id"] for e in COHORT}
    )
    later = NOW + dt.timedelta(days=2)
    step.clock = FixedClock(later)
    open_patients = {
        o.row.patient_id for rows in step.store.outcome_rows.values() for o in rows
        if o.row.end_date is None
    }  # fmt: skip
    assert open_patients  # some episodes are still running
    assert await refresh_due(step.store, step.clock, tuning) == len(open_patients)
    assert kept(step) == offline(COHORT, later)
    assert {o.as_of for rows in step.store.outcome_rows.values() for o in rows
            if o.row.end_date is None} == {later}  # fmt: skip


class Recording:
    """A store that records what the timer's run asks of it (nothing is due)."""

    def __init__(self) -> None:
        self.claims: list[tuple[int, dt.timedelta, dt.timedelta]] = []
        self.swept = 0

    async def claim(
        self, limit: int, settle: dt.timedelta, max_wait: dt.timedelta, stale: dt.timedelta
    ) -> tuple[list[object], None]:
        self.claims.append((limit, settle, max_wait))
        return [], None

    async def mark_stale(self, now: dt.datetime, older: dt.timedelta, limit: int) -> int:
        self.swept += 1
        return 0


async def test_while_ingestion_is_busy_only_a_few_marks_past_the_longest_wait_are_taken() -> None:
    five_s, five_min = dt.timedelta(seconds=5), dt.timedelta(minutes=5)
    tuning = Tuning(limit=100, busy_limit=10, settle=five_s, max_wait=five_min)
    store = Recording()
    await refresh_due(store, FixedClock(NOW), tuning, busy=True)  # type: ignore[arg-type]
    assert store.claims == [(10, five_min, five_min)]  # a bounded share of the cores
    assert store.swept == 0  # the daily sweep waits for a quiet moment too
    await refresh_due(store, FixedClock(NOW), tuning, busy=False)  # type: ignore[arg-type]
    assert store.claims[-1] == (100, five_s, five_min)
    assert store.swept == 1
