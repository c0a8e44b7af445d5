"""The refresh's store on PostgreSQL (``streams.services.refresh.RefreshStore``): the queue
(``streams.db.refresh``), the reads of a refresh and its one write transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import asyncpg

from alerts.models import PATHWAY_KINDS
from alerts.state import PatientState
from outcomes.licences import Activation
from pathways.engine import PATHWAY_EVENT_TYPES
from pathways.model import Pathway
from schemas.events import PatientKey
from streams.db.alert_states import StateStore, refresh_writes_states
from streams.db.batch import BatchWrite, write_batch
from streams.db.events import keyed_payloads
from streams.db.instruments import activations
from streams.db.outcome_rows import EpisodeOutcome, replace_outcomes
from streams.db.pathway_versions import published_versions
from streams.db.pool import Pool
from streams.db.readiness import ReadinessLoad, ReadinessWrite, readiness_load, write_readiness
from streams.db.refresh import claim, done, pending, release


class PgRefreshSession:
    """One refresh on one connection, in one transaction (``RefreshSession``)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.states = StateStore()  # the revisions read, checked by the write

    async def alert_states(self, patients: Sequence[PatientKey]) -> dict[PatientKey, PatientState]:
        loaded = await self.states.load(self.conn, patients, ())
        return {k: s for k, s in loaded.items() if self.states.revision(k)}

    async def pathway_alert_ids(self, patients: Sequence[PatientKey]) -> dict[PatientKey, set[str]]:
        rows = await self.conn.fetch(
            "SELECT a.org_id, a.patient_id, a.id FROM alerts a"
            " JOIN unnest($1::text[], $2::text[]) AS k(o, p)"
            "   ON a.org_id = k.o AND a.patient_id = k.p"
            " WHERE a.kind = ANY($3::text[])",
            [k[0] for k in patients],
            [k[1] for k in patients],
            sorted(PATHWAY_KINDS),
        )
        out: dict[PatientKey, set[str]] = {}
        for r in rows:
            out.setdefault((r["org_id"], r["patient_id"]), set()).add(r["id"])
        return out

    async def readiness_load(self, touched: Sequence[PatientKey]) -> ReadinessLoad:
        return await readiness_load(self.conn, touched)

    async def pathway_payloads(self, patients: Sequence[PatientKey]) -> list[str]:
        return await keyed_payloads(self.conn, patients, PATHWAY_EVENT_TYPES)

    async def published_pathways(self, org_id: str) -> list[Pathway]:
        return [v.pathway for v in await published_versions(self.conn, org_id)]

    async def activations(self, org_id: str) -> list[Activation]:
        return [a for a, _ in await activations(self.conn, org_id)]

    async def write_refresh(
        self,
        readiness: ReadinessWrite,
        patients: Sequence[PatientKey],
        outcomes: Sequence[EpisodeOutcome],
        claimed_at: dt.datetime,
        alerts: BatchWrite,
    ) -> tuple[int, ...]:
        if not alerts.empty:  # before any write: it holds no row lock while it waits
            await refresh_writes_states(self.conn)
        await write_readiness(self.conn, readiness)
        await replace_outcomes(self.conn, patients, outcomes)
        await done(self.conn, patients, claimed_at)
        if alerts.empty:
            return ()
        # the pathway alerts, as a batch writes alerts (its states last)
        return (await write_batch(self.conn, self.states, alerts)).seqs


class PgRefreshStore:
    """The refresh's store on PostgreSQL (``streams.services.refresh.RefreshStore``)."""

    def __init__(self, pool: Pool, partition_of: Callable[[PatientKey], int]) -> None:
        self.pool = pool
        self.partition_of = partition_of

    async def claim(
        self, limit: int, settle: dt.timedelta, max_wait: dt.timedelta, stale: dt.timedelta
    ) -> tuple[list[PatientKey], dt.datetime | None]:
        async with self.pool.acquire() as conn:
            return await claim(conn, limit, settle, max_wait, stale)

    @asynccontextmanager
    async def refresh_session(self) -> AsyncIterator[PgRefreshSession]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PgRefreshSession(conn)

    async def release(self, patients: Sequence[PatientKey], claimed_at: dt.datetime) -> None:
        async with self.pool.acquire() as conn:
            await release(conn, patients, claimed_at)

    async def pending(self) -> int:
        async with self.pool.acquire() as conn:
            return await pending(conn)
