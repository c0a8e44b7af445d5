"""The front door through the real gateway, Kafka, worker and PostgreSQL (issue 18): a
streamed intake cohort, read back from ``GET /v1/intakes``, equals ``rtm intake evaluate``
over the same file as of the API's own "now": routes, reasons, STarT Back, due times, first
contacts and breaches; the waiting list is in the queue's order; the read is audited."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import asyncpg
import httpx
import pytest
from click.testing import CliRunner

from rtm.cli import main
from streams.settings import Settings
from tests.integration.conftest import running_stack, wait_for
from tests.unit.test_intake_worker import cohort

pytestmark = pytest.mark.integration

ROUTE_ORDER = {"urgent": 0, "physician_review": 1}


async def test_a_streamed_intake_cohort_equals_the_offline_command(
    base_settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    events = cohort()
    mine = {e["patient_id"] for e in events}
    with running_stack(base_settings, tick_interval_s=0) as stack:
        assert stack.post(events).json()["accepted"] == len(events)
        headers = {"Authorization": f"Bearer {stack.key}"}

        def fetch(status: str) -> dict[str, object]:
            resp = httpx.get(
                f"{stack.url}/v1/intakes", params={"status": status}, headers=headers, timeout=30
            )
            resp.raise_for_status()
            body: dict[str, object] = resp.json()
            return body

        def ours(body: dict[str, object]) -> list[dict[str, object]]:
            return [r for r in body["intakes"] if r["patient_id"] in mine]  # type: ignore[attr-defined]

        async def all_stored() -> bool:
            return len(ours(fetch("all"))) == 5

        await wait_for(all_stored, timeout=30, what="the cohort's five intakes")
        body = fetch("all")
        as_of = dt.datetime.fromisoformat(str(body["as_of"]))
        streamed = sorted(
            (
                {
                    k: r[k]
                    for k in (
                        "intake_id",
                        "patient_id",
                        "route",
                        "reasons",
                        "sbst",
                        "due_at",
                        "first_contact_at",
                        "breached",
                    )
                }
                for r in ours(body)
            ),
            key=lambda r: (r["intake_id"], r["patient_id"]),
        )
        path = tmp_path / "intakes.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        out = CliRunner().invoke(
            main, ["intake", "evaluate", "--events", str(path), "--as-of", as_of.isoformat()]
        )
        assert out.exit_code == 0, out.output
        offline = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        assert streamed == offline

        waiting = ours(fetch("waiting"))
        assert {r["first_contact_at"] for r in waiting} == {None}
        keys = [(ROUTE_ORDER.get(str(r["route"]), 2), str(r["due_at"])) for r in waiting]
        assert [k[0] for k in keys] == sorted(k[0] for k in keys)
        audited = await db.fetchval(
            "SELECT count(*) FROM audit_log WHERE resource = 'GET /v1/intakes'"
            " AND patient_ids && $1::text[]",
            sorted(mine),
        )
        assert audited >= 3
