"""Readiness on the submission path (issue 20 item 4) against the real PostgreSQL: the
gates run at plan time over the readiness facts in the event log; a blocked line is
refused (listed with its codes, not written, not recorded, kept for the next run); an
override with a reason lets it out, audited with who and why, never edited; KX reaches
the 837P's SV1 (pyx12 validates it) and the FHIR Claim; each recorded line keeps its
readiness and checks. And the upgrade stops no existing clinic: the project's billing
fixtures with no fact stream sent submit every line (warnings only)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from streams.clock import FixedClock
from streams.services import claims
from tests.conftest import EventFactory
from tests.integration.test_claims_submit import dsn, rtm, seed, setup_org, submit
from tests.unit.test_billing_837p import claims_of, pyx12_errors

pytestmark = pytest.mark.integration
__all__ = ["dsn"]  # the fixture, imported

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "examples" / "billing-example.jsonl"
# the organisation sends consents and spend, not plans of care, procedures or RPM periods
UNSENT = "POC_UNKNOWN+PROCEDURE_UNKNOWN+RPM_UNKNOWN"
REFUSED = re.compile(r"^refused (\S+ \S+ \S+ \S+): (\S+)$", re.M)


def fact(f: EventFactory, etype: str, patient: str, at: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{patient}-{etype}-{at[:10]}",
        "schema_version": 1,
        "type": etype,
        "patient_id": patient,
        "occurred_at": at,
        **fields,
    }


async def _fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    return asyncio.run(_fetch(dsn, sql, *args))


def recorded(dsn: str, org: str) -> list[dict[str, Any]]:
    return fetch(
        dsn,
        "SELECT export_id, patient_id, cpt, readiness, checks, override_id,"
        " line->'modifiers' AS modifiers FROM billing_export_lines WHERE org_id = $1"
        " ORDER BY export_id, line_no",
        org,
    )


def test_a_blocked_line_is_refused_until_an_override_with_a_reason_lets_it_out_and_kx_goes_out(
    dsn: str, factory: EventFactory, tmp_path: Path
) -> None:
    org = factory.prefix + "-org"
    p, q = factory.patient(1), factory.patient(2)
    events = [
        factory.episode_started(p, at="2026-09-01T09:00:00-05:00"),
        *[factory.exercise(p, f"2026-09-{d:02d}T18:00:00-05:00") for d in range(1, 17)],
        factory.episode_started(q, at="2026-09-01T09:00:00-05:00"),
        *[factory.exercise(q, f"2026-09-{d:02d}T18:00:00-05:00") for d in range(1, 17)],
        # p consented (so the organisation sends consents: q has none, q is blocked) ...
        fact(
            factory,
            "consent.recorded",
            p,
            "2026-08-30T10:00:00-05:00",
            episode_id=f"{p}-ep1",
            method="written",
            scope="rtm",
        ),
        # ... and p's PT/SLP therapy elsewhere this year is near the KX threshold ($2,480)
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
    setup_org(dsn, org, tmp_path, [p, q])

    # FHIR, a dry run: q's lines are refused; KX on p's line that reaches the threshold
    fhir = tmp_path / "dry.json"
    res = submit(dsn, org, fhir, "--format", "fhir", "--dry-run")
    assert res.exit_code == 0, res.output
    refused = REFUSED.findall(res.stderr)
    assert refused and all(line.startswith(q) for line, _ in refused), res.stderr
    assert {codes for _, codes in refused} == {f"CONSENT_MISSING+{UNSENT}"}
    bundle = json.loads(fhir.read_text())
    items = [
        (
            item["productOrService"]["coding"][0]["code"],
            [m["coding"][0]["code"] for m in item.get("modifier", [])],
        )
        for entry in bundle["entry"]
        for item in entry["resource"].get("item", [])
    ]
    assert q not in fhir.read_text()
    # 98975 $19.50: 2,469.50 (no KX); 98977 $42.00: 2,511.50 >= 2,480 (KX)
    assert sorted(items) == [("98975", ["GP"]), ("98977", ["GP", "KX"])]

    # X12: the same refusal; KX in SV1's modifiers; pyx12 validates the file
    first = tmp_path / "first.x12"
    res = submit(dsn, org, first)
    assert res.exit_code == 0, res.output
    assert REFUSED.findall(res.stderr) == refused
    assert "kept for the next run" in res.stderr
    text = first.read_text()
    assert pyx12_errors(text) == []
    [claim] = claims_of(text)
    assert claim["ref"]["EA"] == p and q not in text  # type: ignore[index]
    assert sorted(sv[1] for sv in claim["sv1"]) == [  # type: ignore[union-attr]
        "HC:98975:GP",
        "HC:98977:GP:KX",
    ]
    # recorded: p's lines with their readiness and checks; nothing of q (not billed)
    rows = recorded(dsn, org)
    assert {r["patient_id"] for r in rows} == {p}
    assert {(r["cpt"], r["readiness"], r["checks"]) for r in rows} == {
        ("98975", "warn", UNSENT),
        ("98977", "warn", f"KX_REQUIRED+{UNSENT}"),
    }
    assert all(r["override_id"] is None for r in rows)

    # an override needs a reason, a blocked line, and a line the rules bill
    line = refused[0][0]
    for args, why in [
        (["--line", line, "--reason", "ok fine"], "at least 10 characters"),
        (["--line", line, "--reason", "          "], "at least 10 characters"),
        (
            ["--line", f"{p} {p}-ep1 98975 2026-09-01", "--reason", "consent on paper"],
            "not blocked",
        ),
        (["--line", f"{q} {q}-ep1 98975 2026-10-01", "--reason", "consent on paper"], "no claim"),
        (["--line", "not a line", "--reason", "consent on paper"], "PATIENT EPISODE CPT DOS"),
    ]:
        res = rtm(
            dsn, "billing", "override", "--org", org, "--as-of", "2026-11-20T12:00:00Z", *args
        )
        assert res.exit_code != 0 and why in res.output, (args, res.output)
    assert fetch(dsn, "SELECT * FROM billing_line_overrides") == []

    # with a reason, each refused line is let out (the line as the CLI printed it)
    reason = "written consent on paper, scanned 2026-08-29"
    for line, _ in refused:
        res = rtm(
            dsn,
            "billing",
            "override",
            "--org",
            org,
            "--line",
            line,
            "--reason",
            reason,
            "--as-of",
            "2026-11-20T12:00:00Z",
            "--by",
            "ann",
        )
        assert res.exit_code == 0 and "let out (CONSENT_MISSING)" in res.output, res.output

    # the next submission sends q's lines (kept from the first run: new, an original claim)
    second = tmp_path / "second.x12"
    res = submit(dsn, org, second)
    assert res.exit_code == 0 and "original: 1" in res.stderr, res.output
    assert "refused" not in res.stderr
    text2 = second.read_text()
    assert pyx12_errors(text2) == []
    [claim2] = claims_of(text2)
    assert claim2["ref"]["EA"] == q  # type: ignore[index]
    later = [r for r in recorded(dsn, org) if r["patient_id"] == q]
    assert sorted(r["cpt"] for r in later) == sorted(line.split()[2] for line, _ in refused)
    assert all(
        r["readiness"] == "blocked"
        and r["checks"] == f"CONSENT_MISSING+{UNSENT}"
        and r["override_id"] is not None
        for r in later
    )

    # the audit log shows who overrode what and why
    audit = fetch(
        dsn,
        "SELECT actor, action, resource, patient_ids, detail::text AS d FROM audit_log"
        " WHERE org_id = $1 AND action = 'billing.override' ORDER BY audit_id",
        org,
    )
    assert [(a["actor"], a["resource"], a["patient_ids"]) for a in audit] == [
        ("cli:ann", "rtm billing override", [q])
    ] * len(refused)
    details = [json.loads(a["d"]) for a in audit]
    assert [(d["line"], d["codes"], d["reason"]) for d in details] == [
        (line, ["CONSENT_MISSING"], reason) for line, _ in refused
    ]
    assert {d["override_id"] for d in details} == {r["override_id"] for r in later}

    # an override is never edited or deleted
    for sql in (
        "UPDATE billing_line_overrides SET reason = 'changed later'",
        "DELETE FROM billing_line_overrides",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            fetch(dsn, sql)


def test_the_projects_billing_fixtures_without_fact_streams_submit_every_line(
    dsn: str, factory: EventFactory, tmp_path: Path
) -> None:
    """An existing clinic sends no readiness facts: no line is blocked, each carries only
    warnings (the *_UNKNOWN codes), and every line of the rules goes out."""
    org = factory.prefix + "-org"
    events = [json.loads(ln) for ln in EXAMPLE.read_text().splitlines() if ln.strip()]
    seed(dsn, events, org)
    setup_org(dsn, org, tmp_path, ["p-ex-a", "p-ex-b", "p-ex-c"])
    out = tmp_path / "all.x12"
    res = rtm(
        dsn,
        "billing",
        "submit",
        "--org",
        org,
        "--from",
        "2026-11-01",
        "--to",
        "2027-02-28",
        "--as-of",
        "2027-03-01T00:00:00Z",
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    assert "refused" not in res.stderr and "NOT SUBMITTED" not in res.stderr
    assert pyx12_errors(out.read_text()) == []
    rows = recorded(dsn, org)
    expected = (EXAMPLE.parent / "billing-example.expected.csv").read_text().splitlines()[1:]
    assert sorted((r["patient_id"], r["cpt"]) for r in rows) == sorted(
        (row.split(",")[0], row.split(",")[2]) for row in expected
    )
    assert {r["readiness"] for r in rows} == {"warn"}
    assert all("UNKNOWN" in r["checks"] and "KX" not in r["checks"] for r in rows)


def test_a_recorded_export_refuses_a_blocked_line_too(
    dsn: str, factory: EventFactory, tmp_path: Path
) -> None:
    """``streams.services.claims.export`` (POST /v1/billing/exports) records lines as
    billed: the gates run there as for a submission."""
    org = factory.prefix + "-org"
    p, q = factory.patient(1), factory.patient(2)
    events = [
        *[factory.episode_started(x, at="2026-09-01T09:00:00-05:00") for x in (p, q)],
        *[
            factory.exercise(x, f"2026-09-{d:02d}T18:00:00-05:00")
            for x in (p, q)
            for d in range(1, 17)
        ],
        fact(
            factory,
            "consent.recorded",
            p,
            "2026-08-30T10:00:00-05:00",
            episode_id=f"{p}-ep1",
            method="written",
            scope="rtm",
        ),
    ]
    seed(dsn, events, org)
    setup_org(dsn, org, tmp_path, [p, q])

    async def go() -> claims.ExportResult:
        conn = await asyncpg.connect(dsn)
        try:
            return await claims.export(
                conn,
                FixedClock(dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)),
                claims.Requester.cli("bea", org, "test"),
                date_from=dt.date(2026, 9, 1),
                date_to=dt.date(2026, 10, 31),
            )
        finally:
            await conn.close()

    result = asyncio.run(go())
    assert result.export_id is not None
    assert {ln.patient_id for ln in result.lines} == {p}
    assert {a.line.patient_id for a in result.refused} == {q}
    assert {a.checks[0] for a in result.refused} == {"CONSENT_MISSING"}
    rows = recorded(dsn, org)
    assert {r["patient_id"] for r in rows} == {p} and {r["readiness"] for r in rows} == {"warn"}
