"""The 837P a clearinghouse takes (issue 12 parts 1-5), pure: claim lifecycle, billing
profile, demographics, fee schedule, control numbers. pyx12 validates every file; the
checks pyx12 does not make are made here on the segments themselves (CLM02 = sum of SV102,
REF*F8 on every replacement and void, whole-claim replacement, no placeholder in a
production file). Fixtures: tests/fixtures/billing/*.synthetic.* (invented data)."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest

from billing.claims837 import (
    PlannedClaim,
    RecordedLine,
    envelope_problems,
    plan_claims,
    prepare_837p,
    render_837p,
    render_draft_837p,
)
from billing.demographics import Demographics, parse_demographics_csv
from billing.fees import FeeScheduleError, fee_for, parse_fee_schedule
from billing.profile import BillingProfile, missing_fields
from billing.rules import ClaimLine
from tests.unit.test_billing_export import CREATED, example_claims

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "billing"
NPI = "1234567893"
EVERYTHING = (dt.date(2000, 1, 1), dt.date(2100, 12, 31))
# the draft's placeholder values (billing.claims837.DraftParties), as whole elements
PLACEHOLDERS = {
    "RTMSTREAM",
    "CLEARINGHOUSE",
    "RTM STREAM",
    "BILLING OFFICE",
    "5555550100",
    "RTM BILLING PROVIDER",
    "1 MAIN ST",
    "ANYTOWN",
    "800000000",
    "000000000",
    "RENDERING",
    "PROVIDER",
    "MEDICARE",
}


def profile(**over: object) -> BillingProfile:
    raw = json.loads((FIXTURES / "profile.synthetic.json").read_text())
    return BillingProfile.model_validate({"org_id": "default", "billing_npi": NPI, **raw, **over})


def demographics() -> dict[str, Demographics]:
    rows, errors = parse_demographics_csv((FIXTURES / "demographics.synthetic.csv").read_text())
    assert errors == []
    return {r.patient_id: r for r in rows}


FEES = parse_fee_schedule((FIXTURES / "fee-schedule.synthetic.csv").read_text())


def pyx12_errors(text: str) -> list[str]:
    """pyx12's own verdict and the errors it logs (empty list: valid)."""
    import logging

    import pyx12.params  # type: ignore[import-untyped]
    import pyx12.x12n_document  # type: ignore[import-untyped]

    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                records.append(record.getMessage())

    handler = Grab()
    logger = logging.getLogger("pyx12")
    logger.addHandler(handler)
    try:
        ok = pyx12.x12n_document.x12n_document(
            pyx12.params.params(), io.StringIO(text), io.StringIO(), None
        )
    finally:
        logger.removeHandler(handler)
    return records + ([] if ok else ["pyx12: not valid"])


def segments(text: str) -> list[list[str]]:
    return [s.strip().split("*") for s in text.split("~") if s.strip()]


def claims_of(text: str) -> list[dict[str, object]]:
    """Independent reading of the file: per CLM, its elements, REFs and SV1s."""
    out: list[dict[str, object]] = []
    for seg in segments(text):
        if seg[0] == "CLM":
            out.append({"clm": seg, "ref": {}, "sv1": [], "ref6r": []})
        elif out and seg[0] == "REF" and not out[-1]["sv1"]:
            out[-1]["ref"][seg[1]] = seg[2]  # type: ignore[index]
        elif out and seg[0] == "SV1":
            out[-1]["sv1"].append(seg)  # type: ignore[union-attr]
        elif out and seg[0] == "REF" and seg[1] == "6R":
            out[-1]["ref6r"].append(seg[2])  # type: ignore[union-attr]
        elif seg[0] in ("HL", "SE"):
            pass
    return out


def submit(
    claims: list[PlannedClaim],
    icns: dict[str, str] | None = None,
    control: int = 41,
    usage: str = "P",
) -> tuple[str, list[str]]:
    ready, problems = prepare_837p(claims, {NPI: profile()}, demographics(), FEES, icns or {})
    return (
        render_837p(ready, {NPI: profile()}, control, usage, CREATED),  # type: ignore[arg-type]
        [p.text() for p in problems],
    )


def history_of(claims: list[PlannedClaim], submission_id: int) -> list[RecordedLine]:
    return [RecordedLine(submission_id, c.claim_id, ln) for c in claims for ln in c.record]


def ab_claims() -> list[ClaimLine]:
    return [ln for ln in example_claims() if ln.patient_id in ("p-ex-a", "p-ex-b")]


# --- originals --------------------------------------------------------------------------------


def test_original_837p_validates_and_carries_profile_demographics_and_fees() -> None:
    claims = plan_claims([], ab_claims(), *EVERYTHING)
    assert [c.frequency for c in claims] == ["1", "1"]
    text, problems = submit(claims)
    assert problems == []
    assert pyx12_errors(text) == []
    segs = segments(text)
    isa = segs[0]
    assert isa[6].strip() == "SUBM12345" and isa[8].strip() == "CLRHSE01"
    assert isa[13] == "000000041" and isa[15] == "P"
    assert [s[6] for s in segs if s[0] == "GS"] == ["41"]
    assert (
        [s[2] for s in segs if s[0] == "ST"]
        == [s[2] for s in segs if s[0] == "SE"]
        == ["000000041"]
    )
    assert [s[2] for s in segs if s[0] == "GE"] == ["41"]
    assert [s[2] for s in segs if s[0] == "IEA"] == ["000000041"]
    assert ["NM1", "IL", "1", "SYNTHETIC", "ALPHA", "", "", "", "MI", "MBIex-a"] in segs
    assert ["N3", "2 TEST LANE", "APT 3"] in segs
    assert ["DMG", "D8", "19510402", "F"] in segs
    assert ["N4", "FAKETOWN", "CO", "800001234"] in segs
    assert ["NM1", "PR", "2", "SYNTHETIC MAC JF", "", "", "", "", "PI", "04412"] in segs
    assert ["REF", "EI", "987654321"] in segs and ["PRV", "BI", "PXC", "225100000X"] in segs
    assert any(s[:3] == ["NM1", "87", "2"] for s in segs)  # pay-to differs from the provider


def test_charges_come_from_the_fee_schedule_version_in_force_and_clm02_is_their_sum() -> None:
    text, _ = submit(plan_claims([], ab_claims(), *EVERYTHING))
    # expected by hand from the synthetic file: 98980 in Nov 2026 is the 2026-03-12 correction,
    # 98985 in Jan 2027 the 2027 version
    want = {
        ("HC:98975:GP", "20261110"): "19.50",
        ("HC:98980:GP", "20261130"): "50.25",
        ("HC:98985:GP", "20261209"): "41.00",
        ("HC:98985:GP", "20270108"): "42.00",
        ("HC:98975:GP:CQ", "20261110"): "19.50",
        ("HC:98979:GP:CQ", "20261231"): "27.00",
    }
    got: dict[tuple[str, str], str] = {}
    segs = segments(text)
    for i, s in enumerate(segs):
        if s[0] == "SV1":
            got[(s[1], segs[i + 1][3])] = s[2]
    assert got == want
    for claim in claims_of(text):
        total = sum((Decimal(sv[2]) for sv in claim["sv1"]), Decimal(0))  # type: ignore[union-attr]
        assert Decimal(claim["clm"][2]) == total > 0  # type: ignore[index]


def test_fee_schedule_versions_and_refusals() -> None:
    nov = dt.date(2026, 11, 30)
    assert fee_for(FEES, "98980", "TEST-01", dt.date(2026, 3, 11)).amount == Decimal("49.00")  # type: ignore[union-attr]
    assert fee_for(FEES, "98980", "TEST-01", nov).amount == Decimal("50.25")  # type: ignore[union-attr]
    assert fee_for(FEES, "98980", "OTHER", nov) is None
    head = "version,cpt,locality,effective_from,effective_to,amount\n"
    with pytest.raises(FeeScheduleError, match="overlapping"):
        parse_fee_schedule(
            head + "v1,98977,L,2026-01-01,2026-06-30,1.00\nv1,98977,L,2026-06-01,,1.00\n"
        )
    with pytest.raises(FeeScheduleError, match="row 2: amount"):
        parse_fee_schedule(head + "v1,98977,L,2026-01-01,,abc\n")
    with pytest.raises(FeeScheduleError, match="header"):
        parse_fee_schedule("cpt,amount\n98977,1\n")


def test_clm01_is_stable_and_line_control_numbers_unique() -> None:
    a = plan_claims([], ab_claims(), *EVERYTHING)
    b = plan_claims([], list(reversed(ab_claims())), *EVERYTHING)
    assert [c.claim_id for c in a] == [c.claim_id for c in b]
    assert len({c.claim_id for c in a}) == 2
    text, _ = submit(a)
    for claim in claims_of(text):
        refs = claim["ref6r"]
        assert len(refs) == len(claim["sv1"]) == len(set(refs))  # type: ignore[arg-type]


# --- lifecycle ------------------------------------------------------------------------------


def _late_16th_day(lines: list[ClaimLine]) -> list[ClaimLine]:
    """p-ex-a's first period turns from 98985 into 98977 (a late data day)."""
    return [
        ln.model_copy(update={"cpt": "98977", "data_days": 16})
        if ln.patient_id == "p-ex-a"
        and ln.cpt == "98985"
        and ln.date_of_service == dt.date(2026, 12, 9)
        else ln
        for ln in lines
    ]


def test_replacement_carries_the_whole_corrected_claim_and_ref_f8() -> None:
    first = plan_claims([], ab_claims(), *EVERYTHING)
    history = history_of(first, 1)
    original_a = next(c for c in first if c.first.patient_id == "p-ex-a")
    again = plan_claims(history, _late_16th_day(ab_claims()), *EVERYTHING)
    assert [(c.claim_id, c.frequency) for c in again] == [(original_a.claim_id, "7")]
    repl = again[0]
    assert len(repl.lines) == len(original_a.lines) == 4  # the whole claim, not the changed line
    assert [ln.cpt for ln in repl.record] == ["98977"]  # only the changed group is re-recorded

    # without the payer's claim control number it is not sent, and says so
    ready, problems = prepare_837p(again, {NPI: profile()}, demographics(), FEES, {})
    assert ready == [] and [p.field for p in problems] == ["payer_claim_number"]
    text, problems = submit(again, {original_a.claim_id: "22026339000101"}, control=42)
    assert problems == [] and pyx12_errors(text) == []
    [claim] = claims_of(text)
    assert claim["clm"][1] == original_a.claim_id  # type: ignore[index]
    assert claim["clm"][5] == "11:B:7"  # type: ignore[index]
    assert claim["ref"] == {"F8": "22026339000101", "EA": "p-ex-a"}
    assert sorted(sv[1] for sv in claim["sv1"]) == [  # type: ignore[union-attr]
        "HC:98975:GP",
        "HC:98977:GP",
        "HC:98980:GP",
        "HC:98985:GP",
    ]
    # after recording it, nothing is left to send
    assert (
        plan_claims(history + history_of(again, 2), _late_16th_day(ab_claims()), *EVERYTHING) == []
    )


def test_withdrawn_group_voids_a_claim_that_had_only_it_and_replaces_one_with_more() -> None:
    first = plan_claims([], ab_claims(), *EVERYTHING)
    history = history_of(first, 1)
    claim_b = next(c for c in first if c.first.patient_id == "p-ex-b")
    without_b_device = [
        ln for ln in ab_claims() if not (ln.patient_id == "p-ex-b" and ln.cpt == "98985")
    ]
    [repl] = plan_claims(history, without_b_device, *EVERYTHING)
    assert (repl.claim_id, repl.frequency) == (claim_b.claim_id, "7")
    assert [ln.cpt for ln in repl.lines] == ["98975", "98979"]
    assert [(ln.cpt, ln.status) for ln in repl.record] == [("98985", "void")]

    # a claim whose only group is withdrawn: void (8), repeating the voided line, REF*F8
    lone = next(ln for ln in ab_claims() if ln.patient_id == "p-ex-a" and ln.cpt == "98980")
    [orig] = plan_claims([], [lone], *EVERYTHING)
    [void] = plan_claims(history_of([orig], 1), [], *EVERYTHING)
    assert (void.claim_id, void.frequency) == (orig.claim_id, "8")
    text, problems = submit([void], {orig.claim_id: "ICN0001"})
    assert problems == [] and pyx12_errors(text) == []
    [claim] = claims_of(text)
    assert claim["clm"][5] == "11:B:8" and claim["ref"]["F8"] == "ICN0001"  # type: ignore[index]
    assert [sv[1] for sv in claim["sv1"]] == ["HC:98980:GP"]  # type: ignore[union-attr]
    # recorded, the void leaves nothing standing and nothing to send
    done = history_of([orig], 1) + history_of([void], 2)
    assert plan_claims(done, [], *EVERYTHING) == []
    # billable again later: a new original with a new claim id
    [again] = plan_claims(done, [lone], *EVERYTHING)
    assert again.frequency == "1" and again.claim_id != orig.claim_id


def test_every_replacement_and_void_in_a_file_has_ref_f8() -> None:
    first = plan_claims([], ab_claims(), *EVERYTHING)
    changed = [
        ln
        for ln in _late_16th_day(ab_claims())
        if not (ln.patient_id == "p-ex-b" and ln.cpt == "98985")
    ]
    again = plan_claims(history_of(first, 1), changed, *EVERYTHING)
    assert sorted(c.frequency for c in again) == ["7", "7"]
    text, problems = submit(again, {c.claim_id: f"ICN{i}" for i, c in enumerate(again)})
    assert problems == [] and pyx12_errors(text) == []
    for claim in claims_of(text):
        freq = claim["clm"][5].split(":")[2]  # type: ignore[index]
        assert (freq in ("7", "8")) == ("F8" in claim["ref"])  # type: ignore[operator]


# --- refusals -------------------------------------------------------------------------------


def test_a_patient_without_demographics_is_an_error_and_not_exported() -> None:
    claims = plan_claims([], ab_claims(), *EVERYTHING)
    demo = {k: v for k, v in demographics().items() if k == "p-ex-a"}
    ready, problems = prepare_837p(claims, {NPI: profile()}, demo, FEES, {})
    assert [r.claim.first.patient_id for r in ready] == ["p-ex-a"]
    assert [(p.patient_id, p.field) for p in problems] == [("p-ex-b", "demographics")]
    text = render_837p(ready, {NPI: profile()}, 7, "P", CREATED)
    assert "P-EX-B" not in text and pyx12_errors(text) == []


def test_a_production_file_has_no_placeholder_and_an_incomplete_profile_is_refused() -> None:
    text, _ = submit(plan_claims([], ab_claims(), *EVERYTHING))
    elements = {e.strip() for seg in segments(text) for e in seg}
    assert elements & PLACEHOLDERS == set()
    assert all(len(s[9]) == 5 for s in segments(text) if s[:2] == ["NM1", "PR"])
    # the negative control: the draft renderer's file is caught by the same check
    draft = {e.strip() for seg in segments(render_draft_837p(ab_claims(), CREATED)) for e in seg}
    assert draft & PLACEHOLDERS
    claims = plan_claims([], ab_claims(), *EVERYTHING)
    thin = profile(submitter_id="", provider_tax_id="", payers={})
    assert envelope_problems(claims, {NPI: thin}) == [
        f"billing NPI {NPI}: submitter_id",
        f"billing NPI {NPI}: provider_tax_id",
        f"billing NPI {NPI}: payers.medicare.payer_id",
        f"billing NPI {NPI}: payers.medicare.name",
    ]
    assert envelope_problems(claims, {}) == [
        f"billing NPI {NPI}: profile (no billing profile for billing NPI {NPI})"
    ]
    with pytest.raises(ValueError, match="submitter_id"):
        render_837p(
            prepare_837p(claims, {NPI: profile()}, demographics(), FEES, {})[0],
            {NPI: thin},
            1,
            "P",
            CREATED,
        )


def test_a_test_file_says_t_and_a_rendering_provider_needs_a_name() -> None:
    line = next(ln for ln in ab_claims() if ln.cpt == "98980").model_copy(
        update={"rendering_npi": "1245319599"}
    )
    claims = plan_claims([], [line], *EVERYTHING)
    text, problems = submit(claims, usage="T")
    assert problems == [] and pyx12_errors(text) == []
    assert segments(text)[0][15] == "T"
    assert ["NM1", "82", "1", "TESTPROVIDER", "ROBIN", "", "", "", "XX", "1245319599"] in segments(
        text
    )
    assert missing_fields(profile(rendering_providers={}), ["medicare"], ["1245319599"]) == [
        "rendering_providers.1245319599.last_name"
    ]


def test_profile_and_demographics_refuse_bad_values_by_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="billing_npi"):
        profile(billing_npi="1234567890")
    with pytest.raises(ValidationError, match="payer_id"):
        profile(payers={"medicare": {"payer_id": "MEDICARE", "name": "X"}})
    rows, errors = parse_demographics_csv(
        "patient_id,last_name,first_name,birth_date,sex,address1,city,state,zip\n"
        "p1,DOE*X,A,1950-01-01,F,1 A ST,C,CO,80000\n"
        "p2,DOE,B,1950-02-30,X,1 A ST,C,CO,8000\n"
        "p3,DOE,C,1950-01-01,U,1 A ST,C,CO,80000\n"
    )
    assert [r.patient_id for r in rows] == ["p3"]
    assert errors[0].startswith("line 2 (patient_id p1): last_name")
    assert {e.split(": ")[1] for e in errors[1:]} == {"birth_date", "sex", "zip"}


def test_the_simulators_demographics_are_clearly_synthetic_and_load() -> None:
    from rtm.simulate import demographics_csv, synthetic_demographics

    ids = [f"p-{i}" for i in range(40)]
    rows, errors = parse_demographics_csv(demographics_csv(synthetic_demographics(ids, seed=5)))
    assert errors == [] and sorted(r.patient_id for r in rows) == sorted(ids)
    assert {r.last_name for r in rows} == {"SYNTHETIC"} and {r.city for r in rows} == {"TESTVILLE"}
    assert all(r.zip.startswith("99") for r in rows)
    assert synthetic_demographics(ids, seed=5) == synthetic_demographics(
        list(reversed(ids)), seed=5
    )
