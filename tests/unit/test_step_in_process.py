"""The worker's step in process: records in, through ``Ingest.record_batch`` on the in-memory
store (streams/db/memory.py), with the worker's decode, decision, write, publish and metrics
and no Kafka or PostgreSQL: an event, a tick and an acknowledgement, in milliseconds. The
contract suite (tests/contract) holds the in-memory store to PostgreSQL's behaviour."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from alerts.evaluate import fold_changes
from alerts.models import Alert
from alerts.rules import on_tick
from rtm.simulate import simulate
from schemas.events import DEFAULT_ORG, parse_event_json
from streams.clock import FixedClock
from streams.db.memory import MemoryIngestStore
from streams.kafka.control import Ack, Record, Tick, patient_partition
from streams.metrics import WorkerMetrics
from streams.services.alerts import Publisher
from streams.services.ingest import DeadLetterGuard, Ingest
from tests.conftest import EventFactory

PARTITIONS = 4
NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


class Topics:
    """rtm.events.dead and rtm.alerts, as lists."""

    def __init__(self) -> None:
        self.dead: list[tuple[bytes, bytes]] = []
        self.alerts: list[dict[str, Any]] = []

    async def dead_letter(self, key: bytes, value: bytes) -> None:
        self.dead.append((key, value))

    async def publish_alerts(self, records: Any) -> None:
        self.alerts.extend(orjson.loads(v) for _, v in records)


class Step:
    def __init__(self) -> None:
        self.clock = FixedClock(NOW)
        self.store = MemoryIngestStore(clock=self.clock)
        self.topics = Topics()
        self.metrics = WorkerMetrics(CollectorRegistry())
        publisher = Publisher(self.store, self.topics, self.metrics, self.clock)
        self.ingest = Ingest(
            self.store,
            self.topics,
            publisher,
            self.metrics,
            self.clock,
            partitions=PARTITIONS,
            max_future_skew_s=300.0,
            guard=DeadLetterGuard(100, 1.0, 60.0, 1000),
        )

    async def events(self, *events: dict[str, Any]) -> None:
        await self.ingest.record_batch([self.record(e) for e in events])
        await self.ingest.published()  # the changes leave behind the step (no ack waited)

    def record(self, event: dict[str, Any]) -> Record:
        key = (event.get("org_id", DEFAULT_ORG), event["patient_id"])
        return Record(orjson.dumps(event), patient_partition(key, PARTITIONS))

    async def tick(self, now: dt.datetime) -> None:
        await self.ingest.record_batch([Record(Tick(now).encode(), p) for p in range(PARTITIONS)])
        await self.ingest.published()

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class HeldTopics(Topics):
    """rtm.alerts whose acks wait until released, one publish at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = 0

    async def publish_alerts(self, records: Any) -> None:
        self.started += 1
        await self.release.wait()
        self.release.clear()
        await super().publish_alerts(records)


async def test_the_next_fetch_is_recorded_while_the_alerts_wait_for_kafka_in_order(
    factory: EventFactory,
) -> None:
    step = Step()
    held = step.topics = HeldTopics()
    step.ingest.publisher.topic = held
    p, q = factory.patient(1), factory.patient(2)
    await step.events(factory.episode_started(p), factory.episode_started(q))
    first = factory.pain(p, 9, "2026-11-03T10:00:00-06:00")
    # returns with the acks still owed (before: it waited for them, and this timed out)
    await asyncio.wait_for(step.ingest.record_batch([step.record(first)]), 5.0)
    assert held.started == 1 and held.alerts == [] and len(step.store.outbox) == 1
    # the next fetch is decided and committed meanwhile; its changes wait behind the first's
    second = asyncio.create_task(
        step.ingest.record_batch([step.record(factory.pain(q, 8, "2026-11-03T10:05:00-06:00"))])
    )
    while len(step.store.alerts) < 2:
        await asyncio.sleep(0)
    assert not second.done() and held.started == 1 and len(step.store.outbox) == 2
    held.release.set()  # the first's acks
    while held.started < 2:
        await asyncio.sleep(0)
    await second
    held.release.set()
    await step.ingest.published()
    assert [c["alert"]["patient_id"] for c in held.alerts] == [p, q]  # in the order decided
    assert step.store.outbox == {}


async def test_an_event_a_tick_and_an_ack_through_the_step(factory: EventFactory) -> None:
    step = Step()
    p = factory.patient(1)
    t0 = time.perf_counter()

    # an event: a pain report of 9 fires pain_high, stored, queued, published
    start = factory.episode_started(p)
    pain = factory.pain(p, 9, "2026-11-03T10:00:00-06:00")
    await step.events(start, pain)
    (fired,) = step.store.alerts.values()
    assert (fired.kind, fired.status, fired.event_ids) == ("pain_high", "open", (pain["event_id"],))
    assert [(c["change"], c["alert"]["id"]) for c in step.topics.alerts] == [("fired", fired.id)]
    assert step.store.outbox == {}  # published, then deleted from the outbox
    assert step.store.deliveries[(fired.id, "fired")].status == "no_webhook"
    assert step.store.patients == {(DEFAULT_ORG, p)}
    assert step.store.clinicians == {(DEFAULT_ORG, p, "c-01")}
    assert {d[2] for d in step.store.data_days} == {dt.date(2026, 11, 3)}
    assert step.store.rollups[(DEFAULT_ORG, p)].latest_pain == 9
    assert step.metric("rtm_worker_events_stored_total") == 2

    # a tick, days later: no data since the 3rd, so inactivity fires (time-driven)
    await step.tick(NOW)
    kinds = {a.kind: a for a in step.store.alerts.values()}
    assert kinds["inactivity"].status == "open" and kinds["inactivity"].event_ids == ()
    published = [(c["change"], c["alert"]["kind"]) for c in step.topics.alerts]
    assert published[0] == ("fired", "pain_high") and ("fired", "inactivity") in published
    fired_ones = [c for c in published if c[0] == "fired"]
    assert len(fired_ones) == len(step.store.alerts)  # each fired once, each published
    # and the unacknowledged critical climbed both steps of the escalation ladder (issue 17)
    assert [c for c in published if c[0] != "fired"] == [("escalated", "pain_high")] * 2

    # an acknowledgement: the rules record it, the stream says so
    at = NOW + dt.timedelta(minutes=5)
    ack = Ack(fired.id, DEFAULT_ORG, p, at, "dr-who").encode()
    await step.ingest.record_batch([Record(ack, patient_partition((DEFAULT_ORG, p), PARTITIONS))])
    await step.ingest.published()
    acked = step.store.alerts[fired.id]
    assert (acked.status, acked.acknowledged_at, acked.acknowledged_by) == (
        "acknowledged",
        at,
        "dr-who",
    )
    assert step.topics.alerts[-1]["change"] == "acknowledged"
    state = step.store.state((DEFAULT_ORG, p))
    assert state is not None and state.alerts[fired.id] == acked

    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"{elapsed:.3f} s"  # milliseconds on a quiet box; no services


async def test_a_redelivered_batch_adds_nothing(factory: EventFactory) -> None:
    step = Step()
    p = factory.patient(1)
    batch = [factory.episode_started(p), factory.pain(p, 9, "2026-11-03T10:00:00-06:00")]
    await step.events(*batch)
    before = (dict(step.store.events), dict(step.store.alerts), list(step.topics.alerts))
    rev = step.store.states[(DEFAULT_ORG, p)][0]
    await step.events(*batch)  # re-delivered after a crash before the offsets committed
    assert (dict(step.store.events), dict(step.store.alerts), list(step.topics.alerts)) == before
    assert step.store.states[(DEFAULT_ORG, p)][0] == rev  # the state was not written again
    assert step.metric("rtm_worker_duplicates_ignored_total") == 2


async def test_a_repeat_inside_one_batch_counts_once(factory: EventFactory) -> None:
    step = Step()
    p = factory.patient(1)
    pain = factory.pain(p, 9, "2026-11-03T10:00:00-06:00")
    await step.events(factory.episode_started(p), pain, pain)
    assert [a.kind for a in step.store.alerts.values()] == ["pain_high"]
    assert step.metric("rtm_worker_events_stored_total") == 2
    assert step.metric("rtm_worker_duplicates_ignored_total") == 1


async def test_refused_records_are_dead_lettered_and_the_rest_goes_on(
    factory: EventFactory,
) -> None:
    step = Step()
    p = factory.patient(1)
    bad = factory.pain(p, 11, "2026-11-03T10:00:00-06:00")  # the contract's scores end at 10
    # a second episode while the first is active
    second = factory.episode_started(p, "2026-11-05T09:00:00-06:00", episode_id=f"{p}-ep2")
    await step.events(factory.episode_started(p), bad, second)
    reasons = [orjson.loads(v)["errors"][0]["field"] for _, v in step.topics.dead]
    assert reasons == ["score", "episode_id"]
    assert step.metric("rtm_worker_dead_letters_total", reason="contract") == 1
    assert step.metric("rtm_worker_dead_letters_total", reason="episode_conflict") == 1
    assert len(step.store.events) == 2  # the log keeps the refused episode


async def test_a_redelivered_episode_conflict_is_not_dead_lettered_twice(
    factory: EventFactory,
) -> None:
    """The step assumes a batch's events are new (event_ids is read only when the write
    refuses one, or before an episode is dead-lettered): a re-delivery repeats nothing."""
    step = Step()
    p = factory.patient(1)
    second = factory.episode_started(p, "2026-11-05T09:00:00-06:00", episode_id=f"{p}-ep2")
    batch = [factory.episode_started(p), second, factory.pain(p, 9, "2026-11-06T10:00:00-06:00")]
    await step.events(*batch)
    alerts = list(step.topics.alerts)
    await step.events(*batch)  # re-delivered after a crash before the offsets committed
    assert len(step.topics.dead) == 1
    assert step.metric("rtm_worker_dead_letters_total", reason="episode_conflict") == 1
    assert step.topics.alerts == alerts
    assert step.metric("rtm_worker_duplicates_ignored_total") == 3


async def test_the_streamed_alerts_equal_the_offline_ones(factory: EventFactory) -> None:
    """A small cohort in three batches, one tick at as-of: the alerts stored are the offline
    evaluator's (events folded in order, one tick per patient at as-of)."""
    step = Step()
    events: list[dict[str, Any]] = []
    for i in range(6):
        p = factory.patient(i)
        events.append(factory.episode_started(p))
        events += factory.daily_exercises(p, dt.date(2026, 11, 2), 1 + i)
        events.append(factory.pain(p, 3 + i, f"2026-11-0{3 + i % 4}T10:00:00-06:00"))
    for chunk in (events[:7], events[7:20], events[20:]):
        await step.events(*chunk)
    await step.tick(NOW)

    states, changes = fold_changes(iter([parse_event_json(orjson.dumps(e)) for e in events]))
    for key in states:
        states[key], ch = on_tick(states[key], NOW)
        changes += ch
    offline: dict[str, Alert] = {}
    for c in changes:
        offline[c.alert.id] = c.alert
    assert offline, "the cohort fires alerts"
    assert step.store.alerts == offline


@pytest.mark.parametrize("partitions", [1, 4])
async def test_a_tick_reaches_only_its_partitions_patients(
    factory: EventFactory, partitions: int
) -> None:
    step = Step()
    patients = [factory.patient(i) for i in range(8)]
    await step.events(*[factory.episode_started(p) for p in patients])
    parts = {p: patient_partition((DEFAULT_ORG, p), PARTITIONS) for p in patients}
    ticked = set(range(partitions))
    await step.ingest.record_batch([Record(Tick(NOW).encode(), n) for n in sorted(ticked)])
    await step.ingest.published()
    fired = {a.patient_id for a in step.store.alerts.values() if a.kind == "inactivity"}
    assert fired == {p for p in patients if parts[p] in ticked}


async def test_only_a_large_fetch_goes_in_lanes() -> None:
    """RTM_WORKER_LANES applies from RTM_WORKER_LANE_MIN_ITEMS items on: a steady rate's
    small fetches keep one transaction each."""
    step = Step()
    step.ingest.lanes, step.ingest.lane_min_items = 2, 100
    opened = []
    session = step.store.session

    def counted() -> Any:
        opened.append(1)
        return session()

    step.store.session = counted  # type: ignore[method-assign]
    events = list(simulate(patients=24, days=30, seed=3))
    await step.events(*events[:99])
    assert len(opened) == 1
    await step.events(*events[99:299])  # 24 patients over the 4 partitions: both lanes
    assert len(opened) == 3


async def test_two_lanes_record_what_one_lane_records() -> None:
    """The same fetches through one transaction and through two lanes side by side (the
    worker's RTM_WORKER_LANES): the same alerts, states, rollups and billing days."""
    events = list(simulate(patients=24, days=30, seed=3))
    stored = []
    for lanes in (1, 2):
        step = Step()
        step.ingest.lanes = lanes
        for i in range(0, len(events), 400):
            await step.events(*events[i : i + 400])
        await step.tick(NOW + dt.timedelta(days=40))
        s = step.store
        stored.append(
            (
                {k: a.model_dump() for k, a in s.alerts.items()},
                {k: st[2] for k, st in s.states.items()},
                dict(s.rollups),
                dict(s.adherence),
                dict(s.data_days),
            )
        )
    assert stored[0][0], "the cohort fires alerts"
    assert stored[0] == stored[1]
