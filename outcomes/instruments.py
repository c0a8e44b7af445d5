"""The instrument registry as data, and scoring (docs/pathways-and-outcomes.md, Instruments).

Each entry holds its items, the answer range, the validity rule, the scoring, the direction
of improvement, the MCID, the licence status and the LOINC code where one is registered
(else a local code). Adding an instrument is an entry here plus, if none fits, a scoring
function, with golden vectors in tests/unit/test_instruments.py.

Arithmetic is exact (``Fraction``): thresholds compare exact values (PSFS 10/3 -> 16/3 is a
change of exactly 2). Output is rounded half away from zero to one decimal (``round_1``).
A missing item is absent or ``null``. The reason of an invalid form is the first check that
fails, in this order: ``unknown_instrument``, ``unknown_item``, ``out_of_range``,
``too_many_missing``; an invalid form has no score and is ignored downstream.

Licence-gated instruments (ODI, NDI, QuickDASH): scoring ships and always works (an EHR may
send results); item text is supplied by a licensee, and only a licence makes one a pathway's
primary instrument.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

Direction = Literal["higher", "lower"]  # which way is better
Licence = Literal["free", "required"]
Reason = Literal["unknown_instrument", "unknown_item", "out_of_range", "too_many_missing"]
Answers = Mapping[str, int | None]
Scoring = Callable[[list[int]], Fraction]  # the answered items' values, in item order


def _value(values: list[int]) -> Fraction:
    return Fraction(values[0])


def _mean(values: list[int]) -> Fraction:
    return Fraction(sum(values), len(values))


def _sum(values: list[int]) -> Fraction:
    return Fraction(sum(values))


def _odi(values: list[int]) -> Fraction:
    """sum / (5 x answered) x 100 (a percentage, 0-100)."""
    return Fraction(sum(values) * 100, 5 * len(values))


def _ndi(values: list[int]) -> Fraction:
    """sum x 10 / answered: Vernon's raw score out of 50, prorated over the answered items."""
    return Fraction(sum(values) * 10, len(values))


def _quickdash(values: list[int]) -> Fraction:
    """(mean - 1) x 25 (0-100)."""
    return (Fraction(sum(values), len(values)) - 1) * 25


@dataclass(frozen=True)
class Instrument:
    id: str
    name: str
    items: tuple[str, ...]
    low: int  # every item's range
    high: int
    min_answered: int  # valid when at least this many items are answered
    scoring: Scoring
    better: Direction
    mcid: Fraction
    licence: Licence
    code_system: str  # "http://loinc.org", else the project's local code system
    code: str
    unit: str  # the score's unit ("{score}", "%")

    def item_set(self) -> frozenset[str]:
        return frozenset(self.items)


LOCAL_CODES = "urn:rtm-stream:instrument-score"


def _items(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


INSTRUMENTS: dict[str, Instrument] = {
    i.id: i
    for i in (
        Instrument(
            "nprs",
            "Numeric Pain Rating Scale",
            ("nprs",),
            0,
            10,
            1,
            _value,
            "lower",
            Fraction(2),
            "free",
            "http://loinc.org",
            "72514-3",
            "{score}",
        ),
        Instrument(
            "psfs",
            "Patient-Specific Functional Scale",
            _items("a", 5),
            0,
            10,
            3,
            _mean,
            "higher",
            Fraction(2),
            "free",
            LOCAL_CODES,
            "psfs",
            "{score}",
        ),
        Instrument(
            "lefs",
            "Lower Extremity Functional Scale",
            _items("q", 20),
            0,
            4,
            20,  # convention: every item (no published missing-item rule found)
            _sum,
            "higher",
            Fraction(9),
            "free",
            LOCAL_CODES,
            "lefs",
            "{score}",
        ),
        Instrument(
            "odi",
            "Oswestry Disability Index",
            _items("s", 10),
            0,
            5,
            9,  # at most one missing
            _odi,
            "lower",
            Fraction(10),
            "required",
            LOCAL_CODES,
            "odi",
            "%",
        ),
        Instrument(
            "ndi",
            "Neck Disability Index",
            _items("q", 10),
            0,
            5,
            9,  # at most one missing (Vernon's "/45")
            _ndi,
            "lower",
            Fraction(5),
            "required",
            LOCAL_CODES,
            "ndi",
            "{score}",
        ),
        Instrument(
            "quickdash",
            "QuickDASH",
            _items("q", 11),
            1,
            5,
            10,
            _quickdash,
            "lower",
            Fraction(159, 10),
            "required",
            LOCAL_CODES,
            "quickdash",
            "{score}",
        ),
    )
}


@dataclass(frozen=True)
class Scored:
    """One form scored: the exact score, or why the form is invalid."""

    instrument: str
    score: Fraction | None
    reason: Reason | None

    @property
    def valid(self) -> bool:
        return self.reason is None


def score_form(instrument_id: str, answers: Answers) -> Scored:
    """Score one form (pure). The first failing check names the reason."""
    inst = INSTRUMENTS.get(instrument_id)
    if inst is None:
        return Scored(instrument_id, None, "unknown_instrument")
    if any(item not in inst.item_set() for item in answers):
        return Scored(instrument_id, None, "unknown_item")
    values = [answers.get(item) for item in inst.items]
    answered = [v for v in values if v is not None]
    if any(not inst.low <= v <= inst.high for v in answered):
        return Scored(instrument_id, None, "out_of_range")
    if len(answered) < inst.min_answered:
        return Scored(instrument_id, None, "too_many_missing")
    return Scored(instrument_id, inst.scoring(answered), None)


def change(instrument_id: str, baseline: Fraction, final: Fraction) -> Fraction:
    """final - baseline in the direction of improvement (positive: better)."""
    diff = final - baseline
    return diff if INSTRUMENTS[instrument_id].better == "higher" else -diff


def mcid_reached(instrument_id: str, baseline: Fraction, final: Fraction) -> bool:
    """The change is at least the instrument's MCID (exact comparison)."""
    return change(instrument_id, baseline, final) >= INSTRUMENTS[instrument_id].mcid


def round_1(value: Fraction) -> float:
    """Half away from zero to one decimal (6.25 -> 6.3, -6.25 -> -6.3), exactly."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        exact = decimal.Decimal(value.numerator) / decimal.Decimal(value.denominator)
        return float(exact.quantize(decimal.Decimal("0.1"), rounding=decimal.ROUND_HALF_UP))
