"""A simulated cohort with intakes (``simulate(..., intakes=)``, as ``rtm demo`` posts it)
through the real gateway, Kafka, worker and PostgreSQL: the queue (``GET /v1/intakes``)
holds every intake, on every route, and equals the intake engine over the posted events
(what the demo's summary prints), breaches and the waiting ones included."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest

from intake.engine import fold, results
from rtm.simulate import namespaced, simulate
from schemas.events import validate_event
from streams.settings import Settings
from tests.integration.conftest import running_stack, wait_for

pytestmark = pytest.mark.integration

FIELDS = ("intake_id", "patient_id", "route", "reasons", "due_at", "first_contact_at", "breached")


def _cohort() -> list[dict[str, Any]]:
    days = 30
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days + 2)  # all in the past
    prefix = f"si{uuid.uuid4().hex[:8]}-"
    return list(namespaced(simulate(60, days, 3, start=start, intakes=0.6), prefix))


async def test_a_simulated_cohorts_intakes_fill_the_queue_as_the_engine_says(
    base_settings: Settings,
) -> None:
    events = _cohort()
    submitted = [e for e in events if e["type"] == "intake.submitted"]
    mine = {e["patient_id"] for e in submitted}
    assert len(submitted) >= 8
    with running_stack(base_settings, tick_interval_s=0) as stack:
        for i in range(0, len(events), 500):
            resp = stack.post(events[i : i + 500])
            assert resp.json()["rejected"] == [], resp.text
        headers = {"Authorization": f"Bearer {stack.key}"}

        def ours(status: str) -> tuple[dt.datetime, list[dict[str, Any]]]:
            resp = httpx.get(
                f"{stack.url}/v1/intakes",
                params={"status": status, "limit": 500},
                headers=headers,
                timeout=30,
            )
            resp.raise_for_status()
            body = resp.json()
            rows = [r for r in body["intakes"] if r["patient_id"] in mine]
            return dt.datetime.fromisoformat(body["as_of"]), rows

        async def all_stored() -> bool:
            _, rows = ours("all")
            contacted = sum(r["first_contact_at"] is not None for r in rows)
            return len(rows) == len(submitted) and contacted == _contacted(events)

        await wait_for(all_stored, timeout=60, what="the simulated intakes in the queue")
        as_of, rows = ours("all")
        _, waiting = ours("waiting")

    parsed = [p for p in (validate_event(e) for e in events) if not isinstance(p, list)]
    engine = [{k: r.output()[k] for k in FIELDS} for r in results(fold(parsed).values(), as_of)]
    streamed = sorted(
        ({k: r[k] for k in FIELDS} for r in rows),
        key=lambda r: (r["intake_id"], r["patient_id"]),
    )
    assert streamed == engine
    assert {r["route"] for r in rows} == {
        "urgent",
        "physician_review",
        "in_person_pt",
        "digital_pt",
    }
    assert any(r["breached"] and r["first_contact_at"] for r in rows)  # contacted late
    assert waiting and all(r["breached"] for r in waiting)  # never contacted: overdue


def _contacted(events: list[dict[str, Any]]) -> int:
    """Intakes with a contact: an intake.contacted, or an episode.started naming it."""
    return len(
        {
            (e["patient_id"], e["intake_id"])
            for e in events
            if e["type"] in ("intake.contacted", "episode.started") and "intake_id" in e
        }
    )
