"""Submitting claims (issue 12 parts 1-5) against the real PostgreSQL: billing profile,
demographics and fee schedule loaded by the CLI, CSV review then X12 submission, control
numbers from the database, replacement after a late data day with the payer's claim
control number read from an 835, void after a late episode.ended, export history and
re-download. pyx12 validates every submitted file; the tests read the segments themselves
for what pyx12 does not check."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner, Result

from rtm.cli import main
from rtm.simulate import demographics_csv, synthetic_demographics
from schemas.events import validate_event
from streams.db.access import record_patients
from streams.db.events import EventStore
from streams.db.pool import migrate
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.unit.test_billing_837p import claims_of, pyx12_errors, segments

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "billing"
AS_OF = "2026-11-20T12:00:00Z"
NPI = "1234567893"


@pytest.fixture
def dsn(base_settings: Settings) -> Iterator[str]:
    schema = "it_claims_" + uuid.uuid4().hex[:8]

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(base_settings.db.owner_dsn)  # DDL: the owner
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE SCHEMA {schema}"))
    path = f"?search_path={schema}%2Cpublic"
    # migrated by the owner, then used (seeded, the CLI run) as the application role
    asyncio.run(migrate(base_settings.db.owner_dsn.split("?")[0] + path, base_settings.db.app_role))
    try:
        yield base_settings.db.dsn.split("?")[0] + path
    finally:
        asyncio.run(run(f"DROP SCHEMA {schema} CASCADE"))


def seed(dsn: str, events: list[dict[str, Any]], org: str) -> None:
    """Raw events of ``org`` (stamped, as its key's gateway would) in the table, the ledger
    backfilled, the patients known in ``org``."""
    valid = [
        e.model_copy(update={"org_id": org})
        for e in (validate_event(o) for o in events)
        if not isinstance(e, list)
    ]
    assert len(valid) == len(events)

    async def go() -> None:
        await migrate(dsn)
        store = await EventStore.connect(dsn)
        try:
            await store.insert_events(valid)
        finally:
            await store.close()
        conn = await asyncpg.connect(dsn)
        try:
            await record_patients(conn, [e.patient_key for e in valid])
        finally:
            await conn.close()

    asyncio.run(go())
    res = CliRunner().invoke(main, ["billing", "backfill", "--dsn", dsn])
    assert res.exit_code == 0, res.output


def rtm(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--dsn", dsn], catch_exceptions=False)


def time_log(f: EventFactory, p: str, at: str, minutes: int) -> dict[str, Any]:
    return {
        "event_id": f"{p}-tl-{at[:10]}",
        "schema_version": 1,
        "type": "clinician.time_logged",
        "patient_id": p,
        "occurred_at": at,
        "clinician_id": "c-01",
        "clinician_role": "PT",
        "minutes": minutes,
        "activity": "call",
        "interactive": True,
    }


def setup_org(dsn: str, org: str, tmp_path: Path, patients: list[str]) -> None:
    res = rtm(
        dsn,
        "billing",
        "profile",
        "set",
        "--org",
        org,
        "--npi",
        NPI,
        "--file",
        str(FIXTURES / "profile.synthetic.json"),
    )
    assert res.exit_code == 0 and "stored" in res.output and "missing" not in res.output, res.output
    demo = tmp_path / f"{org}-demographics.csv"
    demo.write_text(demographics_csv(synthetic_demographics(patients, seed=3)))
    res = rtm(dsn, "billing", "demographics", "load", str(demo), "--org", org)
    assert res.exit_code == 0 and f"of {len(patients)} patients, 0 errors" in res.output, res.output
    res = rtm(dsn, "billing", "fees", "load", str(FIXTURES / "fee-schedule.synthetic.csv"))
    assert res.exit_code == 0, res.output


def submit(dsn: str, org: str, out: Path, *extra: str, to: str = "2026-10-31") -> Result:
    return rtm(
        dsn,
        "billing",
        "submit",
        "--org",
        org,
        "--from",
        "2026-09-01",
        "--to",
        to,
        "--as-of",
        AS_OF,
        "--out",
        str(out),
        "--by",
        "bea",
        *extra,
    )


def isa13(text: str) -> str:
    return segments(text)[0][13]


def test_csv_review_then_x12_submission_replacement_from_an_835_and_history(
    dsn: str, factory: EventFactory, tmp_path: Path
) -> None:
    org = factory.prefix + "-org"
    p, nodemo = factory.patient(1), factory.patient(2)
    events = [
        factory.episode_started(p, at="2026-09-01T09:00:00-05:00"),
        *[factory.exercise(p, f"2026-09-{d:02d}T18:00:00-05:00") for d in range(1, 16)],
        time_log(factory, p, "2026-09-18T10:00:00-05:00", 25),
        factory.episode_started(nodemo, at="2026-09-01T09:00:00-05:00"),
        *[factory.exercise(nodemo, f"2026-09-{d:02d}T18:00:00-05:00") for d in range(1, 5)],
    ]
    seed(dsn, events, org)
    setup_org(dsn, org, tmp_path, [p])  # no demographics for `nodemo`

    # review in CSV: a preview, nothing recorded
    res = rtm(
        dsn,
        "billing",
        "export",
        "--org",
        org,
        "--from",
        "2026-09-01",
        "--to",
        "2026-10-31",
        "--as-of",
        AS_OF,
    )
    assert res.exit_code == 0 and "not recorded" in res.output
    reviewed = sorted(
        (row.split(",")[0], row.split(",")[2])
        for row in res.stdout.splitlines()
        if row.startswith(factory.prefix)
    )
    assert reviewed == [
        (p, "98975"),
        (p, "98980"),
        (p, "98985"),
        (nodemo, "98975"),
        (nodemo, "98985"),
    ]

    # then submit in X12: the reviewed lines of patients with demographics are in it
    first = tmp_path / "first.x12"
    res = submit(dsn, org, first)
    assert res.exit_code == 0, res.output
    assert (
        "NOT SUBMITTED: claim" in res.output and f"(patient {nodemo}): demographics" in res.output
    )
    text1 = first.read_text()
    assert pyx12_errors(text1) == []
    [claim] = claims_of(text1)
    assert claim["clm"][5] == "11:B:1"  # type: ignore[index]
    assert sorted(sv[1].split(":")[1] for sv in claim["sv1"]) == ["98975", "98980", "98985"]  # type: ignore[union-attr]
    assert (
        Decimal(claim["clm"][2]) == sum(Decimal(sv[2]) for sv in claim["sv1"]) == Decimal("110.75")
    )  # type: ignore[index,union-attr]
    assert claim["ref"]["EA"] == p and nodemo not in text1  # type: ignore[index]
    assert segments(text1)[0][15] == "P"
    assert any(s[:3] == ["NM1", "IL", "1"] and s[3] == "SYNTHETIC" for s in segments(text1))
    assert any(s[0] == "DMG" for s in segments(text1))
    clm01 = claim["clm"][1]  # type: ignore[index]

    # nothing new: nothing submitted, no control number used
    again = submit(dsn, org, tmp_path / "none.x12")
    assert "nothing to submit" in again.output

    # a late 16th data day: 98985 -> 98977; the replacement needs the payer's ICN
    late = factory.pain(p, 3, "2026-09-20T22:30:00-05:00")
    seed(dsn, [late], org)
    res = submit(dsn, org, tmp_path / "refused.x12")
    assert f"claim {clm01} (patient {p}): payer_claim_number" in res.output
    assert "nothing to submit" in res.output
    remit = tmp_path / "era.835"
    remit.write_text(
        "ISA*00*          *00*          *ZZ*04412          *ZZ*SUBM12345      *261101*1200*^*00501*000000777*0*P*:~"
        "GS*HP*04412*SUBM12345*20261101*1200*777*X*005010X221A1~ST*835*0001~"
        f"CLP*{clm01}*1*110.75*80.00**MB*22026305123400~SE*3*0001~GE*1*777~IEA*1*000000777~"
    )
    res = rtm(dsn, "billing", "remit", "load", str(remit), "--org", org)
    assert res.exit_code == 0 and "1 payer claim control numbers recorded" in res.output, res.output
    second = tmp_path / "second.x12"
    res = submit(dsn, org, second)
    assert res.exit_code == 0 and "replacement: 1" in res.output, res.output
    text2 = second.read_text()
    assert pyx12_errors(text2) == []
    [repl] = claims_of(text2)
    assert repl["clm"][1] == clm01 and repl["clm"][5] == "11:B:7"  # type: ignore[index]
    assert repl["ref"]["F8"] == "22026305123400"  # type: ignore[index]
    # the whole corrected claim, not the changed line only
    assert sorted(sv[1].split(":")[1] for sv in repl["sv1"]) == ["98975", "98977", "98980"]  # type: ignore[union-attr]
    assert int(isa13(text2)) > int(isa13(text1))

    # export history: both submissions, and the files byte for byte
    res = rtm(dsn, "billing", "submissions", "--org", org)
    rows = res.output.splitlines()
    assert len(rows) == 2 and all(re.search(r"\bbea\s+x12\s+P\s", r) for r in rows), res.output
    ids = [int(r.split()[0]) for r in rows]
    got = tmp_path / "again.x12"
    res = rtm(dsn, "billing", "submission-file", str(ids[1]), "--org", org, "--out", str(got))
    assert res.exit_code == 0 and got.read_text() == text1
    res = rtm(dsn, "billing", "submission-file", str(ids[1]), "--org", "someone-else")
    assert res.exit_code != 0 and "no file" in res.output


def test_control_numbers_are_unique_across_exports_and_a_void_for_a_withdrawn_claim(
    dsn: str, factory: EventFactory, tmp_path: Path
) -> None:
    org = factory.prefix + "-org"
    ps = [factory.patient(i) for i in range(3)]
    events = []
    for p in ps:
        events += [
            factory.episode_started(p, at="2026-09-01T09:00:00-05:00"),
            *[factory.exercise(p, f"2026-09-{d:02d}T18:00:00-05:00") for d in range(1, 4)],
        ]
    seed(dsn, events, org)
    setup_org(dsn, org, tmp_path, ps)
    texts = []
    res = rtm(
        dsn,
        "billing",
        "submit",
        "--org",
        org,
        "--from",
        "2026-09-01",
        "--to",
        "2026-09-30",
        "--as-of",
        AS_OF,
        "--out",
        str(tmp_path / "sep.x12"),
    )
    assert res.exit_code == 0 and "original: 3" in res.output, res.output
    texts.append((tmp_path / "sep.x12").read_text())
    # a second export after more data (two days in period 2 of two patients): new claims
    seed(
        dsn,
        [factory.exercise(p, f"2026-10-{d:02d}T18:00:00-05:00") for p in ps[1:] for d in (5, 6)],
        org,
    )
    res = rtm(
        dsn,
        "billing",
        "submit",
        "--org",
        org,
        "--from",
        "2026-10-01",
        "--to",
        "2026-10-31",
        "--as-of",
        AS_OF,
        "--out",
        str(tmp_path / "oct.x12"),
        "--test",
    )
    assert res.exit_code == 0 and "original: 2" in res.output, res.output
    texts.append((tmp_path / "oct.x12").read_text())
    assert segments(texts[-1])[0][15] == "T"
    numbers = [isa13(t) for t in texts]
    assert len(set(numbers)) == len(numbers) == 2
    for t in texts:
        segs = segments(t)
        n = segs[0][13]
        assert [s[6] for s in segs if s[0] == "GS"] == [str(int(n))]
        assert [s[2] for s in segs if s[0] == "ST"] == [s[2] for s in segs if s[0] == "SE"] == [n]
        assert pyx12_errors(t) == []

    # a late episode.ended on its first day cuts period 1 to one data day: 98975 and
    # 98985 are withdrawn; the claim had nothing else, so it is voided (8) with REF*F8
    p = ps[0]
    [claim] = [c for c in claims_of(texts[0]) if c["ref"]["EA"] == p]  # type: ignore[index]
    clm01 = claim["clm"][1]  # type: ignore[index]
    assert len({c["clm"][1] for t in texts for c in claims_of(t)}) == 5  # type: ignore[index]
    seed(
        dsn,
        [
            {
                "event_id": f"{p}-end",
                "schema_version": 1,
                "type": "episode.ended",
                "patient_id": p,
                "occurred_at": "2026-09-01T20:00:00-05:00",
                "episode_id": f"{p}-ep1",
                "reason": "insurance",
            }
        ],
        org,
    )
    res = rtm(dsn, "billing", "claims", "set-icn", clm01, "ICN-P0-1", "--org", org)
    assert res.exit_code == 0, res.output
    res = submit(dsn, org, tmp_path / "void.x12")
    assert res.exit_code == 0 and "void: 1" in res.output, res.output
    text = (tmp_path / "void.x12").read_text()
    assert pyx12_errors(text) == []
    [void] = claims_of(text)
    assert void["clm"][1] == clm01 and void["clm"][5] == "11:B:8"  # type: ignore[index]
    assert void["ref"]["F8"] == "ICN-P0-1"  # type: ignore[index]
    assert sorted(sv[1].split(":")[1] for sv in void["sv1"]) == ["98975", "98985"]  # type: ignore[union-attr]
    assert isa13(text) not in numbers
    # voided: nothing stands, nothing more to send
    res = submit(dsn, org, tmp_path / "after.x12")
    assert "nothing to submit" in res.output


def test_a_production_submission_with_an_incomplete_profile_is_refused_naming_the_field(
    dsn: str, factory: EventFactory, tmp_path: Path
) -> None:
    org = factory.prefix + "-org"
    p = factory.patient(1)
    seed(
        dsn,
        [
            factory.episode_started(p, at="2026-09-01T09:00:00-05:00"),
            *[factory.exercise(p, f"2026-09-{d:02d}T18:00:00-05:00") for d in range(1, 4)],
        ],
        org,
    )
    res = submit(dsn, org, tmp_path / "x.x12")
    assert res.exit_code != 0 and "refused" in res.output
    assert f"missing: billing NPI {NPI}: profile" in res.output
    thin = tmp_path / "thin.json"
    thin.write_text('{"submitter_name": "X", "payers": {"medicare": {"name": "MAC"}}}')
    res = rtm(dsn, "billing", "profile", "set", "--org", org, "--npi", NPI, "--file", str(thin))
    assert "still missing for production: submitter_id" in res.output
    res = submit(dsn, org, tmp_path / "x.x12")
    assert res.exit_code != 0
    for field in (
        "submitter_id",
        "receiver_id",
        "provider_tax_id",
        "provider_address.zip",
        "payers.medicare.payer_id",
    ):
        assert f"missing: billing NPI {NPI}: {field}" in res.output
    assert not (tmp_path / "x.x12").exists()

    async def recorded() -> tuple[int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            return (
                await conn.fetchval("SELECT count(*) FROM billing_exports"),
                await conn.fetchval("SELECT count(*) FROM billing_export_lines"),
            )
        finally:
            await conn.close()

    assert asyncio.run(recorded()) == (0, 0)
    bad = tmp_path / "bad.json"
    bad.write_text('{"payers": {"medicare": {"payer_id": "MEDICARE"}}}')
    res = rtm(dsn, "billing", "profile", "set", "--org", org, "--npi", NPI, "--file", str(bad))
    assert res.exit_code != 0 and "payer_id" in res.output


def test_each_claims_use_case_leaves_its_one_audit_row(
    dsn: str, factory: EventFactory, tmp_path: Path
) -> None:
    """The services write the audit rows (streams/services/claims.py): one per profile
    set, demographics load, preview, submission, empty submission and file download."""
    org = factory.prefix + "-org"
    p = factory.patient(1)
    events = [
        factory.episode_started(p, at="2026-09-01T09:00:00-05:00"),
        *[factory.exercise(p, f"2026-09-{d:02d}T18:00:00-05:00") for d in range(1, 17)],
    ]
    seed(dsn, events, org)
    setup_org(dsn, org, tmp_path, [p])
    window = ["--from", "2026-09-01", "--to", "2026-10-31", "--as-of", AS_OF]
    res = rtm(dsn, "billing", "export", "--org", org, *window, "--by", "bea")
    assert res.exit_code == 0, res.output
    assert submit(dsn, org, tmp_path / "one.x12").exit_code == 0
    assert "nothing to submit" in submit(dsn, org, tmp_path / "none.x12").output
    res = rtm(dsn, "billing", "submissions", "--org", org, "--json")
    [row] = json.loads(res.output)
    res = rtm(dsn, "billing", "submission-file", str(row["submission_id"]), "--org", org)
    assert res.exit_code == 0 and res.output.startswith("ISA*")

    async def audit_rows() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT actor, role, action, resource, patient_ids, detail::text AS d"
                " FROM audit_log WHERE org_id = $1 ORDER BY audit_id",
                org,
            )
        finally:
            await conn.close()
        return [(*tuple(r)[:5], json.loads(r["d"])) for r in rows]

    rows = asyncio.run(audit_rows())
    assert [(r[2], r[3], r[4]) for r in rows] == [
        ("billing.profile_set", "rtm billing profile set", []),
        ("billing.demographics_load", "rtm billing demographics load", [p]),
        ("read", "rtm billing export", [p]),
        ("export", "rtm billing submit", [p]),
        ("read", "rtm billing submit", []),
        ("read", "rtm billing submission-file", [p]),
    ]
    assert {r[1] for r in rows} == {"cli"} and rows[2][0] == rows[3][0] == "cli:bea"
    assert rows[2][5] == {
        "from": "2026-09-01",
        "to": "2026-10-31",
        "format": "csv",
        "lines": 2,
        "export_id": None,
    }
    sub = rows[3][5]
    assert sub["submission_id"] == row["submission_id"] and sub["control_number"] > 0
    assert (sub["claims"], sub["problems"], rows[4][5]["submission_id"]) == (1, 0, None)
