"""Outcomes per episode and the report (docs/pathways-and-outcomes.md, Outcomes per
episode; Report), pure. Exact arithmetic; output rounded half away from zero to 1 decimal.
Rates are percentages and null when their denominator is 0; every rate has its counts
beside it (``…_n`` numerator and denominator fields) so a manager sees how many episodes a
rate stands on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from outcomes.instruments import round_1
from pathways.engine import EpisodeView

GroupBy = Literal["pathway", "clinician", "org", "body_region"]
GROUP_BY: tuple[GroupBy, ...] = ("pathway", "clinician", "org", "body_region")


def _r(value: Fraction | None) -> float | None:
    return None if value is None else round_1(value)


def _date(day: object) -> str | None:
    return None if day is None else str(day)


@dataclass(frozen=True)
class OutcomeRow:
    """One episode's outcome, exact (fractions, dates): what ``rtm outcomes episodes`` prints
    (``output``, rounded) and what the report groups. The worker stores these rows
    (``episode_outcomes``) and the report reads them back: one report over rows, offline or
    stored."""

    episode_id: str
    patient_id: str
    org_id: str
    clinician_id: str
    body_region: str
    pathway: str
    version: int
    instrument: str
    start_date: dt.date
    end_date: dt.date | None
    exit_reason: str | None
    baseline: Fraction | None
    final: Fraction | None
    change: Fraction | None
    mcid_reached: bool | None
    visits: int
    dropped_out: bool
    adherence: Fraction | None  # 0..1

    @property
    def pathway_key(self) -> str:
        return f"{self.pathway}@{self.version}"

    @property
    def days_to_discharge(self) -> int | None:
        """E - start, for an ended episode."""
        return None if self.end_date is None else (self.end_date - self.start_date).days

    @property
    def resolved_within_3_visits(self) -> bool:
        """Ended ``discharged`` or ``goals_met``, MCID reached, and at most 3 visits."""
        return (
            self.exit_reason in ("discharged", "goals_met")
            and self.mcid_reached is True
            and self.visits <= 3
        )

    def output(self) -> dict[str, object]:
        """``rtm outcomes episodes``' object (adherence in %, values rounded)."""
        return {
            "episode_id": self.episode_id,
            "patient_id": self.patient_id,
            "org_id": self.org_id,
            "clinician_id": self.clinician_id,
            "body_region": self.body_region,
            "pathway": self.pathway,
            "version": self.version,
            "instrument": self.instrument,
            "start_date": self.start_date.isoformat(),
            "end_date": _date(self.end_date),
            "exit_reason": self.exit_reason,
            "baseline": _r(self.baseline),
            "final": _r(self.final),
            "change": _r(self.change),
            "mcid_reached": self.mcid_reached,
            "visits": self.visits,
            "days_to_discharge": self.days_to_discharge,
            "resolved_within_3_visits": self.resolved_within_3_visits,
            "dropped_out": self.dropped_out,
            "adherence": _r(None if self.adherence is None else self.adherence * 100),
        }


def outcome_row(v: EpisodeView) -> OutcomeRow:
    """One episode view's outcome row."""
    ep = v.episode
    return OutcomeRow(
        episode_id=ep.episode_id,
        patient_id=ep.patient_id,
        org_id=v.org_id,
        clinician_id=ep.clinician_id,
        body_region=v.body_region,
        pathway=v.pathway.id,
        version=v.pathway.version,
        instrument=v.instrument,
        start_date=ep.start_date,
        end_date=ep.end_date,
        exit_reason=v.exit_reason,
        baseline=None if v.baseline is None else v.baseline.value,
        final=None if v.final is None else v.final.value,
        change=v.change,
        mcid_reached=v.mcid_reached,
        visits=v.visits,
        dropped_out=v.dropped_out,
        adherence=v.adherence,
    )


def episode_row(v: EpisodeView) -> dict[str, object]:
    """``rtm outcomes episodes``' object for one episode (adherence in %)."""
    return outcome_row(v).output()


def pathway_row(v: EpisodeView) -> dict[str, object]:
    """``rtm pathways evaluate``' object for one episode."""
    return {
        "episode_id": v.episode.episode_id,
        "pathway": v.pathway.id,
        "version": v.pathway.version,
        "tasks": [t.output() for t in v.tasks],
        "decisions": [d.output() for d in v.decisions],
    }


def _rate(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else round_1(Fraction(100 * numerator, denominator))


def _median(values: list[int]) -> float | None:
    if not values:
        return None
    s, n = sorted(values), len(values)
    mid = Fraction(s[n // 2]) if n % 2 else Fraction(s[n // 2 - 1] + s[n // 2], 2)
    return round_1(mid)


def tertiles(rows: Iterable[OutcomeRow]) -> list[list[OutcomeRow]]:
    """The episodes that have an adherence, sorted by (adherence, episode_id); the i-th of
    n (from 0) is in tertile floor(3i/n) + 1."""
    ranked = sorted(
        (v for v in rows if v.adherence is not None),
        key=lambda v: (v.adherence, v.episode_id),
    )
    out: list[list[OutcomeRow]] = [[], [], []]
    for i, v in enumerate(ranked):
        out[3 * i // len(ranked)].append(v)
    return out


def group_row(
    by: GroupBy, org_id: str | None, group: str, views: list[OutcomeRow]
) -> dict[str, object]:
    """The report's object for one group (``org_id`` set when grouping by clinician or
    organisation)."""
    scored = [v for v in views if v.baseline is not None and v.final is not None]
    reached = [v for v in scored if v.mcid_reached]
    ended_scored = [v for v in scored if v.end_date is not None]
    resolved = [v for v in ended_scored if v.resolved_within_3_visits]
    dropped = [v for v in views if v.dropped_out]
    discharged = [
        d
        for v in views
        if v.exit_reason in ("discharged", "goals_met") and (d := v.days_to_discharge) is not None
    ]
    by_tertile = tertiles(scored)
    return {
        "by": by,
        "group": group,
        "org_id": org_id,
        "episodes": len(views),
        "with_scores": len(scored),
        "mcid_rate": _rate(len(reached), len(scored)),
        "mcid_reached_n": len(reached),
        "median_days_to_discharge": _median(discharged),
        "discharged_n": len(discharged),
        "resolved_within_3_visits_rate": _rate(len(resolved), len(ended_scored)),
        "resolved_within_3_visits_n": [len(resolved), len(ended_scored)],
        "dropout_rate": _rate(len(dropped), len(views)),
        "dropped_out_n": len(dropped),
        "mcid_rate_by_adherence_tertile": [
            _rate(sum(1 for v in t if v.mcid_reached), len(t)) for t in by_tertile
        ],
        "mcid_by_adherence_tertile_n": [
            [sum(1 for v in t if v.mcid_reached), len(t)] for t in by_tertile
        ],
    }


# (organisation or None, group): a clinician id means a clinician only within an organisation
GROUP_KEYS: dict[GroupBy, Callable[[OutcomeRow], tuple[str | None, str]]] = {
    "pathway": lambda v: (None, v.pathway_key),
    "clinician": lambda v: (v.org_id, v.clinician_id),
    "org": lambda v: (v.org_id, v.org_id),
    "body_region": lambda v: (None, v.body_region),
}


def report(rows: Iterable[OutcomeRow], by: GroupBy) -> list[dict[str, object]]:
    """One object per group, sorted by the group's key: over outcome rows, the offline
    commands' (``outcome_row`` of each view) or the stored ones (``rtm outcomes report
    --from-db``)."""
    groups: dict[tuple[str | None, str], list[OutcomeRow]] = {}
    key = GROUP_KEYS[by]
    for v in rows:
        groups.setdefault(key(v), []).append(v)
    return [
        group_row(by, org, group, groups[(org, group)])
        for org, group in sorted(groups, key=lambda k: (k[1], k[0] or ""))
    ]
