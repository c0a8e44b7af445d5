"""Code checks of the contract (pure): NPI check digits, ICD-10-CM codes, CMS
place-of-service codes. Used by ``schemas.events`` (per-event errors naming the field) and
by ``billing`` (the billing profile's NPIs, the claim-readiness gate on diagnosis codes)."""

from __future__ import annotations

import functools
import importlib.metadata
import re

# ICD-10-CM: a letter, a digit or letter, a digit or letter (the category), then optionally
# a dot and one to four characters (7 characters at most without the dot). The dot is
# required when a subcategory follows, as the contract has always written codes. (The
# second character was a digit in every code before the April 2026 release, which added
# the category QA0.) The contract also refuses a code of this shape that does not exist in
# the tabular (``icd10_cm_problem``); whether an existing code is billable (a leaf) is a
# claim-readiness gate, not a refusal.
ICD10_CM_PATTERN = r"^[A-Z][0-9A-Z][0-9A-Z](\.[0-9A-Z]{1,4})?$"

# --- ICD-10-CM tabular ------------------------------------------------------------------
# The code list of the pinned ``simple-icd-10-cm`` wheel (pyproject.toml): every chapter,
# block, category, subcategory and code with its 7th character of one tabular release. It
# is read as package data, like tzdata's zone list, without importing the library: its
# module builds the whole XML tree at import (about 1.5 s and 140 MB per process), while the
# contract needs only "does it exist" and "is it a leaf". A code is a leaf when no longer
# code extends it; tests/unit/test_codes.py checks both answers against the library's own
# ``is_valid_item`` and ``is_leaf`` for every code of the release.
ICD10_CM_DISTRIBUTION = "simple-icd-10-cm"
_ICD10_CM_LIST_PREFIX = "simple_icd_10_cm/data/code-list-"


@functools.cache
def _icd10_cm_table() -> tuple[str, frozenset[str], frozenset[str]]:
    """(release name, every code without its dot, the codes that other codes extend)."""
    dist = importlib.metadata.distribution(ICD10_CM_DISTRIBUTION)
    lists = [f for f in dist.files or () if str(f).startswith(_ICD10_CM_LIST_PREFIX)]
    if len(lists) != 1:
        raise RuntimeError(
            f"{ICD10_CM_DISTRIBUTION} {dist.version}: expected one code list, found {len(lists)}"
        )
    release = str(lists[0]).removeprefix(_ICD10_CM_LIST_PREFIX).removesuffix(".txt")
    text = lists[0].read_text(encoding="utf-8")
    # Chapters ("1".."22") and blocks ("A00-A09") are no codes a claim can carry.
    codes = frozenset(
        c for c in (line.strip() for line in text.splitlines()) if len(c) >= 3 and "-" not in c
    )
    extended = frozenset(c[:n] for c in codes for n in range(3, len(c)))
    return release.replace("-", " "), codes, extended


def icd10_cm_release() -> str:
    """The tabular release the checks use, e.g. ``April 2026``."""
    return _icd10_cm_table()[0]


def _undotted(code: str) -> str:
    return code.replace(".", "", 1) if len(code) > 3 and code[3] == "." else code


def icd10_cm_exists(code: str) -> bool:
    """True for a code of the tabular, billable or not (``M54.5`` and ``M54.50``)."""
    return bool(re.fullmatch(ICD10_CM_PATTERN, code)) and _undotted(code) in _icd10_cm_table()[1]


def icd10_cm_billable(code: str) -> bool:
    """True for a leaf of the tabular: ``M54.50`` and ``S83.511A``, not the header ``M54.5``
    nor ``S83.511`` (its 7th character missing), nor a code that does not exist."""
    _, codes, extended = _icd10_cm_table()
    key = _undotted(code)
    return bool(re.fullmatch(ICD10_CM_PATTERN, code)) and key in codes and key not in extended


def icd10_cm_problem(code: str) -> str | None:
    """Why ``code`` (of the contract's format) does not exist (None when it does)."""
    if icd10_cm_exists(code):
        return None
    return f"{code!r} is not an ICD-10-CM code (tabular {icd10_cm_release()})"


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
