"""Billing through the real gateway, Kafka, Faust worker and TimescaleDB.

Each test gets its own PostgreSQL schema (``search_path=<schema>,public``) besides its own
topics and consumer group, because an export reads the whole ledger and the record of
earlier exports: other tests' patients must not be in it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from billing.amend import standing_lines
from billing.config import DEFAULT_CONFIG
from billing.evaluate import fold_jsonl, run_evaluate
from billing.rules import ClaimLine
from rtm.cli.billing import reconcile, run_export
from rtm.devstack import ensure_dev_key, provision_dev, start_gateway
from rtm.produce import produce_file
from rtm.simulate import namespaced, simulate, write_jsonl
from schemas.events import DEFAULT_ORG, validate_event
from streams.db.ledger import ledger_states
from streams.db.pool import migrate
from streams.kafka.topics import ensure_topics
from streams.kafka.transport import kafka_client_kwargs
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import Stack, isolated_settings, wait_for

pytestmark = pytest.mark.integration

AS_OF = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
EVERYTHING = (dt.date(2000, 1, 1), dt.date(2100, 12, 31))


@pytest.fixture
def billing_stack(base_settings: Settings) -> Iterator[Stack]:
    schema = "it_billing_" + uuid.uuid4().hex[:8]

    async def create() -> None:
        conn = await asyncpg.connect(base_settings.db.owner_dsn)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
        finally:
            await conn.close()

    asyncio.run(create())
    path = f"?search_path={schema}%2Cpublic"
    dsn = base_settings.db.dsn.split("?")[0] + path  # the app role, as in production
    owner_dsn = base_settings.db.owner_dsn.split("?")[0] + path
    settings = isolated_settings(base_settings).but(
        {
            "database_url": dsn,
            "database_owner_url": SecretStr(owner_dsn),
        }
    )
    asyncio.run(migrate(owner_dsn, settings.db.app_role))
    asyncio.run(ensure_topics(settings))
    key = ensure_dev_key(settings)
    asyncio.run(provision_dev(settings, key))  # the dev key and users, in this schema too
    s = Stack(settings=settings, key=key)
    s.start_worker()
    s.gateway = start_gateway(settings)
    try:
        yield s
    finally:
        for child in [s.gateway, *s.workers]:
            if child is not None:
                child.stop()

        async def drop() -> None:
            conn = await asyncpg.connect(base_settings.db.owner_dsn)
            try:
                await conn.execute(f"DROP SCHEMA {schema} CASCADE")
            finally:
                await conn.close()

        asyncio.run(drop())


@pytest_asyncio.fixture
async def bdb(billing_stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(billing_stack.settings.db.dsn)
    try:
        yield conn
    finally:
        await conn.close()


def namespaced_cohort(prefix: str, patients: int, days: int, seed: int) -> list[dict[str, Any]]:
    return list(namespaced(simulate(patients, days, seed), prefix))


async def ledger_counts(conn: asyncpg.Connection) -> tuple[int, int, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM billing_data_days) AS d,"
        " (SELECT count(*) FROM billing_time_logs) AS t,"
        " (SELECT count(*) FROM billing_episode_events) AS e"
    )
    return int(row["d"]), int(row["t"]), int(row["e"])


def expected_counts(states: dict[str, Any]) -> tuple[int, int, int]:
    return (
        sum(len(s.data_dates) for s in states.values()),
        sum(len(s.time_logs) for s in states.values()),
        sum(len(s.episode_events) for s in states.values()),
    )


async def committed_everything(settings: Settings) -> bool:
    """Every record of the events topic acked by every agent of the worker's group."""
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings),
        group_id=settings.worker.app_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(settings.kafka.topic_events) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(settings.kafka.topic_events) or set()
        tps = [TopicPartition(settings.kafka.topic_events, p) for p in parts]
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            if (await consumer.committed(tp) or 0) < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


def evaluate_csv(path: Path, as_of: dt.datetime) -> str:
    buf = io.StringIO()
    assert run_evaluate(path, as_of, False, buf) == 0
    return buf.getvalue()


def late_patient(factory: EventFactory) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """15 data days in period 1 (98985), and the 16th day arriving late (-> 98977)."""
    p = factory.patient(900)
    evs = [factory.episode_started(p, at="2026-09-01T09:00:00-05:00")]
    evs += [factory.exercise(p, f"2026-09-{d:02d}T18:00:00-05:00") for d in range(1, 16)]
    late = factory.pain(p, 3, "2026-09-20T22:30:00-05:00")
    return evs, late


async def test_streamed_cohort_exports_the_offline_csv_and_amends_late_data(
    billing_stack: Stack, bdb: asyncpg.Connection, factory: EventFactory, tmp_path: Path
) -> None:
    settings = billing_stack.settings
    dsn = settings.db.dsn
    cohort = namespaced_cohort(factory.prefix, patients=60, days=75, seed=11)
    extra, late = late_patient(factory)
    path = tmp_path / "cohort.jsonl"
    write_jsonl(cohort + extra, path)
    offline, errors = fold_jsonl(path.open("rb"))
    assert not errors
    want_counts = expected_counts(offline)

    result = await produce_file(settings, path, url=billing_stack.url)
    assert result.rejected == 0

    async def ledger_complete() -> bool:
        return await ledger_counts(bdb) == want_counts

    await wait_for(ledger_complete, timeout=90, what="billing ledger filled")

    # The ledger loads back into exactly the states the offline fold gives.
    ledger = await ledger_states(bdb)  # by (organisation, patient): the dev key's 'default'
    assert ledger.keys() == offline.keys()
    for pid, st in offline.items():
        for name in ("data_dates", "time_logs", "episode_events"):
            assert getattr(ledger[pid], name) == getattr(st, name), (pid, name)

    # The export is exactly the offline CSV (after the conventions block).
    want_csv = evaluate_csv(path, AS_OF)
    assert want_csv.count("\n") > 100
    for code in ("98975", "98977", "98985", "98980"):
        assert f",{code}," in want_csv
    text, first = await run_export(
        dsn, date_from=EVERYTHING[0], date_to=EVERYTHING[1], fmt="csv", as_of=AS_OF, created_by="it"
    )
    assert text == DEFAULT_CONFIG.header_text() + want_csv
    assert first.export_id is not None
    late_pid = extra[0]["patient_id"]
    assert [ln.cpt for ln in first.lines if ln.patient_id == late_pid] == ["98975", "98985"]

    # Posting the file again, then re-delivering past the gateway: nothing changes.
    again = await produce_file(settings, path, url=billing_stack.url)
    assert again.accepted == 0
    from streams.kafka.producer import EventProducer

    producer = EventProducer(settings)
    await producer.start()
    try:
        evs = [validate_event(e) for e in cohort[:3000]]
        await producer.send_events([e for e in evs if not isinstance(e, list)])
    finally:
        await producer.stop()
    await wait_for(lambda: committed_everything(settings), timeout=60, what="re-delivery acked")
    assert await ledger_counts(bdb) == want_counts
    assert await reconcile(dsn, AS_OF, out=io.StringIO()) == 0
    text2, nothing = await run_export(
        dsn, date_from=EVERYTHING[0], date_to=EVERYTHING[1], fmt="csv", as_of=AS_OF, created_by="it"
    )
    assert (
        nothing.lines == []
        and text2 == DEFAULT_CONFIG.header_text() + want_csv.split("\n")[0] + "\n"
    )

    # A late data day after the export: the next export amends 98985 -> 98977, once.
    assert billing_stack.post([late]).json()["accepted"] == 1

    async def late_landed() -> bool:
        return (await ledger_counts(bdb))[0] == want_counts[0] + 1

    await wait_for(late_landed, what="late data day in the ledger")
    out = io.StringIO()
    assert await reconcile(dsn, AS_OF, out=out) == 0, out.getvalue()
    _, amended = await run_export(
        dsn, date_from=EVERYTHING[0], date_to=EVERYTHING[1], fmt="csv", as_of=AS_OF, created_by="it"
    )
    assert [(ln.patient_id, ln.cpt, ln.status, ln.data_days) for ln in amended.lines] == [
        (late_pid, "98977", "amended", 16)
    ]
    with_late = fold_jsonl([*path.open("rb"), orjson.dumps(late)])[0]
    assert ",98977," in evaluate_csv_of(with_late, late_pid)

    # No code billed twice for one period/month across all recorded exports.
    rows = await bdb.fetch(
        "SELECT export_id, line::text AS line FROM billing_export_lines ORDER BY export_id, line_no"
    )
    exports: dict[int, list[ClaimLine]] = {}
    for r in rows:
        exports.setdefault(r["export_id"], []).append(ClaimLine.model_validate_json(r["line"]))
    standing = standing_lines(exports[k] for k in sorted(exports))
    keys = [(ln.key, ln.cpt) for ln in standing]
    assert len(keys) == len(set(keys))
    device = [ln for ln in standing if ln.patient_id == late_pid and ln.group == "device"]
    assert [(ln.cpt, ln.status) for ln in device] == [("98977", "amended")]
    assert await bdb.fetchval("SELECT count(*) FROM billing_exports") == 3


def evaluate_csv_of(states: dict[str, Any], patient_id: str) -> str:
    from billing.export import render_csv
    from billing.rules import compute_claims

    return render_csv(compute_claims([states[(DEFAULT_ORG, patient_id)]], AS_OF))


async def test_gateway_billing_routes(
    billing_stack: Stack, bdb: asyncpg.Connection, factory: EventFactory
) -> None:
    extra, late = late_patient(factory)
    p = extra[0]["patient_id"]
    tl = {
        "event_id": f"{factory.prefix}-tl",
        "schema_version": 1,
        "type": "clinician.time_logged",
        "patient_id": p,
        "occurred_at": "2026-09-18T10:00:00-05:00",
        "clinician_id": "c-01",
        "clinician_role": "PT",
        "minutes": 25,
        "activity": "call",
        "interactive": True,
    }
    assert billing_stack.post(extra + [tl]).json()["accepted"] == len(extra) + 1

    async def landed() -> bool:
        return await ledger_counts(bdb) == (15, 1, 1)

    await wait_for(landed, what="ledger rows")
    auth = {"Authorization": f"Bearer {billing_stack.key}"}
    url = billing_stack.url
    r = httpx.get(
        f"{url}/v1/patients/{p}/billing", params={"as_of": "2026-09-20T17:00:00Z"}, headers=auth
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] == "15 of 16 days, 11 days left"
    assert body["period"]["on_track_for"] == "98977" and body["period"]["earned"] == "98985"
    assert body["month"]["minutes"] == 25 and body["month"]["interactive"] is True
    assert body["month"]["earned"] == ["98980"]
    assert httpx.get(f"{url}/v1/patients/{p}/billing").status_code == 401
    assert (
        httpx.get(f"{url}/v1/patients/{factory.prefix}-nobody/billing", headers=auth).status_code
        == 404
    )
    bad = httpx.get(f"{url}/v1/patients/{p}/billing", params={"as_of": "yesterday"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "as_of"
    bad = httpx.get(f"{url}/v1/patients/bad%20id/billing", headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "patient_id"

    q = {"from": "2026-09-01", "to": "2026-10-31", "as_of": AS_OF.isoformat()}
    r = httpx.get(f"{url}/v1/billing/claims", params=q, headers=auth)
    assert r.status_code == 200 and r.headers["x-billing-lines"] == "3"
    csv_lines = [ln for ln in r.text.splitlines() if not ln.startswith("#")]
    assert [ln.split(",")[2] for ln in csv_lines[1:]] == ["98975", "98980", "98985"]
    # not recorded unless asked: the same look again gives the same lines
    assert httpx.get(f"{url}/v1/billing/claims", params=q, headers=auth).text == r.text
    recording = {**q, "format": "fhir"}
    # a reader key may look, not bill; billing staff record (a POST: a GET never records)
    assert httpx.post(f"{url}/v1/billing/exports", json=recording, headers=auth).status_code == 403
    r = httpx.post(
        f"{url}/v1/billing/exports", json=recording, headers=billing_stack.user_headers("billing")
    )
    assert r.status_code == 200 and "x-billing-export-id" in r.headers
    assert r.json()["resourceType"] == "Bundle"
    r = httpx.get(f"{url}/v1/billing/claims", params={**q, "format": "x12"}, headers=auth)
    assert r.status_code == 200 and r.headers["x-billing-lines"] == "0"
    bad = httpx.get(f"{url}/v1/billing/claims", params={**q, "format": "pdf"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "format"
    bad = httpx.get(f"{url}/v1/billing/claims", params={**q, "from": "2026-13-01"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "from"


@pytest.fixture
def schema_dsn(base_settings: Settings) -> Iterator[str]:
    schema = "it_billing_" + uuid.uuid4().hex[:8]

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(base_settings.db.owner_dsn)  # DDL: the owner
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE SCHEMA {schema}"))
    path = f"?search_path={schema}%2Cpublic"
    # migrated by the owner, then used (seeded, the CLI run) as the application role
    asyncio.run(migrate(base_settings.db.owner_dsn.split("?")[0] + path, base_settings.db.app_role))
    try:
        yield base_settings.db.dsn.split("?")[0] + path
    finally:
        asyncio.run(run(f"DROP SCHEMA {schema} CASCADE"))


def test_cli_export_backfill_and_reconcile_need_only_the_database(
    schema_dsn: str, factory: EventFactory, tmp_path: Path
) -> None:
    """No worker, no Kafka: raw events in the table, `backfill` fills the ledger,
    `export` writes a draft X12 + sidecar and records nothing (exports are previews;
    `rtm billing submit` records: tests/integration/test_claims_submit.py), `reconcile`
    finds a tampered ledger."""
    from click.testing import CliRunner

    from rtm.cli import main
    from streams.db.events import EventStore

    extra, late = late_patient(factory)
    events = [e for e in (validate_event(o) for o in [*extra, late]) if not isinstance(e, list)]

    async def seed() -> None:
        await migrate(schema_dsn)
        store = await EventStore.connect(schema_dsn)
        try:
            await store.insert_events(events)
        finally:
            await store.close()

    asyncio.run(seed())
    runner = CliRunner()
    res = runner.invoke(
        main, ["billing", "reconcile", "--dsn", schema_dsn, "--as-of", AS_OF.isoformat()]
    )
    assert res.exit_code == 1 and "missing from the ledger" in res.output
    res = runner.invoke(main, ["billing", "backfill", "--dsn", schema_dsn])
    assert res.exit_code == 0 and "16 data days, 0 time logs, 1 episode events" in res.output
    res = runner.invoke(
        main, ["billing", "reconcile", "--dsn", schema_dsn, "--as-of", AS_OF.isoformat()]
    )
    assert res.exit_code == 0, res.output

    out = tmp_path / "claims.x12"
    res = runner.invoke(
        main,
        [
            "billing",
            "export",
            "--dsn",
            schema_dsn,
            "--from",
            "2026-09-01",
            "--to",
            "2026-09-30",
            "--format",
            "x12",
            "--as-of",
            AS_OF.isoformat(),
            "--out",
            str(out),
            "--by",
            "alice",
        ],
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "SV1*HC:98977:GP" in text and "SV1*HC:98975:GP" in text
    assert (tmp_path / "claims.x12.conventions.txt").read_text() == DEFAULT_CONFIG.header_text()
    assert "not recorded" in res.output
    assert text.splitlines()[0].split("*")[15] == "T"  # a draft is never a production file
    res = runner.invoke(
        main,
        [
            "billing",
            "export",
            "--dsn",
            schema_dsn,
            "--from",
            "2026-09-01",
            "--to",
            "2026-12-31",
            "--include-open",
            "--as-of",
            AS_OF.isoformat(),
        ],
    )
    assert res.exit_code == 0 and "not recorded" in res.output

    async def check() -> None:
        conn = await asyncpg.connect(schema_dsn)
        try:
            rows = await conn.fetch("SELECT created_by, format, line_count FROM billing_exports")
            assert [tuple(r) for r in rows] == []
            await conn.execute("DELETE FROM billing_data_days WHERE local_date = '2026-09-20'")
        finally:
            await conn.close()

    asyncio.run(check())
    res = runner.invoke(
        main, ["billing", "reconcile", "--dsn", schema_dsn, "--as-of", AS_OF.isoformat()]
    )
    assert res.exit_code == 1
    assert "data day 2026-09-20 (episode -) missing from the ledger" in res.output
    assert "claim missing from the ledger's claims" in res.output
