"""Streamed claim readiness (issue 20 items 1-4) through the real gateway, Kafka, worker and
PostgreSQL: a cohort with consent, plan-of-care, procedure, RPM and therapy-spend facts and
planted problems gives stored readiness equal to `rtm billing readiness` over the same JSONL
file (every line's readiness and checks), with late and duplicated facts (re-posted through
the gateway and re-delivered straight to Kafka); `GET /v1/billing/readiness` serves the
month, audited; `rtm billing streams set` switches a stream, audited, and the stored lines
follow (equal to the offline command with the same modes)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from click.testing import CliRunner

from billing.evaluate import parse_stream_modes, run_readiness
from rtm.cli import main
from rtm.simulate import write_jsonl
from schemas.events import validate_event
from streams.kafka.producer import EventProducer
from tests.conftest import EventFactory
from tests.integration.conftest import Stack, refreshed, wait_for
from tests.integration.test_billing_stream import bdb, billing_stack, committed_everything

pytestmark = pytest.mark.integration
__all__ = ["bdb", "billing_stack"]  # the fixtures, imported

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "billing"
FEES = FIXTURES / "fee-schedule.synthetic.csv"
NPI = "1234567893"  # the factory's billing NPI (the profile's locality: TEST-01)

Row = tuple[str, str, str, str, str, str, str, str]  # patient..checks


def fact(patient: str, etype: str, at: str, n: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{patient}-{etype}-{n}",
        "schema_version": 1,
        "type": etype,
        "patient_id": patient,
        "occurred_at": at,
        **fields,
    }


def consent(p: str, at: str = "2026-08-30T10:00:00-05:00") -> dict[str, Any]:
    return fact(p, "consent.recorded", at, episode_id=f"{p}-ep1", method="written", scope="rtm")


def poc(p: str, at: str = "2026-08-31T10:00:00-05:00", days: int = 90) -> dict[str, Any]:
    return fact(
        p,
        "plan_of_care.certified",
        at,
        episode_id=f"{p}-ep1",
        certifier_npi=NPI,
        duration_days=days,
    )


def cohort(f: EventFactory) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """(first wave, late facts, the planted problem of each patient)."""
    planted = {
        f.patient(1): "ready (KX crossed: spend elsewhere reported late)",
        f.patient(2): "CONSENT_MISSING",
        f.patient(3): "POC_EXPIRED",
        f.patient(4): "ICD10_NOT_BILLABLE (M54.5)",
        f.patient(5): "RPM_OVERLAP (reported late)",
        f.patient(6): "GLOBAL_PERIOD",
    }
    first: list[dict[str, Any]] = []
    for p in planted:
        over: dict[str, Any] = {}
        if p == f.patient(4):
            ep = f.episode_started(p)
            over["billing"] = {**ep["billing"], "diagnosis_codes": ["M54.5"]}
        first.append(f.episode_started(p, at="2026-09-01T09:00:00-05:00", **over))
        first += [f.exercise(p, f"2026-09-{d:02d}T18:00:00-05:00") for d in range(1, 17)]
        if p != f.patient(2):
            first.append(consent(p))
        first.append(poc(p, "2026-07-01T10:00:00-05:00", 30) if p == f.patient(3) else poc(p))
    first.append(
        fact(
            f.patient(6),
            "procedure.recorded",
            "2026-08-20T10:00:00-05:00",
            surgeon_npi=NPI,
            global_days=90,
        )
    )
    late = [
        fact(
            f.patient(1),
            "therapy_spend.reported",
            "2026-09-02T10:00:00-05:00",
            year=2026,
            amount_allowed_ytd=2450.00,
            bucket="pt_slp",
        ),
        fact(
            f.patient(5),
            "rpm.enrolled",
            "2026-09-15T10:00:00-05:00",
            period_start="2026-09-15",
            period_end="2026-10-14",
        ),  # fmt: skip
    ]
    return first, late, planted


def offline(path: Path, as_of: dt.datetime, streams: str | None = None) -> set[Row]:
    out = io.StringIO()
    err = io.StringIO()
    modes = parse_stream_modes(streams) if streams else None
    kw: dict[str, Any] = {"streams": modes} if modes else {}
    code = run_readiness(path, as_of, FEES, out, include_open=True, err=err, **kw)
    assert code == 0, err.getvalue()
    return {
        (
            r["patient_id"],
            r["episode_id"],
            r["cpt"],
            r["date_of_service"],
            r["modifiers"],
            r["units"],
            r["readiness"],
            r["checks"],
        )  # fmt: skip
        for r in csv.DictReader(io.StringIO(out.getvalue()))
    }


async def stored(conn: asyncpg.Connection) -> set[Row]:
    rows = await conn.fetch(
        "SELECT patient_id, episode_id, cpt, date_of_service, line, readiness, checks"
        " FROM billing_line_readiness"
    )
    out: set[Row] = set()
    for r in rows:
        line = json.loads(r["line"])
        out.add(
            (
                r["patient_id"],
                r["episode_id"],
                r["cpt"],
                r["date_of_service"].isoformat(),
                "+".join(line["modifiers"]),
                str(line["units"]),
                r["readiness"],
                r["checks"],
            )  # fmt: skip
        )
    return out


def _cli(stack: Stack, *args: str) -> str:
    res = CliRunner().invoke(main, [*args, "--dsn", stack.settings.db.dsn], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


async def cli(stack: Stack, *args: str) -> str:
    """A command, in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(_cli, stack, *args)


async def test_streamed_readiness_equals_the_offline_command_with_late_and_duplicated_facts(
    billing_stack: Stack, bdb: asyncpg.Connection, factory: EventFactory, tmp_path: Path
) -> None:
    stack = billing_stack
    await cli(stack, "billing", "fees", "load", str(FEES))
    await cli(stack, "billing", "profile", "set", "--org", "default", "--npi", NPI,
        "--file", str(FIXTURES / "profile.synthetic.json"))  # fmt: skip
    first, late, planted = cohort(factory)
    path = tmp_path / "cohort.jsonl"
    write_jsonl(first + late, path)

    # the first wave, then the late facts once it is stored, each posted twice (duplicates)
    assert stack.post(first).json()["accepted"] == len(first)
    await wait_for(lambda: committed_everything(stack.settings), timeout=90, what="first wave")
    await wait_for(lambda: refreshed(stack.settings), timeout=90, what="first wave refreshed")
    before = await stored(bdb)
    assert {r[0] for r in before} == set(planted)
    assert stack.post(late + late[:1]).json()["accepted"] == len(late)
    producer = EventProducer(stack.settings)  # a re-delivery past the gateway
    await producer.start()
    try:
        evs = [validate_event(e) for e in [*late, *first[:20]]]
        await producer.send_events([e for e in evs if not isinstance(e, list)])
    finally:
        await producer.stop()
    await wait_for(lambda: committed_everything(stack.settings), timeout=90, what="late facts")
    dups = stack.post(late).json()["duplicates"]
    assert [d["event_id"] for d in dups] == [e["event_id"] for e in late]
    await wait_for(lambda: committed_everything(stack.settings), timeout=90, what="re-posted")
    await wait_for(lambda: refreshed(stack.settings), timeout=90, what="lines refreshed")

    now = dt.datetime.now(dt.UTC)
    want = offline(path, now)
    got = await stored(bdb)
    assert got == want
    by_patient = {p: {r[7] for r in want if r[0] == p} for p in planted}
    p1, p2, p3, p4, p5, p6 = planted
    assert any("KX_REQUIRED" in c for c in by_patient[p1])
    assert any(r[0] == p1 and r[4] == "GP+KX" for r in got)  # KX in the stored line
    for p, code in [(p2, "CONSENT_MISSING"), (p3, "POC_EXPIRED"), (p4, "ICD10_NOT_BILLABLE"),
                    (p5, "RPM_OVERLAP"), (p6, "GLOBAL_PERIOD")]:  # fmt: skip
        assert all(code in c.split("+") for c in by_patient[p]), (p, by_patient[p])
        assert {r[6] for r in got if r[0] == p} == {"blocked"}
    assert got != before  # the late facts changed stored lines (KX, RPM)

    # the API serves the month, audited
    resp = httpx.get(
        f"{stack.url}/v1/billing/readiness",
        params={"month": "2026-09"},
        headers={"Authorization": f"Bearer {stack.key}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    september = {r for r in got if r[3].startswith("2026-09")}
    assert body["month"] == "2026-09" and len(body["lines"]) == len(september) > 0
    assert {
        (
            ln["patient_id"],
            ln["cpt"],
            ln["date_of_service"],
            ln["readiness"],
            "+".join(ln["checks"]),
        )
        for ln in body["lines"]
    } == {(r[0], r[2], r[3], r[6], r[7]) for r in september}
    assert body["counts"]["blocked"] == sum(r[6] == "blocked" for r in september)
    # September's periods (09-01..09-30) close at midnight in Chicago (05:00Z) + the 72 h grace
    assert all(ln["period_closed"] for ln in body["lines"])
    assert {ln["closes_at"] for ln in body["lines"]} == {"2026-10-04T05:00:00Z"}
    audit = await bdb.fetchrow(
        "SELECT patient_ids, resource FROM audit_log WHERE resource = 'GET /v1/billing/readiness'"
    )
    assert audit is not None and set(audit["patient_ids"]) == {r[0] for r in september}
    bad = httpx.get(f"{stack.url}/v1/billing/readiness", params={"month": "2026-13"},
                    headers={"Authorization": f"Bearer {stack.key}"}, timeout=30)  # fmt: skip
    assert bad.status_code == 422

    # the switch: this organisation says it never sends consent; stored lines follow at once
    out = await cli(stack, "billing", "streams", "set", "--org", "default", "--stream", "consent",
              "--mode", "not_sent", "--by", "bea")  # fmt: skip
    assert "consent auto -> not_sent" in out
    assert "consent    not_sent" in await cli(
        stack, "billing", "streams", "show", "--org", "default"
    )
    modes = await cli(stack, "billing", "streams", "show", "--org", "default", "--json")
    assert json.loads(modes)["default"]["consent"] == "not_sent"
    switched = await stored(bdb)
    assert switched == offline(path, now, modes)  # the same modes, offline
    assert {r[6] for r in switched if r[0] == p2} == {"warn"}
    row = await bdb.fetchrow(
        "SELECT actor, detail::text AS detail FROM audit_log WHERE action = 'billing.streams_set'"
    )
    assert row is not None and row["actor"] == "cli:bea"
    assert json.loads(row["detail"]) == {"stream": "consent", "mode": "not_sent", "before": "auto"}

    # an upgrade: lines stored before the worker kept readiness are filled from the log
    await bdb.execute("DELETE FROM billing_line_readiness")
    out = await cli(stack, "billing", "readiness-backfill")
    assert f"default: {len(switched)} claim lines assessed" in out
    assert await stored(bdb) == switched
