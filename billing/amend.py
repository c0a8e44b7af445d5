"""Amendments: what to export next, given what was already exported (pure).

Lines are compared per *group*: ``ClaimLine.key`` = (patient, code group, scope,
period/month start). A group already exported and still giving the same billing content
is not re-exported; a group whose content changed (98985 -> 98977 after a late data day,
98980 gaining a 98981, ...) is re-sent whole with status ``amended`` and replaces the
earlier lines of that group. A group therefore never carries the same code twice for one
period or month. ``data_days`` and ``minutes`` are informational: a count that moves
without changing code, units, modifiers or dates is not an amendment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from billing.rules import ClaimLine

GroupKey = tuple[object, ...]
# Fields whose change is a change of what is billed.
_INFORMATIONAL = {"data_days", "minutes", "status"}


def billing_content(line: ClaimLine) -> tuple[object, ...]:
    """The fields of a line that make up what is billed (not counts, not status)."""
    return tuple(
        getattr(line, name) for name in ClaimLine.model_fields if name not in _INFORMATIONAL
    )


def _groups(lines: Iterable[ClaimLine]) -> dict[GroupKey, list[ClaimLine]]:
    out: dict[GroupKey, list[ClaimLine]] = defaultdict(list)
    for line in lines:
        out[line.key].append(line)
    return out


def _content(lines: Sequence[ClaimLine]) -> frozenset[tuple[object, ...]]:
    return frozenset(billing_content(line) for line in lines)


def standing_lines(exports: Iterable[Sequence[ClaimLine]]) -> list[ClaimLine]:
    """Fold past exports (oldest first, one sequence per export) into the lines that
    stand now: a group in a later export replaces that group's earlier lines. Preview
    lines are ignored (a preview bills nothing); a group last recorded as ``void`` (a
    void claim was submitted for it) no longer stands."""
    standing: dict[GroupKey, list[ClaimLine]] = {}
    for export in exports:
        standing.update(_groups(line for line in export if line.status != "preview"))
    return [
        line
        for group in standing.values()
        if not all(ln.status == "void" for ln in group)
        for line in group
    ]


def lines_to_export(previous: Iterable[ClaimLine], current: Iterable[ClaimLine]) -> list[ClaimLine]:
    """The lines of the next export.

    ``previous``: the standing exported lines (see ``standing_lines``). ``current``: the
    lines ``compute_claims`` gives now, over the same patients. A closed group never
    exported is returned as is (``new``); an exported group whose billing content
    changed is returned with every line ``amended``; an unchanged one is dropped.
    ``preview`` lines pass through untouched. Result sorted like the CSV.
    """
    before = _groups(previous)
    out: list[ClaimLine] = []
    for key, group in _groups(current).items():
        if all(line.status == "preview" for line in group):
            out.extend(group)
            continue
        old = before.get(key)
        if old is None:
            out.extend(line.model_copy(update={"status": "new"}) for line in group)
        elif _content(old) != _content(group):
            out.extend(line.model_copy(update={"status": "amended"}) for line in group)
    return sorted(out, key=ClaimLine.sort_key)


def withdrawn_lines(previous: Iterable[ClaimLine], current: Iterable[ClaimLine]) -> list[ClaimLine]:
    """Exported groups that the rules no longer bill (e.g. a late ``episode.ended`` cut a
    period below 2 data days): billing staff must void them. Pass ``previous`` and
    ``current`` over the same patients and date range, or absence means nothing."""
    now = _groups(line for line in current if line.status != "preview")
    return sorted(
        (line for key, group in _groups(previous).items() if key not in now for line in group),
        key=ClaimLine.sort_key,
    )
