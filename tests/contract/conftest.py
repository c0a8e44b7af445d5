"""The ingest store's contract: every test in this folder runs against the in-memory store
(``streams.db.memory.MemoryIngestStore``) and against PostgreSQL
(``streams.db.batch.PgIngestStore``, in a scratch schema with every migration applied, the
services started by the integration fixtures), through one ``Probe`` that reads what a
store holds. The shape of eventsourcing's one abstract recorder test suite run against
every recorder."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

import asyncpg
import pytest
import pytest_asyncio

from alerts.models import Alert
from schemas.events import PatientKey
from streams.clock import FixedClock
from streams.db.access import add_org
from streams.db.batch import PgIngestStore
from streams.db.deliveries import set_webhook
from streams.db.memory import MemoryIngestStore
from streams.db.pool import Pool, _migrations
from streams.kafka.control import patient_partition
from streams.services.ingest import IngestStore
from streams.settings import Settings
from tests.integration.conftest import base_settings  # noqa: F401 (the services, started)

PARTITIONS = 4
ORGS = ("default", "clinic-a", "clinic-b")
NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)

# every table one ingest batch writes, emptied before each PostgreSQL test
TABLES = (
    "event_ids",
    "events",
    "patient_orgs",
    "patient_clinicians",
    "billing_data_days",
    "billing_time_logs",
    "billing_episode_events",
    "alerts",
    "alert_deliveries",
    "alert_publish",
    "alert_state",
    "patient_rollups",
    "patient_daily_adherence",
    "clinician_webhooks",
    "intakes",
)


def partition_of(key: PatientKey) -> int:
    return patient_partition(key, PARTITIONS)


class Probe(Protocol):
    """What a store holds, read the same way from either store (the tests' eyes)."""

    store: IngestStore

    async def set_webhook(self, org_id: str, clinician_id: str) -> None: ...

    async def events(self) -> set[tuple[str, str]]: ...

    async def patients(self) -> set[PatientKey]: ...

    async def clinicians(self) -> set[tuple[str, str, str]]: ...

    async def data_days(self) -> set[tuple[str, str, dt.date]]: ...

    async def alert(self, alert_id: str) -> Alert | None: ...

    # (alert id, change) -> (status, the clinician_id of the webhook it was routed to)
    async def deliveries(self) -> dict[tuple[str, str], tuple[str, str | None]]: ...

    # org, patient -> (latest_pain, latest_pain_at, last_activity_at, open_alerts)
    async def rollup(self, key: PatientKey) -> tuple[object, ...] | None: ...

    async def adherence_days(self, key: PatientKey) -> set[dt.date]: ...

    async def state_rev(self, key: PatientKey) -> int | None: ...


class MemoryProbe:
    def __init__(self) -> None:
        self.memory = MemoryIngestStore(clock=FixedClock(NOW))
        self.store: IngestStore = self.memory

    async def set_webhook(self, org_id: str, clinician_id: str) -> None:
        self.memory.set_webhook(org_id, clinician_id)

    async def events(self) -> set[tuple[str, str]]:
        return set(self.memory.events)

    async def patients(self) -> set[PatientKey]:
        return set(self.memory.patients)

    async def clinicians(self) -> set[tuple[str, str, str]]:
        return set(self.memory.clinicians)

    async def data_days(self) -> set[tuple[str, str, dt.date]]:
        return {(o, p, d) for o, p, d, _ in self.memory.data_days}

    async def alert(self, alert_id: str) -> Alert | None:
        return self.memory.alerts.get(alert_id)

    async def deliveries(self) -> dict[tuple[str, str], tuple[str, str | None]]:
        by_id = {i: clinician for (_, clinician), i in self.memory.webhooks.items()}
        return {
            k: (d.status, by_id.get(d.webhook_id) if d.webhook_id is not None else None)
            for k, d in self.memory.deliveries.items()
        }

    async def rollup(self, key: PatientKey) -> tuple[object, ...] | None:
        r = self.memory.rollups.get(key)
        if r is None:
            return None
        return (r.latest_pain, r.latest_pain_at, r.last_activity_at, r.open_alerts)

    async def adherence_days(self, key: PatientKey) -> set[dt.date]:
        return {d for o, p, d in self.memory.adherence if (o, p) == key}

    async def state_rev(self, key: PatientKey) -> int | None:
        stored = self.memory.states.get(key)
        return stored[0] if stored else None


class PgProbe:
    def __init__(self, conn: asyncpg.Connection, store: PgIngestStore) -> None:
        self.conn = conn
        self.store: IngestStore = store

    async def set_webhook(self, org_id: str, clinician_id: str) -> None:
        await set_webhook(self.conn, clinician_id, "https://hooks.example/x", "s3cret", org_id)

    async def events(self) -> set[tuple[str, str]]:
        rows = await self.conn.fetch("SELECT org_id, event_id FROM events")
        ids = await self.conn.fetch("SELECT org_id, event_id FROM event_ids")
        assert {tuple(r) for r in rows} == {tuple(r) for r in ids}, "events = event_ids"
        return {(r["org_id"], r["event_id"]) for r in rows}

    async def patients(self) -> set[PatientKey]:
        rows = await self.conn.fetch("SELECT org_id, patient_id FROM patient_orgs")
        return {(r["org_id"], r["patient_id"]) for r in rows}

    async def clinicians(self) -> set[tuple[str, str, str]]:
        rows = await self.conn.fetch(
            "SELECT org_id, patient_id, clinician_id FROM patient_clinicians"
        )
        return {(r["org_id"], r["patient_id"], r["clinician_id"]) for r in rows}

    async def data_days(self) -> set[tuple[str, str, dt.date]]:
        rows = await self.conn.fetch("SELECT org_id, patient_id, local_date FROM billing_data_days")
        return {(r["org_id"], r["patient_id"], r["local_date"]) for r in rows}

    async def alert(self, alert_id: str) -> Alert | None:
        raw = await self.conn.fetchval("SELECT payload::text FROM alerts WHERE id = $1", alert_id)
        return Alert.model_validate_json(raw) if raw is not None else None

    async def deliveries(self) -> dict[tuple[str, str], tuple[str, str | None]]:
        rows = await self.conn.fetch(
            "SELECT d.alert_id, d.change, d.status, w.clinician_id FROM alert_deliveries d"
            " LEFT JOIN clinician_webhooks w ON w.webhook_id = d.webhook_id"
        )
        return {(r["alert_id"], r["change"]): (r["status"], r["clinician_id"]) for r in rows}

    async def rollup(self, key: PatientKey) -> tuple[object, ...] | None:
        r = await self.conn.fetchrow(
            "SELECT latest_pain, latest_pain_at, last_activity_at, open_alerts"
            " FROM patient_rollups WHERE org_id = $1 AND patient_id = $2",
            *key,
        )
        return tuple(r) if r is not None else None

    async def adherence_days(self, key: PatientKey) -> set[dt.date]:
        rows = await self.conn.fetch(
            "SELECT local_date FROM patient_daily_adherence WHERE org_id = $1 AND patient_id = $2",
            *key,
        )
        return {r["local_date"] for r in rows}

    async def state_rev(self, key: PatientKey) -> int | None:
        rev = await self.conn.fetchval(
            "SELECT rev FROM alert_state WHERE org_id = $1 AND patient_id = $2", *key
        )
        return int(rev) if rev is not None else None


@pytest_asyncio.fixture(scope="session")
async def contract_dsn(base_settings: Settings) -> AsyncIterator[str]:  # noqa: F811
    """A scratch schema with every migration applied (as the owner), dropped at the end (on
    a connection of its own: the session's other tests may restart the database)."""
    schema = "contract_" + uuid.uuid4().hex[:8]
    owner = base_settings.db.owner_dsn
    dsn = owner.split("?")[0] + f"?search_path={schema}%2Cpublic"
    conn = await asyncpg.connect(owner)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        async with conn.transaction():
            await conn.execute(f"SET LOCAL search_path = {schema}, public")
            for _, sql in _migrations():
                await conn.execute(sql)
            for org in ORGS:
                await add_org(conn, org, org)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        conn = await asyncpg.connect(owner)
        try:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await conn.close()


@pytest_asyncio.fixture
async def pg_probe(contract_dsn: str) -> AsyncIterator[PgProbe]:
    conn = await asyncpg.connect(contract_dsn)
    pool = Pool(contract_dsn, max_size=4)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        yield PgProbe(conn, PgIngestStore(pool, partition_of))
    finally:
        await pool.close()
        await conn.close()


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
def probe(request: pytest.FixtureRequest) -> Probe:
    """The store under test, and its probe (PostgreSQL's only when that param runs)."""
    if request.param == "memory":
        return MemoryProbe()
    pg: Probe = request.getfixturevalue("pg_probe")
    return pg
