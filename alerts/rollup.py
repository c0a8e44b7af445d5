"""Per-patient rollups for the clinician worklist (pure).

The dashboard's first page must not read the raw events of thousands of patients, so the
worker keeps, per patient, what the worklist shows: the newest patient-data activity, the
latest pain report and the baseline it is compared with, open alerts by severity and by the
kinds the need order uses, and trailing 7-day adherence by patient-local day. They are
computed here from the engine's own post-batch state (``alerts.batch.apply_batch``) and the
batch's new events, and written in the batch's transaction (``streams.db.rollups``), so a
rollup is never ahead of or behind the alerts it counts.

Choices:
- Open alerts are the state's unresolved alerts whose status is ``open`` (acknowledged ones
  are handled, resolved ones have left the state).
- Adherence rows are written for the last ``ADHERENCE_DAYS`` patient-local days up to the
  newest day the state knows (its newest data day, or the day of its clock in the latest
  episode's zone once ticks move it on) and for every older day the batch changed
  (``rewrite_since``: days a jump in time skipped, the trailing windows of a late
  completion, every day of an episode whose ``episode.started`` arrived late), each only
  while its whole trailing window is in the state: prune keeps completions only from
  ``alerts.rules.completions_kept_from`` on (the adherence window before the day cursor),
  so once a tick moves the cursor, older days keep the value they had when they were
  inside it (``rtm rollups backfill`` recomputes every day from the stored events). Before
  the timer has moved a day cursor (the property test in
  tests/unit/test_adherence_arrival_order.py) the stored rows are ``rtm adherence
  evaluate``'s in any arrival order; after it, a batch rewrites only from the newest cursor
  on (``rewritable_from``: older windows may have lost sessions to earlier prunes), so an
  enrolment that arrives after the timer moved past its days leaves those to backfill.
- Pain trend: the latest report against the median of the state's other reports within
  the baseline horizon (the engine keeps 7 local days before the newest report).
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from alerts.adherence import Completion, covered_days, daily_rows, rows_on
from alerts.models import DEFAULT_CONFIG
from alerts.pauses import HOLD_EVENT_TYPES, Hold, hold_of, with_pauses
from alerts.rules import completions_kept_from
from alerts.state import PatientState, completion_key
from schemas.episodes import EPISODE_EVENT_TYPES, EpisodeBook, EpisodeEvent, fold_book
from schemas.events import (
    DEFAULT_ORG,
    PATIENT_DATA_TYPES,
    EpisodeEnded,
    EpisodeStarted,
    Event,
    ExerciseCompleted,
    PatientKey,
    ProgramUpdated,
)

ADHERENCE_DAYS = 8  # today and the 7 days before: enough for a 7-point sparkline

# The worklist's triage tiers (issue 17): a red flag or a fall above every other critical
# alert (pain >= 7), then the other criticals, then high, then the need kinds; a patient's
# tier is that of their most urgent open alert, and inside a tier who has waited longest
# (the oldest open alert of that tier) comes first. One mapping, used by the stream's
# rollups and by GET /v1/worklist's query (tier_sql).
TIER_URGENT_KINDS = ("red_flag", "fall")
TIER_NAMES = (
    "red flag or fall",
    "critical",
    "high",
    "adherence low",
    "inactivity",
    "billing at risk",
    "other",
)
NO_TIER = len(TIER_NAMES)  # no open alert
# Every open alert of the patient snoozed (as a reader's clock sees it): out of the triage
# tiers, after them, with the patients without an open alert (before them: by snooze end).
SNOOZED_TIER = NO_TIER
_TIER_KINDS = {"adherence_low": 3, "inactivity": 4, "billing_at_risk": 5}


def alert_tier(kind: str, severity: str) -> int:
    """The triage tier of one open alert (0 most urgent)."""
    if kind in TIER_URGENT_KINDS:
        return 0
    if severity == "critical":
        return 1
    if severity == "high":
        return 2
    return _TIER_KINDS.get(kind, 6)


def tier_sql(kind: str, severity: str) -> str:
    """``alert_tier`` as a SQL CASE over two column expressions (the same mapping)."""
    urgent = ", ".join(f"'{k}'" for k in TIER_URGENT_KINDS)
    kinds = " ".join(f"WHEN {kind} = '{k}' THEN {t}" for k, t in _TIER_KINDS.items())
    return (
        f"CASE WHEN {kind} IN ({urgent}) THEN 0 WHEN {severity} = 'critical' THEN 1"
        f" WHEN {severity} = 'high' THEN 2 {kinds} ELSE 6 END"
    )


@dataclass(frozen=True, slots=True)
class PatientRollup:
    patient_id: str
    last_activity_at: dt.datetime | None  # newest patient-data occurred_at in this batch
    latest_pain: int | None
    latest_pain_at: dt.datetime | None
    pain_baseline: float | None
    open_critical: int
    open_high: int
    open_medium: int
    open_low: int
    open_adherence_low: int
    open_inactivity: int
    open_billing_at_risk: int
    open_alerts: int
    oldest_open: dt.datetime | None
    open_kinds: tuple[str, ...]
    org_id: str = DEFAULT_ORG
    # the flags of the open red_flag alerts (their details), so a red flag is named on the
    # worklist, not only "red flag"
    open_red_flags: tuple[str, ...] = ()
    tier: int = NO_TIER  # the triage tier of the most urgent open alert
    tier_since: dt.datetime | None = None  # the oldest open alert of that tier
    # open alerts a clinician snoozed (ended or not: a reader decides with its clock)
    open_snoozed: int = 0


@dataclass(frozen=True, slots=True)
class DailyAdherence:
    patient_id: str
    date: dt.date
    prescribed: float
    completed: int
    adherence_7d: float | None
    org_id: str = DEFAULT_ORG


@dataclass(frozen=True, slots=True)
class Rollups:
    patients: tuple[PatientRollup, ...]
    days: tuple[DailyAdherence, ...]
    # (org_id, patient_id, first): the patient's rows from ``first`` on are exactly those in
    # ``days`` (an episode event can take days out of every episode: a late episode.ended)
    cleared: tuple[tuple[str, str, dt.date], ...] = ()


def patient_rollup(state: PatientState, events: Sequence[Event]) -> PatientRollup:
    """The rollup of one patient after a batch (``events``: that patient's new events)."""
    activity = [e.occurred_at for e in events if e.type in PATIENT_DATA_TYPES]
    pains = sorted(state.pain.values(), key=lambda p: p.occurred_at)
    latest = pains[-1] if pains else None
    baseline = None
    if latest is not None and len(pains) > 1:
        horizon = latest.local_date - dt.timedelta(days=7)
        prior = [p.score for p in pains[:-1] if p.local_date >= horizon]
        baseline = float(statistics.median(prior)) if prior else None
    # the open alerts' counts in one pass (a year's state may hold a dozen open alerts,
    # and every batch that touches the patient counts them)
    by_sev = dict.fromkeys(("critical", "high", "medium", "low"), 0)
    by_kind: dict[str, int] = {}
    kinds: set[str] = set()
    flags: set[str] = set()
    n_open = snoozed = 0
    tier, tier_since, oldest = NO_TIER, None, None
    for a in state.alerts.values():
        if a.status != "open":
            continue
        n_open += 1
        by_sev[a.severity] += 1
        by_kind[a.kind] = by_kind.get(a.kind, 0) + 1
        kinds.add(a.kind)
        if a.kind == "red_flag":
            flags.update(a.details)
        if a.snoozed_until is not None:
            snoozed += 1
        at = a.fired_at
        if oldest is None or at < oldest:
            oldest = at
        t = alert_tier(a.kind, a.severity)
        if t < tier:
            tier, tier_since = t, at
        elif t == tier and tier_since is not None and at < tier_since:
            tier_since = at
    return PatientRollup(
        patient_id=state.patient_id,
        last_activity_at=max(activity, default=None),
        latest_pain=latest.score if latest else None,
        latest_pain_at=latest.occurred_at if latest else None,
        pain_baseline=baseline,
        open_critical=by_sev["critical"],
        open_high=by_sev["high"],
        open_medium=by_sev["medium"],
        open_low=by_sev["low"],
        open_adherence_low=by_kind.get("adherence_low", 0),
        open_inactivity=by_kind.get("inactivity", 0),
        open_billing_at_risk=by_kind.get("billing_at_risk", 0),
        open_alerts=n_open,
        oldest_open=oldest,
        open_kinds=tuple(sorted(kinds)),
        org_id=state.org_id,
        open_red_flags=tuple(sorted(flags)),
        tier=tier,
        tier_since=tier_since,
        open_snoozed=snoozed,
    )


def episode_today(book: EpisodeBook, now: dt.datetime) -> dt.date | None:
    """The patient-local date of ``now`` in the latest episode's zone, no later than its
    end date (None without an episode): the day adherence runs to."""
    episodes = list(book.episodes.values())
    if not episodes:
        return None
    latest = max(episodes, key=lambda e: (e.start_date, e.episode_id))
    today = now.astimezone(ZoneInfo(latest.timezone)).date()
    return today if latest.end_date is None else min(today, latest.end_date)


def newest_day(state: PatientState, now: dt.datetime | None = None) -> dt.date | None:
    """The newest patient-local day the state knows of (see the module's choices); with
    ``now`` (a reader's clock: the API, the patient page) that instead of the state's."""
    days = [r.local_date for r in state.data.values()]
    days += [c.local_date for c in state.completions.values()]
    clock = now if now is not None else state.clock
    today = episode_today(state.book, clock) if clock is not None else None
    if today is not None:
        days.append(today)
    return max(days, default=None)


def daily_adherence(
    state: PatientState, days: int = ADHERENCE_DAYS, since: dt.date | None = None
) -> list[DailyAdherence]:
    """Trailing 7-day adherence on each episode day from the last ``days`` (or from
    ``since`` when earlier: the days a batch changed, ``rewrite_since``) up to
    ``newest_day``: the rows of ``alerts.adherence.daily_rows`` (``rtm adherence
    evaluate``, ``GET /v1/patients/{id}/adherence``) for those days."""
    return adherence_from(state, days, since)[1]


def adherence_from(
    state: PatientState, days: int = ADHERENCE_DAYS, since: dt.date | None = None
) -> tuple[dt.date | None, list[DailyAdherence]]:
    """``daily_adherence``, with the first day it computed (None: none)."""
    last = newest_day(state)
    if last is None:
        return None, []
    first = last - dt.timedelta(days=days - 1)
    if since is not None and since < first:
        first = max(since, rewritable_from(state) or since)
    # prune has dropped the completions before this: a window reaching before it would
    # count too few (the row keeps what it was written with while it was computable)
    kept = completions_kept_from(state, DEFAULT_CONFIG)
    if kept is not None:
        first = max(first, kept + dt.timedelta(days=DEFAULT_CONFIG.adherence_window_days - 1))
    covered = covered_days(state.book, last, first, last)
    return first, [
        DailyAdherence(
            state.patient_id,
            r.date,
            float(r.prescribed),
            r.completed,
            None if r.adherence_7d is None else float(r.adherence_7d),
            state.org_id,
        )
        for r in rows_on(state.patient_id, state.completions, state.book, covered)
    ]


def rewritable_from(state: PatientState) -> dt.date | None:
    """The oldest day a batch may rewrite besides the last days (None: any). Once the timer
    has moved a day cursor, earlier prunes may have dropped completions older than the
    adherence window before it, even where ``completions_kept_from`` reaches back further
    now (a late episode adds an earlier cursor): a row is rewritten only if its window
    starts after the newest cursor minus the adherence window (what every prune kept)."""
    if not state.day_cursor:
        return None
    return max(state.day_cursor.values()) - dt.timedelta(days=1)


def rewrite_since(
    before: PatientState | None, after: PatientState, events: Iterable[Event]
) -> dt.date:
    """The oldest day whose adherence row a batch may have changed: the day after the
    newest day known before it (the days a jump in time skipped), a new completion's day
    (its trailing windows), the start of an episode a new episode event shapes (a late
    ``episode.started`` rewrites every day it covers), the day of a hold (a pause, a
    resume, a fall: ``alerts.pauses``); ``dt.date.min`` for a patient
    without a state before the batch."""
    prev = newest_day(before) if before is not None else None
    if prev is None:
        return dt.date.min
    since = prev + dt.timedelta(days=1)
    book = after.book
    for e in events:
        if isinstance(e, ExerciseCompleted):
            since = min(since, e.local_date)
        elif isinstance(e, EpisodeStarted | ProgramUpdated | EpisodeEnded):
            ep = book.episodes.get(e.episode_id)
            since = min(since, e.local_date if ep is None else min(ep.start_date, e.local_date))
        elif hold_of(e) is not None:  # a late pause, resume or fall: the pauses from its day
            since = min(since, e.local_date)
    return since


# What adherence_history reads of the stored events.
HISTORY_EVENT_TYPES: tuple[str, ...] = tuple(
    sorted({*PATIENT_DATA_TYPES, *EPISODE_EVENT_TYPES, *HOLD_EVENT_TYPES})
)


def adherence_history(
    patient_id: str,
    events: Iterable[Event],
    org_id: str = DEFAULT_ORG,
    now: dt.datetime | None = None,
) -> list[DailyAdherence]:
    """Every episode day's row of one patient (of ``org_id``) from all their stored
    events (the backfill of ``patient_daily_adherence``): the same functions as the
    stream's rows and ``GET /v1/patients/{id}/adherence`` (``alerts.adherence.daily_rows``),
    from the episode start up to its end, or for an open episode up to the patient's newest
    data day or, with ``now``, the patient-local today when later (``episode_today``).
    Arrival order does not matter (completions by key, episodes folded by event time)."""
    completions: dict[str, Completion] = {}
    episode_events: list[EpisodeEvent] = []
    holds: list[Hold] = []  # the pauses of the programs
    last: dt.date | None = None
    for e in events:
        if e.patient_key != (org_id, patient_id):
            continue
        if isinstance(e, ExerciseCompleted):
            c = Completion.of(e)
            key = completion_key(c)
            prev = completions.get(key)
            if prev is None or c.occurred_at < prev.occurred_at:  # as alerts.rules keeps it
                completions[key] = c
        if isinstance(e, EpisodeStarted | ProgramUpdated | EpisodeEnded):
            episode_events.append(e)
        if (hold := hold_of(e)) is not None:
            holds.append(hold)
        if e.type in PATIENT_DATA_TYPES:
            day = e.occurred_at.date()
            last = day if last is None or day > last else last
    book, _ = fold_book(episode_events)
    book = with_pauses(book, holds)
    today = episode_today(book, now) if now is not None else None
    if today is not None and (last is None or today > last):
        last = today
    return [
        DailyAdherence(
            patient_id,
            r.date,
            float(r.prescribed),
            r.completed,
            None if r.adherence_7d is None else float(r.adherence_7d),
            org_id,
        )
        for r in daily_rows(patient_id, completions, book, last)
    ]


def rollups(
    states: Mapping[PatientKey, PatientState],
    new_events: Sequence[Event],
    before: Mapping[PatientKey, PatientState] | None = None,
) -> Rollups:
    """Rollups of every patient whose state the batch touched. With ``before`` (the states
    the batch started from) the adherence rows are those of ``ADHERENCE_DAYS`` and every
    older day the batch changed (``rewrite_since``), so the stored rows are
    ``daily_rows``' whatever the arrival order; without it, the last days only."""
    by_patient: dict[PatientKey, list[Event]] = {}
    for e in new_events:
        by_patient.setdefault(e.patient_key, []).append(e)
    patients, days, cleared = [], [], []
    for key in sorted(states):
        state = states[key]
        events = by_patient.get(key, [])
        patients.append(patient_rollup(state, events))
        since = None if before is None else rewrite_since(before.get(key), state, events)
        first, rows = adherence_from(state, since=since)
        days.extend(rows)
        if first is not None and any(e.type in EPISODE_EVENT_TYPES for e in events):
            cleared.append((state.org_id, state.patient_id, first))
    return Rollups(tuple(patients), tuple(days), tuple(cleared))


def pain_baselines(reports: Sequence[tuple[dt.datetime, int]], days: int = 7) -> list[float | None]:
    """For each pain report (occurred_at in the patient's offset, score), oldest first: the
    median of the reports in the ``days`` patient-local days before it (the pain chart's
    baseline line); None while there are none."""
    out: list[float | None] = []
    for i, (at, _) in enumerate(reports):
        start = at.date() - dt.timedelta(days=days)
        prior = [s for t, s in reports[:i] if start <= t.date() and t < at]
        out.append(float(statistics.median(prior)) if prior else None)
    return out
