"""The ingest step's store in memory: the tables ``write_batch`` writes, as dicts.

Same interface as ``streams.db.batch.PgIngestStore`` (``streams.services.ingest.IngestStore``)
and the same behaviour where the step can tell: an event is stored once, a state is written
only over the revision it was read at (``StateConflict``), an event decided new that is
stored meanwhile is refused (``EventConflict``), an alert's status only rises, a delivery is
queued once per (alert, change) and routed to the clinician's webhook else the
organisation's ``*``, outbox rows get rising sequence numbers, rollups keep the newest
activity and pain. A write is all or nothing: it checks before it changes anything. The
suite in tests/contract runs the same tests against both stores.

For tests and in-process runs (``tests/unit/test_step_in_process.py``); nothing in the
worker uses it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from alerts.models import PATHWAY_KINDS, STATUS_RANK, Alert
from alerts.rollup import DailyAdherence, PatientRollup
from alerts.state import PatientState, decode_state, encode_state, new_state
from billing.readiness import STREAM_OF_TYPE, AssessedLine, Stream
from billing.state import fold_events
from intake.engine import IntakeState
from intake.rules import IntakeRules
from outcomes.licences import Activation
from pathways.engine import PATHWAY_EVENT_TYPES
from pathways.model import Pathway
from schemas.events import Event, PatientKey, dump_event, key_text
from streams.clock import SYSTEM_CLOCK, Clock
from streams.db.alert_states import StateConflict
from streams.db.alerts import Queued
from streams.db.batch import BatchWrite, EventConflict, Wanted, Written
from streams.db.events import EventKey, event_key
from streams.db.intakes import IntakeOrgKey, IntakeWrite
from streams.db.outcome_rows import EpisodeOutcome
from streams.db.readiness import READINESS_EVENT_TYPES, ReadinessLoad, ReadinessWrite


@dataclass
class Delivery:
    change_json: str
    status: str  # 'pending', or 'no_webhook' when no endpoint was configured
    webhook_id: int | None


@dataclass
class MemoryIngestStore:
    """Every table of one ingest batch, in memory (see the module)."""

    clock: Clock = SYSTEM_CLOCK  # the outbox's queued_at (the database's now() in PostgreSQL)
    events: dict[EventKey, Event] = field(default_factory=dict)
    patients: set[PatientKey] = field(default_factory=set)
    clinicians: set[tuple[str, str, str]] = field(default_factory=set)
    data_days: dict[tuple[str, str, dt.date, str], str] = field(default_factory=dict)
    time_logs: dict[tuple[str, str], tuple[object, ...]] = field(default_factory=dict)
    episode_events: dict[tuple[str, str], tuple[object, ...]] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)
    rollups: dict[PatientKey, PatientRollup] = field(default_factory=dict)
    adherence: dict[tuple[str, str, dt.date], DailyAdherence] = field(default_factory=dict)
    webhooks: dict[tuple[str, str], int] = field(default_factory=dict)  # (org, clinician) -> id
    deliveries: dict[tuple[str, str], Delivery] = field(default_factory=dict)
    outbox: dict[int, tuple[dt.datetime, Queued]] = field(default_factory=dict)
    # (org, patient) -> (rev, partition, encoded state), as alert_state
    states: dict[PatientKey, tuple[int, int, bytes]] = field(default_factory=dict)
    intakes: dict[IntakeOrgKey, IntakeWrite] = field(default_factory=dict)
    # each organisation's intake rule set in force (intake_rule_sets' newest)
    rule_sets: dict[str, IntakeRules] = field(default_factory=dict)
    # claim readiness: the streams sent (org, stream) -> first event id, and the lines
    streams_seen: dict[tuple[str, Stream], str] = field(default_factory=dict)
    line_readiness: dict[PatientKey, list[tuple[str, AssessedLine, dt.datetime]]] = field(
        default_factory=dict
    )
    # the refresh: patients marked (-> when), and the per-episode outcome rows by patient
    refresh_marks: dict[PatientKey, dt.datetime] = field(default_factory=dict)
    outcome_rows: dict[PatientKey, list[EpisodeOutcome]] = field(default_factory=dict)
    _seq: int = 0

    # --- the port --------------------------------------------------------------------------

    @asynccontextmanager
    async def session(self) -> AsyncIterator[MemorySession]:
        yield MemorySession(self)

    # --- the refresh's port (``streams.services.refresh.RefreshStore``) --------------------
    # No settling in memory: every mark is due (the queue's timing is PostgreSQL's).

    async def claim(
        self, limit: int, settle: dt.timedelta, max_wait: dt.timedelta, stale: dt.timedelta
    ) -> tuple[list[PatientKey], dt.datetime | None]:
        due = sorted(self.refresh_marks, key=lambda k: (self.refresh_marks[k], k))[:limit]
        for key in due:
            del self.refresh_marks[key]
        return sorted(due), (self.clock.now() if due else None)

    @asynccontextmanager
    async def refresh_session(self) -> AsyncIterator[MemoryRefreshSession]:
        yield MemoryRefreshSession(self)

    def partition_of(self, key: PatientKey) -> int:
        """The partition a state was stored under (the refresh writes only stored ones)."""
        return self.states[key][1] if key in self.states else 0

    async def release(self, patients: Sequence[PatientKey], claimed_at: dt.datetime) -> None:
        self.refresh_marks.update(dict.fromkeys(patients, claimed_at))

    async def write(self, batch: BatchWrite, loaded: dict[PatientKey, int]) -> Written:
        """Write one batch whose states were read at ``loaded`` revisions."""
        if batch.empty:
            return Written()
        stored = [e for e in batch.events if event_key(e) in self.events]
        if stored:
            raise EventConflict(f"{len(stored)} events stored meanwhile")
        changed = [
            k
            for k in batch.states
            if (self.states[k][0] if k in self.states else 0) != loaded.get(k, 0)
        ]
        if changed:
            raise StateConflict(f"{len(changed)} states changed since read")
        # checked: from here on nothing refuses, so the write is all or nothing
        for e in batch.events:
            self.events[event_key(e)] = e
        self.patients.update(batch.patients)
        self.clinicians.update(batch.clinicians)
        days_before = len(self.data_days)
        for d in batch.ledger.data_days:
            self.data_days.setdefault((d[0], d[1], d[2], d[3]), d[4])
        for t in batch.ledger.time_logs:
            self.time_logs.setdefault((t[0], t[1]), t)
        for ep in batch.ledger.episode_events:
            self.episode_events.setdefault((ep[0], ep[1]), ep)
        self._upsert_alerts(batch)
        self._write_rollups(batch)
        self._queue_deliveries(batch)
        seqs = self._queue_publish(batch)
        self.intakes.update(batch.intakes)
        self.refresh_marks.update(dict.fromkeys(batch.marks, self.clock.now()))
        for key, state in batch.states.items():
            rev = self.states[key][0] + 1 if key in self.states else 1
            self.states[key] = (rev, batch.partitions[key], encode_state(state))
        return Written(tuple(seqs), len(self.data_days) - days_before)

    async def refused_for_content(self, events: Sequence[Event]) -> dict[EventKey, str]:
        return {}  # memory holds any text; PostgreSQL's refusals have no equivalent here

    async def intake_rule_sets(self) -> dict[str, IntakeRules]:
        return dict(self.rule_sets)

    async def unpublished(self, older_than_s: float, limit: int) -> list[Queued]:
        before = self.clock.now() - dt.timedelta(seconds=older_than_s)
        rows = [q for seq, (at, q) in sorted(self.outbox.items()) if at <= before]
        return rows[:limit]

    async def queued(self, seqs: Sequence[int]) -> list[Queued]:
        return [self.outbox[seq][1] for seq in sorted(set(seqs)) if seq in self.outbox]

    async def published(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self.outbox.pop(seq, None)

    async def warm_states(self, patients: Sequence[PatientKey]) -> int:
        return 0  # no decoded copies kept: a session decodes the stored bytes it reads

    # --- what tests set and read ----------------------------------------------------------

    def set_webhook(self, org_id: str, clinician_id: str) -> int:
        return self.webhooks.setdefault((org_id, clinician_id), len(self.webhooks) + 1)

    def state(self, key: PatientKey) -> PatientState | None:
        stored = self.states.get(key)
        return decode_state(stored[2]) if stored else None

    # --- the tables ------------------------------------------------------------------------

    def _upsert_alerts(self, batch: BatchWrite) -> None:
        for ch in batch.changes:  # the last snapshot of an id wins, a status only rises
            old = self.alerts.get(ch.alert.id)
            if old is None or STATUS_RANK[old.status] <= STATUS_RANK[ch.alert.status]:
                self.alerts[ch.alert.id] = ch.alert

    def _write_rollups(self, batch: BatchWrite) -> None:
        for r in batch.rollups.patients:
            key = (r.org_id, r.patient_id)
            old = self.rollups.get(key)
            if old is not None:
                # activity and pain only move forward (a late-synced event hides nothing)
                newer_pain = r.latest_pain_at is not None and (
                    old.latest_pain_at is None or r.latest_pain_at >= old.latest_pain_at
                )
                r = dataclasses.replace(
                    r,
                    last_activity_at=_greatest(old.last_activity_at, r.last_activity_at),
                    latest_pain=r.latest_pain if newer_pain else old.latest_pain,
                    pain_baseline=r.pain_baseline if newer_pain else old.pain_baseline,
                    latest_pain_at=_greatest(old.latest_pain_at, r.latest_pain_at),
                )
            self.rollups[key] = r
        for org, pid, first in batch.rollups.cleared:
            for k in [k for k in self.adherence if k[:2] == (org, pid) and k[2] >= first]:
                del self.adherence[k]  # the rows from first on are the batch's (Rollups)
        for d in batch.rollups.days:
            self.adherence[(d.org_id, d.patient_id, d.date)] = d

    def _queue_deliveries(self, batch: BatchWrite) -> None:
        for ch in batch.changes:
            a = ch.alert
            own = self.webhooks.get((a.org_id, a.clinician_id))
            webhook = own if own is not None else self.webhooks.get((a.org_id, "*"))
            status = "pending" if webhook is not None else "no_webhook"
            self.deliveries.setdefault(
                (a.id, ch.change), Delivery(ch.model_dump_json(), status, webhook)
            )

    def _queue_publish(self, batch: BatchWrite) -> list[int]:
        now = self.clock.now()
        seqs = []
        for ch in batch.changes:
            self._seq += 1
            key = key_text((ch.alert.org_id, ch.alert.patient_id))
            self.outbox[self._seq] = (now, Queued(self._seq, key, ch.model_dump_json()))
            seqs.append(self._seq)
        return seqs


class MemorySession:
    """One batch's reads and write (``streams.services.ingest.IngestSession``), with the
    revisions of the states it read."""

    def __init__(self, store: MemoryIngestStore) -> None:
        self.store = store
        self.loaded: dict[PatientKey, int] = {}

    async def known_events(self, keys: Sequence[EventKey]) -> set[EventKey]:
        return {k for k in keys if k in self.store.events}

    async def load(self, wanted: Wanted) -> dict[PatientKey, PatientState]:
        stored_states = self.store.states
        parts = set(wanted.partitions)
        ticked = sorted(k for k, (_, part, _) in stored_states.items() if part in parts)
        states: dict[PatientKey, PatientState] = {}
        for key in [*wanted.patients, *ticked]:
            stored = stored_states.get(key)
            states[key] = decode_state(stored[2]) if stored else new_state(key[1], key[0])
        self.loaded = {k: stored_states[k][0] if k in stored_states else 0 for k in states}
        return states

    async def stored_alerts(self, ids: Sequence[str]) -> dict[str, Alert]:
        return {i: self.store.alerts[i] for i in ids if i in self.store.alerts}

    async def intakes(self, keys: Sequence[IntakeOrgKey]) -> dict[IntakeOrgKey, IntakeState]:
        return {k: self.store.intakes[k].state for k in keys if k in self.store.intakes}

    async def write(self, batch: BatchWrite) -> Written:
        return await self.store.write(batch, self.loaded)


class MemoryRefreshSession:
    """One refresh's reads and write (``streams.services.refresh.RefreshSession``) over the
    stored events (no stream switch, fees, profiles, published pathways or licences)."""

    def __init__(self, store: MemoryIngestStore) -> None:
        self.store = store
        self.loaded: dict[PatientKey, int] = {}

    async def alert_states(self, patients: Sequence[PatientKey]) -> dict[PatientKey, PatientState]:
        stored = self.store.states
        self.loaded = {k: stored[k][0] if k in stored else 0 for k in patients}
        return {k: decode_state(stored[k][2]) for k in patients if k in stored}

    async def pathway_alert_ids(self, patients: Sequence[PatientKey]) -> dict[PatientKey, set[str]]:
        out: dict[PatientKey, set[str]] = {}
        wanted = set(patients)
        for a in self.store.alerts.values():
            if a.kind in PATHWAY_KINDS and (a.org_id, a.patient_id) in wanted:
                out.setdefault((a.org_id, a.patient_id), set()).add(a.id)
        return out

    def _by_patient(self, keys: set[PatientKey]) -> dict[PatientKey, list[Event]]:
        out: dict[PatientKey, list[Event]] = {}
        for e in self.store.events.values():
            if e.patient_key in keys:
                out.setdefault(e.patient_key, []).append(e)
        return out

    async def readiness_load(self, touched: Sequence[PatientKey]) -> ReadinessLoad:
        """As ``streams.db.readiness.readiness_load``."""
        seen = set(self.store.streams_seen)
        touched_events = self._by_patient(set(touched))
        sent = {
            (k[0], STREAM_OF_TYPE[e.type])
            for k, es in touched_events.items()
            for e in es
            if e.type in STREAM_OF_TYPE
        }
        first = {org for org, s in sent if (org, s) not in seen}
        stored = self.store.events.values()
        patients = sorted({*touched, *(e.patient_key for e in stored if e.patient_key[0] in first)})
        by_patient = self._by_patient(set(patients))
        return ReadinessLoad(
            patients=tuple(patients),
            states=fold_events([e for v in by_patient.values() for e in v]),
            facts={
                k: [e for e in v if e.type in READINESS_EVENT_TYPES] for k, v in by_patient.items()
            },
            seen=seen,
        )

    async def pathway_payloads(self, patients: Sequence[PatientKey]) -> list[str]:
        events = [e for v in self._by_patient(set(patients)).values() for e in v]
        events.sort(key=lambda e: (e.occurred_at, e.event_id))
        return [dump_event(e).decode() for e in events if e.type in PATHWAY_EVENT_TYPES]

    async def published_pathways(self, org_id: str) -> list[Pathway]:
        return []

    async def activations(self, org_id: str) -> list[Activation]:
        return []

    async def write_refresh(
        self,
        readiness: ReadinessWrite,
        patients: Sequence[PatientKey],
        outcomes: Sequence[EpisodeOutcome],
        claimed_at: dt.datetime,
        alerts: BatchWrite,
    ) -> tuple[int, ...]:
        written = await self.store.write(alerts, self.loaded)  # first: refuses a changed state
        for org, stream, eid in readiness.first_streams:
            self.store.streams_seen.setdefault((org, stream), eid)
        for key in readiness.patients:
            self.store.line_readiness[key] = [
                r for r in readiness.lines if (r[0], r[1].line.patient_id) == key
            ]
        for key in patients:
            self.store.outcome_rows[key] = [
                o for o in outcomes if (o.row.org_id, o.row.patient_id) == key
            ]
        return written.seqs


def _greatest(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    """PostgreSQL's GREATEST: the larger, NULLs ignored."""
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)
