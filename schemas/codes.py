"""Code checks of the contract (pure): NPI check digits, ICD-10-CM code format, CMS
place-of-service codes. Used by ``schemas.events`` (per-event errors naming the field) and
by ``billing`` (the billing profile's NPIs)."""

from __future__ import annotations

import re

# ICD-10-CM: a letter, a digit, a digit or letter (the category), then optionally a dot and
# one to four characters (7 characters at most without the dot). The dot is required when a
# subcategory follows, as the contract has always written codes. Format only: whether a
# code is billable needs the CMS code table, which is not a PyPI package we pin.
ICD10_CM_PATTERN = r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$"

# CMS Place of Service code set (https://www.cms.gov/medicare/coding-billing/place-of-service-codes/code-sets),
# the assigned codes as of 2025; 28-30, 35-40, 43-48, 59, 63-64, 67-70, 73-80, 82-98 are unassigned.
PLACE_OF_SERVICE_CODES: frozenset[str] = frozenset(
    [f"{n:02d}" for n in range(1, 28)]
    + [
        "31",
        "32",
        "33",
        "34",
        "41",
        "42",
        "49",
        "50",
        "51",
        "52",
        "53",
        "54",
        "55",
        "56",
        "57",
        "58",
        "60",
        "61",
        "62",
        "65",
        "66",
        "71",
        "72",
        "81",
        "99",
    ]
)

_TEN_DIGITS = re.compile(r"[0-9]{10}").fullmatch


def npi_check_digit(base9: str) -> str:
    """Luhn check digit of a 9-digit NPI base, computed with the 80840 card-issuer prefix
    (CMS, "Requirements for the NPI check digit")."""
    total = 0
    for i, ch in enumerate(reversed("80840" + base9)):
        n = int(ch)
        if i % 2 == 0:  # the check digit will sit to the right, so the rightmost doubles
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return str((10 - total % 10) % 10)


def is_valid_npi(npi: str) -> bool:
    return bool(_TEN_DIGITS(npi)) and npi_check_digit(npi[:9]) == npi[9]


def npi_problem(npi: str) -> str | None:
    """Why ``npi`` is not an NPI (None when it is one)."""
    if not _TEN_DIGITS(npi):
        return "an NPI is 10 digits"
    if npi_check_digit(npi[:9]) != npi[9]:
        return (
            f"NPI check digit wrong: {npi[:9]} gives check digit {npi_check_digit(npi[:9])}"
            f" (Luhn with the 80840 prefix), not {npi[9]}"
        )
    return None
