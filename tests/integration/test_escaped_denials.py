"""Escaped denials from the 835 (issue 20 item 5) against the real PostgreSQL: claims
submitted through `rtm billing submit` keep each line's checks; a synthetic 835 denying
three of its lines with CO-4, CO-50 and CO-18 gives `caught` (KX_REQUIRED was on the line),
`escaped` (no plan-of-care gate fired) and `uncovered` (another biller's duplicate), as
docs/billing-readiness.md maps them; the denials and the claim's outcome are stored once per
file, audited, and the month-end queue shows the claim Denied with those outcomes."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from pathlib import Path

import asyncpg
import pytest

from streams.services import claims
from tests.conftest import EventFactory
from tests.integration.test_claims_readiness import fact, fetch
from tests.integration.test_claims_submit import dsn, rtm, seed, setup_org, submit, time_log

pytestmark = pytest.mark.integration
__all__ = ["dsn"]  # the fixture, imported

UNSENT = "CONSENT_UNKNOWN+POC_UNKNOWN+PROCEDURE_UNKNOWN+RPM_UNKNOWN"


def remit_835(claim_id: str, lines: dict[str, tuple[dt.date, str]]) -> str:
    """An 835 denying each CPT of ``lines`` (date of service, CAS reason) in one claim,
    plus a denied line of a code never submitted and a claim the organisation never sent."""
    svc = "".join(
        f"SVC*HC:{cpt}:GP*50*0**1~DTM*472*{dos:%Y%m%d}~CAS*CO*{reason}*50~"
        + ("LQ*HE*N386~" if reason == "50" else "")
        for cpt, (dos, reason) in lines.items()
    )
    return (
        "ISA*00*          *00*          *ZZ*04412          *ZZ*SUBM12345      *261201*1200*^"
        "*00501*000000901*0*P*:~GS*HP*04412*SUBM12345*20261201*1200*901*X*005010X221A1~"
        "ST*835*0001~BPR*I*0*C*NON~"
        f"CLP*{claim_id}*4*150*0**MB*ICN-900~{svc}"
        "SVC*HC:98985*41*0**1~DTM*472*20260930~CAS*CO*97*41~"
        "CLP*NOT-OURS-1*4*10*0**MB*ICN-901~SVC*HC:98975*10*0**1~DTM*472*20260901~CAS*CO*4*10~"
        "SE*20*0001~GE*1*901~IEA*1*000000901~"
    )


def test_a_synthetic_835_with_co4_co50_co18_yields_caught_escaped_and_uncovered(
    dsn: str, factory: EventFactory, tmp_path: Path
) -> None:
    org = factory.prefix + "-org"
    p = factory.patient(1)
    events = [
        factory.episode_started(p, at="2026-09-01T09:00:00-05:00"),
        *[factory.exercise(p, f"2026-09-{d:02d}T18:00:00-05:00") for d in range(1, 17)],
        time_log(factory, p, "2026-09-18T10:00:00-05:00", 25),
        # therapy elsewhere this year near the KX threshold: 98977 reaches it
        fact(
            factory,
            "therapy_spend.reported",
            p,
            "2026-08-30T10:00:00-05:00",
            year=2026,
            amount_allowed_ytd=2450.00,
            bucket="pt_slp",
        ),
    ]
    seed(dsn, events, org)
    setup_org(dsn, org, tmp_path, [p])
    res = submit(dsn, org, tmp_path / "first.x12")
    assert res.exit_code == 0, res.output
    sent = {
        r["cpt"]: r
        for r in fetch(
            dsn,
            "SELECT claim_id, cpt, date_of_service, checks FROM billing_export_lines"
            " WHERE org_id = $1",
            org,
        )
    }
    assert sorted(sent) == ["98975", "98977", "98980"]
    assert "KX_REQUIRED" in sent["98977"]["checks"] and "POC" in sent["98975"]["checks"]
    [claim_id] = {r["claim_id"] for r in sent.values()}

    reasons = {"98977": "4", "98975": "50", "98980": "18"}
    era = tmp_path / "era.835"
    era.write_text(
        remit_835(claim_id, {c: (sent[c]["date_of_service"], r) for c, r in reasons.items()})
    )
    res = rtm(dsn, "billing", "escaped-denials", "--remit", str(era), "--org", org)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    got = {r["cpt"]: (r["carc"], r["gates"], r["outcome"]) for r in rows}
    assert got == {
        "98977": ("CO-4", "KX_REQUIRED", "caught"),
        "98975": ("CO-50", "POC_MISSING+POC_EXPIRED+POC_LATE+MEDICAL_REVIEW_THRESHOLD", "escaped"),
        "98980": ("CO-18", "", "uncovered"),
    }
    assert {r["patient_id"] for r in rows} == {p} and {r["claim_id"] for r in rows} == {claim_id}
    by_cpt = {r["cpt"]: r for r in rows}
    assert (
        by_cpt["98975"]["rarc"] == "N386" and by_cpt["98975"]["checks"] == sent["98975"]["checks"]
    )
    assert f"unmatched denied line {claim_id} 98985 2026-09-30" in res.stderr  # named, not dropped
    assert "unknown claim NOT-OURS-1" in res.stderr
    assert "3 denials (caught 1, escaped 1, uncovered 1)" in res.stderr

    stored = fetch(
        dsn,
        "SELECT cpt, carc, outcome FROM billing_remit_denials WHERE org_id = $1 ORDER BY cpt",
        org,
    )
    assert [(r["cpt"], r["carc"], r["outcome"]) for r in stored] == [
        ("98975", "CO-50", "escaped"),
        ("98977", "CO-4", "caught"),
        ("98980", "CO-18", "uncovered"),
    ]
    [audit] = fetch(
        dsn,
        "SELECT actor, patient_ids, detail::text AS d FROM audit_log"
        " WHERE org_id = $1 AND action = 'billing.remit_load'",
        org,
    )
    assert audit["patient_ids"] == [p] and json.loads(audit["d"])["denials"] == 3

    # the same file again (remit load): nothing stored twice
    res = rtm(dsn, "billing", "remit", "load", str(era), "--org", org)
    assert res.exit_code == 0 and "was loaded before" in res.output, res.output
    assert len(fetch(dsn, "SELECT 1 FROM billing_remit_denials WHERE org_id = $1", org)) == 3

    # the month-end queue: the claim is Denied, the month's denials with their outcome
    async def queue() -> claims.MonthQueue:
        conn = await asyncpg.connect(dsn)
        try:
            by = claims.Requester.cli("test", org, "test")
            first, last = dt.date(2026, 9, 1), dt.date(2026, 9, 30)
            return await claims.month_queue(
                conn, by, first, last, dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
            )
        finally:
            await conn.close()

    q = asyncio.run(queue())
    assert {(ln.line.cpt, ln.status, ln.claim_id) for ln in q.lines} == {
        (c, "denied", claim_id) for c in reasons
    }
    assert sorted(str(d["outcome"]) for d in q.denials) == ["caught", "escaped", "uncovered"]
    assert UNSENT in sent["98975"]["checks"]
