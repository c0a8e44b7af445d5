"""Outcomes on the dashboard (issue 19 item 5): one patient's pathway and primary scores for
the patient page, the organisation's outcome report for the manager's page and its exports,
and the replay of a draft pathway version over the organisation's past episodes.

The report groups the per-episode outcome rows the worker keeps off the ingest path
(``streams.services.refresh``, ``patient_pathways``); one patient's panels and a draft's
replay are computed from the stored events with the pure engine (``pathways``), the same
code as ``rtm pathways evaluate|diff`` and ``rtm outcomes episodes|report``. Nothing here
writes but the audit rows the callers leave."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from outcomes.fhir import plan_definition
from outcomes.instruments import INSTRUMENTS, change, round_1
from outcomes.licences import licensed
from pathways.engine import PATHWAY_EVENT_TYPES, EpisodeView, PatientFacts, primary_scores
from pathways.fhir import care_plans, missing_outcome, tasks
from pathways.model import DEFAULT_PATHWAY, Pathway, builtin
from pathways.offline import diff, views
from pathways.outcomes import GroupBy, episode_row, report
from schemas.events import Event, parse_event_json
from streams.db.events import clinical_payloads, count_org_events, org_payloads
from streams.db.instruments import activations
from streams.db.outcome_rows import episode_outcomes
from streams.db.pathway_versions import published_versions
from streams.db.refresh import pending

REPORT_BY: tuple[GroupBy, ...] = ("pathway", "clinician", "body_region")

# A draft's replay folds the organisation's events here, in the gateway: about 2.6 KB of
# memory and 0.1 ms of CPU per event (`rtm outcomes report` over 267,000 events: 700 MB,
# 33 s). Past this many the page refuses, naming the offline command, instead of holding the
# gateway's memory and CPU.
MAX_FOLD_EVENTS = 100_000


class TooManyEvents(Exception):
    """The organisation has more events than a replay in the gateway takes
    (``MAX_FOLD_EVENTS``)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} events of the organisation's pathways")
        self.count = count


async def _org_events(conn: asyncpg.Connection, org_id: str) -> list[Event]:
    """The organisation's pathway events, parsed; ``TooManyEvents`` past the bound."""
    n = await count_org_events(conn, org_id, PATHWAY_EVENT_TYPES)
    if n > MAX_FOLD_EVENTS:
        raise TooManyEvents(n)
    payloads = await org_payloads(conn, org_id, PATHWAY_EVENT_TYPES)
    return await asyncio.to_thread(_parse, payloads)


@dataclass(frozen=True)
class Context:
    """What the engine needs of an organisation: its pathway versions (the built-in and
    the published ones) and the licence-gated instruments it holds at ``as_of``."""

    versions: dict[str, Pathway]
    licensed: frozenset[str]
    as_of: dt.datetime


async def org_versions(conn: asyncpg.Connection, org_id: str) -> dict[str, Pathway]:
    """The versions the organisation's episodes may name: the built-in and its published."""
    known = builtin()
    for stored in await published_versions(conn, org_id):
        known[stored.pathway.key] = stored.pathway
    return known


async def context(conn: asyncpg.Connection, org_id: str, as_of: dt.datetime) -> Context:
    known = await org_versions(conn, org_id)
    held = licensed(org_id, as_of, [a for a, _ in await activations(conn, org_id)])
    return Context(known, held, as_of)


def _parse(payloads: list[str]) -> list[Event]:
    return [parse_event_json(p) for p in payloads]


# --- one patient ------------------------------------------------------------------------


def _score_rows(v: EpisodeView, events: list[Event]) -> list[dict[str, Any]]:
    """Each valid primary score of the episode with its change from the baseline."""
    p = primary_scores(events, v.episode.start_date, v.pathway, v.instrument)
    marks = {
        s.event_id: name
        for name, s in (("final", p.final), ("week 4", p.week4), ("baseline", p.baseline))
        if s is not None
    }
    rows = []
    for s in p.scores:
        delta = None if v.baseline is None else change(v.instrument, v.baseline.value, s.value)
        rows.append(
            {
                "x": int(s.occurred_at.timestamp()),
                "date": s.date.isoformat(),
                "score": round_1(s.value),
                "change": None if delta is None else round_1(delta),
                "mcid": None if delta is None else delta >= INSTRUMENTS[v.instrument].mcid,
                "timepoint": marks.get(s.event_id, ""),
            }
        )
    return rows


def _episode_panel(v: EpisodeView, events: list[Event]) -> dict[str, Any]:
    inst = INSTRUMENTS[v.instrument]
    baseline = None if v.baseline is None else v.baseline.value
    # the score that reaches the MCID from the baseline, in the direction of improvement
    target = None
    if baseline is not None:
        target = baseline - inst.mcid if inst.better == "lower" else baseline + inst.mcid
    row = episode_row(v)
    return {
        "episode_id": v.episode.episode_id,
        "pathway": v.pathway.key,
        "instrument": inst.name,
        "instrument_id": inst.id,
        "better": inst.better,
        "mcid": round_1(inst.mcid),
        "baseline": None if baseline is None else round_1(baseline),
        "target": None if target is None else round_1(target),
        "stage": stage(v),
        "scores": _score_rows(v, events),
        "tasks": [t.output() for t in v.tasks],
        "open_tasks": [t.output() for t in v.tasks if t.status in ("open", "overdue")],
        "decisions": [d.output() for d in v.decisions],
        "change": row["change"],
        "mcid_reached": v.mcid_reached,
    }


def stage(v: EpisodeView) -> str:
    """Where the episode is on its pathway, as a clinician says it: ended (with the exit
    reason), paused, or the last decision taken, else the timepoint it is at."""
    if v.exit_reason is not None:
        return f"ended: {v.exit_reason.replace('_', ' ')}"
    if v.episode.paused_on(v.today):
        return "paused"
    last = next((d for d in reversed(v.decisions) if d.decision != "resume"), None)
    if last is not None and last.decision == "step_up":
        return f"stepped up on {last.on} ({last.reason})"
    if last is not None and last.decision == "discharge_ready":
        return f"ready for discharge since {last.on}"
    day = (v.today - v.episode.start_date).days
    if v.baseline is None:
        return f"day {day}: baseline"
    if day < v.pathway.timepoints.week4.days[0]:
        return f"day {day}: after the baseline"
    return f"day {day}: week 4 and after"


def patient_panels(
    org_id: str, patient_id: str, payloads: list[str], ctx: Context
) -> tuple[list[dict[str, Any]], list[str]]:
    """One patient's episodes on their pathways, newest start first (pure: one patient's
    events), and the episodes left out (their version unknown)."""
    events = [
        e
        for e in _parse(payloads)
        if e.type in PATHWAY_EVENT_TYPES and e.patient_key == (org_id, patient_id)
    ]
    eps, missing = views(events, ctx.as_of, ctx.versions, ctx.licensed)
    facts = PatientFacts.of(e for e in events if e.occurred_at < ctx.as_of)
    panels = [_episode_panel(v, facts.by_episode.get(v.episode.episode_id, [])) for v in eps]
    panels.sort(key=lambda p: p["episode_id"])
    order = {v.episode.episode_id: v.episode.start_date for v in eps}
    panels.sort(key=lambda p: order[p["episode_id"]], reverse=True)
    return panels, missing


async def patient_outcomes(
    conn: asyncpg.Connection, org_id: str, patient_id: str, payloads: list[str], now: dt.datetime
) -> tuple[list[dict[str, Any]], list[str]]:
    """The patient page's pathway panels (the caller has read and audits the payloads)."""
    ctx = await context(conn, org_id, now)
    return await asyncio.to_thread(patient_panels, org_id, patient_id, payloads, ctx)


CareKind = Literal["CarePlan", "Task"]


def care_resources(
    org_id: str, patient_id: str, payloads: list[str], ctx: Context, kind: CareKind
) -> list[dict[str, Any]]:
    """One patient's episodes as FHIR CarePlans or Tasks as of ``ctx.as_of`` (pure: the
    patient's events), then an OperationOutcome naming the episodes left out (their pathway
    version unknown), if any."""
    events = [
        e
        for e in _parse(payloads)
        if e.type in PATHWAY_EVENT_TYPES and e.patient_key == (org_id, patient_id)
    ]
    eps, missing = views(events, ctx.as_of, ctx.versions, ctx.licensed)
    found = care_plans(eps) if kind == "CarePlan" else tasks(eps)
    return [*found, *([missing_outcome(missing)] if missing else [])]


async def patient_care(
    conn: asyncpg.Connection, org_id: str, patient_id: str, now: dt.datetime, kind: CareKind
) -> tuple[list[dict[str, Any]], int]:
    """``GET /fhir/CarePlan|Task?patient=``: the resources, and how many stored events they
    stand on (the caller checks the scope and audits the read)."""
    types = sorted(PATHWAY_EVENT_TYPES)
    payloads = await clinical_payloads(conn, org_id, patient_id, types, None, None)
    ctx = await context(conn, org_id, now)
    found = await asyncio.to_thread(care_resources, org_id, patient_id, payloads, ctx, kind)
    return found, len(payloads)


async def plan_definitions(conn: asyncpg.Connection, org_id: str) -> list[dict[str, Any]]:
    """The PlanDefinition of every version the organisation's episodes may name: the
    built-in ones and those it published, by id then version."""
    known = await org_versions(conn, org_id)
    ordered = sorted(known.values(), key=lambda p: (p.id, p.version))
    return [plan_definition(p.model_dump()) for p in ordered]


# --- the organisation -------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeReport:
    as_of: dt.datetime
    groups: dict[GroupBy, list[dict[str, object]]]  # REPORT_BY's reports
    patient_ids: list[str]  # whose episodes it stands on (the audit row names them)
    pending: int = 0  # patients whose latest events the worker's refresh has still to fold


async def outcome_report(conn: asyncpg.Connection, org_id: str, now: dt.datetime) -> OutcomeReport:
    """The organisation's report by pathway version, clinician and body region over the
    outcome rows the worker keeps (``streams.services.refresh``): the same rows as ``rtm
    outcomes report --by …`` over its events as of their refresh."""
    stored = await episode_outcomes(conn, org_id)
    rows = [o.row for o in stored]
    groups = {by: report(rows, by) for by in REPORT_BY}
    patients = sorted({r.patient_id for r in rows})
    return OutcomeReport(now, groups, patients, await pending(conn, org_id))


def default_source(versions: dict[str, Pathway]) -> str:
    return DEFAULT_PATHWAY if DEFAULT_PATHWAY in versions else min(versions)


async def draft_diff(
    conn: asyncpg.Connection, org_id: str, now: dt.datetime, source: str, draft: Pathway
) -> tuple[list[dict[str, object]], list[str]]:
    """``rtm pathways diff`` of the organisation's episodes from version ``source`` (one of
    its versions) to ``draft``: the changed episodes, then the counts; and the patients of
    the changed episodes. Nothing is stored: no task, alert, bill or assignment."""
    ctx = await context(conn, org_id, now)
    if source not in ctx.versions:
        raise KeyError(source)
    events = await _org_events(conn, org_id)
    rows = await asyncio.to_thread(diff, events, now, ctx.versions[source], draft, ctx.licensed)
    changed = {str(r["episode_id"]) for r in rows if "episode_id" in r}
    patients = sorted({e.patient_id for e in events if getattr(e, "episode_id", None) in changed})
    return rows, patients
