"""A history with a pause and a resume: what the worker's step streams (alerts, daily
adherence rows) equals what the offline evaluators (``rtm alerts evaluate``, ``rtm adherence
evaluate``) print over the same events as JSONL. Driven through the real step on the
in-memory store (tests/unit/test_step_in_process.py)."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

from alerts.evaluate import run_adherence_evaluate, run_alerts_evaluate
from alerts.rollup import adherence_history
from schemas.events import parse_event_json
from tests.conftest import EventFactory
from tests.unit.test_step_in_process import NOW, Step


def at(day: int, hour: int = 10) -> str:
    return f"2026-11-{day:02d}T{hour:02d}:00:00-06:00"


def history(f: EventFactory, p: str) -> list[list[dict[str, Any]]]:
    """Batches in arrival order: a week of sessions, a fall (pause), a session while
    paused, a clinician's resume on the 12th, one more session on the 14th."""
    ep = f"{p}-ep1"
    resume = {
        "event_id": f"{p}-resume",
        "schema_version": 1,
        "type": "program.resumed",
        "patient_id": p,
        "occurred_at": at(12),
        "episode_id": ep,
        "clinician_id": "c-01",
    }
    return [
        [
            f.episode_started(p, program={"sessions_per_week": 7, "exercise_ids": ["bridge"]}),
            *[f.exercise(p, at(day, 18)) for day in (2, 3, 4, 5)],
        ],
        [f.symptom(p, at(6), fall=True), f.exercise(p, at(7, 18))],
        [resume],
        [f.exercise(p, at(14, 18))],
    ]


async def test_streamed_alerts_and_adherence_equal_the_offline_evaluators(
    factory: EventFactory, tmp_path: Path
) -> None:
    step = Step()
    p = factory.patient(1)
    batches = history(factory, p)
    for batch in batches:
        await step.events(*batch)
    await step.tick(NOW)

    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for b in batches for e in b))

    # alerts: rtm alerts evaluate --as-of NOW
    out = io.StringIO()
    assert run_alerts_evaluate(events, NOW, out) == 0
    offline = {a["id"]: a for a in map(json.loads, out.getvalue().splitlines())}
    streamed = {a.id: a.model_dump(mode="json") for a in step.store.alerts.values()}
    assert streamed == offline
    kinds = {a["kind"]: a for a in offline.values()}
    assert set(kinds) == {"fall", "inactivity", "adherence_low"}
    assert kinds["fall"]["severity"] == "critical"
    # suspended while paused: inactivity from L = max(14th, resume 12th), not from the 7th
    assert kinds["inactivity"]["fired_at"].startswith("2026-11-18T00:00:00")
    # adherence_low at the end of the resume day (its window's only unpaused day), not on
    # the paused day ends
    assert kinds["adherence_low"]["fired_at"].startswith("2026-11-13T00:00:00")

    # adherence: rtm adherence evaluate, against the rows the step wrote
    out = io.StringIO()
    assert run_adherence_evaluate(events, out) == 0
    csv = {
        line.split(",")[1]: line for line in out.getvalue().splitlines()[1:] if line.startswith(p)
    }
    rows = {
        r.date.isoformat(): (
            f"{p},{r.date.isoformat()},{r.prescribed:.4f},{r.completed},"
            + ("" if r.adherence_7d is None else f"{r.adherence_7d:.4f}")
        )
        for (_, pid, _), r in step.store.adherence.items()
        if pid == p
    }
    common = sorted(set(rows) & set(csv))
    assert [d for d in common if "2026-11-06" <= d <= "2026-11-14"] == [
        f"2026-11-{day:02d}" for day in range(6, 15)
    ]
    assert [rows[d] for d in common] == [csv[d] for d in common]
    # paused days: nothing prescribed, the session of the 7th not counted
    assert csv["2026-11-07"] == f"{p},2026-11-07,0.0000,0,1.0000"
    assert csv["2026-11-11"] == f"{p},2026-11-11,0.0000,0,1.0000"  # the 5th's window day
    assert csv["2026-11-12"] == f"{p},2026-11-12,1.0000,0,0.0000"
    assert csv["2026-11-14"] == f"{p},2026-11-14,1.0000,1,0.3333"
    assert dt.date(2026, 11, 14).isoformat() in rows
    # the backfill of patient_daily_adherence from the stored events: the same rows
    stored = [parse_event_json(json.dumps(e)) for b in batches for e in b]
    backfill = {
        r.date.isoformat(): (
            f"{p},{r.date.isoformat()},{r.prescribed:.4f},{r.completed},"
            + ("" if r.adherence_7d is None else f"{r.adherence_7d:.4f}")
        )
        for r in adherence_history(p, reversed(stored))  # arrival order does not matter
    }
    assert backfill == csv
