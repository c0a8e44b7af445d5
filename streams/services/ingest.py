"""The ingest step: one batch of rtm.events records, decided, then written, then published.

``Ingest.record_batch(records)`` is the use case the worker runs per fetch
(agents/ingest.py consumes, agents/pipeline.py wires it):

1. **decode** (``decode``): records to typed items (events, ticks, acks) and dead letters;
   the dead-letter guard halts a bad deploy before anything is sent or an offset moves;
2. **load** (an ``IngestSession``, one query per table): the states of the patients the
   items name (and, for a tick, every state of its partition) and the stored snapshots of
   the alerts it acknowledges that left their state (``acked_elsewhere``). The events are
   assumed new; only when the write refuses one as stored already (a re-delivery), or
   before an episode is dead-lettered, is ``event_ids`` read first (``fresh_items`` drops
   the stored ones);
3. **decide** (``decide``, pure): ``alerts.batch.apply_batch``, the billing ledger rows and
   the rollups, as one ``BatchWrite``;
4. **write** (``IngestSession.write``: ``streams.db.batch.write_batch``): every table, in
   order, in one transaction; a decision another worker made stale is refused there and the
   batch runs again from the load;
5. **publish** the batch's alert changes to rtm.alerts (``streams.services.alerts``);
6. **metrics**.

A SIGKILL anywhere loses nothing (the batch is re-delivered; its write was all or nothing)
and doubles nothing (``event_ids`` says which events are new; the outbox re-sends, consumers
dedupe by id + change).

A patient is (organisation, patient_id): the gateway's stamp (``org_id``; a record written
straight to Kafka without one is DEFAULT_ORG's) and the patient id together key the state,
the events (an event id is unique per organisation), the ledger, alerts and rollups, so two
organisations sending one patient_id never meet. The Kafka key is ``<org>/<patient_id>``.

Dead letters (``rtm.events.dead``, with the reason): records the contract refuses, events
dated more than ``RTM_MAX_FUTURE_SKEW_S`` after their receipt, records the database refuses
for their content (the batch goes on without them) and a second active ``episode.started``.
They are sent before the write, so a crash can repeat one but never lose one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from alerts.batch import AckItem, BatchResult, EventItem, Item, SnoozeItem, TickItem, apply_batch
from alerts.models import DEFAULT_CONFIG, Alert, AlertConfig
from alerts.rollup import rollups
from alerts.state import PatientState
from billing.ledger import ledger_rows
from intake import engine as intake_engine
from intake.engine import IntakeState
from intake.rules import DEFAULT_RULES, IntakeRules
from schemas.events import (
    DEFAULT_ORG,
    Event,
    FieldError,
    PatientKey,
    errors_of,
    future_skew_error,
    key_text,
    parse_event_json,
)
from streams.clock import Clock
from streams.db.alerts import Queued
from streams.db.batch import BatchWrite, EventConflict, Wanted, Written
from streams.db.events import CONTENT_ERRORS, EventKey, event_key
from streams.db.intakes import IntakeOrgKey, IntakeWrite
from streams.kafka import control
from streams.kafka.control import Record
from streams.kafka.producer import dead_letter_payload
from streams.metrics import WorkerMetrics
from streams.services.alerts import Publisher
from streams.services.persist import write_until_done

log = logging.getLogger(__name__)


# --- ports ---------------------------------------------------------------------------------


class IngestSession(Protocol):
    """One batch's reads and its write (in PostgreSQL: on one connection)."""

    async def known_events(self, keys: Sequence[EventKey]) -> set[EventKey]: ...

    async def load(self, wanted: Wanted) -> dict[PatientKey, PatientState]: ...

    async def stored_alerts(self, ids: Sequence[str]) -> dict[str, Alert]: ...

    async def intakes(self, keys: Sequence[IntakeOrgKey]) -> dict[IntakeOrgKey, IntakeState]: ...

    async def write(self, batch: BatchWrite) -> Written: ...


class IngestStore(Protocol):
    """Where a batch is read and written: ``streams.db.batch.PgIngestStore`` (PostgreSQL)
    and ``streams.db.memory.MemoryIngestStore`` (tests/contract holds both to one suite)."""

    def session(self) -> AbstractAsyncContextManager[IngestSession]: ...

    async def refused_for_content(self, events: Sequence[Event]) -> dict[EventKey, str]: ...

    async def intake_rule_sets(self) -> dict[str, IntakeRules]: ...

    async def unpublished(self, older_than_s: float, limit: int) -> list[Queued]: ...

    async def published(self, seqs: Sequence[int]) -> None: ...

    async def warm_states(self, patients: Sequence[PatientKey]) -> int:
        """Take in the rule states another process (the refresh) wrote for these patients,
        where the store keeps decoded states (PostgreSQL's cache; the memory store keeps
        none: 0); how many."""
        ...


class DeadLetters(Protocol):
    """rtm.events.dead."""

    async def dead_letter(self, key: bytes, value: bytes) -> None: ...


# --- decode --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes
    value: bytes  # streams.kafka.producer.dead_letter_payload: the input and why
    reason: str  # the metric's label: contract, future, database, episode_conflict


@dataclass
class Decoded:
    items: list[Item] = field(default_factory=list)  # arrival order
    dead: list[DeadLetter] = field(default_factory=list)
    dead_flags: list[bool] = field(default_factory=list)  # per event record, in record order

    @property
    def events(self) -> list[Event]:
        return [i.event for i in self.items if isinstance(i, EventItem)]

    def dead_runs(self) -> tuple[int, int, int]:
        """Dead letters before the first good record, the longest run between good ones,
        and after the last good one (DeadLetterGuard.check's ``runs``)."""
        runs: list[int] = [0]
        for is_dead in self.dead_flags:
            if is_dead:
                runs[-1] += 1
            else:
                runs.append(0)
        inner = max(runs[1:-1], default=0)
        return runs[0], inner, runs[-1] if len(runs) > 1 else 0


def decode(records: Sequence[Record], max_skew_s: float) -> Decoded:
    """Records to typed items and dead letters.

    Producers may write straight to Kafka, so the worker checks the contract again, and the
    future-date rule against the gateway's received_at or, without one, the record's time.
    """
    out = Decoded()
    for record in records:
        raw = record.value
        ctl = control.decode(raw)
        if isinstance(ctl, control.Tick):
            out.items.append(TickItem(ctl.now, record.partition))
            continue
        if isinstance(ctl, control.Ack):
            ack = AckItem(
                ctl.patient_id,
                ctl.alert_id,
                ctl.at,
                ctl.by,
                None,
                ctl.org_id,
                ctl.disposition,
                ctl.note,
            )
            out.items.append(ack)
            continue
        if isinstance(ctl, control.Snooze):
            out.items.append(
                SnoozeItem(
                    ctl.patient_id, ctl.alert_id, ctl.at, ctl.by, ctl.until, ctl.reason, ctl.org_id
                )
            )
            continue
        try:
            event = parse_event_json(raw)
        except ValidationError as exc:
            out.dead.append(dead_letter(raw, errors_of(exc), "contract"))
            out.dead_flags.append(True)
            continue
        reference = event.received_at
        if reference is None and record.timestamp is not None:
            reference = dt.datetime.fromtimestamp(record.timestamp, dt.UTC)
        if reference is not None:
            err = future_skew_error(event, reference, max_skew_s)
            if err is not None:
                out.dead.append(dead_letter(raw, [err], "future"))
                out.dead_flags.append(True)
                continue
        out.items.append(EventItem(event, raw))
        out.dead_flags.append(False)
    return out


def dead_letter(raw: bytes | dict[str, Any], errors: list[FieldError], reason: str) -> DeadLetter:
    body: Any = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    key = ""
    if isinstance(raw, dict):
        key = key_text((str(raw.get("org_id") or DEFAULT_ORG), str(raw.get("patient_id", ""))))
    return DeadLetter(
        key.encode(), dead_letter_payload(body, [e.model_dump() for e in errors], "worker"), reason
    )


def _event_dead_letter(event: Event, message: str, field_: str, reason: str) -> DeadLetter:
    return dead_letter(
        orjson.loads(event.model_dump_json()), [FieldError(field=field_, message=message)], reason
    )


# --- the dead-letter limit -----------------------------------------------------------------


class DeadLetterLimit(Exception):
    """Too many records dead-lettered: probably a bad deploy (a producer or this worker),
    not bad input. Consumption stops before the offsets move past them."""


@dataclass
class DeadLetterGuard:
    """Counts records and dead letters; says when a batch would cross the limit (pure:
    the caller passes the time). Limits: ``max_consecutive`` dead letters in a row, or a
    dead-letter ratio above ``max_ratio`` over the last ``window_s`` once at least
    ``min_records`` records were seen in it."""

    max_consecutive: int
    max_ratio: float
    window_s: float
    min_records: int
    consecutive: int = 0
    window: list[tuple[float, int, int]] = field(default_factory=list)  # (t, records, dead)

    def check(
        self, now: float, records: int, dead: int, runs: tuple[int, int, int] | None = None
    ) -> str | None:
        """The reason to halt, or None (and the batch is counted). ``records``: the batch's
        event records (controls aside). ``runs``: (dead letters before the batch's first good
        record, the longest run between good ones, after its last good record), in record
        order; a good record ends a run, and without ``runs`` a batch with one good record
        ends the run and starts none. The runs matter: 300 bad records then 2 good ones in one
        fetch are 300 in a row, whether the worker fetched them at once or in pieces."""
        if dead == records:
            longest = self.consecutive + dead
            consecutive = longest
        else:
            leading, inner, trailing = runs if runs is not None else (0, 0, 0)
            longest = max(self.consecutive + leading, inner, trailing)
            consecutive = trailing
        window = [w for w in self.window if w[0] > now - self.window_s]
        seen = sum(w[1] for w in window) + records
        bad = sum(w[2] for w in window) + dead
        if self.max_consecutive and longest >= self.max_consecutive:
            return f"{longest} records dead-lettered in a row (limit {self.max_consecutive})"
        if self.max_ratio < 1.0 and seen >= self.min_records and bad / seen > self.max_ratio:
            return (
                f"{bad} of {seen} records dead-lettered in {self.window_s:g} s "
                f"(limit {self.max_ratio:.0%})"
            )
        self.consecutive = consecutive
        window.append((now, records, dead))
        self.window = window
        return None


# --- decide (pure) -------------------------------------------------------------------------


def event_keys(items: Sequence[Item]) -> list[EventKey]:
    return [event_key(i.event) for i in items if isinstance(i, EventItem)]


def fresh_items(items: Sequence[Item], known: set[EventKey]) -> list[Item]:
    """The items without the events stored already (re-deliveries) and without a repeat of
    an event inside the batch (the first counts)."""
    seen = set(known)
    out: list[Item] = []
    for item in items:
        if isinstance(item, EventItem):
            key = event_key(item.event)
            if key in seen:
                continue
            seen.add(key)
        out.append(item)
    return out


def wanted(items: Sequence[Item]) -> Wanted:
    """The states the (fresh) items need: of their patients and of their ticks'
    partitions."""
    return Wanted(
        patients=tuple(sorted({i.key for i in items if not isinstance(i, TickItem)})),
        partitions=tuple(sorted({i.partition for i in items if isinstance(i, TickItem)})),
    )


def acked_elsewhere(items: Sequence[Item], states: Mapping[PatientKey, PatientState]) -> list[str]:
    """The alerts the items acknowledge that are no longer in their patient's state
    (resolved): their stored snapshots are read."""
    return list(
        dict.fromkeys(
            i.alert_id
            for i in items
            if isinstance(i, AckItem) and i.alert_id not in states[i.key].alerts
        )
    )


def intake_keys(items: Sequence[Item]) -> list[IntakeOrgKey]:
    """The intakes the items' events belong to (intake.submitted, intake.contacted, an
    episode.started naming its intake): their stored states are read."""
    keys: dict[IntakeOrgKey, None] = {}
    for i in items:
        if isinstance(i, EventItem) and (k := intake_engine.intake_key(i.event)) is not None:
            keys[(i.event.patient_key[0], *k)] = None
    return list(keys)


def intake_changes(
    stored: Mapping[IntakeOrgKey, IntakeState],
    new_events: Sequence[Event],
    rules_for: Callable[[str], IntakeRules] = lambda _org: DEFAULT_RULES,
) -> dict[IntakeOrgKey, IntakeWrite]:
    """The intakes the new events change (pure: the intake engine's ``apply`` over each,
    from its stored state), each with its routing, under its organisation's rule set, once
    its intake arrived."""
    states: dict[IntakeOrgKey, IntakeState] = {}
    for event in new_events:
        k = intake_engine.intake_key(event)
        if k is None:
            continue
        key = (event.patient_key[0], *k)
        state = states.get(key) or stored.get(key) or intake_engine.new_state(k)
        states[key] = intake_engine.apply(state, event)
    return {
        key: IntakeWrite(
            state,
            intake_engine.assess(state.submitted, rules_for(key[0]))
            if state.submitted is not None
            else None,
        )
        for key, state in states.items()
    }


FirstContact = tuple[str, float, bool]  # route, seconds, after the due time


def first_contacts(
    stored: Mapping[IntakeOrgKey, IntakeState], writes: Mapping[IntakeOrgKey, IntakeWrite]
) -> tuple[FirstContact, ...]:
    """(route, seconds from submission to first contact, breached) of each intake whose
    first contact becomes known with this batch: routed and contacted now, not both before
    (a contact that came before its intake counts when the intake arrives, as no time). No
    ids: the metrics are labelled by route only."""
    out: list[FirstContact] = []
    for key, w in sorted(writes.items()):
        contact, a = w.state.first_contact_at, w.assessment
        if contact is None or a is None:
            continue
        before = stored.get(key)
        if before is not None and before.submitted is not None and before.first_contact_at:
            continue
        seconds = max((contact - a.submitted_at).total_seconds(), 0.0)
        out.append((a.route, seconds, contact > a.due_at))
    return tuple(out)


@dataclass(frozen=True)
class Decision:
    write: BatchWrite
    result: BatchResult  # the alert changes in order, the episodes refused
    # the intakes first contacted with this batch (the metrics)
    first_contacts: tuple[FirstContact, ...] = ()


def decide(
    states: Mapping[PatientKey, PatientState],
    stored: Mapping[str, Alert],
    fresh: Sequence[Item],
    config: AlertConfig,
    partition_of: Callable[[PatientKey], int],
    intakes: Mapping[IntakeOrgKey, IntakeState] | None = None,
) -> Decision:
    """What the batch's fresh items do, from what was read (pure): the rules over the new
    events, the ticks and the acks (``apply_batch``; an ack of an alert that left its
    patient's state carries the stored snapshot), the new events' ledger rows and the
    touched patients' rollups and the intakes they change (from their stored ``intakes``).
    Their claim lines' readiness and outcome rows follow off the ingest path (the write
    marks them: ``streams.services.refresh``)."""
    items = [
        replace(i, stored=stored[i.alert_id])
        if isinstance(i, AckItem) and i.alert_id in stored
        else i
        for i in fresh
    ]
    new_events = [i.event for i in items if isinstance(i, EventItem)]
    payloads = {event_key(i.event): i.raw for i in items if isinstance(i, EventItem) and i.raw}
    result = apply_batch(states, items, config, partition_of)
    write = BatchWrite(
        events=tuple(new_events),
        payloads=payloads,
        ledger=ledger_rows(new_events),
        changes=tuple(result.changes),
        rollups=rollups(result.states, new_events, before=states),
        states=result.states,
        partitions={k: partition_of(k) for k in result.states},
        intakes=intake_changes(intakes or {}, new_events, config.intake_rules_for),
        marks=tuple(sorted({*(e.patient_key for e in new_events), *result.states})),
    )
    return Decision(write, result, first_contacts(intakes or {}, write.intakes))


# --- the step ------------------------------------------------------------------------------


def lanes_of(
    items: Sequence[Item], partition_of: Callable[[PatientKey], int], lanes: int
) -> list[list[Item]]:
    """A fetch's items in at most ``lanes`` groups by partition (``partition % lanes``), each
    in arrival order. A patient's items share its partition, so lanes touch disjoint
    patients and can be recorded side by side: one lane's decision runs while another's
    transaction is in the database (issue 21)."""
    if lanes <= 1:
        return [list(items)]
    out: dict[int, list[Item]] = {}
    for item in items:
        part = item.partition if isinstance(item, TickItem) else partition_of(item.key)
        out.setdefault(part % lanes, []).append(item)
    return [out[k] for k in sorted(out)]


@dataclass(frozen=True)
class Recorded:
    decision: Decision
    written: Written


class Ingest:
    """The step, on its ports: a store, rtm.events.dead, the rtm.alerts publisher."""

    def __init__(
        self,
        store: IngestStore,
        dead_letters: DeadLetters,
        publisher: Publisher,
        metrics: WorkerMetrics,
        clock: Clock,
        *,
        partitions: int,
        max_future_skew_s: float,
        guard: DeadLetterGuard,
        config: AlertConfig = DEFAULT_CONFIG,
        rules_refresh_s: float = 30.0,
        lanes: int = 1,
        lane_min_items: int = 1,
    ) -> None:
        self.store = store
        self.dead_letters = dead_letters
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.partitions = partitions
        self.max_future_skew_s = max_future_skew_s
        self.guard = guard
        self.config = config
        self.rules_refresh_s = rules_refresh_s
        self._rules_read_at: float | None = None
        self.lanes = lanes  # transactions in flight per fetch, on disjoint partitions
        self.lane_min_items = lane_min_items  # ... for a fetch of at least this many items
        # when the last fetch was recorded (monotonic), and fetches being recorded now: the
        # refresh off the ingest path yields while ingestion is busy (``idle_for``)
        self._recorded_at = time.monotonic()
        self._recording = 0
        # the last fetch's alert changes on their way to rtm.alerts (``_publish_in_order``)
        self._publishing: set[asyncio.Task[None]] = set()

    def partition_of(self, key: PatientKey) -> int:
        """The rtm.events partition of a patient: the one its Kafka key hashes to."""
        return control.patient_partition(key, self.partitions)

    def idle_for(self) -> float:
        """Seconds since the last fetch with events was recorded; 0 while one is."""
        return 0.0 if self._recording else time.monotonic() - self._recorded_at

    async def record_batch(self, records: Sequence[Record]) -> None:
        """One fetch of rtm.events: decode, load, decide, write, publish, metrics."""
        batch = decode(records, self.max_future_skew_s)
        if not batch.events:  # ticks and acks: the refresh need not yield to them
            await self._record_fetch(batch)
            return
        self._recording += 1
        try:
            await self._record_fetch(batch)
        finally:
            self._recording -= 1
            self._recorded_at = time.monotonic()

    async def _record_fetch(self, batch: Decoded) -> None:
        if batch.dead:
            # before a dead letter is sent or an offset moves: a bad deploy halts here
            n_events = len(batch.events) + len(batch.dead)
            reason = self.guard.check(
                time.monotonic(), n_events, len(batch.dead), batch.dead_runs()
            )
            if reason is not None:
                raise DeadLetterLimit(reason)
        elif batch.events:
            self.guard.check(time.monotonic(), len(batch.events), 0)
        await self._send_dead(batch.dead)
        if not batch.items:
            return
        await self._refresh_intake_rules()
        n_lanes = self.lanes if len(batch.items) >= self.lane_min_items else 1
        lanes = lanes_of(batch.items, self.partition_of, n_lanes)
        await asyncio.gather(*(self._record_lane(items) for items in lanes))

    async def _record_lane(self, items: Sequence[Item]) -> None:
        """Load, decide, write, publish and measure one lane of a fetch (its own
        transaction; the lanes of a fetch hold disjoint partitions, so disjoint patients)."""
        t0 = time.perf_counter()
        recorded = await write_until_done(lambda: self._record(items), "batch")
        self.metrics.write_latency.observe(time.perf_counter() - t0)
        received = self._measure([i.event for i in items if isinstance(i, EventItem)], recorded)
        changes = recorded.decision.result.changes
        rows = [
            Queued(seq, key_text((ch.alert.org_id, ch.alert.patient_id)), ch.model_dump_json())
            for seq, ch in zip(recorded.written.seqs, changes, strict=True)
        ]
        await self._publish_in_order(rows, received)

    async def _publish_in_order(
        self, rows: Sequence[Queued], received: dict[str, dt.datetime]
    ) -> None:
        """Hand a committed batch's alert changes to rtm.alerts behind the previous fetch's,
        without waiting for Kafka's acks and the outbox's delete: the next fetch is decided
        and written meanwhile (docs/benchmarks.md, tenth round). The previous fetch's
        publish is waited for first, so changes leave in the order they were decided and at
        most one fetch's publish runs ahead. What a crash leaves unsent was committed to the
        outbox with the batch; the outbox timer sends it."""
        await self.published()
        if not rows:
            return
        task = asyncio.create_task(self._publish(rows, received))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, rows: Sequence[Queued], received: dict[str, dt.datetime]) -> None:
        try:
            await self.publisher.publish(rows, received)
        except Exception as exc:  # committed and queued: the outbox timer sends them
            log.warning("alert changes left in the outbox (%s)", type(exc).__name__)

    async def published(self) -> None:
        """Wait until the alert changes of every fetch recorded so far have been published
        (or, if the broker refused them, left in the outbox for its timer)."""
        if self._publishing:
            await asyncio.wait(set(self._publishing))

    async def _refresh_intake_rules(self) -> None:
        """The organisations' own intake rule sets (`rtm intake rules set`), read before the
        first batch and then every ``rules_refresh_s``: one stored meanwhile takes effect
        within that."""
        now = time.monotonic()
        if self._rules_read_at is not None and now - self._rules_read_at < self.rules_refresh_s:
            return
        by_org = await write_until_done(self.store.intake_rule_sets, "intake rule sets")
        if by_org != self.config.intake_rules_by_org:
            self.config = self.config.model_copy(update={"intake_rules_by_org": by_org})
        self._rules_read_at = now

    async def _record(self, items: Sequence[Item]) -> Recorded:
        """Load, decide, write; the events the database refuses for their content are
        dead-lettered and the batch goes on without them."""
        read_known = False
        while True:
            try:
                return await self._once(items, read_known)
            except EventConflict:
                read_known = True  # a re-delivery (or another worker's): read event_ids
            except CONTENT_ERRORS:
                events = [i.event for i in items if isinstance(i, EventItem)]
                refused = await self.store.refused_for_content(events)
                if not refused:
                    raise  # not one event's content: a fault of the batch, retried
                await self._send_dead(
                    [
                        _event_dead_letter(e, f"refused by the database: {why}", "", "database")
                        for e in events
                        if (why := refused.get(event_key(e)))
                    ]
                )
                items = [
                    i
                    for i in items
                    if not (isinstance(i, EventItem) and event_key(i.event) in refused)
                ]

    async def _once(self, items: Sequence[Item], read_known: bool) -> Recorded:
        """One try. Without ``read_known`` the batch's events are assumed new (the common
        case: one round trip fewer); the write refuses one stored already (EventConflict)
        and the try is made again reading event_ids first. A decision that dead-letters an
        episode is always made with event_ids read, so a re-delivery never repeats one."""
        async with self.store.session() as session:
            while True:
                known = await session.known_events(event_keys(items)) if read_known else set()
                fresh = fresh_items(items, known)
                states = await session.load(wanted(fresh)) if fresh else {}
                stored = await session.stored_alerts(acked_elsewhere(fresh, states))
                keys = intake_keys(fresh)
                intakes = await session.intakes(keys) if keys else {}
                decision = decide(
                    states,
                    stored,
                    fresh,
                    self.config,
                    self.partition_of,
                    intakes,
                )
                if read_known or not decision.result.refused:
                    break
                read_known = True
            # events.md: a second active episode is rejected (409-style) with a clear
            # reason; the log keeps the event, every derived number ignores it. Sent
            # before the write commits, so a crash can repeat one but never lose one.
            await self._send_dead(
                [
                    _event_dead_letter(
                        ev, f"episode_id: {reason} (conflict)", "episode_id", "episode_conflict"
                    )
                    for ev, reason in decision.result.refused
                ]
            )
            written = await session.write(decision.write)
        return Recorded(decision, written)

    def _measure(self, events: Sequence[Event], recorded: Recorded) -> dict[str, dt.datetime]:
        """The batch's metrics; returns received_at by event id of the new events (the
        alert latency's start)."""
        m = self.metrics
        new_events = recorded.decision.write.events
        if recorded.written.billing_days:
            m.billing_days.inc(recorded.written.billing_days)
        m.batch_size.observe(len(events))
        m.events_stored.inc(len(new_events))
        m.duplicates.inc(len(events) - len(new_events))
        now = self.clock.now()
        received: dict[str, dt.datetime] = {}
        for etype, n in Counter(e.type for e in events).items():
            m.events_processed.labels(etype).inc(n)  # taken, new or re-delivered
        for e in new_events:
            if e.received_at is not None:
                m.e2e_persisted.observe((now - e.received_at).total_seconds())
                received[e.event_id] = e.received_at
        for ch in recorded.decision.result.changes:
            if ch.change == "fired":
                m.alerts_fired.labels(ch.alert.kind, ch.alert.severity).inc()
                if ch.alert.unrouted:
                    m.alerts_unrouted.labels(ch.alert.kind).inc()
        for route, seconds, breached in recorded.decision.first_contacts:
            m.intake_first_contact.labels(route).observe(seconds)
            if breached:
                m.intake_breaches.labels(route).inc()
        return received

    async def _send_dead(self, dead: Sequence[DeadLetter]) -> None:
        for letter in dead:
            await self.dead_letters.dead_letter(letter.key, letter.value)
            self.metrics.dead_letters.labels(letter.reason).inc()
