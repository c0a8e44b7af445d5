"""The intake rule set as versioned data (docs/intake-rules.md): which red flags are
emergencies and which serious pathology, where each STarT Back tier goes, the NPRS
threshold, the service level of each route and the business calendar.

Every default is configuration per organisation. ``DEFAULT_RULES`` is the rule set
``intake-v1``; a rule set that differs from it must carry its own version
(``load_rules``), because each routing records the version it was made under.
"""

from __future__ import annotations

import datetime as dt
import typing
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_serializer,
    model_validator,
)

from schemas.events import IntakeRedFlag

DEFAULT_VERSION = "intake-v1"

Route = Literal["urgent", "physician_review", "in_person_pt", "digital_pt"]
PtRoute = Literal["in_person_pt", "digital_pt"]
SbstTier = Literal["low", "medium", "high"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

ROUTES: tuple[Route, ...] = typing.get_args(Route)
SBST_TIERS: tuple[SbstTier, ...] = typing.get_args(SbstTier)
WEEKDAYS: tuple[Weekday, ...] = typing.get_args(Weekday)  # Monday first, as date.weekday()
INTAKE_FLAGS: tuple[str, ...] = typing.get_args(IntakeRedFlag)

# Cauda equina and progressive neurology: a call within the hour.
EMERGENCY_FLAGS: frozenset[IntakeRedFlag] = frozenset(
    {
        "saddle_anesthesia",
        "bladder_dysfunction",
        "bowel_incontinence",
        "bilateral_leg_symptoms",
        "progressive_weakness",
    }
)
# Possible serious pathology (infection, cancer, fracture): a physician's review.
SERIOUS_FLAGS: frozenset[IntakeRedFlag] = frozenset(
    {"fever", "unexplained_weight_loss", "constant_night_pain", "major_trauma", "cancer_history"}
)

_MAX_HOURS = 24 * 366
_MAX_BUSINESS_DAYS = 60


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Elapsed(_Frozen):
    """Real time after the submission, around the clock (a DST change moves the local
    clock time of the due instant)."""

    kind: Literal["elapsed"] = "elapsed"
    hours: Annotated[float, Field(gt=0, le=_MAX_HOURS)]

    @property
    def duration(self) -> dt.timedelta:
        return dt.timedelta(hours=self.hours)


class BusinessDays(_Frozen):
    """Business time after the submission: ``days`` x (close - open) of the calendar,
    counted only inside the business hours of business days."""

    kind: Literal["business_days"] = "business_days"
    days: Annotated[int, Field(ge=1, le=_MAX_BUSINESS_DAYS)]


ServiceLevel = Annotated[Elapsed | BusinessDays, Field(discriminator="kind")]


def _ordered_weekdays(days: frozenset[Weekday]) -> list[Weekday]:
    return [d for d in WEEKDAYS if d in days]


class BusinessCalendar(_Frozen):
    """An organisation's business hours, read in the intake's own time zone: business
    weekdays, one interval [open, close) of local time, and holidays (local dates)."""

    weekdays: Annotated[frozenset[Weekday], Field(min_length=1)] = frozenset(
        {"mon", "tue", "wed", "thu", "fri"}
    )
    open: dt.time = dt.time(8, 0)
    close: dt.time = dt.time(17, 0)
    holidays: frozenset[dt.date] = frozenset()

    @model_validator(mode="after")
    def _interval(self) -> BusinessCalendar:
        if self.open.tzinfo is not None or self.close.tzinfo is not None:
            raise ValueError("open and close are local times of day, without an offset")
        if not self.open < self.close:
            raise ValueError("open must be before close (one interval within the day)")
        return self

    @field_serializer("weekdays")
    def _weekdays_out(self, days: frozenset[Weekday]) -> list[Weekday]:
        return _ordered_weekdays(days)

    @field_serializer("holidays")
    def _holidays_out(self, days: frozenset[dt.date]) -> list[dt.date]:
        return sorted(days)

    @property
    def day_length(self) -> dt.timedelta:
        """One business day: close - open, as local clock times (9 h by default)."""
        day = dt.date(2000, 1, 3)
        return dt.datetime.combine(day, self.close) - dt.datetime.combine(day, self.open)

    def is_business_day(self, day: dt.date) -> bool:
        return WEEKDAYS[day.weekday()] in self.weekdays and day not in self.holidays


def _default_sbst_routes() -> dict[SbstTier, PtRoute]:
    # matched care [Sowden 2018]: low = advice, medium = physio, high = psychologically
    # informed physio; advice and physio fit a digital programme, high needs a visit
    return {"low": "digital_pt", "medium": "digital_pt", "high": "in_person_pt"}


def _default_service_levels() -> dict[Route, Elapsed | BusinessDays]:
    return {
        "urgent": Elapsed(hours=1),
        "physician_review": BusinessDays(days=1),
        "in_person_pt": Elapsed(hours=72),  # the Utah pathway: PT within 72 hours
        "digital_pt": Elapsed(hours=72),
    }


class IntakeRules(_Frozen):
    """One organisation's intake rules, as data. Each routing records ``version``."""

    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
    # red flags by class; together every intake flag, each in one class
    emergency_flags: frozenset[IntakeRedFlag] = EMERGENCY_FLAGS
    serious_flags: frozenset[IntakeRedFlag] = SERIOUS_FLAGS
    # NPRS at or above this routes to in_person_pt when STarT Back does not route; None:
    # NPRS never routes. 8 is this system's convention (set 7 for parity with pain_high).
    nprs_in_person_at: Annotated[int, Field(ge=0, le=10)] | None = 8
    sbst_routes: dict[SbstTier, PtRoute] = Field(default_factory=_default_sbst_routes)
    service_levels: dict[Route, ServiceLevel] = Field(default_factory=_default_service_levels)
    calendar: BusinessCalendar = BusinessCalendar()

    @model_validator(mode="after")
    def _complete(self) -> IntakeRules:
        both = self.emergency_flags & self.serious_flags
        if both:
            raise ValueError(
                f"a red flag is in one class only: {', '.join(sorted(both))} is in both"
            )
        missing = set(INTAKE_FLAGS) - self.emergency_flags - self.serious_flags
        if missing:
            raise ValueError(
                "every red flag is an emergency or a serious-pathology flag; in neither: "
                + ", ".join(sorted(missing))
            )
        if set(self.sbst_routes) != set(SBST_TIERS):
            raise ValueError(f"sbst_routes needs exactly the tiers {', '.join(SBST_TIERS)}")
        if set(self.service_levels) != set(ROUTES):
            raise ValueError(f"service_levels needs exactly the routes {', '.join(ROUTES)}")
        return self

    @field_serializer("emergency_flags", "serious_flags")
    def _flags_out(self, flags: frozenset[str]) -> list[str]:
        return sorted(flags)


DEFAULT_RULES = IntakeRules(version=DEFAULT_VERSION)


def load_rules(text: str | bytes) -> IntakeRules:
    """A rule set from its JSON (a file's content; fields left out take the defaults).
    A rule set other than the defaults must not call itself ``intake-v1``: the version is
    what each routing records, so two rule sets never share one. Raises ValueError (a
    pydantic ValidationError, naming the field) on bad input."""
    rules = IntakeRules.model_validate_json(text)
    if rules.version == DEFAULT_VERSION and rules != DEFAULT_RULES:
        raise ValueError(
            f"these rules differ from the defaults, so they need a version of their own"
            f" (not {DEFAULT_VERSION!r})"
        )
    return rules
