"""Code checks at ingest (issue 12 part 6): NPI check digits, ICD-10-CM format, place of
service; each a per-event error naming the field. The NPI oracle here is written
independently of schemas.codes (the CMS worked example and a brute-force Luhn).

Issue 20: ICD-10-CM codes that do not exist are refused too; whether one is billable (a
leaf of the tabular) is the claim-readiness gate's. The contract reads the code list of the
pinned simple-icd-10-cm wheel; the oracle here is the library's own tree (its module, which
parses the tabular XML at import)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from schemas.codes import (
    PLACE_OF_SERVICE_CODES,
    _icd10_cm_table,
    icd10_cm_billable,
    icd10_cm_exists,
    icd10_cm_release,
    is_valid_npi,
)
from schemas.events import validate_event
from tests.unit.test_schemas import episode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # its importlib.resources.read_text
    import simple_icd_10_cm


def _luhn_ok(digits: str) -> bool:
    # textbook Luhn over the full number: double every second digit from the right
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d // 10 + d % 10
    return total % 10 == 0


def test_cms_worked_example_and_the_luhn_oracle_agree() -> None:
    # CMS: "123456789" with the 80840 prefix has check digit 3
    assert is_valid_npi("1234567893")
    assert not is_valid_npi("1234567890")
    for base in ("123456789", "124531959", "100000000", "299999999", "187654321"):
        for last in "0123456789":
            npi = base + last
            assert is_valid_npi(npi) == _luhn_ok("80840" + npi), npi
    assert not is_valid_npi("123456789") and not is_valid_npi("12345678a3")


def _billing(**over: Any) -> dict[str, Any]:
    b = {
        "rendering_npi": "1234567893",
        "billing_npi": "1245319599",
        "payer": "medicare",
        "member_id": "1EG4TE5MK73",
        "diagnosis_codes": ["M54.50"],
        "place_of_service": "11",
    }
    return {**b, **over}


def _errors(**billing: Any) -> dict[str, str]:
    result = validate_event(episode(billing=_billing(**billing)))
    assert isinstance(result, list), result
    return {e.field: e.message for e in result}


def test_valid_codes_are_accepted() -> None:
    assert not isinstance(validate_event(episode(billing=_billing())), list)
    for pos in ("02", "10", "11", "12", "99"):
        assert not isinstance(validate_event(episode(billing=_billing(place_of_service=pos))), list)


@pytest.mark.parametrize("field", ["rendering_npi", "billing_npi"])
def test_an_npi_with_a_wrong_check_digit_is_refused_naming_the_field(field: str) -> None:
    errs = _errors(**{field: "1234567890"})
    assert list(errs) == [f"billing.{field}"]
    assert "check digit" in errs[f"billing.{field}"]


@pytest.mark.parametrize(
    "code", ["M5450.", "m54.50", "M54.50000", "54.50", "MM4.5", "M5", "M54-50"]
)
def test_icd10_cm_format(code: str) -> None:
    assert list(_errors(diagnosis_codes=["M25.561", code])) == ["billing.diagnosis_codes.1"]


@pytest.mark.parametrize("pos", ["00", "28", "30", "40", "98", "1", "011"])
def test_place_of_service_must_be_a_cms_code(pos: str) -> None:
    assert list(_errors(place_of_service=pos)) == ["billing.place_of_service"]
    assert pos not in PLACE_OF_SERVICE_CODES


# --- ICD-10-CM: exists (contract) and billable (gate) ------------------------------------


def test_a_code_that_does_not_exist_is_refused_naming_the_field() -> None:
    errs = _errors(diagnosis_codes=["M25.561", "M54.9X9"])
    assert list(errs) == ["billing.diagnosis_codes.1"]
    assert "not an ICD-10-CM code" in errs["billing.diagnosis_codes.1"]
    assert "April 2026" in errs["billing.diagnosis_codes.1"]


@pytest.mark.parametrize("code", ["M54.5", "M54", "S83.511", "M54.50", "S83.511A", "U07.1"])
def test_a_code_that_exists_is_accepted_billable_or_not(code: str) -> None:
    assert not isinstance(validate_event(episode(billing=_billing(diagnosis_codes=[code]))), list)


@pytest.mark.parametrize(
    "code, exists, billable",
    [
        ("M54.5", True, False),  # header: M54.50, M54.51, M54.59 below it
        ("M54.50", True, True),
        ("S83.511", True, False),  # its 7th character (A, D, S) is missing
        ("S83.511A", True, True),
        ("S83.511X", False, False),
        ("T14.90XA", True, True),  # placeholder X then the 7th character
        ("M54", True, False),  # a category with subcategories
        ("M54.9X9", False, False),
        ("M545", False, False),  # the contract writes the dot
        ("A00-A09", False, False),  # a block, no code
        ("QA0.0101", True, True),  # April 2026: a letter in second place
    ],
)
def test_exists_and_billable(code: str, exists: bool, billable: bool) -> None:
    assert icd10_cm_exists(code) is exists
    assert icd10_cm_billable(code) is billable


def test_the_code_list_agrees_with_the_library_on_every_code() -> None:
    release, codes, extended = _icd10_cm_table()
    assert icd10_cm_release() == release == "April 2026"
    library = set(simple_icd_10_cm.get_all_codes(with_dots=False))
    # the library's codes less chapters ("1".."22") and blocks ("A00-A09") are the list's
    assert codes == {c for c in library if len(c) >= 3 and "-" not in c}
    assert len(codes) > 98_000
    for code in codes:
        assert simple_icd_10_cm.is_valid_item(code)
        assert simple_icd_10_cm.is_leaf(code) is (code not in extended), code
    # and as the contract spells them (with the dot)
    dotted = [c for c in simple_icd_10_cm.get_all_codes(with_dots=True) if len(c) >= 3]
    for code in dotted:
        if "-" not in code:
            assert icd10_cm_exists(code), code
            assert icd10_cm_billable(code) is simple_icd_10_cm.is_leaf(code), code
