"""FHIR R4 Claims validated by HAPI FHIR's R4 (4.0.1) validator, offline (issue 12 part 7):
0 errors on the claims of the example and of a simulated cohort (new, amended, preview,
void), codes from the bound value sets only, Claim.related for amendments, no unknown
extensions. One JVM run for the module (~20-30 s); the first run resolves the classpath."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from billing.export import BILLING_GROUP_SYSTEM, billing_group_id, fhir_bundle
from billing.rules import ClaimLine, compute_claims
from billing.state import fold_events
from rtm.simulate import simulate
from schemas.events import validate_event
from tests.fhir import hapi
from tests.unit.test_billing_export import CREATED, example_claims

pytestmark = pytest.mark.skipif(hapi.missing_tools() is not None, reason=hapi.missing_tools() or "")


def _cohort_lines() -> list[ClaimLine]:
    events = [
        e for e in (validate_event(o) for o in simulate(12, 75, seed=4)) if not isinstance(e, list)
    ]
    return compute_claims(
        fold_events(events).values(),
        dt.datetime(2026, 12, 15, tzinfo=dt.UTC),
        include_open=True,
    )


def _mixed() -> list[ClaimLine]:
    lines = example_claims()
    return [
        lines[0].model_copy(update={"status": "amended"}),
        lines[1].model_copy(update={"status": "void"}),
        lines[2].model_copy(update={"status": "preview"}),
        *lines[3:],
    ]


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    example = fhir_bundle(example_claims(), CREATED)
    mixed = fhir_bundle(_mixed(), CREATED)
    cohort = fhir_bundle(_cohort_lines(), CREATED)
    # negative controls: what the old export did, and a broken Claim
    amended_status = copy.deepcopy(example)
    amended_status["entry"][0]["resource"]["status"] = "amended"
    no_patient = copy.deepcopy(example)
    del no_patient["entry"][0]["resource"]["patient"]
    resources = {
        "example": example,
        "mixed": mixed,
        "cohort": cohort,
        "amended_status": amended_status,
        "no_patient": no_patient,
    }
    return {"bundles": resources, "messages": hapi.validate(resources)}


@pytest.mark.parametrize("name", ["example", "mixed", "cohort"])
def test_claim_bundles_have_no_errors_and_no_unknown_extensions(
    results: dict[str, Any], name: str
) -> None:
    messages = results["messages"][name]
    assert hapi.errors(messages) == []
    assert not [m for m in messages if "Unknown extension" in m.text]
    assert "extension" not in str(results["bundles"][name])


def test_the_validator_refuses_a_status_outside_the_value_set_and_a_claim_without_patient(
    results: dict[str, Any],
) -> None:
    bad = hapi.errors(results["messages"]["amended_status"])
    assert any("amended" in m.text for m in bad), bad
    assert any("patient" in m.text for m in hapi.errors(results["messages"]["no_patient"]))


def test_statuses_and_related_claims(results: dict[str, Any]) -> None:
    claims = [e["resource"] for e in results["bundles"]["mixed"]["entry"]]
    lines = _mixed()
    by_status = {c["status"] for c in claims}
    assert by_status == {"active", "cancelled", "draft"}
    amended = lines[0]
    [repl] = [c for c in claims if "related" in c]
    group = billing_group_id(amended)
    assert repl["related"] == [
        {
            "claim": {"identifier": {"system": BILLING_GROUP_SYSTEM, "value": group}},
            "relationship": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/"
                        "ex-relatedclaimrelationship",
                        "code": "prior",
                    }
                ]
            },
        }
    ]
    # the earlier Claim of that group (in the first export) carries the same identifier
    first = [e["resource"] for e in results["bundles"]["example"]["entry"]]
    assert any({"system": BILLING_GROUP_SYSTEM, "value": group} in c["identifier"] for c in first)
