"""Exports (CSV, X12 837P, FHIR R4 Claim) and the offline evaluator, on the shared example."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest

from billing.claims837 import render_draft_837p
from billing.config import BillingConfig
from billing.evaluate import evaluate, run_evaluate
from billing.export import (
    CSV_COLUMNS,
    fhir_bundle,
    render_csv,
    write_sidecar,
)
from billing.rules import ClaimLine

EXAMPLES = (
    Path(__file__).resolve().parents[1] / "fixtures" / "examples"
)  # copied from the design examples
EVENTS = EXAMPLES / "billing-example.jsonl"
EXPECTED = EXAMPLES / "billing-example.expected.csv"
AS_OF = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
CREATED = dt.datetime(2027, 3, 2, 10, 30, tzinfo=dt.UTC)


def example_claims() -> list[ClaimLine]:
    with EVENTS.open("rb") as fh:
        claims, errors = evaluate(fh, AS_OF)
    assert errors == []
    return claims


# --- offline evaluate ------------------------------------------------------------------------


def test_evaluate_reproduces_the_shared_example_byte_for_byte() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_evaluate(EVENTS, AS_OF, False, out, err=err) == 0
    assert out.getvalue().encode() == EXPECTED.read_bytes()
    assert err.getvalue() == ""


def test_evaluate_with_conventions_prepends_comment_lines() -> None:
    out = io.StringIO()
    assert run_evaluate(EVENTS, AS_OF, False, out, err=io.StringIO(), conventions=True) == 0
    text = out.getvalue()
    comments = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert any("grace_hours=72" in ln for ln in comments)
    assert any("assistant_share_threshold_pct=10" in ln for ln in comments)
    assert text.split("\n", len(comments))[-1].encode() == EXPECTED.read_bytes()


def test_evaluate_skips_and_reports_bad_lines(tmp_path: Path) -> None:
    good = json.loads(EVENTS.read_text().splitlines()[0])
    lines = [
        "not json",
        json.dumps(
            {
                "event_id": "x1",
                "schema_version": 1,
                "type": "pain.reported",
                "patient_id": "p",
                "occurred_at": "2026-11-10T08:00:00",
                "score": 3,
            }
        ),
        json.dumps(
            {
                "event_id": "x2",
                "schema_version": 2,
                "type": "pain.reported",
                "patient_id": "p",
                "occurred_at": "2026-11-10T08:00:00Z",
                "score": 3,
            }
        ),
        "[1, 2]",
        "",
    ]
    lines.append(json.dumps(good))
    path = tmp_path / "events.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    out, err = io.StringIO(), io.StringIO()
    assert run_evaluate(path, AS_OF, True, out, err=err) == 0
    assert out.getvalue().splitlines()[0] == ",".join(CSV_COLUMNS)
    report = err.getvalue()
    assert "line 1:" in report and "not JSON" in report
    assert "line 2 (event_id x1): occurred_at" in report and "UTC offset" in report
    assert "line 3 (event_id x2): schema_version" in report
    assert "line 4:" in report and "line 7:" in report


def test_evaluate_reports_a_refused_second_episode() -> None:
    base = {
        "schema_version": 1,
        "type": "episode.started",
        "patient_id": "p",
        "clinician_id": "c",
        "clinician_role": "PT",
        "timezone": "UTC",
        "program": {"sessions_per_week": 3},
        "billing": {
            "rendering_npi": "1234567893",
            "billing_npi": "1234567893",
            "payer": "medicare",
            "member_id": "M1",
            "diagnosis_codes": ["M54.50"],
            "place_of_service": "11",
        },
    }
    rows = [
        dict(base, event_id="s1", episode_id="a", occurred_at="2026-11-01T09:00:00Z"),
        dict(base, event_id="s2", episode_id="b", occurred_at="2026-11-02T09:00:00Z"),
    ]
    claims, errors = evaluate([json.dumps(r) for r in rows], AS_OF)
    assert claims == []
    assert [(e.line_no, e.event_id) for e in errors] == [(2, "s2")]


def test_run_evaluate_exit_codes(tmp_path: Path) -> None:
    err = io.StringIO()
    assert run_evaluate(tmp_path / "missing.jsonl", AS_OF, False, io.StringIO(), err=err) == 2
    assert "cannot read" in err.getvalue()
    (tmp_path / "e.jsonl").write_text("")
    assert (
        run_evaluate(
            tmp_path / "e.jsonl", dt.datetime(2027, 3, 1), False, io.StringIO(), err=io.StringIO()
        )
        == 2
    )


def test_evaluate_as_of_before_the_grace_ends_leaves_periods_out() -> None:
    # period 2 of p-ex-a ends 2027-01-08 (Denver): closed from 2027-01-12 07:00Z
    with EVENTS.open() as fh:
        lines = fh.readlines()
    before, _ = evaluate(lines, dt.datetime(2027, 1, 12, 6, 59, tzinfo=dt.UTC))
    after, _ = evaluate(lines, dt.datetime(2027, 1, 12, 7, 0, tzinfo=dt.UTC))
    assert len(after) == len(before) + 1
    preview, _ = evaluate(lines, dt.datetime(2027, 1, 12, 6, 59, tzinfo=dt.UTC), True)
    assert [ln.status for ln in preview if ln.status == "preview"] == ["preview"]


# --- CSV -----------------------------------------------------------------------------------


def test_csv_with_config_has_header_block_then_exact_csv() -> None:
    text = render_csv(example_claims(), BillingConfig(grace_hours=48))
    assert text.startswith("# rtm billing conventions")
    assert "# grace_hours=48" in text
    body = "".join(ln + "\n" for ln in text.splitlines() if not ln.startswith("#"))
    assert body.encode() == EXPECTED.read_bytes()


def test_sidecar(tmp_path: Path) -> None:
    path = write_sidecar(tmp_path / "claims.x12", BillingConfig())
    assert path.name == "claims.x12.conventions.txt"
    assert "grace_hours=72" in path.read_text()


# --- X12 837P ------------------------------------------------------------------------------


def _pyx12_validate(text: str) -> bool:
    import pyx12.params  # type: ignore[import-untyped]
    import pyx12.x12n_document  # type: ignore[import-untyped]

    return bool(
        pyx12.x12n_document.x12n_document(
            pyx12.params.params(), io.StringIO(text), io.StringIO(), None
        )
    )


def _service_lines(text: str) -> list[tuple[str, str, str, str]]:
    import pyx12.error_handler  # type: ignore[import-untyped]
    import pyx12.params
    import pyx12.x12context  # type: ignore[import-untyped]

    reader = pyx12.x12context.X12ContextReader(
        pyx12.params.params(), pyx12.error_handler.err_handler(), io.StringIO(text)
    )
    out = []
    for node in reader.iter_segments("2300"):
        patient = node.get_value("REF[EA]02") or ""
        for line in node.select("2400"):
            out.append(
                (
                    patient,
                    line.get_value("SV101") or "",
                    line.get_value("SV104") or "",
                    line.get_value("DTP[472]03") or "",
                )
            )
    return out


def test_x12_837p_is_valid_for_a_standard_reader() -> None:
    text = render_draft_837p(example_claims(), CREATED)
    assert _pyx12_validate(text)
    assert _service_lines(text) == [
        ("p-ex-a", "HC:98975:GP", "1", "20261110"),
        ("p-ex-a", "HC:98980:GP", "1", "20261130"),
        ("p-ex-a", "HC:98985:GP", "1", "20261209"),
        ("p-ex-a", "HC:98985:GP", "1", "20270108"),
        ("p-ex-b", "HC:98975:GP:CQ", "1", "20261110"),
        ("p-ex-b", "HC:98985:GP", "1", "20261209"),
        ("p-ex-b", "HC:98979:GP:CQ", "1", "20261231"),
    ]
    assert "SV1*HC:98975:GP:CQ*0.00*UN*1***1:2~" in text
    assert "HI*ABK:M5450*ABF:M25561~" in text


def test_x12_validator_catches_a_broken_interchange() -> None:
    # negative control: the validator really checks (a missing DTP*472 is an error)
    text = render_draft_837p(example_claims(), CREATED)
    broken = text.replace("DTP*472*D8*20261110~\n", "", 1)
    assert broken != text and not _pyx12_validate(broken)


def test_x12_amended_claim_units_four_modifiers_and_unsafe_ids() -> None:
    line = ClaimLine(
        patient_id="urn:p:7",
        episode_id="ep~1",
        cpt="98981",
        modifiers=("GP", "CQ", "KX", "59"),
        units=2,
        date_of_service=dt.date(2026, 11, 30),
        period_start=dt.date(2026, 11, 1),
        period_end=dt.date(2026, 11, 30),
        minutes=60,
        rendering_npi="1234567893",
        billing_npi="1245319599",
        payer="Acme*Health",
        member_id="M1",
        diagnosis_codes=("M54.50", "M25.561", "M79.1", "R26.2", "M62.81"),
        place_of_service="02",
        status="amended",
    )
    text = render_draft_837p([line], CREATED)
    assert _pyx12_validate(text)
    assert "SV1*HC:98981:GP:CQ:KX:59*0.00*UN*2***1:2:3:4~" in text
    assert "*02:B:7*" in text  # CLM05: place of service, claim frequency 7 = replacement
    assert "NM1*82*1*" in text  # rendering differs from billing provider
    assert "NM1*PR*2*ACME-HEALTH*****PI*ACME-HEALTH~" in text  # '*' cannot reach the output
    assert "REF*EA*urn-p-7~" in text  # ':' is the component separator


def test_x12_preview_makes_a_test_interchange() -> None:
    line = ClaimLine(
        patient_id="p",
        episode_id="e",
        cpt="98985",
        modifiers=("GP",),
        units=1,
        date_of_service=dt.date(2026, 12, 9),
        period_start=dt.date(2026, 11, 10),
        period_end=dt.date(2026, 12, 9),
        data_days=3,
        rendering_npi="1234567893",
        billing_npi="1234567893",
        payer="medicare",
        member_id="M1",
        diagnosis_codes=("M54.50",),
        place_of_service="11",
        status="preview",
    )
    text = render_draft_837p([line], CREATED)
    assert text.splitlines()[0].split("*")[15] == "T"
    assert _pyx12_validate(text)


# --- FHIR R4 Claim -------------------------------------------------------------------------


def test_fhir_bundle_validates_one_claim_per_patient_and_date() -> None:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.claim import Claim

    bundle = Bundle.model_validate(fhir_bundle(example_claims(), CREATED))
    entries = bundle.entry or []
    assert len(entries) == 7 and all(isinstance(e.resource, Claim) for e in entries)
    # content checks on the validated model's own JSON
    claims = [e["resource"] for e in json.loads(bundle.model_dump_json())["entry"]]
    keys = [(c["patient"]["identifier"]["value"], c["item"][0]["servicedDate"]) for c in claims]
    assert len(set(keys)) == 7
    setup_b = dict(zip(keys, claims, strict=True))[("p-ex-b", "2026-11-10")]
    item = setup_b["item"][0]
    assert item["productOrService"]["coding"][0]["code"] == "98975"
    assert [m["coding"][0]["code"] for m in item["modifier"]] == ["GP", "CQ"]
    assert item["quantity"]["value"] == 1
    assert item["diagnosisSequence"] == [1, 2]
    assert [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in setup_b["diagnosis"]] == [
        "M54.50",
        "M25.561",
    ]
    assert setup_b["provider"]["identifier"]["value"] == "1234567893"
    assert setup_b["type"]["coding"][0]["code"] == "professional"


def test_fhir_rejects_what_r4_rejects() -> None:
    # negative control: the models really validate (a Claim needs a patient)
    from fhir.resources.R4B.claim import Claim
    from pydantic import ValidationError

    line = ClaimLine(
        patient_id="p",
        episode_id="e",
        cpt="98985",
        modifiers=(),
        units=1,
        date_of_service=dt.date(2026, 12, 9),
        period_start=dt.date(2026, 11, 10),
        period_end=dt.date(2026, 12, 9),
        data_days=3,
        rendering_npi="1234567893",
        billing_npi="1234567893",
        payer="medicare",
        member_id="M1",
        diagnosis_codes=("M54.50",),
        place_of_service="11",
    )
    raw = fhir_bundle([line], CREATED)["entry"][0]["resource"]
    Claim.model_validate(raw)
    del raw["patient"]
    with pytest.raises(ValidationError):
        Claim.model_validate(raw)
