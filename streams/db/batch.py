"""One ingest batch in PostgreSQL: what it reads before it decides, and ``write_batch``, which
writes every table the batch decided, in order, in one transaction.

The worker's step (``streams.services.ingest``) is: decode the records, read what the batch
needs (one query per table: ``load`` in alert_state, for an acknowledgement of an alert no
longer in its state ``stored_alerts``, and, for a batch whose write was refused as a
re-delivery, ``known_events`` in event_ids), decide (pure),
then ``write`` (``write_batch``), then publish; the reads and the write of a batch share one
connection (``session``). Nothing is
written before the decision, so a decision that is refused at the write (an event another
worker stored meanwhile, a state another worker changed: ``EventConflict``,
``StateConflict``) rolls everything back and the step runs again from its reads.
``PgIngestStore`` is that store on a pool; ``streams.db.memory.MemoryIngestStore`` is the
same interface in memory (the contract suite in tests/contract runs one set of tests
against both).

The tracking position: the batch's Kafka offsets are committed after ``write_batch``
commits (agents/ingest.py), and ``event_ids`` (written first, here) is what makes a
re-delivered batch add nothing, so a crash between the two repeats a batch harmlessly.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from alerts.models import Alert, AlertChange
from alerts.rollup import Rollups
from alerts.state import PatientState
from billing.ledger import LedgerRows
from intake.engine import IntakeState
from intake.rules import IntakeRules
from schemas.events import EpisodeStarted, Event, PatientKey
from streams.db.access import record_patient_clinicians, record_patients
from streams.db.alert_states import StateCache, StateStore, ingest_batch, ingest_batch_done
from streams.db.alerts import (
    Queued,
    alerts_by_id,
    published,
    queue_publish,
    queued,
    unpublished,
    upsert_alerts,
)
from streams.db.deliveries import queue_deliveries
from streams.db.events import EventKey, insert_new_events, known_events, refused_for_content
from streams.db.intake_rules import current_rules
from streams.db.intakes import IntakeOrgKey, IntakeWrite, load_intakes, write_intakes
from streams.db.ledger import write_ledger
from streams.db.pool import Pool
from streams.db.refresh import mark as mark_refresh
from streams.db.rollups import write_rollups


class EventConflict(Exception):
    """An event the batch decided was new is stored already (another worker took it after
    this one read): roll back and run the batch again from the load."""


@dataclass(frozen=True)
class Wanted:
    """The states a batch reads before it decides."""

    patients: tuple[PatientKey, ...] = ()  # of the patients its items name
    partitions: tuple[int, ...] = ()  # every stored state of these (a tick's partition)


@dataclass(frozen=True)
class BatchWrite:
    """Everything one batch decided, as ``write_batch`` writes it (in this order)."""

    events: tuple[Event, ...] = ()  # the new events, each once
    # their JSON as received, by (organisation, event_id): stored as it is (it passed the
    # contract); an event without one is serialised from the model
    payloads: Mapping[EventKey, bytes] = field(default_factory=dict)
    ledger: LedgerRows = field(default_factory=LedgerRows)  # their billing ledger rows
    changes: tuple[AlertChange, ...] = ()  # alerts, their deliveries and rtm.alerts outbox
    rollups: Rollups = Rollups((), ())  # the worklist's rows of the touched patients
    states: Mapping[PatientKey, PatientState] = field(default_factory=dict)  # touched ones
    partitions: Mapping[PatientKey, int] = field(default_factory=dict)  # of those states
    intakes: Mapping[IntakeOrgKey, IntakeWrite] = field(default_factory=dict)  # changed ones
    # the patients whose derived views to refresh (streams.services.refresh): those of the
    # new events and those whose rule state moved (a tick's day: the pathway's time moves)
    marks: tuple[PatientKey, ...] = ()

    @property
    def patients(self) -> list[PatientKey]:
        """The (organisation, patient) pairs the new events make known."""
        return sorted({e.patient_key for e in self.events})

    @property
    def clinicians(self) -> list[tuple[str, str, str]]:
        """(organisation, patient, clinician) of the new episodes: whom a scope covers."""
        return sorted(
            {(*e.patient_key, e.clinician_id) for e in self.events if isinstance(e, EpisodeStarted)}
        )

    @property
    def empty(self) -> bool:
        return not (
            self.events
            or len(self.ledger)
            or self.changes
            or self.rollups.patients
            or self.rollups.days
            or self.states
            or self.intakes
        )


@dataclass(frozen=True)
class Written:
    seqs: tuple[int, ...] = ()  # the rtm.alerts outbox's seq of each change, in order
    billing_days: int = 0  # data days the ledger did not have


async def write_batch(conn: asyncpg.Connection, states: StateStore, batch: BatchWrite) -> Written:
    """Write one batch in one transaction: events (refusing one stored meanwhile), known
    patients and their clinicians, the ledger, alerts, rollups, deliveries, the rtm.alerts
    outbox, the intakes, the patients' refresh marks (their claim-line readiness and outcome
    rows are refreshed off the ingest path: ``streams.services.refresh``), then the states
    (refusing one changed since it was read). The state cache learns the states after the
    commit."""
    days = 0
    async with conn.transaction():
        if batch.events:
            stored = await insert_new_events(conn, batch.events, batch.payloads)
            if len(stored) != len(batch.events):
                raise EventConflict(f"{len(batch.events) - len(stored)} events stored meanwhile")
        await record_patients(conn, batch.patients)
        await record_patient_clinicians(conn, batch.clinicians)
        if len(batch.ledger):
            days, _, _ = await write_ledger(conn, batch.ledger)
        await upsert_alerts(conn, batch.changes)
        await write_rollups(conn, batch.rollups)
        await write_intakes(conn, batch.intakes)
        await mark_refresh(conn, batch.marks)  # their readiness and outcome rows, later
        await queue_deliveries(conn, batch.changes)
        seqs = await queue_publish(conn, batch.changes)
        await states.save(conn, dict(batch.states), dict(batch.partitions))
    states.commit_saved()
    return Written(tuple(seqs), days)


class PgIngestStore:
    """The ingest step's store on PostgreSQL (``streams.services.ingest.IngestStore``): a
    batch's session holds one connection from its first read to its commit."""

    def __init__(
        self, pool: Pool, partition_of: Callable[[PatientKey], int], state_cache: int = 0
    ) -> None:
        self.pool = pool
        self.partition_of = partition_of
        # decoded states by patient, with the revision and partition they were stored at;
        # at most ``state_cache`` patients (0: no limit)
        self.cache = StateCache(state_cache)
        self.partitions_assigned = False  # states stored without one (013) given theirs

    @asynccontextmanager
    async def session(self) -> AsyncIterator[PgSession]:
        states = StateStore(self.cache)  # the revisions this session read, the cache shared
        async with self.pool.acquire() as conn:
            await ingest_batch(conn)  # no refresh writes a state from here to the commit
            try:
                if not self.partitions_assigned:
                    await states.assign_partitions(conn, self.partition_of)
                    self.partitions_assigned = True
                yield PgSession(conn, states)
            except BaseException:
                states.forget()  # its patients are read from the table next time
                raise
            finally:
                with contextlib.suppress(asyncpg.PostgresError, OSError):  # a broken
                    await ingest_batch_done(conn)  # connection has dropped it already

    async def refused_for_content(self, events: Sequence[Event]) -> dict[EventKey, str]:
        async with self.pool.acquire() as conn:
            return await refused_for_content(conn, events)

    async def warm_states(self, patients: Sequence[PatientKey]) -> int:
        async with self.pool.acquire() as conn:
            return await StateStore(self.cache).warm(conn, patients)

    async def intake_rule_sets(self) -> dict[str, IntakeRules]:
        async with self.pool.acquire() as conn:
            return await current_rules(conn)

    async def unpublished(self, older_than_s: float, limit: int) -> list[Queued]:
        async with self.pool.acquire() as conn:
            return await unpublished(conn, older_than_s, limit)

    async def queued(self, seqs: Sequence[int]) -> list[Queued]:
        async with self.pool.acquire() as conn:
            return await queued(conn, seqs)

    async def published(self, seqs: Sequence[int]) -> None:
        async with self.pool.acquire() as conn:
            await published(conn, seqs)


class PgSession:
    """One batch's reads and its write, on one connection."""

    def __init__(self, conn: asyncpg.Connection, states: StateStore) -> None:
        self.conn = conn
        self.states = states

    async def known_events(self, keys: Sequence[EventKey]) -> set[EventKey]:
        return await known_events(self.conn, keys)

    async def load(self, wanted: Wanted) -> dict[PatientKey, PatientState]:
        return await self.states.load(self.conn, wanted.patients, wanted.partitions)

    async def stored_alerts(self, ids: Sequence[str]) -> dict[str, Alert]:
        return await alerts_by_id(self.conn, ids) if ids else {}

    async def intakes(self, keys: Sequence[IntakeOrgKey]) -> dict[IntakeOrgKey, IntakeState]:
        return await load_intakes(self.conn, keys)

    async def write(self, batch: BatchWrite) -> Written:
        if batch.empty:
            return Written()  # nothing to write: no transaction
        return await write_batch(self.conn, self.states, batch)
