"""A pathway version as data (docs/pathways-and-outcomes.md, Pathway ``msk-default`` v1).

A version is a frozen pydantic model parsed from its JSON; a published version never
changes (its content is fixed by its id and version). The project ships ``msk-default`` v1
as package data (``pathways/versions/msk-default@1.json``, the design's JSON verbatim);
``BUILTIN`` holds it, keyed ``"msk-default@1"``.
"""

from __future__ import annotations

import functools
import importlib.resources
from decimal import Decimal
from fractions import Fraction
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

from outcomes.instruments import INSTRUMENTS
from schemas.events import EpisodeBodyRegion

Day = Annotated[StrictInt, Field(ge=0, le=3650)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Window(_Frozen):
    """A timepoint: its score is the first on ``days`` [first, last]; its task is due on
    day ``due``."""

    days: tuple[Day, Day]
    due: Day

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.days[0] > self.days[1]:
            raise ValueError("days must be [first, last] with first <= last")
        return self


class Timepoints(_Frozen):
    baseline: Window
    week4: Window


class Review(_Frozen):
    from_day: Day
    due: Day


class StepUp(_Frozen):
    pain_at_least: Annotated[StrictInt, Field(ge=0, le=10)]
    pain_days: tuple[Day, Day]
    due_in: Day


class PauseRule(_Frozen):
    on_fall: bool
    due_in: Day


class DischargeReady(_Frozen):
    adherence_at_least: Annotated[Decimal, Field(ge=0, le=1)]
    due_in: Day

    @property
    def threshold(self) -> Fraction:
        """The threshold, exactly (0.5 is 1/2)."""
        return Fraction(self.adherence_at_least)


class Pathway(_Frozen):
    """One published pathway version."""

    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    version: Annotated[StrictInt, Field(ge=1, le=100000)]
    primary: dict[EpisodeBodyRegion, tuple[str, ...]]
    timepoints: Timepoints
    review: Review
    step_up: StepUp
    pause: PauseRule
    discharge_ready: DischargeReady

    @property
    def key(self) -> str:
        """``id@version``, e.g. ``msk-default@1``."""
        return f"{self.id}@{self.version}"

    @model_validator(mode="after")
    def _known_instruments(self) -> Pathway:
        for region, ids in self.primary.items():
            unknown = [i for i in ids if i not in INSTRUMENTS]
            if unknown:
                raise ValueError(f"primary.{region}: unknown instrument(s) {', '.join(unknown)}")
        return self

    def primary_instrument(self, region: str, licensed: frozenset[str]) -> str:
        """The first of the region's instruments that is free or licensed; PSFS when none
        is (a region the version does not list counts as ``other``)."""
        ids = self.primary.get(region) or self.primary.get("other") or ()  # type: ignore[call-overload]
        for inst in ids:
            if INSTRUMENTS[inst].licence == "free" or inst in licensed:
                return inst
        return "psfs"


def parse_pathway(text: str | bytes) -> Pathway:
    """A pathway version from its JSON (pydantic's ValidationError names what is wrong)."""
    return Pathway.model_validate_json(text)


@functools.cache
def _builtin() -> dict[str, Pathway]:
    root = importlib.resources.files("pathways").joinpath("versions")
    versions = (parse_pathway(f.read_bytes()) for f in root.iterdir() if f.name.endswith(".json"))
    return {p.key: p for p in versions}


def builtin() -> dict[str, Pathway]:
    """The versions the project ships, by ``id@version``."""
    return dict(_builtin())


DEFAULT_PATHWAY = "msk-default@1"  # an episode.started without ``pathway`` is on this one
