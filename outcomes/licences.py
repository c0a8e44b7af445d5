"""Licences of licence-gated instruments (docs/pathways-and-outcomes.md, Licences), pure.

Scoring always works; a licence is needed only to make a licence-gated instrument (ODI, NDI,
QuickDASH) a pathway's primary instrument. An organisation's licence is an activation
(``rtm instruments activate``, stored append-only): from ``activated_at``, until
``valid_until`` (exclusive) if given. The pathway engine asks ``usable_as_primary`` at an
episode's start; offline, ``licensed`` gives the set for ``--licensed``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from outcomes.instruments import INSTRUMENTS


@dataclass(frozen=True)
class Activation:
    org_id: str
    instrument: str
    licence_ref: str
    activated_at: dt.datetime
    valid_until: dt.datetime | None = None

    def covers(self, at: dt.datetime) -> bool:
        return self.activated_at <= at and (self.valid_until is None or at < self.valid_until)


class LicenceError(ValueError):
    """Why an instrument cannot be activated (unknown, or free: nothing to activate)."""


def activatable(instrument_id: str) -> None:
    """Raise LicenceError naming why ``instrument_id`` cannot take a licence."""
    inst = INSTRUMENTS.get(instrument_id)
    if inst is None:
        known = ", ".join(sorted(INSTRUMENTS))
        raise LicenceError(f"unknown instrument {instrument_id!r} (known: {known})")
    if inst.licence == "free":
        raise LicenceError(f"{instrument_id} is free to use: there is nothing to activate")


def _aware(at: dt.datetime) -> None:
    if at.utcoffset() is None:
        raise ValueError("the instant must be timezone-aware")


def usable_as_primary(
    instrument_id: str, org_id: str, at: dt.datetime, activations: Iterable[Activation]
) -> bool:
    """May ``instrument_id`` be organisation ``org_id``'s pathway primary at ``at``? A free
    instrument always; a licence-gated one when one of the organisation's activations of it
    covers ``at``; an unknown one never."""
    _aware(at)
    inst = INSTRUMENTS.get(instrument_id)
    if inst is None:
        return False
    if inst.licence == "free":
        return True
    return any(
        a.org_id == org_id and a.instrument == instrument_id and a.covers(at) for a in activations
    )


def licensed(org_id: str, at: dt.datetime, activations: Iterable[Activation]) -> frozenset[str]:
    """The licence-gated instruments organisation ``org_id`` holds at ``at``."""
    _aware(at)
    return frozenset(
        a.instrument
        for a in activations
        if a.org_id == org_id and a.instrument in INSTRUMENTS and a.covers(at)
    )
