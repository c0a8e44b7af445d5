"""Views derived off the ingest path (issues 19 and 20): claim-line readiness and per-episode
outcome rows, refreshed by the worker's refresh timer, not in the ingest batch.

A batch marks the patients its new events touched (``streams.db.refresh.mark``, one
statement in its transaction). ``refresh_once`` claims up to ``limit`` marked patients whose
marks have settled (a patient streaming a replay is folded once it pauses, or after
``max_wait``), reads their stored billing states, readiness facts and care-pathway events,
decides (pure: ``decide_readiness``, ``patient_pathways``) and writes the lines, the rows
and the marks served in one transaction; the worker runs all of it in a process of its own
at a lower priority (agents/refresh.py), so the ingest path keeps its loop and the cores. A
mark made meanwhile keeps its patient to do. The views are as of the worker's clock; ``rtm
billing readiness`` and ``rtm outcomes episodes`` over the same events as of the same
instant give the same lines and rows (tests/integration/test_readiness_stream.py,
test_pathway_stream.py).

A tick that moves a patient's day marks it too (the ingest step marks the patients whose
rule state moved), so an open episode's row and its pathway alerts follow the calendar."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Protocol
from zoneinfo import ZoneInfo

from alerts.models import AlertChange
from alerts.rollup import rollups
from alerts.state import PatientState
from outcomes.licences import Activation, licensed
from pathways.alerting import pathway_alert_changes
from pathways.engine import EpisodeView, PatientPathways
from pathways.model import Pathway, builtin
from pathways.offline import collect
from pathways.outcomes import outcome_row
from schemas.events import PatientKey, parse_event_json
from streams.clock import Clock
from streams.db.alert_states import StateConflict
from streams.db.batch import BatchWrite
from streams.db.outcome_rows import EpisodeOutcome
from streams.db.readiness import ReadinessLoad, ReadinessWrite
from streams.services.readiness import decide_readiness

_TICK = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Tuning:
    """How the refresh takes its work (RTM_WORKER_REFRESH_*)."""

    limit: int = 100  # patients per claim
    settle: dt.timedelta = dt.timedelta(seconds=5)  # no mark for this long: settled
    max_wait: dt.timedelta = dt.timedelta(minutes=5)  # a first mark this old: due anyway
    stale: dt.timedelta = dt.timedelta(minutes=5)  # a claim this old: its refresher died
    budget_s: float = 0.5  # claims per timer run until this much time has passed
    busy_limit: int = 10  # while ingestion is busy: one claim of this many per timer run


class RefreshSession(Protocol):
    """One refresh's reads and its write, in one transaction."""

    async def readiness_load(self, touched: Sequence[PatientKey]) -> ReadinessLoad: ...

    async def pathway_payloads(self, patients: Sequence[PatientKey]) -> list[str]: ...

    async def published_pathways(self, org_id: str) -> list[Pathway]: ...

    async def activations(self, org_id: str) -> list[Activation]: ...

    async def alert_states(self, patients: Sequence[PatientKey]) -> dict[PatientKey, PatientState]:
        """The patients' stored rule states (none for a patient without one); the write
        refuses one changed since (``StateConflict``)."""

    async def pathway_alert_ids(self, patients: Sequence[PatientKey]) -> dict[PatientKey, set[str]]:
        """The ids of the pathway alerts stored for each patient (fired before)."""

    async def write_refresh(
        self,
        readiness: ReadinessWrite,
        patients: Sequence[PatientKey],
        outcomes: Sequence[EpisodeOutcome],
        claimed_at: dt.datetime,
        alerts: BatchWrite,
    ) -> tuple[int, ...]:
        """Write it all in the session's transaction; the rtm.alerts outbox's seq of each
        alert change, in order."""
        ...


class RefreshStore(Protocol):
    async def claim(
        self, limit: int, settle: dt.timedelta, max_wait: dt.timedelta, stale: dt.timedelta
    ) -> tuple[list[PatientKey], dt.datetime | None]: ...  # and the claim's stamp

    def refresh_session(self) -> AbstractAsyncContextManager[RefreshSession]: ...

    async def release(self, patients: Sequence[PatientKey], claimed_at: dt.datetime) -> None:
        """Give the claimed patients back, to do again."""

    def partition_of(self, key: PatientKey) -> int: ...


@dataclass(frozen=True)
class PathwayContext:
    """An organisation's pathway versions (built-in and published) and the licence-gated
    instruments it holds at the refresh's instant."""

    versions: Mapping[str, Pathway]
    licensed: frozenset[str]


@dataclass
class PathwayDecision:
    """The refresh's care-pathway part: the episodes' rows and the pathway alerts raised on
    the patients' rule states (``states``: the changed ones)."""

    outcomes: list[EpisodeOutcome]
    states: dict[PatientKey, PatientState]
    changes: list[AlertChange]


def patient_pathways(
    payloads: Sequence[str],
    contexts: Mapping[str, PathwayContext],
    states: Mapping[PatientKey, PatientState],
    fired: Mapping[PatientKey, set[str]],
    now: dt.datetime,
) -> PathwayDecision:
    """Each patient's episodes, their rows and the alerts they raise (``fired``: the
    patient's pathway alert ids stored before, each fires once).

    The rows are as of ``now`` (or the patient's rules clock, if that is later): the report
    is the calendar's, as ``rtm outcomes episodes`` as of the same instant. The alerts are
    as of the patient's rules clock (the newest event or tick its rule state has seen), as
    ``rtm alerts evaluate`` raises them after the rules' tick: a pathway's alerts move with
    the rules' time. A pathway reads the patient-local date, so the two are one fold unless
    the two instants fall on different days or events lie between them."""
    out = PathwayDecision([], {}, [])
    events = [parse_event_json(p) for p in payloads]
    for key, pathway in sorted(collect(events).items()):
        ctx = contexts[key[0]]
        state = states.get(key)
        clock = state.clock + _TICK if state is not None and state.clock is not None else None
        row_as_of = now if clock is None else max(now, clock)  # events at the clock count
        eps, _missing = pathway.as_of(row_as_of, ctx.versions, ctx.licensed)
        out.outcomes += [
            EpisodeOutcome(
                outcome_row(v),
                tuple(t.output() for t in v.tasks),
                tuple(d.output() for d in v.decisions),
                row_as_of,
            )
            for v in eps
        ]
        if state is None or clock is None:
            continue
        if not _same_view(pathway, eps, clock, row_as_of):
            eps, _missing = pathway.as_of(clock, ctx.versions, ctx.licensed)
        s = state.copy_for_update()
        known = set(fired.get(key, ()))
        changes = pathway_alert_changes(s, eps, {v.episode.episode_id: known for v in eps})
        if changes:
            out.states[key] = s
            out.changes += changes
    return out


def _same_view(
    pathway: PatientPathways, eps: Sequence[EpisodeView], a: dt.datetime, b: dt.datetime
) -> bool:
    """Whether the episodes as of ``a`` are those as of ``b`` (``a <= b``): no event between
    them and the same local date in every episode's zone."""
    if a == b:
        return True
    if any(a <= e.occurred_at < b for e in pathway.events.values()):
        return False
    return all(
        a.astimezone(z).date() == b.astimezone(z).date()
        for z in {ZoneInfo(v.episode.timezone) for v in eps}
    )


def lower_priority(parent: int) -> None:
    """A refresh process's initializer: it yields the cores to the ingest path (the worker's
    loop, the gateway, PostgreSQL) whenever they want them, and it ends within a second of
    the worker that started it, even one killed outright, instead of keeping its connections
    open as an orphan. (The pool's pipes never close for it: the child holds both ends of
    its call queue. Linux's parent-death signal did not end it when the worker was killed;
    tests/integration/test_ingest.py kills one.) ``parent``: the worker's pid, given by it, so
    a child that starts after its worker died ends too."""
    os.nice(10)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)  # the worker is gone: nothing will ask for or read a result

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


async def _context(s: RefreshSession, org_id: str, now: dt.datetime) -> PathwayContext:
    versions = builtin()
    for p in await s.published_pathways(org_id):
        versions[p.key] = p
    return PathwayContext(versions, licensed(org_id, now, await s.activations(org_id)))


@dataclass
class Committed:
    """What refresh runs committed that the worker acts on: the rtm.alerts outbox's seqs of
    the alert changes, in order (it sends them: the refresh's process has no producer),
    and the patients whose rule states were written (it takes them into its state cache)."""

    seqs: list[int] = field(default_factory=list)
    states: list[PatientKey] = field(default_factory=list)


async def refresh_once(
    store: RefreshStore,
    clock: Clock,
    tuning: Tuning = Tuning(),
    committed: Committed | None = None,
) -> int:
    """Claim, refresh and write one set of patients; returns how many (0: none due), and
    adds to ``committed`` what the worker acts on. The worker runs it in a process of its own
    (agents/refresh.py), so the pure part runs here, in line."""
    t = tuning
    patients, claimed_at = await store.claim(t.limit, t.settle, t.max_wait, t.stale)
    if not patients or claimed_at is None:
        return 0
    now = clock.now()
    try:
        async with store.refresh_session() as s:
            load = await s.readiness_load(patients)
            payloads = await s.pathway_payloads(patients)
            orgs = sorted({k[0] for k in patients})
            contexts = {org: await _context(s, org, now) for org in orgs}
            states = await s.alert_states(patients)
            fired = await s.pathway_alert_ids(patients)
            readiness = decide_readiness(load, now)
            paths = patient_pathways(payloads, contexts, states, fired, now)
            alerts = BatchWrite(
                changes=tuple(paths.changes),
                rollups=rollups(paths.states, [], before=states),
                states=paths.states,
                partitions={k: store.partition_of(k) for k in paths.states},
            )
            seqs = await s.write_refresh(readiness, patients, paths.outcomes, claimed_at, alerts)
    except StateConflict:  # a batch wrote a patient's rule state meanwhile: again, later
        await store.release(patients, claimed_at)
        return 0
    if committed is not None and not alerts.empty:  # written only then
        committed.seqs.extend(seqs)
        committed.states.extend(alerts.states)
    return len(patients)


async def refresh_due(
    store: RefreshStore,
    clock: Clock,
    tuning: Tuning = Tuning(),
    busy: bool = False,
    committed: Committed | None = None,
) -> int:
    """The timer's run: open episodes' old rows marked, then claims until none is due or
    the run's budget is spent; returns the patients refreshed. While ingestion is ``busy``
    only marks older than ``max_wait`` are due, ``busy_limit`` of them per run (a replay's
    or a burst's patients are folded once it pauses; under a sustained stream the views lag
    by about ``max_wait`` and the refresh takes a bounded share of the cores)."""
    if busy:
        t = replace(tuning, settle=tuning.max_wait, limit=tuning.busy_limit)
        return await refresh_once(store, clock, t, committed)
    done = 0
    started = asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - started < tuning.budget_s:
        n = await refresh_once(store, clock, tuning, committed)
        if not n:
            break
        done += n
    return done
