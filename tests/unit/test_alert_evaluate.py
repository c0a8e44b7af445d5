"""Offline alerts evaluation: the shared worked example and the JSONL front end."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

from alerts.evaluate import run_alerts_evaluate
from alerts.models import EVENT_DRIVEN_KINDS

EXAMPLES = (
    Path(__file__).resolve().parents[1] / "fixtures" / "examples"
)  # copied from the design examples


def test_shared_example_event_triggered_alerts() -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = run_alerts_evaluate(
        EXAMPLES / "alerts-example.jsonl", dt.datetime(2026, 11, 12, tzinfo=dt.UTC), out, err=err
    )
    assert rc == 0 and err.getvalue() == ""
    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    got = [
        f"{a['patient_id']},{a['kind']},{a['event_ids'][0]}"
        for a in alerts
        if a["kind"] in EVENT_DRIVEN_KINDS
    ]
    expected = (EXAMPLES / "alerts-example.expected").read_text().split()
    assert got == expected
    for a in alerts:
        assert {
            "patient_id",
            "episode_id",
            "kind",
            "severity",
            "fired_at",
            "status",
            "event_ids",
            "value",
            "threshold",
        } <= a.keys()
        if a["kind"] not in EVENT_DRIVEN_KINDS:
            assert a["event_ids"] == []


def test_invalid_lines_and_naive_as_of(tmp_path: Path) -> None:
    f = tmp_path / "e.jsonl"
    src = (EXAMPLES / "alerts-example.jsonl").read_text().splitlines()
    f.write_text("\n".join([src[0], "[]", src[5], src[5]]) + "\n")  # bad line + duplicate
    out, err = io.StringIO(), io.StringIO()
    assert run_alerts_evaluate(f, dt.datetime(2026, 11, 6, 12, tzinfo=dt.UTC), out, err=err) == 1
    got = [json.loads(x) for x in out.getvalue().splitlines()]
    # The 4-day gap 11-02 .. 11-06 is caught up by the single tick: fired at 11-06 00:00
    # Berlin and already resolved by the pain report of that day.
    assert [(a["kind"], a["status"], a["resolved_by_event_id"]) for a in got] == [
        ("pain_high", "open", None),
        ("inactivity", "resolved", "exa-6"),
    ]
    assert got[1]["fired_at"] == "2026-11-06T00:00:00+01:00"
    assert ":2: skipped:" in err.getvalue()
    assert run_alerts_evaluate(f, dt.datetime(2026, 11, 6), io.StringIO(), err=err) == 2
