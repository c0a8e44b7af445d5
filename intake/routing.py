"""Routing an intake: the first rule that applies (docs/intake-rules.md, Routing).

| # | when | route | reasons |
|---|---|---|---|
| 1 | any emergency flag | ``urgent`` | ``red_flag:<flag>`` for every yes, of either class |
| 2 | any serious-pathology flag | ``physician_review`` | as 1 |
| 3 | ``low_back`` with STarT Back | the tier's route | ``sbst:<tier>`` |
| 4 | NPRS >= the threshold | ``in_person_pt`` | ``nprs:high`` |
| 5 | otherwise | ``digital_pt`` | ``default`` |

Reason codes are a fixed list (``REASON_CODES``) and never name a threshold (that lives
in the rule set); they are sorted by code point. The questionnaire is scored whenever it
was answered, whatever the route; with it, NPRS does not route.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from intake.rules import INTAKE_FLAGS, SBST_TIERS, IntakeRules, Route
from intake.sbst import SbstScore, score_sbst
from schemas.events import SBST_REGION, IntakeSubmitted

REASON_CODES: frozenset[str] = frozenset(
    {
        *(f"red_flag:{flag}" for flag in INTAKE_FLAGS),
        *(f"sbst:{tier}" for tier in SBST_TIERS),
        "nprs:high",
        "default",
    }
)


class Routing(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    route: Route
    reasons: tuple[str, ...]  # sorted by code point
    sbst: SbstScore | None  # whenever answered


def route_intake(intake: IntakeSubmitted, rules: IntakeRules) -> Routing:
    """The route of one intake version under ``rules``, with its reasons."""
    sbst = score_sbst(intake.answers.sbst) if intake.answers.sbst is not None else None
    flags = frozenset(intake.red_flags)
    route: Route
    if flags & rules.emergency_flags or flags & rules.serious_flags:
        route = "urgent" if flags & rules.emergency_flags else "physician_review"
        reasons = tuple(f"red_flag:{flag}" for flag in flags)
    elif sbst is not None and intake.body_region == SBST_REGION:
        route, reasons = rules.sbst_routes[sbst.tier], (f"sbst:{sbst.tier}",)
    elif rules.nprs_in_person_at is not None and intake.answers.nprs >= rules.nprs_in_person_at:
        route, reasons = "in_person_pt", ("nprs:high",)
    else:
        route, reasons = "digital_pt", ("default",)
    return Routing(route=route, reasons=tuple(sorted(reasons)), sbst=sbst)
