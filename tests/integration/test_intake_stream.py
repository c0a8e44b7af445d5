"""The front door through the real gateway, Kafka, worker and PostgreSQL (issue 18): a
streamed intake cohort, read back from ``GET /v1/intakes``, equals ``rtm intake evaluate``
over the same file as of the API's own "now": routes, reasons, STarT Back, due times, first
contacts and breaches; the waiting list is in the queue's order; the read is audited."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from click.testing import CliRunner

from intake.rules import DEFAULT_RULES
from rtm.bench.receiver import Receiver
from rtm.cli import main
from streams.access import new_key
from streams.db.access import add_key, add_org
from streams.db.deliveries import remove_webhook, set_webhook
from streams.settings import Settings
from tests.conftest import EventFactory
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


async def test_an_uncontacted_urgent_intake_raises_intake_overdue_at_its_due_time(
    base_settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """With the worker's rule set giving urgent intakes 9 s (RTM_INTAKE_RULES_FILE) and the
    timer every second: an urgent intake nobody calls raises a critical intake_overdue for
    the organisation's '*' webhook, fired at its due time and not before; one contacted in
    time raises none."""
    rules = DEFAULT_RULES.model_copy(
        update={
            "version": "test-fast",
            "service_levels": {
                **DEFAULT_RULES.service_levels,
                "urgent": DEFAULT_RULES.service_levels["urgent"].model_copy(
                    update={"hours": 0.0025}
                ),
            },
        }
    )
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(rules.model_dump_json())
    f = EventFactory()
    waiting, called = f.patient(1), f.patient(2)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    flags = {"red_flags": ["saddle_anesthesia"]}
    intakes = [f.intake(p, now.isoformat(), **flags) for p in (waiting, called)]
    contact = {
        "event_id": f._next(),
        "schema_version": 1,
        "type": "intake.contacted",
        "patient_id": called,
        "intake_id": f"{called}-in",
        "occurred_at": (now + dt.timedelta(seconds=2)).isoformat(),
        "channel": "phone",
        "clinician_id": "c-01",
    }
    receiver = Receiver("ok")
    await set_webhook(db, "*", receiver.url, "s-clinic")
    try:
        with running_stack(
            base_settings, tick_interval_s=1.0, intake_rules_file=str(rules_file)
        ) as stack:
            assert stack.post([*intakes, contact]).json()["accepted"] == 3

            def overdue() -> list[dict[str, Any]]:
                return [
                    c["alert"]
                    for _, c in receiver.delivered()
                    if c["alert"]["kind"] == "intake_overdue"
                    and c["alert"]["patient_id"] in (waiting, called)
                ]

            async def arrived() -> bool:
                return bool(overdue())

            await wait_for(arrived, timeout=40, what="intake_overdue at the clinic's webhook")
            arrived_at = dt.datetime.now(dt.UTC)
            await asyncio.sleep(2.5)  # more ticks: nothing else comes
            [alert] = overdue()
            due = now + dt.timedelta(seconds=9)
            assert (alert["patient_id"], alert["severity"], alert["unrouted"]) == (
                waiting,
                "critical",
                True,
            )
            assert dt.datetime.fromisoformat(alert["fired_at"]) == due
            assert alert["intake_id"] == f"{waiting}-in"
            assert arrived_at >= due
    finally:
        await remove_webhook(db, "*")
        receiver.close()


async def test_an_organisation_s_own_rule_set_routes_its_intakes(
    base_settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """`rtm intake rules set --org O --file F` stores a version (audited; the same version
    with other rules refused), `show` prints it, and the running worker routes O's intakes
    under it (GET /v1/intakes names the version), while another organisation keeps the
    default."""
    f = EventFactory()
    org = f"{f.prefix}-org"
    await add_org(db, org, "Fast clinic")
    key, key_id, salt, digest = new_key()
    await add_key(db, key_id, org, ["integration"], "intake rules test", salt, digest)
    urgent = DEFAULT_RULES.service_levels["urgent"].model_copy(update={"hours": 0.5})
    rules = DEFAULT_RULES.model_copy(
        update={
            "version": f"{org}-v1",
            "service_levels": {**DEFAULT_RULES.service_levels, "urgent": urgent},
        }
    )
    path = tmp_path / "rules.json"
    path.write_text(rules.model_dump_json())
    runner = CliRunner()
    stored = await asyncio.to_thread(
        runner.invoke, main, ["intake", "rules", "set", "--org", org, "--file", str(path)]
    )
    assert stored.exit_code == 0 and "stored" in stored.output, stored.output
    shown = await asyncio.to_thread(runner.invoke, main, ["intake", "rules", "show", "--org", org])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["version"] == f"{org}-v1"
    other = rules.model_copy(update={"nprs_in_person_at": 9})
    path.write_text(other.model_dump_json())
    refused = await asyncio.to_thread(
        runner.invoke, main, ["intake", "rules", "set", "--org", org, "--file", str(path)]
    )
    assert refused.exit_code != 0 and "new version" in refused.output
    assert (
        await db.fetchval(
            "SELECT count(*) FROM audit_log WHERE org_id = $1 AND action = 'intake.rules_set'",
            org,
        )
        == 1
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    p = f.patient(1)
    with running_stack(base_settings, tick_interval_s=0) as stack:
        ours = f.intake(p, now.isoformat(), red_flags=["saddle_anesthesia"])
        resp = httpx.post(
            f"{stack.url}/v1/events", json=[ours], headers={"Authorization": f"Bearer {key}"}
        )
        assert resp.json()["accepted"] == 1, resp.text

        def queue() -> list[dict[str, Any]]:
            got = httpx.get(
                f"{stack.url}/v1/intakes",
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            ).json()["intakes"]
            return [r for r in got if r["patient_id"] == p]

        async def routed() -> bool:
            return bool(queue())

        await wait_for(routed, timeout=30, what="the intake routed")
        [row] = queue()
        assert row["rules_version"] == f"{org}-v1"
        due = dt.datetime.fromisoformat(row["due_at"])
        assert due - now == dt.timedelta(minutes=30)  # the organisation's urgent level
