"""`rtm rollups backfill` against the real worker, gateway and PostgreSQL: the daily
adherence rows it computes from the stored events equal the stream's own rows and GET
/v1/patients/{id}/adherence; it fills rows that were never written (patients stored
before migration 010), repairs a wrong one, and a second run writes nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from rtm.cli.rollups import backfill
from rtm.simulate import namespaced, simulate
from tests.integration.conftest import Stack, wait_for

pytestmark = pytest.mark.integration

Day = tuple[str, dt.date]


def _now() -> dt.datetime:
    """The stack's clock (the system's): open episodes run to the patient-local today."""
    return dt.datetime.now(dt.UTC)


async def _days(conn: asyncpg.Connection, prefix: str) -> dict[Day, tuple[float, int, Any]]:
    rows = await conn.fetch(
        "SELECT patient_id, local_date, prescribed, completed, adherence_7d"
        " FROM patient_daily_adherence WHERE starts_with(patient_id, $1)",
        prefix,
    )
    return {
        (r["patient_id"], r["local_date"]): (r["prescribed"], r["completed"], r["adherence_7d"])
        for r in rows
    }


def _api_days(stack: Stack, patient_id: str) -> dict[Day, tuple[float, int, Any]]:
    resp = httpx.get(
        f"{stack.url}/v1/patients/{patient_id}/adherence",
        headers={"Authorization": f"Bearer {stack.key}"},
        timeout=30,
    )
    resp.raise_for_status()
    return {
        (patient_id, dt.date.fromisoformat(d["date"])): (
            d["prescribed"],
            d["completed"],
            d["adherence_7d"],
        )
        for d in resp.json()["days"]
    }


def _close(a: tuple[float, int, Any], b: tuple[float, int, Any]) -> bool:
    """Equal up to the float4 columns' precision (the API rounds to 4 places)."""
    if a[1] != b[1] or (a[2] is None) != (b[2] is None):
        return False
    return abs(a[0] - b[0]) < 1e-4 and (a[2] is None or abs(a[2] - b[2]) < 1e-4)


async def test_backfill_fills_repairs_and_is_idempotent(
    stack: Stack, db: asyncpg.Connection
) -> None:
    prefix = f"rb{uuid.uuid4().hex[:8]}."
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=70)
    events = list(namespaced(simulate(8, 45, 7, start=start), prefix))
    for i in range(0, len(events), 500):
        resp = stack.post(events[i : i + 500])
        resp.raise_for_status()
    ids = sorted({e["event_id"] for e in events})
    patients = sorted({e["patient_id"] for e in events})

    async def stored() -> bool:
        n = await db.fetchval("SELECT count(*) FROM event_ids WHERE event_id = ANY($1)", ids)
        return bool(n == len(ids))

    await wait_for(stored, timeout=120, what="the cohort stored")
    # the worker writes rollups in the batch transaction: settled once all are stored
    stream = await _days(db, prefix)
    assert stream, "the stream wrote no daily adherence rows"
    api: dict[Day, tuple[float, int, Any]] = {}
    for p in patients:
        api.update(_api_days(stack, p))

    # A first run fills the days the stream never wrote (it writes a batch's last days),
    # and rewrites none of its rows (the same functions over the same events).
    n_patients, computed, written = await backfill(stack.settings.db.dsn, prefix, now=_now())
    assert n_patients == len(patients)
    assert computed == len(api)
    after = await _days(db, prefix)
    assert written == len(after) - len(stream)
    assert set(api) <= set(after), "days of the API missing after the backfill"
    # the stream may have written days past the newest data day (its clock): left alone
    assert set(after) - set(api) <= set(stream)
    bad = [k for k in api if not _close(after[k], api[k])]
    assert not bad, [(k, after[k], api[k]) for k in bad[:5]]
    changed = [k for k in stream if not _close(stream[k], after[k])]
    assert not changed, [(k, stream[k], after[k]) for k in changed[:5]]

    # Idempotent: nothing left to write.
    assert (await backfill(stack.settings.db.dsn, prefix, now=_now()))[2] == 0

    # Patients stored before migration 010 (no rows at all) and a wrong row: both repaired.
    victim = patients[0]
    await db.execute("DELETE FROM patient_daily_adherence WHERE patient_id = $1", victim)
    wrong = next(k for k in sorted(api) if k[0] == patients[1])
    await db.execute(
        "UPDATE patient_daily_adherence SET completed = completed + 5"
        " WHERE patient_id = $1 AND local_date = $2",
        *wrong,
    )
    victim_days = [k for k in api if k[0] == victim]
    assert victim_days, "the first patient has no episode days"
    assert (await backfill(stack.settings.db.dsn, prefix, now=_now()))[2] == len(victim_days) + 1
    final = await _days(db, prefix)
    assert set(final) == {k for k in after if k[0] != victim} | set(victim_days)
    bad = [k for k in api if not _close(final[k], api[k])]
    assert not bad, [(k, final[k], api[k]) for k in bad[:5]]
