"""Keele STarT Back Screening Tool: scoring only (Hill 2008).

The project ships the item ids and this scoring, never the item text (© Keele
University; see docs/intake-rules.md, Licence). Items 1-8 are 0 (disagree) or 1 (agree);
item 9, bothersomeness, 0 (not at all) to 4 (extremely), counts 1 when "very much" or
"extremely".
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from intake.rules import SbstTier
from schemas.events import SbstAnswers

BOTHERSOME_FROM = 3  # item 9 counts from "very much"
DISTRESS_ITEMS = slice(4, 8)  # items 5-8: the psychosocial subscale
HIGH_DISTRESS_FROM = 4  # distress >= 4: high risk
LOW_TOTAL_UP_TO = 3  # otherwise total <= 3: low risk; else medium


class SbstScore(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    total: int  # 0-9
    distress: int  # 0-5
    tier: SbstTier


def score_sbst(answers: SbstAnswers) -> SbstScore:
    """Total (items 1-8 + bothersome), distress (items 5-8 + bothersome) and the tier."""
    items = answers.items
    bothersome = 1 if items[8] >= BOTHERSOME_FROM else 0
    total = sum(items[:8]) + bothersome
    distress = sum(items[DISTRESS_ITEMS]) + bothersome
    tier: SbstTier
    if distress >= HIGH_DISTRESS_FROM:
        tier = "high"
    elif total <= LOW_TOTAL_UP_TO:
        tier = "low"
    else:
        tier = "medium"
    return SbstScore(total=total, distress=distress, tier=tier)
