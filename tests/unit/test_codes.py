"""Code checks at ingest (issue 12 part 6): NPI check digits, ICD-10-CM format, place of
service; each a per-event error naming the field. The NPI oracle here is written
independently of schemas.codes (the CMS worked example and a brute-force Luhn)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.codes import PLACE_OF_SERVICE_CODES, is_valid_npi
from schemas.events import validate_event
from tests.unit.test_schemas import episode


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
