"""Charges from a versioned fee-schedule file (pure): never constants in code.

CSV columns: ``version,cpt,locality,effective_from,effective_to,amount`` (``#`` lines are
comments; ``effective_to`` may be empty = open-ended). A correction during the year is a
new *version* (e.g. ``2026-01-01`` then ``2026-03-12``): a line is charged from the entry
of the highest version (versions compare as strings, so use ISO dates, optionally with a
suffix) whose code and locality match and whose effective dates cover its date of
service. Two entries of one version covering the same code, locality and date are an error.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict


class FeeEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    cpt: str
    locality: str
    effective_from: dt.date
    effective_to: dt.date | None = None
    amount: Decimal

    def covers(self, day: dt.date) -> bool:
        return self.effective_from <= day and (
            self.effective_to is None or day <= self.effective_to
        )


COLUMNS = ("version", "cpt", "locality", "effective_from", "effective_to", "amount")


class FeeScheduleError(ValueError):
    pass


def parse_fee_schedule(text: str) -> list[FeeEntry]:
    """The entries of a fee-schedule file; raises FeeScheduleError naming line and field."""
    body = "".join(ln for ln in io.StringIO(text) if not ln.lstrip().startswith("#"))
    reader = csv.DictReader(io.StringIO(body))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise FeeScheduleError(f"header must be {','.join(COLUMNS)}")
    out: list[FeeEntry] = []
    for n, row in enumerate(reader, start=2):
        try:
            amount = Decimal(row["amount"])
        except InvalidOperation:
            raise FeeScheduleError(f"row {n}: amount: not a number: {row['amount']!r}") from None
        if amount < 0 or amount != amount.quantize(Decimal("0.01")):
            raise FeeScheduleError(f"row {n}: amount: must be >= 0 with at most 2 decimals")
        try:
            entry = FeeEntry(
                version=row["version"],
                cpt=row["cpt"],
                locality=row["locality"],
                effective_from=dt.date.fromisoformat(row["effective_from"]),
                effective_to=(
                    dt.date.fromisoformat(row["effective_to"]) if row["effective_to"] else None
                ),
                amount=amount,
            )
        except ValueError as exc:
            raise FeeScheduleError(f"row {n}: {exc}") from None
        if not entry.version or not entry.cpt or not entry.locality:
            raise FeeScheduleError(f"row {n}: version, cpt and locality are required")
        if entry.effective_to is not None and entry.effective_to < entry.effective_from:
            raise FeeScheduleError(f"row {n}: effective_to is before effective_from")
        out.append(entry)
    check_overlaps(out)
    return out


def check_overlaps(entries: Iterable[FeeEntry]) -> None:
    by: dict[tuple[str, str, str], list[FeeEntry]] = defaultdict(list)
    for e in entries:
        by[(e.version, e.cpt, e.locality)].append(e)
    for (version, cpt, locality), group in by.items():
        group.sort(key=lambda e: e.effective_from)
        for a, b in zip(group, group[1:], strict=False):
            if a.effective_to is None or b.effective_from <= a.effective_to:
                raise FeeScheduleError(
                    f"version {version}: {cpt} in locality {locality} has overlapping dates"
                    f" ({a.effective_from} and {b.effective_from})"
                )


def fee_for(entries: Iterable[FeeEntry], cpt: str, locality: str, day: dt.date) -> FeeEntry | None:
    """The entry that charges ``cpt`` in ``locality`` on ``day`` (highest version wins)."""
    best: FeeEntry | None = None
    for e in entries:
        if e.cpt == cpt and e.locality == locality and e.covers(day):
            if best is None or e.version > best.version:
                best = e
    return best
