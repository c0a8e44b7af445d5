"""Events before their episode and unrouted safety alerts, through the real services."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from alerts.evaluate import run_alerts_evaluate
from alerts.models import EVENT_DRIVEN_KINDS
from rtm.produce import produce_file
from rtm.simulate import namespaced, simulate, write_jsonl
from streams.db.deliveries import set_webhook
from streams.kafka.producer import EventProducer
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import running_stack, stored_then_tick, wait_for
from tests.integration.test_alerts_stream import Receiver, _alerts_api, _now, db_alerts

pytestmark = pytest.mark.integration
AS_OF = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)


def _event_driven(alerts: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    return {
        k: (kind, status, dt.datetime.fromisoformat(fired.replace("Z", "+00:00")), ids)
        for k, (kind, status, fired, ids) in alerts.items()
        if kind in EVENT_DRIVEN_KINDS
    }


async def test_episode_arriving_last_gives_the_alerts_of_in_order_arrival(
    base_settings: Settings, db: asyncpg.Connection, tmp_path: Path, factory: EventFactory
) -> None:
    prefix = factory.prefix + "-"
    events = list(namespaced(simulate(40, 30, seed=5), prefix))
    in_order, late = tmp_path / "in-order.jsonl", tmp_path / "episode-last.jsonl"
    write_jsonl(events, in_order)
    buf = io.StringIO()
    run_alerts_evaluate(in_order, AS_OF, buf, err=io.StringIO())
    expected = _event_driven(
        {
            a["id"]: (a["kind"], a["status"], a["fired_at"], tuple(a["event_ids"]))
            for a in map(json.loads, buf.getvalue().splitlines())
        }
    )
    assert {v[0] for v in expected.values()} >= {"pain_high", "red_flag"}
    # Every patient's enrolment reaches the worker after all of its other events (an EHR
    # feed sending it late), everything else in its own order.
    starts = [e for e in events if e["type"] == "episode.started"]
    write_jsonl([e for e in events if e["type"] != "episode.started"] + starts, late)

    with running_stack(base_settings, tick_interval_s=0) as stack:
        before = await produce_file(stack.settings, late, stack.url, 500, 4)
        assert before.rejected == 0
        n_ids = len({e["event_id"] for e in events})
        assert before.accepted == n_ids > 1000

        await stored_then_tick(db, stack.settings, prefix, n_ids, AS_OF, 300)

        async def settled() -> bool:
            return _event_driven(await db_alerts(db, prefix)) == expected

        try:
            await wait_for(settled, timeout=120, what="late-episode alerts to match in-order")
        finally:
            got = _event_driven(await db_alerts(db, prefix))
            missing = set(expected) - set(got)
            assert got == expected, (len(got), len(expected), len(missing))


async def test_red_flag_with_no_episode_reaches_the_clinic_wide_recipient(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory
) -> None:
    clinic = Receiver(200)
    p = factory.patient(1)
    await set_webhook(db, "*", clinic.url, "clinic-secret")
    try:
        # No retry timer: older failed deliveries of other tests stay where they are.
        with running_stack(
            base_settings, tick_interval_s=0, webhook_retry_interval_s=3600
        ) as stack:
            flag = factory.symptom(p, _now(-1), red_flags=["saddle_anesthesia"])
            assert stack.post([flag]).json()["accepted"] == 1

            async def stored() -> bool:
                return bool(
                    await db.fetchval(
                        "SELECT count(*) FROM event_ids WHERE event_id = $1", flag["event_id"]
                    )
                )

            await wait_for(stored, what="red flag stored")
            assert all(a["patient_id"] != p for a in await _alerts_api(stack, clinician_id="*"))
            # The grace period (24 h from receipt) passes: the tick surfaces it, unrouted.
            producer = EventProducer(stack.settings)
            await producer.start()
            try:
                await producer.send_ticks(dt.datetime.now(dt.UTC) + dt.timedelta(hours=25))
            finally:
                await producer.stop()

            def mine() -> list[dict[str, Any]]:
                return [
                    json.loads(body)
                    for _, body in clinic.requests
                    if json.loads(body)["alert"]["patient_id"] == p
                ]

            async def delivered() -> bool:
                return bool(mine())

            await wait_for(delivered, what="unrouted red flag at the clinic-wide webhook")
            [change] = mine()
            alert = change["alert"]
            assert (
                change["change"],
                alert["kind"],
                alert["unrouted"],
                alert["clinician_id"],
                alert["event_ids"],
            ) == ("fired", "red_flag", True, "*", [flag["event_id"]])
            listed = [a for a in await _alerts_api(stack, clinician_id="*") if a["patient_id"] == p]
            assert [a["unrouted"] for a in listed] == [True]
            metrics = httpx.get(f"http://127.0.0.1:{stack.settings.worker.web_port}/metrics").text
            assert 'rtm_worker_alerts_unrouted_total{kind="red_flag"} 1.0' in metrics
    finally:
        await db.execute("DELETE FROM clinician_webhooks WHERE clinician_id = '*'")
        clinic.server.shutdown()
