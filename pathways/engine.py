"""Each episode's primary scores, tasks and decisions (docs/pathways-and-outcomes.md), pure.

State is foldable event by event: ``PatientPathways.apply(event)`` keeps the events a
pathway reads, keyed by event_id (the first arrival wins), and ``as_of(T, …)`` is a pure
view of every episode of the patient as of the instant T (events at or after T ignored).
Nothing depends on arrival order: every choice orders by (``occurred_at``, ``event_id``).

- Membership as events.md: an event belongs to the episode it names if that covers its
  patient-local date, else to the one active on that date (``EpisodeBook.resolve``).
- Day n of an episode is its start date + n; T is the as-of instant's date in the episode's
  timezone.
- Pauses are ``alerts.pauses``' (one definition, shared with adherence and the alerts);
  adherence_7d is ``alerts.adherence``'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal
from zoneinfo import ZoneInfo

from alerts.adherence import Completion, adherence_on, adherence_series, sessions_by_day
from alerts.pauses import Hold, fold_pauses, hold_of, with_pauses
from outcomes.instruments import INSTRUMENTS, change, score_form
from pathways.model import DEFAULT_PATHWAY, Pathway
from schemas.episodes import EPISODE_EVENT_TYPES, Episode, EpisodeBook, ProgramPause, fold_book
from schemas.events import (
    EXIT_REASONS,
    PATIENT_DATA_TYPES,
    AssessmentCompleted,
    ClinicianTimeLogged,
    EpisodeEnded,
    EpisodeStarted,
    Event,
    ExerciseCompleted,
    PainReported,
    ProgramUpdated,
    VisitCompleted,
)

# the event types a pathway reads
PATHWAY_EVENT_TYPES: frozenset[str] = frozenset(
    {
        *EPISODE_EVENT_TYPES,
        *PATIENT_DATA_TYPES,
        "assessment.completed",
        "visit.completed",
        "clinician.time_logged",
        "program.paused",
        "program.resumed",
    }
)

TaskKind = Literal[
    "baseline_prom",
    "week4_prom",
    "week4_review",
    "in_person_visit",
    "pause_review",
    "discharge_review",
]
Status = Literal["done", "cancelled", "overdue", "open"]
DecisionKind = Literal["step_up", "pause", "resume", "discharge_ready", "end"]


@dataclass(frozen=True)
class Score:
    """One valid primary score: its exact value, patient-local date and order."""

    occurred_at: dt.datetime
    event_id: str
    value: Fraction

    @property
    def date(self) -> dt.date:
        return self.occurred_at.date()

    @property
    def order(self) -> tuple[dt.datetime, str]:
        return (self.occurred_at, self.event_id)


@dataclass(frozen=True)
class Task:
    kind: TaskKind
    due_on: dt.date
    done_on: dt.date | None
    status: Status

    def output(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "due_on": self.due_on.isoformat(),
            "done_on": None if self.done_on is None else self.done_on.isoformat(),
            "status": self.status,
        }


@dataclass(frozen=True)
class Decision:
    on: dt.date
    decision: DecisionKind
    reason: str

    def output(self) -> dict[str, object]:
        return {"on": self.on.isoformat(), "decision": self.decision, "reason": self.reason}


@dataclass(frozen=True)
class EpisodeView:
    """One episode as of T: who, the pathway, the scores, tasks and decisions, and what the
    outcome row needs."""

    episode: Episode
    org_id: str
    body_region: str
    pathway: Pathway
    instrument: str
    today: dt.date  # T, in the episode's timezone
    exit_reason: str | None
    baseline: Score | None
    week4: Score | None
    final: Score | None
    tasks: tuple[Task, ...]
    decisions: tuple[Decision, ...]
    visits: int
    adherence: Fraction | None
    dropped_out: bool

    @property
    def change(self) -> Fraction | None:
        if self.baseline is None or self.final is None:
            return None
        return change(self.instrument, self.baseline.value, self.final.value)

    @property
    def mcid_reached(self) -> bool | None:
        delta = self.change
        return None if delta is None else delta >= INSTRUMENTS[self.instrument].mcid


def exit_reason(event: EpisodeEnded) -> str:
    """The exit reason of an episode.ended: an absent or unlisted reason is ``other``."""
    return event.reason if event.reason in EXIT_REASONS else "other"


def status_of(due: dt.date, done_on: dt.date | None, end: dt.date | None, today: dt.date) -> Status:
    """The first match: done, cancelled (ended and due >= E), overdue (due < T), open."""
    if done_on is not None:
        return "done"
    if end is not None and due >= end:
        return "cancelled"
    if due < today:
        return "overdue"
    return "open"


@dataclass
class PatientPathways:
    """The events a pathway reads of one patient (within one organisation), by event_id."""

    patient_id: str
    org_id: str
    events: dict[str, Event] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        """Keep one event (the first arrival of an event_id wins; others are ignored)."""
        if event.type in PATHWAY_EVENT_TYPES:
            self.events.setdefault(event.event_id, event)

    def as_of(
        self,
        as_of: dt.datetime,
        versions: Mapping[str, Pathway],
        licensed: frozenset[str] = frozenset(),
        override: Pathway | None = None,
    ) -> tuple[list[EpisodeView], list[str]]:
        """Every episode started before ``as_of``, as of then, by episode_id, and one
        message per episode left out because its pathway version is not in ``versions``.
        ``override`` replays every episode under that version instead of its own (``rtm
        pathways diff``)."""
        facts = PatientFacts.of(e for e in self.events.values() if e.occurred_at < as_of)
        views, missing = [], []
        for ep in sorted(facts.book.episodes.values(), key=lambda e: e.episode_id):
            start = facts.starts[ep.episode_id]
            pathway = override or versions.get(version_key(start))
            if pathway is None:
                missing.append(f"episode {ep.episode_id}: pathway {version_key(start)} unknown")
                continue
            today = as_of.astimezone(ZoneInfo(ep.timezone)).date()
            views.append(_view(facts, ep, start, pathway, licensed, today))
        return views, missing


def version_key(start: EpisodeStarted) -> str:
    """The ``id@version`` an episode is on (absent: the default, msk-default@1)."""
    return (
        DEFAULT_PATHWAY if start.pathway is None else f"{start.pathway.id}@{start.pathway.version}"
    )


def _order(e: Event) -> tuple[dt.datetime, str]:
    return (e.occurred_at, e.event_id)


@dataclass
class PatientFacts:
    """A patient's events as of T, sorted, with the episodes and pauses folded."""

    book: EpisodeBook  # the episodes with alerts.pauses' pauses (every hold)
    holds: list[Hold]
    starts: dict[str, EpisodeStarted]
    ends: dict[str, EpisodeEnded]
    counts: dict[dt.date, int]  # completed sessions per date (alerts.adherence)
    by_episode: dict[str, list[Event]]  # each episode's other events, in order

    @classmethod
    def of(cls, events: Iterable[Event]) -> PatientFacts:
        ordered = sorted(events, key=_order)
        shaping = [
            e for e in ordered if isinstance(e, EpisodeStarted | ProgramUpdated | EpisodeEnded)
        ]
        plain, _ = fold_book(shaping)
        holds = [h for e in ordered if (h := hold_of(e)) is not None]
        book = with_pauses(plain, holds)
        starts: dict[str, EpisodeStarted] = {}
        ends: dict[str, EpisodeEnded] = {}
        for e in shaping:
            if isinstance(e, EpisodeStarted) and e.episode_id in book.episodes:
                starts.setdefault(e.episode_id, e)
            elif isinstance(e, EpisodeEnded) and e.episode_id in book.episodes:
                ends.setdefault(e.episode_id, e)
        by_episode: dict[str, list[Event]] = {}
        for ev in ordered:
            ep = book.resolve(getattr(ev, "episode_id", None), ev.local_date)
            if ep is not None and ev.type not in EPISODE_EVENT_TYPES:
                by_episode.setdefault(ep.episode_id, []).append(ev)
        completions = {
            e.event_id: Completion.of(e) for e in ordered if isinstance(e, ExerciseCompleted)
        }
        counts = sessions_by_day(completions, book)
        return cls(book, holds, starts, ends, counts, by_episode)

    def adherence(self, day: dt.date) -> Fraction | None:
        return adherence_on(self.counts, self.book, day)


def _scores(events: list[Event], instrument: str) -> list[Score]:
    out = []
    for e in events:
        if isinstance(e, AssessmentCompleted) and e.instrument == instrument:
            scored = score_form(e.instrument, e.answers)
            if scored.score is not None:
                out.append(Score(e.occurred_at, e.event_id, scored.score))
    return out


def _first_on_days(scores: list[Score], start: dt.date, days: tuple[int, int]) -> Score | None:
    return next((s for s in scores if days[0] <= (s.date - start).days <= days[1]), None)


@dataclass(frozen=True)
class _Primary:
    scores: list[Score]
    baseline: Score | None
    week4: Score | None
    final: Score | None


def primary_scores(
    events: list[Event], start: dt.date, pathway: Pathway, instrument: str
) -> _Primary:
    """Baseline (first on the baseline days), week-4 (first on the week-4 days) and final
    (the last later than the baseline; a lone baseline has none)."""
    scores = _scores(events, instrument)
    baseline = _first_on_days(scores, start, pathway.timepoints.baseline.days)
    week4 = _first_on_days(scores, start, pathway.timepoints.week4.days)
    later = [s for s in scores if baseline is not None and s.order > baseline.order]
    return _Primary(scores, baseline, week4, later[-1] if later else None)


def _step_up(
    events: list[Event], ep: Episode, pathway: Pathway, instrument: str, p: _Primary
) -> Decision | None:
    """A baseline, a week-4 change below the MCID and a pain >= the threshold on the pain
    days: on the later of the week-4 date and the first such pain."""
    rule = pathway.step_up
    if p.baseline is None or p.week4 is None:
        return None
    if change(instrument, p.baseline.value, p.week4.value) >= INSTRUMENTS[instrument].mcid:
        return None
    pain = next(
        (
            e
            for e in events
            if isinstance(e, PainReported)
            and e.score >= rule.pain_at_least
            and rule.pain_days[0] <= (e.local_date - ep.start_date).days <= rule.pain_days[1]
        ),
        None,
    )
    if pain is None:
        return None
    on = max(p.week4.date, pain.local_date)
    return Decision(on, "step_up", f"no_mcid_pain_{rule.pain_at_least}")


def _discharge_ready(
    facts: PatientFacts, pathway: Pathway, instrument: str, p: _Primary
) -> Decision | None:
    """The first score after the baseline with change >= MCID and adherence_7d of its
    whole day >= the threshold (at most once)."""
    if p.baseline is None:
        return None
    mcid, threshold = INSTRUMENTS[instrument].mcid, pathway.discharge_ready.threshold
    for s in p.scores:
        if s.order <= p.baseline.order:
            continue
        if change(instrument, p.baseline.value, s.value) < mcid:
            continue
        adherence = facts.adherence(s.date)
        if adherence is not None and adherence >= threshold:
            return Decision(s.date, "discharge_ready", "mcid_and_adherence")
    return None


def _pathway_pauses(facts: PatientFacts, ep: Episode, pathway: Pathway) -> tuple[ProgramPause, ...]:
    """The pauses the pathway's decisions see: alerts.pauses' fold over the holds (falls
    only when the version pauses on a fall)."""
    holds = [h for h in facts.holds if pathway.pause.on_fall or h.kind != "fall"]
    return fold_pauses(facts.book, holds).get(ep.episode_id, ())


def _first_date(events: Iterable[Event], since: dt.date) -> dt.date | None:
    return next((e.local_date for e in events if e.local_date >= since), None)


def _decisions_and_tasks(
    facts: PatientFacts, ep: Episode, pathway: Pathway, instrument: str, p: _Primary, today: dt.date
) -> tuple[tuple[Task, ...], tuple[Decision, ...]]:
    events = facts.by_episode.get(ep.episode_id, [])
    start, end = ep.start_date, ep.end_date
    day = dt.timedelta(days=1)
    logged = [e for e in events if isinstance(e, ClinicianTimeLogged)]
    in_person = [e for e in events if isinstance(e, VisitCompleted) and e.mode == "in_person"]
    due_done: list[tuple[TaskKind, dt.date, dt.date | None]] = [
        ("baseline_prom", start + pathway.timepoints.baseline.due * day, _date(p.baseline)),
        ("week4_prom", start + pathway.timepoints.week4.due * day, _date(p.week4)),
        (
            "week4_review",
            start + pathway.review.due * day,
            _first_date(logged, start + pathway.review.from_day * day),
        ),
    ]
    decisions: list[Decision] = []
    step_up = _step_up(events, ep, pathway, instrument, p)
    if step_up is not None:
        decisions.append(step_up)
        due = step_up.on + pathway.step_up.due_in * day
        due_done.append(("in_person_visit", due, _first_date(in_person, step_up.on)))
    for pause in _pathway_pauses(facts, ep, pathway):
        decisions.append(Decision(pause.start, "pause", pause.reason))
        due_done.append(("pause_review", pause.start + pathway.pause.due_in * day, pause.end))
        if pause.end is not None:
            decisions.append(Decision(pause.end, "resume", "clinician"))
    ready = _discharge_ready(facts, pathway, instrument, p)
    if ready is not None:
        decisions.append(ready)
        due_done.append(("discharge_review", ready.on + pathway.discharge_ready.due_in * day, end))
    if end is not None:
        decisions.append(Decision(end, "end", exit_reason(facts.ends[ep.episode_id])))
    tasks = (Task(k, due, done, status_of(due, done, end, today)) for k, due, done in due_done)
    return (
        tuple(sorted(tasks, key=lambda t: (t.due_on, t.kind))),
        tuple(sorted(decisions, key=lambda d: (d.on, d.decision))),
    )


def _date(score: Score | None) -> dt.date | None:
    return None if score is None else score.date


def _adherence(facts: PatientFacts, ep: Episode, today: dt.date) -> Fraction | None:
    """The mean of the defined adherence_7d over the episode's unpaused days, from its start
    to its end (or T - 1)."""
    last = ep.end_date if ep.end_date is not None else today - dt.timedelta(days=1)
    if last < ep.start_date:
        return None
    series = adherence_series(facts.counts, facts.book, ep.start_date, last)
    values = [v for day, v in series.items() if v is not None and not ep.paused_on(day)]
    return sum(values, Fraction(0)) / len(values) if values else None


DROPOUT_DAYS = 14


def _dropped_out(facts: PatientFacts, ep: Episode, reason: str | None, today: dt.date) -> bool:
    """Ended ``dropped_out``; or active, not paused on T, with T - L >= 14 days (L: the
    latest of the start, the newest patient-data date and the newest resume)."""
    if ep.end_date is not None:
        return reason == "dropped_out"
    if ep.paused_on(today):
        return False
    events = facts.by_episode.get(ep.episode_id, [])
    data = [e.local_date for e in events if e.type in PATIENT_DATA_TYPES]
    resumed = ep.resumed_by(today)
    latest = max([ep.start_date, *data, *([resumed] if resumed is not None else [])])
    return (today - latest).days >= DROPOUT_DAYS


def _view(
    facts: PatientFacts,
    ep: Episode,
    start: EpisodeStarted,
    pathway: Pathway,
    licensed: frozenset[str],
    today: dt.date,
) -> EpisodeView:
    region = start.body_region or "other"
    instrument = pathway.primary_instrument(region, licensed)
    events = facts.by_episode.get(ep.episode_id, [])
    p = primary_scores(events, ep.start_date, pathway, instrument)
    tasks, decisions = _decisions_and_tasks(facts, ep, pathway, instrument, p, today)
    ended = facts.ends.get(ep.episode_id)
    reason = None if ep.end_date is None or ended is None else exit_reason(ended)
    return EpisodeView(
        episode=ep,
        org_id=start.patient_key[0],
        body_region=region,
        pathway=pathway,
        instrument=instrument,
        today=today,
        exit_reason=reason,
        baseline=p.baseline,
        week4=p.week4,
        final=p.final,
        tasks=tasks,
        decisions=decisions,
        visits=sum(1 for e in events if isinstance(e, VisitCompleted)),
        adherence=_adherence(facts, ep, today),
        dropped_out=_dropped_out(facts, ep, reason, today),
    )
