"""One suite, two stores: what the ingest step relies on from its store (``IngestStore``:
sessions that read, then write one batch; the outbox; the content probe), run against the
in-memory store and PostgreSQL (conftest.py's ``probe``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import orjson
import pytest

from alerts.batch import EventItem, Item, apply_batch
from alerts.models import DEFAULT_CONFIG, AlertChange
from alerts.rollup import PatientRollup, Rollups
from alerts.state import encode_state
from schemas.events import key_text, parse_event_json
from streams.db.alert_states import StateConflict
from streams.db.batch import BatchWrite, EventConflict, Wanted, Written
from streams.services.ingest import (
    Decision,
    acked_elsewhere,
    decide,
    fresh_items,
    intake_keys,
    wanted,
)
from tests.conftest import EventFactory
from tests.contract.conftest import NOW, Probe, partition_of

A, B = "clinic-a", "clinic-b"


def ev(raw: dict[str, Any], org: str) -> EventItem:
    return EventItem(parse_event_json(orjson.dumps({**raw, "org_id": org})))


def event_keys(items: list[Item]) -> list[tuple[str, str]]:
    return [(i.event.patient_key[0], i.event.event_id) for i in items if isinstance(i, EventItem)]


async def record(probe: Probe, items: list[Item]) -> tuple[Decision, Written]:
    """The step's reads, decision and write (streams.services.ingest), without Kafka."""
    async with probe.store.session() as s:
        fresh = fresh_items(items, await s.known_events(event_keys(items)))
        states = await s.load(wanted(fresh)) if fresh else {}
        stored = await s.stored_alerts(acked_elsewhere(fresh, states))
        keys = intake_keys(fresh)
        intakes = await s.intakes(keys) if keys else {}
        decision = decide(states, stored, fresh, DEFAULT_CONFIG, partition_of, intakes)
        return decision, await s.write(decision.write)


async def write(probe: Probe, batch: BatchWrite) -> Written:
    async with probe.store.session() as s:
        return await s.write(batch)


def fired(factory: EventFactory, org: str, clinician: str) -> AlertChange:
    """A pain_high alert of a new patient of ``clinician``, as the engine fires it."""
    p = factory.patient(factory.n)
    start = ev(factory.episode_started(p, clinician_id=clinician), org)
    pain = ev(factory.pain(p, 9, "2026-11-03T10:00:00-06:00"), org)
    (change,) = apply_batch({}, [start, pain], DEFAULT_CONFIG).changes
    return change


# --- reads ---------------------------------------------------------------------------------


async def test_an_event_is_stored_once_per_organisation(
    probe: Probe, factory: EventFactory
) -> None:
    e = factory.episode_started(factory.patient(1))
    await record(probe, [ev(e, A)])
    async with probe.store.session() as s:
        known = await s.known_events([(A, e["event_id"]), (B, e["event_id"])])
    assert known == {(A, e["event_id"])}  # another organisation's id is another event
    decision, _ = await record(probe, [ev(e, A), ev(e, B)])
    assert [x.patient_key[0] for x in decision.write.events] == [B]
    assert await probe.events() == {(A, e["event_id"]), (B, e["event_id"])}


async def test_a_state_reads_back_as_written_and_its_revision_rises(
    probe: Probe, factory: EventFactory
) -> None:
    p = factory.patient(1)
    key = (A, p)
    async with probe.store.session() as s:
        (new,) = (await s.load(Wanted(patients=(key,)))).values()
    assert new.key == key and not new.alerts and not new.episode_events  # none stored: new
    assert await probe.state_rev(key) is None
    decision, _ = await record(probe, [ev(factory.episode_started(p), A)])
    async with probe.store.session() as s:
        loaded = await s.load(Wanted(patients=(key,)))
    assert encode_state(loaded[key]) == encode_state(decision.write.states[key])
    assert await probe.state_rev(key) == 1
    await record(probe, [ev(factory.pain(p, 4, "2026-11-03T10:00:00-06:00"), A)])
    assert await probe.state_rev(key) == 2


async def test_a_tick_reads_every_state_of_its_partition(
    probe: Probe, factory: EventFactory
) -> None:
    keys = [(A, factory.patient(i)) for i in range(12)]
    await record(probe, [ev(factory.episode_started(k[1]), A) for k in keys])
    for part in range(4):
        async with probe.store.session() as s:
            loaded = await s.load(Wanted(partitions=(part,)))
        assert set(loaded) == {k for k in keys if partition_of(k) == part}
    # named patients (one not stored) and a partition, in one read
    async with probe.store.session() as s:
        loaded = await s.load(Wanted(patients=(keys[0], (B, "nobody")), partitions=(3,)))
    assert set(loaded) == {keys[0], (B, "nobody")} | {k for k in keys if partition_of(k) == 3}


async def test_stored_alerts_are_read_by_id(probe: Probe, factory: EventFactory) -> None:
    change = fired(factory, A, "c-01")
    await write(probe, BatchWrite(changes=(change,)))
    async with probe.store.session() as s:
        stored = await s.stored_alerts([change.alert.id, "no-such-alert"])
    assert stored == {change.alert.id: change.alert}


# --- the write: every table, all or nothing ------------------------------------------------


async def test_one_batch_writes_every_table(probe: Probe, factory: EventFactory) -> None:
    p = factory.patient(1)
    key = (A, p)
    start = factory.episode_started(p)
    pain = factory.pain(p, 9, "2026-11-03T10:00:00-06:00")
    walk = factory.exercise(p, "2026-11-03T18:00:00-06:00")
    decision, written = await record(probe, [ev(start, A), ev(pain, A), ev(walk, A)])

    (change,) = decision.write.changes
    assert change.change == "fired" and change.alert.kind == "pain_high"
    assert await probe.events() == {(A, e["event_id"]) for e in (start, pain, walk)}
    assert await probe.patients() == {key}
    assert await probe.clinicians() == {(A, p, "c-01")}
    assert await probe.data_days() == {(A, p, dt.date(2026, 11, 3))}
    assert written.billing_days == 1
    assert await probe.alert(change.alert.id) == change.alert
    assert await probe.deliveries() == {(change.alert.id, "fired"): ("no_webhook", None)}
    (queued,) = await probe.store.unpublished(0, 10)
    assert (queued.seq, queued.key) == (written.seqs[0], key_text(key))
    assert AlertChange.model_validate_json(queued.payload) == change
    rollup = await probe.rollup(key)
    assert rollup is not None and (rollup[0], rollup[3]) == (9, 1)  # latest pain, open alerts
    assert dt.date(2026, 11, 3) in await probe.adherence_days(key)  # the sparkline's days
    assert await probe.state_rev(key) == 1


async def test_a_batch_with_nothing_new_writes_nothing(probe: Probe, factory: EventFactory) -> None:
    batch: list[Item] = [ev(factory.episode_started(factory.patient(1)), A)]
    await record(probe, batch)
    decision, written = await record(probe, batch)  # re-delivered
    assert decision.write.empty and written == Written()
    assert await write(probe, BatchWrite()) == Written()


async def test_an_event_stored_meanwhile_refuses_the_whole_write(
    probe: Probe, factory: EventFactory
) -> None:
    """Another worker took an event between this batch's read and its write: nothing of
    this batch is written (the step runs it again from its reads)."""
    p, q = factory.patient(1), factory.patient(2)
    shared = factory.episode_started(p)
    items: list[Item] = [
        ev(shared, A),
        ev(factory.episode_started(q), A),
        ev(factory.pain(q, 9, "2026-11-03T10:00:00-06:00"), A),
    ]
    async with probe.store.session() as slow:
        fresh = fresh_items(items, await slow.known_events(event_keys(items)))
        decision = decide(await slow.load(wanted(fresh)), {}, fresh, DEFAULT_CONFIG, partition_of)
        assert decision.write.changes  # the pain report fires
        await record(probe, [ev(shared, A)])  # the other worker, first
        with pytest.raises(EventConflict):
            await slow.write(decision.write)
    assert await probe.events() == {(A, shared["event_id"])}
    assert await probe.state_rev((A, q)) is None
    assert await probe.store.unpublished(0, 10) == []
    assert await probe.deliveries() == {}


async def test_a_state_changed_since_read_refuses_the_whole_write(
    probe: Probe, factory: EventFactory
) -> None:
    p = factory.patient(1)
    key = (A, p)
    await record(probe, [ev(factory.episode_started(p), A)])
    late: list[Item] = [ev(factory.pain(p, 9, "2026-11-03T10:00:00-06:00"), A)]
    async with probe.store.session() as slow:
        fresh = fresh_items(late, await slow.known_events(event_keys(late)))
        decision = decide(await slow.load(wanted(fresh)), {}, fresh, DEFAULT_CONFIG, partition_of)
        assert decision.write.changes
        # another worker writes the same patient meanwhile
        await record(probe, [ev(factory.exercise(p, "2026-11-03T18:00:00-06:00"), A)])
        with pytest.raises(StateConflict):
            await slow.write(decision.write)
    assert set(event_keys(late)).isdisjoint(await probe.events())
    assert await probe.state_rev(key) == 2
    assert await probe.store.unpublished(0, 10) == []


async def test_an_alert_status_only_rises(probe: Probe, factory: EventFactory) -> None:
    """Snapshots may come again out of order (a re-sent older one): a status never goes
    back; in one batch the last snapshot of an id wins."""
    change = fired(factory, A, "c-01")
    resolved = change.alert.model_copy(update={"status": "resolved", "resolved_at": NOW})
    await write(probe, BatchWrite(changes=(AlertChange(change="resolved", alert=resolved),)))
    await write(probe, BatchWrite(changes=(change,)))
    assert await probe.alert(change.alert.id) == resolved

    other = fired(factory, A, "c-01")
    acked = other.alert.acknowledged(NOW, "dr-who")
    await write(probe, BatchWrite(changes=(other, AlertChange(change="acknowledged", alert=acked))))
    assert await probe.alert(other.alert.id) == acked
    await write(probe, BatchWrite(changes=(other,)))
    assert await probe.alert(other.alert.id) == acked


async def test_deliveries_go_to_the_clinician_else_the_clinic_else_nowhere(
    probe: Probe, factory: EventFactory
) -> None:
    await probe.set_webhook(A, "c-01")
    await probe.set_webhook(A, "*")
    own = fired(factory, A, "c-01")
    clinic = fired(factory, A, "c-02")
    nowhere = fired(factory, B, "c-01")
    await write(probe, BatchWrite(changes=(own, clinic, nowhere)))
    await write(probe, BatchWrite(changes=(own,)))  # queued again: one per (alert, change)
    assert await probe.deliveries() == {
        (own.alert.id, "fired"): ("pending", "c-01"),
        (clinic.alert.id, "fired"): ("pending", "*"),
        (nowhere.alert.id, "fired"): ("no_webhook", None),
    }


async def test_the_outbox_keeps_the_changes_in_order_until_published(
    probe: Probe, factory: EventFactory
) -> None:
    changes = tuple(fired(factory, A, "c-01") for _ in range(3))
    written = await write(probe, BatchWrite(changes=changes))
    assert list(written.seqs) == sorted(set(written.seqs)) and len(written.seqs) == 3
    queued = await probe.store.unpublished(0, 10)
    assert [q.seq for q in queued] == list(written.seqs)
    assert [AlertChange.model_validate_json(q.payload) for q in queued] == list(changes)
    assert [q.key for q in queued] == [key_text((A, c.alert.patient_id)) for c in changes]
    assert [q.seq for q in await probe.store.unpublished(0, 2)] == list(written.seqs[:2])
    assert await probe.store.unpublished(3600, 10) == []  # queued just now: not left behind
    # by seq (the refresh's changes, sent by the worker): those still queued, in order
    assert await probe.store.queued(written.seqs[::-1]) == queued
    await probe.store.published(written.seqs[:2])
    assert [q.seq for q in await probe.store.unpublished(0, 10)] == [written.seqs[2]]
    assert await probe.store.queued(written.seqs) == queued[2:]
    assert await probe.store.queued([]) == []
    more = await write(probe, BatchWrite(changes=(fired(factory, A, "c-01"),)))
    assert more.seqs[0] > written.seqs[2]


async def test_a_data_day_is_counted_once(probe: Probe, factory: EventFactory) -> None:
    p = factory.patient(1)
    first_day: list[Item] = [
        ev(factory.episode_started(p), A),
        ev(factory.exercise(p, "2026-11-03T08:00:00-06:00"), A),
    ]
    _, first = await record(probe, first_day)
    _, again = await record(probe, [ev(factory.exercise(p, "2026-11-03T18:00:00-06:00"), A)])
    _, next_day = await record(probe, [ev(factory.exercise(p, "2026-11-04T18:00:00-06:00"), A)])
    assert (first.billing_days, again.billing_days, next_day.billing_days) == (1, 0, 1)
    assert await probe.data_days() == {(A, p, dt.date(2026, 11, 3)), (A, p, dt.date(2026, 11, 4))}


async def test_rollups_keep_the_newest_pain_and_activity(probe: Probe) -> None:
    """A late-synced older report must not hide a newer one; open alerts are replaced."""
    t1, t2 = NOW - dt.timedelta(days=2), NOW - dt.timedelta(days=1)
    newer = PatientRollup(
        patient_id="p-1",
        last_activity_at=t2,
        latest_pain=5,
        latest_pain_at=t2,
        pain_baseline=4.0,
        open_critical=1,
        open_high=0,
        open_medium=0,
        open_low=0,
        open_adherence_low=0,
        open_inactivity=0,
        open_billing_at_risk=0,
        open_alerts=1,
        oldest_open=t2,
        open_kinds=("pain_high",),
        org_id=A,
    )
    older = dataclasses.replace(
        newer,
        last_activity_at=t1,
        latest_pain=8,
        latest_pain_at=t1,
        open_critical=0,
        open_alerts=0,
        oldest_open=None,
        open_kinds=(),
    )
    await write(probe, BatchWrite(rollups=Rollups((newer,), ())))
    await write(probe, BatchWrite(rollups=Rollups((older,), ())))
    assert await probe.rollup((A, "p-1")) == (5, t2, t2, 0)


async def test_valid_events_are_not_refused_for_their_content(
    probe: Probe, factory: EventFactory
) -> None:
    """The probe the step runs after the store refused a batch for content: it names only
    events the store refuses on their own, and writes nothing."""
    p = factory.patient(1)
    items = [
        ev(factory.episode_started(p), A),
        ev(factory.pain(p, 3, "2026-11-03T10:00:00-06:00"), A),
    ]
    assert await probe.store.refused_for_content([i.event for i in items]) == {}
    assert await probe.events() == set()


async def test_a_late_episode_end_takes_its_later_days_out(
    probe: Probe, factory: EventFactory
) -> None:
    """Issue 17: the daily adherence rows are the events' whatever their order. An
    episode.ended arriving after the days it ends were written removes those rows (the
    batch's Rollups.cleared), in either store."""
    p = factory.patient(1)
    key = (A, p)
    start = factory.episode_started(p, at="2026-11-01T09:00:00-06:00")
    walks = factory.daily_exercises(p, dt.date(2026, 11, 1), 10)
    await record(probe, [ev(start, A), *[ev(w, A) for w in walks]])
    days = [dt.date(2026, 11, d) for d in range(1, 11)]
    assert await probe.adherence_days(key) == set(days)
    end = {
        "event_id": factory.episode_started(p)["event_id"],
        "schema_version": 1,
        "type": "episode.ended",
        "patient_id": p,
        "occurred_at": "2026-11-05T12:00:00-06:00",
        "episode_id": start["episode_id"],
        "reason": "discharged",
    }
    await record(probe, [ev(end, A)])
    assert await probe.adherence_days(key) == set(days[:5])


async def test_an_intake_reads_back_per_organisation_with_its_first_contact(
    probe: Probe, factory: EventFactory
) -> None:
    """A contact that arrives before its intake is kept; the intake, in a later batch, is
    read back with it; the same patient and intake id in another organisation is another
    intake (issue 18: the worker keeps intake state in the batch transaction)."""
    p = factory.patient(1)
    contact = {
        "event_id": "c-1",
        "schema_version": 1,
        "type": "intake.contacted",
        "patient_id": p,
        "occurred_at": "2026-11-02T12:00:00-06:00",
        "intake_id": f"{p}-in",
        "channel": "phone",
        "clinician_id": "c-01",
    }
    await record(probe, [ev(contact, A)])
    decision, _ = await record(
        probe,
        [
            ev(factory.intake(p, "2026-11-02T10:00:00-06:00"), A),
            ev(factory.intake(p, "2026-11-02T10:00:00-06:00"), B),
        ],
    )
    written = decision.write.intakes
    assert written[(A, p, f"{p}-in")].state.first_contact_at is not None
    assert written[(B, p, f"{p}-in")].state.first_contact_at is None
    async with probe.store.session() as s:
        got = await s.intakes([(A, p, f"{p}-in"), (B, p, f"{p}-in"), (A, p, "nope")])
    assert set(got) == {(A, p, f"{p}-in"), (B, p, f"{p}-in")}
    a = got[(A, p, f"{p}-in")]
    assert a.submitted is not None and a.first_contact_event_id == "c-1"
    assert a == written[(A, p, f"{p}-in")].state
    assessment = written[(A, p, f"{p}-in")].assessment
    assert assessment is not None and assessment.route in {"digital_pt", "in_person_pt"}
