"""FHIR R4 Observations through the real gateway, worker, Kafka and PostgreSQL: events
posted at the gateway come back from ``GET /fhir/Observation`` as a searchset Bundle,
by patient-local date range, scoped (another clinician's patient answers 404 with an
OperationOutcome) and audited; ``rtm fhir observations`` exports the same resources; the
gateway's Bundle has 0 errors in HAPI FHIR's R4 validator."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from rtm.devstack import settings_env
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.fhir import hapi
from tests.integration.conftest import Stack, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(base_settings: Settings) -> Iterator[tuple[Stack, dict[str, str]]]:
    with running_stack(base_settings) as s:
        f = EventFactory()
        mine, other = f.patient(1), f.patient(2)
        episodes = [
            f.episode_started(mine, at="2026-10-01T09:00:00-05:00", clinician_id="c-01"),
            f.episode_started(
                other, at="2026-10-01T09:00:00-05:00", clinician_id=f"c-{uuid.uuid4().hex[:6]}"
            ),
        ]
        data = [
            f.exercise(mine, "2026-10-01T18:00:00-05:00", sets=3, reps=10, duration_s=300),
            # 23:30 on Oct 2 at -05:00 is Oct 3 in UTC: the patient-local date counts
            f.pain(mine, 4, "2026-10-02T23:30:00-05:00", context="rest"),
            f.exercise(mine, "2026-10-03T08:00:00-05:00", duration_s=120),
            f.pain(mine, 7, "2026-10-05T10:00:00-05:00"),
            f.symptom(mine, "2026-10-03T10:00:00-05:00"),  # not an Observation here
            f.pain(other, 3, "2026-10-02T10:00:00-05:00"),
        ]
        assert s.post(episodes).json()["accepted"] == 2
        assert s.post(data).json()["accepted"] == len(data)

        async def stored() -> bool:
            conn = await asyncpg.connect(s.settings.db.dsn)
            try:
                n = await conn.fetchval(
                    "SELECT count(*) FROM events WHERE patient_id = ANY($1::text[])",
                    [mine, other],
                )
            finally:
                await conn.close()
            return bool(n == len(data) + 2)

        run_in_thread(wait_for(stored, 90, "events stored"))
        yield s, {"mine": mine, "other": other}


def _get(s: Stack, headers: dict[str, str], params: Any) -> httpx.Response:
    return httpx.get(f"{s.url}/fhir/Observation", params=params, headers=headers, timeout=30)


def test_search_by_patient_and_local_date_range(stack: tuple[Stack, dict[str, str]]) -> None:
    s, p = stack
    admin = s.user_headers("admin")
    resp = _get(
        s, admin, [("patient", p["mine"]), ("date", "ge2026-10-02"), ("date", "le2026-10-03")]
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/fhir+json")
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    got = [
        (e["resource"]["code"]["coding"][0]["code"], e["resource"]["effectiveDateTime"])
        for e in bundle["entry"]
    ]
    assert got == [
        ("72514-3", "2026-10-02T23:30:00-05:00"),
        ("73985-4", "2026-10-03T08:00:00-05:00"),
    ]
    assert bundle["total"] == 2
    assert all(
        e["resource"]["subject"] == {"reference": f"Patient/{p['mine']}"} for e in bundle["entry"]
    )
    assert bundle["entry"][0]["resource"]["valueInteger"] == 4
    assert (
        bundle["link"][0]["relation"] == "self" and "date=ge2026-10-02" in bundle["link"][0]["url"]
    )
    # Patient/<id> works too; no dates: everything; a range with nothing: an empty searchset
    everything = _get(s, admin, {"patient": f"Patient/{p['mine']}"}).json()
    assert everything["total"] == 4
    empty = _get(s, admin, [("patient", p["mine"]), ("date", "ge2026-11-01")]).json()
    assert empty["total"] == 0 and "entry" not in empty


def test_scope_bad_dates_and_audit(stack: tuple[Stack, dict[str, str]]) -> None:
    s, p = stack
    clinician = s.user_headers("clinician")  # c-01: treats "mine", not "other"
    assert _get(s, clinician, {"patient": p["mine"]}).status_code == 200
    for patient in (p["other"], "p-nobody-" + uuid.uuid4().hex[:6]):
        resp = _get(s, clinician, {"patient": patient})
        assert resp.status_code == 404
        assert resp.json()["resourceType"] == "OperationOutcome"
        assert p["mine"] not in resp.text
    assert _get(s, s.user_headers("admin"), {"patient": p["other"]}).json()["total"] == 1
    bad = _get(s, clinician, [("patient", p["mine"]), ("date", "sa2026-10-01")])
    assert bad.status_code == 422 and bad.json()["issue"][0]["expression"] == ["date"]
    assert _get(s, clinician, {"patient": p["mine"], "_count": "5"}).status_code == 422
    assert _get(s, {}, {"patient": p["mine"]}).status_code == 401
    assert _get(s, s.user_headers("billing"), {"patient": p["mine"]}).status_code == 403

    async def audited() -> list[Any]:
        conn = await asyncpg.connect(s.settings.db.dsn)
        try:
            return list(
                await conn.fetch(
                    "SELECT actor, resource, detail::text AS d FROM audit_log"
                    " WHERE patient_ids @> ARRAY[$1::text] AND resource = 'GET /fhir/Observation'",
                    p["mine"],
                )
            )
        finally:
            await conn.close()

    rows = run_in_thread(audited())
    assert {r["actor"] for r in rows} >= {"user:clinician", "user:admin"}


def test_cli_export_gives_the_same_resources_and_hapi_finds_no_errors(
    stack: tuple[Stack, dict[str, str]], tmp_path: Path
) -> None:
    s, p = stack
    api = _get(
        s,
        s.user_headers("admin"),
        [("patient", p["mine"]), ("date", "ge2026-10-01"), ("date", "le2026-10-31")],
    ).json()
    out = tmp_path / "obs.json"
    env = settings_env(s.settings)
    cmd = [sys.executable, "-m", "rtm.cli", "fhir", "observations", "--patient", p["mine"]]
    subprocess.run(
        [*cmd, "--from", "2026-10-01", "--to", "2026-10-31", "--out", str(out)],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    exported = json.loads(out.read_text())
    assert exported["entry"] == api["entry"] and exported["total"] == api["total"] == 4
    foreign = subprocess.run(
        [*cmd, "--org", "nobody-" + uuid.uuid4().hex[:6]], env=env, capture_output=True, timeout=60
    )
    assert foreign.returncode == 1 and b"unknown patient" in foreign.stderr
    if hapi.missing_tools() is not None:
        pytest.skip(hapi.missing_tools() or "")
    messages = hapi.validate({"gateway": api, "cli": exported})
    assert hapi.errors(messages["gateway"]) == [] and hapi.errors(messages["cli"]) == []
