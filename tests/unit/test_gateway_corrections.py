"""The gateway refuses a time-log correction that names no stored time log of the patient
(``supersedes``, a per-field error), with Kafka and the database faked (issue 17)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry

from streams.access import Principal
from streams.http.app import create_app
from streams.http.deps import Deps
from streams.settings import Settings
from tests.unit.test_gateway import FakeProducer, FakeStore

KEY = "integration-key"
WHO = Principal("key", "intkey", "org-a", frozenset({"integration"}))


async def _as_integration(request: Any) -> Principal | None:
    return WHO if request.headers.get("authorization") == f"Bearer {KEY}" else None


class LedgerStore(FakeStore):
    """Org-a's ledger holds time log t1 of p-1 and t7 of p-2."""

    async def time_log_patients(self, org_id: str, ids: list[str]) -> dict[str, str]:
        held = {"t1": "p-1", "t7": "p-2"} if org_id == "org-a" else {}
        return {i: held[i] for i in ids if i in held}


def tlog(eid: str, patient: str = "p-1", supersedes: str | None = None) -> dict[str, Any]:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return {
        "event_id": eid,
        "schema_version": 1,
        "type": "clinician.time_logged",
        "patient_id": patient,
        "occurred_at": at.isoformat(),
        "clinician_id": "c-1",
        "clinician_role": "PT",
        "minutes": 12,
        "activity": "call",
        "interactive": True,
    } | ({"supersedes": supersedes} if supersedes else {})


async def test_a_correction_must_name_a_time_log_of_the_same_patient(tmp_path: Path) -> None:
    producer = FakeProducer()
    app = create_app(
        Settings(state_dir=tmp_path),
        Deps(
            producer=producer,
            store=LedgerStore(),  # type: ignore[arg-type]
            registry=CollectorRegistry(),
            authenticate=_as_integration,
        ),
    )
    batch = [
        tlog("t2", supersedes="t1"),  # stored, same patient: accepted
        tlog("t3", supersedes="t7"),  # another patient's
        tlog("t4", supersedes="nope"),  # unknown
        tlog("t5"),
        tlog("t6", supersedes="t5"),  # earlier in the batch: accepted
        tlog("t8", supersedes="t8"),  # itself
    ]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        resp = await client.post(
            "/v1/events", content=orjson.dumps(batch), headers={"Authorization": f"Bearer {KEY}"}
        )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert sorted(e.event_id for e in producer.events) == ["t2", "t5", "t6"]
    errors = {r["event_id"]: r["errors"] for r in body["rejected"]}
    assert sorted(errors) == ["t3", "t4", "t8"]
    assert all(e[0]["field"] == "supersedes" for e in errors.values())
    assert "another patient's" in errors["t3"][0]["message"]
    assert "no time log nope" in errors["t4"][0]["message"]
    assert len(producer.dead) == 3
