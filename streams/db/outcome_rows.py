"""Per-episode outcome rows (``episode_outcomes``, migration 038): written by the worker's
refresh (``streams.services.refresh``) for the patients it folds, read back by the outcome
report (``streams.services.outcomes.outcome_report``); their open and overdue tasks are kept
beside them (``episode_open_tasks``, migration 039) for the worklist's "My tasks"."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import asyncpg
import orjson

from pathways.outcomes import OutcomeRow
from schemas.events import PatientKey
from streams.access import Scope
from streams.db.access import scope_sql


@dataclass(frozen=True)
class EpisodeOutcome:
    """One episode's stored row: the outcome, its tasks and decisions (as ``rtm pathways
    evaluate`` prints them) and the instant it is as of."""

    row: OutcomeRow
    tasks: tuple[Mapping[str, object], ...]
    decisions: tuple[Mapping[str, object], ...]
    as_of: dt.datetime


def _frac(value: Fraction | None) -> str | None:
    return None if value is None else f"{value.numerator}/{value.denominator}"


def _unfrac(text: str | None) -> Fraction | None:
    return None if text is None else Fraction(text)


_COLUMNS = (
    "org_id, episode_id, patient_id, clinician_id, body_region, pathway, version, instrument,"
    " start_date, end_date, exit_reason, baseline, final, change, mcid_reached, visits,"
    " dropped_out, adherence, tasks, decisions, as_of"
)
# the array type of each column for the insert's unnest (tasks and decisions as text)
_TYPES = (
    *("text[]",) * 6,
    "int[]",
    "text[]",
    "date[]",
    "date[]",
    *("text[]",) * 4,
    "bool[]",
    "int[]",
    "bool[]",
    *("text[]",) * 3,
    "timestamptz[]",
)
_PARAMS = ", ".join(f"${i + 1}::{t}" for i, t in enumerate(_TYPES))
_SELECT = _COLUMNS.replace("tasks, decisions", "tasks::jsonb, decisions::jsonb")


def _values(o: EpisodeOutcome) -> tuple[Any, ...]:
    r = o.row
    return (
        r.org_id,
        r.episode_id,
        r.patient_id,
        r.clinician_id,
        r.body_region,
        r.pathway,
        r.version,
        r.instrument,
        r.start_date,
        r.end_date,
        r.exit_reason,
        _frac(r.baseline),
        _frac(r.final),
        _frac(r.change),
        r.mcid_reached,
        r.visits,
        r.dropped_out,
        _frac(r.adherence),
        orjson.dumps(list(o.tasks)).decode(),
        orjson.dumps(list(o.decisions)).decode(),
        o.as_of,
    )


async def replace_outcomes(
    conn: asyncpg.Connection, patients: Sequence[PatientKey], outcomes: Sequence[EpisodeOutcome]
) -> None:
    """Replace the rows of ``patients`` with ``outcomes`` (their episodes now)."""
    if not patients:
        return
    keys = [[k[0] for k in patients], [k[1] for k in patients]]
    for table in ("episode_outcomes", "episode_open_tasks"):
        await conn.execute(
            f"DELETE FROM {table} o USING unnest($1::text[], $2::text[]) AS k(org, p)"
            " WHERE o.org_id = k.org AND o.patient_id = k.p",
            *keys,
        )
    if not outcomes:
        return
    columns = zip(*(_values(o) for o in outcomes), strict=True)
    await conn.execute(
        f"INSERT INTO episode_outcomes ({_COLUMNS}) SELECT {_SELECT} FROM unnest({_PARAMS})"
        f" AS t({_COLUMNS}) ON CONFLICT (org_id, episode_id) DO UPDATE SET"
        " patient_id = EXCLUDED.patient_id, clinician_id = EXCLUDED.clinician_id,"
        " body_region = EXCLUDED.body_region, pathway = EXCLUDED.pathway,"
        " version = EXCLUDED.version, instrument = EXCLUDED.instrument,"
        " start_date = EXCLUDED.start_date, end_date = EXCLUDED.end_date,"
        " exit_reason = EXCLUDED.exit_reason, baseline = EXCLUDED.baseline,"
        " final = EXCLUDED.final, change = EXCLUDED.change,"
        " mcid_reached = EXCLUDED.mcid_reached, visits = EXCLUDED.visits,"
        " dropped_out = EXCLUDED.dropped_out, adherence = EXCLUDED.adherence,"
        " tasks = EXCLUDED.tasks, decisions = EXCLUDED.decisions, as_of = EXCLUDED.as_of",
        *(list(c) for c in columns),
    )
    tasks = open_task_rows(outcomes)
    if tasks:
        await conn.execute(
            "INSERT INTO episode_open_tasks (org_id, patient_id, episode_id, clinician_id, kind,"
            " due_on, overdue, step_up_reason) SELECT * FROM unnest($1::text[], $2::text[],"
            " $3::text[], $4::text[], $5::text[], $6::date[], $7::bool[], $8::text[])",
            *(list(c) for c in zip(*tasks, strict=True)),
        )


def open_task_rows(outcomes: Sequence[EpisodeOutcome]) -> list[tuple[Any, ...]]:
    """The open and overdue tasks of these episodes, each with its episode's step-up reason
    (the rows of ``episode_open_tasks``; migration 039 derives those stored before it the same
    way in SQL)."""
    out: list[tuple[Any, ...]] = []
    for o in outcomes:
        r = o.row
        reason = next(
            (d.get("reason") for d in o.decisions if d.get("decision") == "step_up"), None
        )
        for t in o.tasks:
            if t.get("status") not in ("open", "overdue"):
                continue
            due = t.get("due_on")
            out.append(
                (
                    r.org_id,
                    r.patient_id,
                    r.episode_id,
                    r.clinician_id,
                    t.get("kind"),
                    dt.date.fromisoformat(str(due)) if due is not None else None,
                    t.get("status") == "overdue",
                    reason,
                )
            )
    return out


async def episode_outcomes(conn: asyncpg.Connection, org_id: str) -> list[EpisodeOutcome]:
    """The stored rows of an organisation, by episode_id: what the report groups."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM episode_outcomes WHERE org_id = $1 ORDER BY episode_id", org_id
    )
    return [
        EpisodeOutcome(
            OutcomeRow(
                episode_id=r["episode_id"],
                patient_id=r["patient_id"],
                org_id=r["org_id"],
                clinician_id=r["clinician_id"],
                body_region=r["body_region"],
                pathway=r["pathway"],
                version=r["version"],
                instrument=r["instrument"],
                start_date=r["start_date"],
                end_date=r["end_date"],
                exit_reason=r["exit_reason"],
                baseline=_unfrac(r["baseline"]),
                final=_unfrac(r["final"]),
                change=_unfrac(r["change"]),
                mcid_reached=r["mcid_reached"],
                visits=r["visits"],
                dropped_out=r["dropped_out"],
                adherence=_unfrac(r["adherence"]),
            ),
            tuple(orjson.loads(r["tasks"])),
            tuple(orjson.loads(r["decisions"])),
            r["as_of"],
        )
        for r in rows
    ]


async def open_tasks(
    conn: asyncpg.Connection, scope: Scope, limit: int = 50
) -> list[dict[str, Any]]:
    """The care-pathway tasks still to do (open or overdue, as of each episode's latest
    refresh) of the patients in the scope, overdue first, then by due date, each with its
    episode's step-up reason (None: no step-up): the worklist's "My tasks", one query."""
    where, args = scope_sql(scope, "o.patient_id", 1, "o.org_id")
    args.append(limit)
    rows = await conn.fetch(
        "SELECT o.patient_id, o.episode_id, o.clinician_id, o.kind, o.due_on,"
        " CASE WHEN o.overdue THEN 'overdue' ELSE 'open' END AS status, o.step_up_reason"
        f" FROM episode_open_tasks o WHERE {where}"
        " ORDER BY o.overdue DESC, o.due_on, o.patient_id, o.kind"
        f" LIMIT ${len(args)}",
        *args,
    )
    return [dict(r) for r in rows]
