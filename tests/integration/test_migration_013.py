"""infra/migrations/013_org_scoped_patients.sql against the real PostgreSQL/TimescaleDB:
rows written in the shapes before it (one organisation per patient_id, in patient_orgs)
are migrated in place, the keys become per organisation (hypertables included), stored
alert states keep their alerts' ids and get the partition of the new Kafka key, and a
second run changes nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

from alerts.models import AlertChange, alert_id
from alerts.rules import on_event
from alerts.state import decode_state, new_state, state_to_dict
from schemas.events import EVENT_ADAPTER, key_text
from streams.db.alert_states import StateStore
from streams.db.pool import _migrations
from streams.settings import Settings
from tests.conftest import EventFactory

pytestmark = pytest.mark.integration

A = "clinic-a"
TABLES = {  # table -> its key columns (for the dump compared after the second run)
    "patient_orgs": "org_id, patient_id",
    "patient_clinicians": "org_id, clinician_id, patient_id",
    "event_ids": "org_id, event_id",
    "events": "org_id, event_id",
    "alerts": "id",
    "alert_deliveries": "alert_id, change",
    "alert_publish": "seq",
    "alert_state": "org_id, patient_id",
    "patient_rollups": "org_id, patient_id",
    "patient_daily_adherence": "org_id, patient_id, local_date",
    "billing_data_days": "org_id, patient_id, local_date, episode_id",
    "billing_time_logs": "org_id, event_id",
    "billing_episode_events": "org_id, event_id",
    "billing_export_lines": "export_id, line_no",
    "billing_claims": "org_id, claim_id",
}


@pytest_asyncio.fixture
async def before_013(base_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A scratch schema with every migration before 013 applied."""
    schema = "it_mig013_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(base_settings.db.owner_dsn)  # the owner makes schemas
    await admin.execute(f"CREATE SCHEMA {schema}")
    conn = await asyncpg.connect(
        base_settings.db.owner_dsn.split("?")[0] + f"?search_path={schema}%2Cpublic"
    )
    try:
        for name, sql in _migrations():
            if name < "013":
                await conn.execute(sql)
        yield conn
    finally:
        await conn.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


def _013() -> str:
    (sql,) = [sql for name, sql in _migrations() if name.startswith("013_")]
    return sql


async def _dump(conn: asyncpg.Connection) -> dict[str, list[Any]]:
    return {
        table: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY {key}")]
        for table, key in TABLES.items()
    }


async def test_rows_are_migrated_in_place_and_a_second_run_changes_nothing(
    before_013: asyncpg.Connection,
) -> None:
    conn = before_013
    f = EventFactory()
    pa, pd = f.patient(1), f.patient(2)  # a patient of clinic-a, one of the default org
    start = EVENT_ADAPTER.validate_python(
        {**f.episode_started(pa, at="2026-10-01T09:00:00-05:00"), "org_id": A}
    )
    # a record written straight to Kafka without a stamp: it took its patient's organisation
    pain = EVENT_ADAPTER.validate_python(f.pain(pa, 9, "2026-10-21T10:00:00-05:00"))
    other = EVENT_ADAPTER.validate_python(f.pain(pd, 2, "2026-10-21T10:00:00-05:00"))
    # the state as the engine before 013 kept it: alert ids without the organisation
    state = new_state(pa, A)
    state.legacy_ids = True
    changes: list[AlertChange] = []
    for ev in (start, pain):
        state, ch = on_event(state, ev.model_copy(update={"org_id": A}))
        changes += ch
    (fired,) = changes
    assert fired.alert.id == alert_id(pa, "pain_high", pain.event_id, None)
    v3 = state_to_dict(state)
    v3.update(v=3)
    for k in ("o", "li"):
        v3.pop(k, None)
    old_alert = fired.alert.model_dump(mode="json", exclude={"org_id"})
    old_change = {"change": "fired", "alert": old_alert}

    await conn.execute("INSERT INTO orgs (org_id, name) VALUES ($1, 'A')", A)
    await conn.execute(
        "INSERT INTO patient_orgs (patient_id, org_id) VALUES ($1, $2), ($3, 'default')",
        pa,
        A,
        pd,
    )
    await conn.execute(
        "INSERT INTO patient_clinicians (patient_id, clinician_id) VALUES ($1, 'c-01')", pa
    )
    for ev, org in ((start, A), (pain, A), (other, "default")):
        await conn.execute(
            "INSERT INTO event_ids (event_id, occurred_at) VALUES ($1, $2)",
            ev.event_id,
            ev.occurred_at,
        )
        await conn.execute(
            "INSERT INTO events (org_id, event_id, type, patient_id, episode_id, occurred_at,"
            " local_date, utc_offset_s, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, -18000,"
            " $8::jsonb)",
            org,
            ev.event_id,
            ev.type,
            ev.patient_id,
            getattr(ev, "episode_id", None),
            ev.occurred_at,
            ev.local_date,
            ev.model_dump_json(exclude_none=True),
        )
    await conn.execute(
        "INSERT INTO alerts (id, patient_id, episode_id, clinician_id, kind, severity, status,"
        " status_rank, fired_at, payload, org_id) VALUES ($1, $2, $3, 'c-01', 'pain_high',"
        " 'critical', 'open', 0, $4, $5::jsonb, $6)",
        fired.alert.id,
        pa,
        fired.alert.episode_id,
        fired.alert.fired_at,
        orjson.dumps(old_alert).decode(),
        A,
    )
    await conn.execute(
        "INSERT INTO alert_deliveries (alert_id, change, clinician_id, status, payload, org_id)"
        " VALUES ($1, 'fired', 'c-01', 'no_webhook', $2::jsonb, $3)",
        fired.alert.id,
        orjson.dumps(old_change).decode(),
        A,
    )
    await conn.execute(
        "INSERT INTO alert_publish (patient_id, payload) VALUES ($1, $2)",
        pa,
        orjson.dumps(old_change).decode(),
    )
    await conn.execute(
        "INSERT INTO alert_state (patient_id, part, rev, state) VALUES ($1, 3, 7, $2)",
        pa,
        orjson.dumps(v3).decode(),
    )
    await conn.execute(
        "INSERT INTO patient_rollups (patient_id, org_id, open_critical, open_alerts)"
        " VALUES ($1, $2, 1, 1)",
        pa,
        A,
    )
    day = dt.date(2026, 10, 21)
    await conn.execute("INSERT INTO patient_daily_adherence VALUES ($1, $2, 0.71, 1, 0.5)", pa, day)
    await conn.execute(
        "INSERT INTO billing_data_days (patient_id, local_date, episode_id, first_event_id)"
        " VALUES ($1, $2, '', $3)",
        pa,
        day,
        pain.event_id,
    )
    await conn.execute(
        "INSERT INTO billing_time_logs (event_id, patient_id, episode_id, local_date,"
        " occurred_at, utc_offset_s, minutes, clinician_role, interactive)"
        " VALUES ('t-1', $1, NULL, $2, $3, -18000, 20, 'PT', true)",
        pa,
        day,
        pain.occurred_at,
    )
    await conn.execute(
        "INSERT INTO billing_episode_events (event_id, patient_id, type, episode_id,"
        " occurred_at, payload) VALUES ($1, $2, 'episode.started', $3, $4, $5::jsonb)",
        start.event_id,
        pa,
        start.episode_id,
        start.occurred_at,
        start.model_copy(update={"org_id": None}).model_dump_json(exclude_none=True),
    )
    export_id = await conn.fetchval(
        "INSERT INTO billing_exports (created_by, as_of, date_from, date_to, format,"
        " line_count, conventions, org_id) VALUES ('it', now(), $1, $1, 'csv', 1, '', $2)"
        " RETURNING export_id",
        day,
        A,
    )
    await conn.execute(
        "INSERT INTO billing_export_lines (export_id, line_no, patient_id, episode_id, cpt,"
        " date_of_service, period_start, status, line, claim_id)"
        " VALUES ($1, 1, $2, $3, '98975', $4, $4, 'new', '{}', 'RTMCLAIM')",
        export_id,
        pa,
        start.episode_id,
        day,
    )
    await conn.execute(
        "INSERT INTO billing_claims (claim_id, org_id, patient_id, billing_npi, payer,"
        " first_export_id, last_export_id, last_frequency)"
        " VALUES ('RTMCLAIM', $1, $2, '1234567893', 'medicare', $3, $3, '1')",
        A,
        pa,
        export_id,
    )

    await conn.execute(_013())

    # every patient-keyed row now names the patient's organisation
    for table in TABLES:
        if table in ("alerts", "alert_deliveries", "billing_claims", "events"):
            continue  # had org_id before
        orgs = {r["org_id"] for r in await conn.fetch(f"SELECT org_id FROM {table}")}
        assert orgs <= {A, "default"} and A in orgs, table
    rows = await conn.fetch("SELECT org_id, event_id FROM event_ids ORDER BY 2")
    assert {(r["org_id"], r["event_id"]) for r in rows} == {
        (A, start.event_id),
        (A, pain.event_id),
        ("default", other.event_id),
    }
    payloads = {
        r["event_id"]: orjson.loads(r["payload"])
        for r in await conn.fetch("SELECT event_id, payload::text AS payload FROM events")
    }
    assert payloads[pain.event_id]["org_id"] == A  # the unstamped record: its organisation's
    assert "org_id" not in payloads[other.event_id]  # the default's stay as they were
    assert orjson.loads(await conn.fetchval("SELECT payload::text FROM alerts"))["org_id"] == A
    delivery = orjson.loads(await conn.fetchval("SELECT payload::text FROM alert_deliveries"))
    assert delivery["alert"]["org_id"] == A
    published = await conn.fetchrow("SELECT org_id, payload FROM alert_publish")
    assert published["org_id"] == A
    assert AlertChange.model_validate_json(published["payload"]).alert.org_id == A

    # the stored state: its organisation, its alerts' ids kept, its partition to recompute
    row = await conn.fetchrow("SELECT org_id, part, rev, state FROM alert_state")
    assert (row["org_id"], row["part"], row["rev"]) == (A, -1, 7)
    migrated = decode_state(row["state"])
    assert migrated.key == (A, pa) and migrated.legacy_ids
    assert list(migrated.alerts) == [fired.alert.id]
    assert migrated.alerts[fired.alert.id].org_id == A
    store = StateStore()

    def partition_of(key: tuple[str, str]) -> int:
        return len(key_text(key)) % 4

    assert await store.assign_partitions(conn, partition_of) == 1
    assert await store.assign_partitions(conn, partition_of) == 0
    # the state is one the ticks of its partition reach
    assert set(await store.load(conn, [], [partition_of((A, pa))])) == {(A, pa)}
    assert (await store.load(conn, [(A, pa)]))[(A, pa)] == migrated

    # the keys are per organisation now (a hypertable's too): another organisation may
    # use the same patient_id, event_id and day; the same organisation may not (probes,
    # rolled back)
    probes = conn.transaction()
    await probes.start()
    try:
        await conn.execute(
            "INSERT INTO event_ids (org_id, event_id, occurred_at) VALUES ('default', $1, now())",
            pain.event_id,
        )
        await conn.execute(
            "INSERT INTO events (org_id, event_id, type, patient_id, occurred_at, local_date,"
            " utc_offset_s, payload) SELECT 'default', event_id, type, patient_id, occurred_at,"
            " local_date, utc_offset_s, payload FROM events WHERE event_id = $1",
            pain.event_id,
        )
        await conn.execute(
            "INSERT INTO billing_data_days (org_id, patient_id, local_date, episode_id,"
            " first_event_id) VALUES ('default', $1, $2, '', 'x')",
            pa,
            day,
        )
        await conn.execute(
            "INSERT INTO alert_state (org_id, patient_id, part, rev, state)"
            " VALUES ('default', $1, 0, 1, '{}')",
            pa,
        )
        for table in ("patient_orgs", "patient_rollups"):
            await conn.execute(
                f"INSERT INTO {table} (org_id, patient_id) VALUES ('default', $1)", pa
            )
        for sql, args in (
            (
                "INSERT INTO event_ids (org_id, event_id, occurred_at) VALUES ($1, $2, now())",
                (A, pain.event_id),
            ),
            (
                "INSERT INTO events (org_id, event_id, type, patient_id, occurred_at,"
                " local_date, utc_offset_s, payload) SELECT org_id, event_id, type, patient_id,"
                " occurred_at, local_date, utc_offset_s, payload FROM events"
                " WHERE org_id = $1 AND event_id = $2",
                (A, pain.event_id),
            ),
        ):
            with pytest.raises(asyncpg.UniqueViolationError):
                async with conn.transaction():
                    await conn.execute(sql, *args)
    finally:
        await probes.rollback()

    # a second run changes nothing
    before = await _dump(conn)
    await conn.execute(_013())
    assert await _dump(conn) == before
