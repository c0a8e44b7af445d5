"""The offline commands' drivers (docs/pathways-and-outcomes.md, Offline commands), pure:
events in, JSON objects out.

All of them ignore events at or after as-of; a resent event_id (within an organisation)
counts once, the first arrival winning; arrival order never changes the output (the engine
orders everything by ``occurred_at`` then ``event_id``). Objects are printed with their keys
sorted, one per line, sorted by their key (episode_id, or the report's group); lists are
sorted by date then kind.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping

from pathways.engine import EpisodeView, PatientPathways
from pathways.model import Pathway
from pathways.outcomes import GroupBy, episode_row, outcome_row, pathway_row, report
from schemas.events import Event, PatientKey


def collect(events: Iterable[Event]) -> dict[PatientKey, PatientPathways]:
    """Each patient's pathway state, the events folded in as they come; an event_id is one
    event per organisation (as the worker's events table): a resent one is ignored, even
    under another patient."""
    states: dict[PatientKey, PatientPathways] = {}
    seen: set[tuple[str, str]] = set()
    for event in events:
        key = event.patient_key
        if (key[0], event.event_id) in seen:
            continue
        seen.add((key[0], event.event_id))
        state = states.get(key)
        if state is None:
            state = states[key] = PatientPathways(event.patient_id, key[0])
        state.apply(event)
    return states


def views(
    events: Iterable[Event],
    as_of: dt.datetime,
    versions: Mapping[str, Pathway],
    licensed: frozenset[str] = frozenset(),
    override: Pathway | None = None,
) -> tuple[list[EpisodeView], list[str]]:
    """Every episode as of ``as_of`` sorted by (episode_id, org_id), and the episodes left out
    (their pathway version unknown)."""
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware")
    out: list[EpisodeView] = []
    missing: list[str] = []
    for state in collect(e for e in events if e.occurred_at < as_of).values():
        got, lost = state.as_of(as_of, versions, licensed, override)
        out += got
        missing += lost
    out.sort(key=lambda v: (v.episode.episode_id, v.org_id))
    return out, sorted(missing)


def evaluate_rows(eps: list[EpisodeView]) -> list[dict[str, object]]:
    return [pathway_row(v) for v in eps]


def episode_rows(eps: list[EpisodeView]) -> list[dict[str, object]]:
    return [episode_row(v) for v in eps]


def report_rows(eps: list[EpisodeView], by: GroupBy) -> list[dict[str, object]]:
    return report([outcome_row(v) for v in eps], by)


def _key(part: str, item: Mapping[str, object]) -> str:
    """What tells two tasks (all of it) or two decisions (date and kind: a reason that only
    names the version's threshold, no_mcid_pain_7 / _6, is no change of decision) apart."""
    return render(item if part == "tasks" else {"on": item["on"], "decision": item["decision"]})


def _items(row: Mapping[str, object], part: str) -> list[dict[str, object]]:
    items = row[part]
    return items if isinstance(items, list) else []


def _only(a: Mapping[str, object], b: Mapping[str, object]) -> dict[str, list[dict[str, object]]]:
    """What of a's tasks and decisions b does not have (in a's order: date, then kind)."""
    out = {}
    for part in ("tasks", "decisions"):
        theirs = {_key(part, x) for x in _items(b, part)}
        out[part] = [x for x in _items(a, part) if _key(part, x) not in theirs]
    return out


def diff(
    events: list[Event],
    as_of: dt.datetime,
    source: Pathway,
    target: Pathway,
    licensed: frozenset[str] = frozenset(),
) -> list[dict[str, object]]:
    """Every episode replayed under both versions: one object per episode whose tasks or
    decisions differ (a decision by its date and kind), then the counts per decision under
    each version. Read-only: it changes nothing, it prints."""
    before, _ = views(events, as_of, {}, licensed, override=source)
    after, _ = views(events, as_of, {}, licensed, override=target)
    out: list[dict[str, object]] = []
    counts: dict[str, Counter[str]] = {"from": Counter(), "to": Counter()}
    for a, b in zip(before, after, strict=True):
        ra, rb = pathway_row(a), pathway_row(b)
        counts["from"].update(d.decision for d in a.decisions)
        counts["to"].update(d.decision for d in b.decisions)
        only_from, only_to = _only(ra, rb), _only(rb, ra)
        if not any(only_from.values()) and not any(only_to.values()):
            continue
        out.append(
            {
                "episode_id": a.episode.episode_id,
                "from": source.key,
                "to": target.key,
                "only_from": only_from,
                "only_to": only_to,
            }
        )
    decisions = sorted(set(counts["from"]) | set(counts["to"]))
    out.append(
        {
            "from": source.key,
            "to": target.key,
            "episodes": len(before),
            "changed": len(out),
            "decisions": {d: {"from": counts["from"][d], "to": counts["to"][d]} for d in decisions},
        }
    )
    return out


def render(row: Mapping[str, object]) -> str:
    """One output line: compact JSON, keys sorted."""
    return json.dumps(row, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
