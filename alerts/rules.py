"""Risk rules (pure): the alert engine of design/alert-rules.md.

Three entry points, each ``(state, ...) -> (new_state, changes)``; none reads the clock or
modifies its input:

- ``on_event``: event-driven rules (red_flag, fall, pain_high, pain_increase) and the
  auto-resolution of inactivity by patient data. Events are taken in arrival order;
  a repeated event_id changes nothing.
- ``on_tick``: time-driven rules at the local day boundaries (00:00 in the episode's
  ``timezone``) that passed since the previous tick: inactivity at the start of day
  L + 4, adherence_low at the end of each day from day 8, billing_at_risk at the end of
  each day of a 30-day billing period (resolved when the period ends). A boundary is
  evaluated once, so a second tick with the same ``now`` fires nothing; a late first
  tick catches up every missed boundary, which is how the offline evaluator (one tick at
  --as-of) and the streaming timer (a tick every few seconds) agree.
- ``acknowledge``: a clinician's acknowledgement with its disposition (starts the
  cool-down); ``snooze``: a clinician's snooze of an open alert (until when is the
  record's; whether it is still on is a reader's question, against its clock).

Time-driven alerts carry the boundary instant as ``fired_at`` (not the tick time), and all
alert ids are derived from (organisation, patient, kind, trigger), so a replay gives
identical alerts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import statistics
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import replace
from zoneinfo import ZoneInfo

from alerts.adherence import Completion, adherence_on, sessions_by_day
from alerts.models import (
    ALWAYS_FIRE_KINDS,
    CLINIC_WIDE,
    DEFAULT_CONFIG,
    SEVERITY,
    TIME_DRIVEN_KINDS,
    Alert,
    AlertChange,
    AlertConfig,
    AlertKind,
    Disposition,
    Severity,
)
from alerts.pauses import compact_holds, hold_of, with_pauses
from alerts.state import (
    Cooldown,
    DataRecord,
    IntakeDue,
    PainRecord,
    PastEpisode,
    PatientState,
    Pending,
    completion_key,
    data_key,
)
from billing.rules import DEVICE_FULL_DAYS, episode_data_days, period_of
from billing.state import PatientBillingState
from intake.engine import assess
from schemas.episodes import Episode, EpisodeBook, fold_book
from schemas.events import (
    EpisodeEnded,
    EpisodeStarted,
    Event,
    ExerciseCompleted,
    IntakeContacted,
    IntakeSubmitted,
    PainReported,
    ProgramUpdated,
    SymptomReported,
    is_patient_data,
)

_ONE_DAY = dt.timedelta(days=1)
# Kinds that "resolve when the condition clears" and are about an episode's course: they
# also close when their episode ends (the condition no longer applies).
_EPISODE_COURSE_KINDS: tuple[AlertKind, ...] = ("inactivity", "adherence_low")
# Where an event-driven alert goes: a live episode, or a retired one (routing only).
Route = Episode | PastEpisode

# --- event-driven --------------------------------------------------------------------------


def on_event(
    state: PatientState, event: Event, config: AlertConfig = DEFAULT_CONFIG
) -> tuple[PatientState, list[AlertChange]]:
    """Fold one new event (arrival order) and apply the event-driven rules.

    The caller feeds each event_id once (the worker: only events the ``events`` table did
    not have; the offline evaluator: a set of ids read so far).
    """
    s = state.copy_for_update()
    changes = apply_event(s, event, config)
    prune(s, config)
    return s, changes


def apply_event(
    s: PatientState, event: Event, config: AlertConfig = DEFAULT_CONFIG
) -> list[AlertChange]:
    """``on_event`` on a state the caller owns (from ``copy_for_update``), in place."""
    return apply_event_outcome(s, event, config)[0]


def apply_event_outcome(
    s: PatientState, event: Event, config: AlertConfig = DEFAULT_CONFIG
) -> tuple[list[AlertChange], str | None]:
    """``apply_event``, also telling why an ``episode.started`` was refused (a second
    active episode, 409-style; it is not kept), else None."""
    if event.patient_key != s.key:
        raise ValueError(f"event {event.event_id} belongs to another patient than this state")
    if s.clock is None or event.occurred_at > s.clock:
        s.clock = event.occurred_at
    changes: list[AlertChange] = _intake_event(s, event, config)
    hold = hold_of(event)
    if hold is not None:
        # A fall, a program.paused or a program.resumed: the pauses (alerts.pauses) are
        # derived from these by event time, so any arrival order gives the same ones.
        s.holds[hold.event_id] = hold
        s.invalidate_book()
        if not isinstance(event, SymptomReported):
            return [], None  # read by the time-driven rules only

    if isinstance(event, (EpisodeStarted, ProgramUpdated, EpisodeEnded)):
        if event.event_id in s.episode_events:
            return [], None
        past = s.past.get(event.episode_id)
        if past is not None:
            return _past_episode_event(s, past, event, config), None
        if isinstance(event, EpisodeStarted):
            live = s.book.episodes.get(event.episode_id)
            if live is None and s.retired_to is not None and event.local_date <= s.retired_to:
                # Could re-create a forgotten past episode and replay its every day end;
                # a start more than a year late is beyond what the alert rules take.
                return [], None
            # Folded before its episode's kept start (or its episode is new), a start is
            # judged where it folds; one after it is a re-send the fold ignores.
            if live is None or (event.occurred_at, event.event_id) < (
                live.started_at,
                _start_event_id(s, live),
            ):
                reason = _refused_by_past(s, event)
                if reason is not None:
                    return [], reason
        s.episode_events[event.event_id] = event
        s.invalidate_book()
        if isinstance(event, EpisodeStarted):
            reason = s.refused_episode_starts.get(event.event_id)
            if reason is not None:
                # Refused starts shape nothing; keeping them would let a buggy feed grow
                # the state without bound.
                del s.episode_events[event.event_id]
                s.invalidate_book()
                return [], reason
        if isinstance(event, EpisodeEnded):
            for kind in _EPISODE_COURSE_KINDS:
                changes += _resolve_kind(
                    s, kind, event.occurred_at, event.event_id, episode_id=event.episode_id
                )
        return changes + _evaluate_pending(s, config), None

    if is_patient_data(event):
        _record_data(s, event)
        # Rule table: inactivity "resolves when any patient-data event" arrives.
        changes += _resolve_kind(s, "inactivity", event.occurred_at, event.event_id)

    if isinstance(event, ExerciseCompleted):
        c = Completion.of(event)
        key = completion_key(c)
        prev = s.completions.get(key)
        if prev is None or c.occurred_at < prev.occurred_at:
            s.completions[key] = c
    elif isinstance(event, PainReported):
        changes += _pain_arrived(s, event, config)
    elif isinstance(event, SymptomReported):
        changes += _symptom_arrived(s, event, config)
    elif isinstance(event, IntakeSubmitted):
        changes += _intake_arrived(s, event, config)
    return changes, None


def _past_episode_event(
    s: PatientState,
    past: PastEpisode,
    event: EpisodeStarted | ProgramUpdated | EpisodeEnded,
    config: AlertConfig,
) -> list[AlertChange]:
    """A late shaping event for a retired episode. Every day end of the episode and every
    window that could see its program is evaluated (that is why it was retired), so a
    program.updated or a re-sent episode.started changes nothing any rule will look at
    and is not kept. An earlier episode.ended still moves the end, as in the fold
    (``EpisodeBook.apply``): routing of later reports and the active interval follow it.
    Its course alerts were all resolved before it was retired (``prune``)."""
    if not isinstance(event, EpisodeEnded):
        return []
    end = max(event.local_date, past.start_date)
    ended_at = past.ended_at
    if (event.occurred_at, 0, event.event_id) < (past.started_at, 1, past.start_event_id):
        ended_at = past.started_at  # folds before the start: never active
    elif event.occurred_at < ended_at:
        ended_at = event.occurred_at
    if end >= past.end_date and ended_at == past.ended_at:
        return []
    s.past[past.episode_id] = replace(past, end_date=min(end, past.end_date), ended_at=ended_at)
    return _evaluate_pending(s, config)


def _refused_by_past(s: PatientState, event: EpisodeStarted) -> str | None:
    """The fold's 409-style refusal (``EpisodeBook.apply``) against retired episodes: a
    start folded (instant, then event_id) inside a past episode's active interval."""
    for p in s.past.values():
        if (p.started_at, p.start_event_id) < (
            event.occurred_at,
            event.event_id,
        ) and event.occurred_at < p.ended_at:
            return (
                f"patient already has an active episode {p.episode_id}; "
                "end it before starting another"
            )
    return None


def _record_data(s: PatientState, event: Event) -> None:
    episode_id = getattr(event, "episode_id", None)
    key = data_key(event.local_date, episode_id)
    prev = s.data.get(key)
    if prev is None or (event.occurred_at, event.event_id) < (prev.occurred_at, prev.event_id):
        s.data[key] = DataRecord(event.occurred_at, episode_id, event.event_id)


def _known_at(event: Event) -> dt.datetime:
    received = event.received_at
    return event.occurred_at if received is None or received < event.occurred_at else received


def _pain_arrived(s: PatientState, event: PainReported, config: AlertConfig) -> list[AlertChange]:
    newest = max((r.occurred_at for r in s.pain.values()), default=None)
    # Stored first: even a late report counts in later baselines.
    s.pain[event.event_id] = PainRecord(event.occurred_at, event.score)
    stale = newest is not None and event.occurred_at < newest
    baseline = None if stale else pain_baseline(s.pain, event.event_id, event.local_date, config)
    episode = _resolve(s, event.episode_id, event.local_date)
    if episode is None and not stale:
        # Its episode is not known yet (enrolment sent late, offline sync): decided when
        # the episode arrives, with what the pain history said now.
        s.pending[event.event_id] = Pending(
            event.event_id,
            event.type,
            event.occurred_at,
            _known_at(event),
            event.episode_id,
            score=event.score,
            stale=stale,
            baseline=baseline,
        )
        return []
    return _pain_rules(
        s, event.event_id, event.occurred_at, event.score, stale, baseline, episode, config
    )


def _pain_rules(
    s: PatientState,
    eid: str,
    at: dt.datetime,
    score: int,
    stale: bool,
    baseline: float | None,
    episode: Route | None,
    config: AlertConfig,
) -> list[AlertChange]:
    if stale:
        return []  # older than the newest known report: changes no pain state
    changes: list[AlertChange] = []
    if score >= config.pain_high_threshold:
        if episode is not None:
            changes += _fire(
                s,
                "pain_high",
                episode,
                eid,
                at,
                config,
                event_ids=(eid,),
                value=score,
                threshold=config.pain_high_threshold,
            )
    else:
        changes += _resolve_kind(s, "pain_high", at, eid)
    if baseline is not None:  # fewer than 2 reports in d-7..d-1: neither fires nor resolves
        threshold = baseline + config.pain_increase_delta
        if score >= threshold:
            if episode is not None:
                changes += _fire(
                    s,
                    "pain_increase",
                    episode,
                    eid,
                    at,
                    config,
                    event_ids=(eid,),
                    value=score,
                    threshold=threshold,
                )
        else:
            changes += _resolve_kind(s, "pain_increase", at, eid)
    return changes


def pain_baseline(
    reports: Mapping[str, PainRecord], exclude_event_id: str, day: dt.date, config: AlertConfig
) -> float | None:
    """Median score of the patient's reports on local dates day-7 .. day-1 (all known
    reports, late ones included); None with fewer than the configured minimum."""
    first = day - dt.timedelta(days=config.pain_baseline_days)
    scores = [
        r.score
        for key, r in reports.items()
        if key != exclude_event_id and first <= r.local_date < day
    ]
    if len(scores) < config.pain_baseline_min_reports:
        return None
    return float(statistics.median(scores))


def _symptom_arrived(
    s: PatientState, event: SymptomReported, config: AlertConfig
) -> list[AlertChange]:
    if not event.red_flags and not event.fall:
        return []  # an empty report is a check-in
    episode = _symptom_episode(s, event.episode_id, event.local_date)
    if episode is None:
        # Nobody to route to yet: kept until an episode arrives, or surfaced as unrouted
        # to the clinic-wide recipient after the grace period (on_tick).
        s.pending[event.event_id] = Pending(
            event.event_id,
            event.type,
            event.occurred_at,
            _known_at(event),
            event.episode_id,
            red_flags=tuple(event.red_flags),
            fall=event.fall,
        )
        return []
    return _symptom_rules(
        s, event.event_id, event.occurred_at, tuple(event.red_flags), event.fall, episode, config
    )


def _intake_arrived(
    s: PatientState, event: IntakeSubmitted, config: AlertConfig
) -> list[AlertChange]:
    """intake-rules.md, Safety: an intake with any red flag fires a critical ``red_flag`` at
    once. No episode can exist yet, so it is unrouted at once (no grace period), for the
    clinic-wide recipient, triggered by the intake event and naming its intake. Once per
    event_id (the alert id is the trigger's), a later-superseded version's too."""
    if not event.red_flags:
        return []
    return _fire(
        s,
        "red_flag",
        None,
        event.event_id,
        event.occurred_at,
        config,
        event_ids=(event.event_id,),
        details=tuple(event.red_flags),
        intake_id=event.intake_id,
    )


def _intake_event(s: PatientState, event: Event, config: AlertConfig) -> list[AlertChange]:
    """Keep what ``intake_overdue`` needs (``IntakeDue``): a version of an intake (the one
    in force: the latest instant, then the larger event id; its due time under
    ``config.intake_rules``), or a contact (``intake.contacted``, an ``episode.started``
    naming its intake: the earliest counts, one before the intake too). A contact resolves
    the intake's open ``intake_overdue``."""
    if isinstance(event, IntakeSubmitted):
        due = s.intakes.get(event.intake_id) or IntakeDue()
        version = (event.occurred_at, event.event_id)
        if due.version is None or version > due.version:
            a = assess(event, config.intake_rules_for(s.org_id))
            due = dataclasses.replace(
                due, version=version, due_at=a.due_at, urgent=a.route == "urgent"
            )
        s.intakes[event.intake_id] = due
        return []
    intake_id = event.intake_id if isinstance(event, (IntakeContacted, EpisodeStarted)) else None
    if intake_id is None:
        return []
    due = s.intakes.get(intake_id) or IntakeDue()
    if due.contacted_at is None or event.occurred_at < due.contacted_at:
        s.intakes[intake_id] = dataclasses.replace(due, contacted_at=event.occurred_at)
    alert = s.alerts.get(s.alert_id("intake_overdue", intake_id))
    if alert is None or alert.status == "resolved":
        return []
    resolved = alert.model_copy(
        update={
            "status": "resolved",
            "resolved_at": max(event.occurred_at, alert.fired_at),
            "resolved_by_event_id": event.event_id,
        }
    )
    s.alerts[alert.id] = resolved
    return [AlertChange(change="resolved", alert=resolved)]


def _intakes_due(s: PatientState, now: dt.datetime) -> list[str]:
    """The intakes whose due time passed by ``now`` that the timer has not looked at."""
    return sorted(
        iid
        for iid, d in s.intakes.items()
        if d.due_at is not None and not d.checked and d.due_at <= now
    )


def _intake_overdue_rule(s: PatientState, due: list[str], config: AlertConfig) -> list[AlertChange]:
    """intake-rules.md: an intake not contacted by its due time raises ``intake_overdue``
    (high; critical for an urgent intake), unrouted for the organisation-wide recipient
    (the intake queue's), fired at the due time; once per intake; a contact resolves it."""
    changes: list[AlertChange] = []
    for iid in due:
        d = s.intakes[iid]
        s.intakes[iid] = dataclasses.replace(d, checked=True)
        if d.contacted_at is not None or d.due_at is None or d.version is None:
            continue  # contacted (on time or late): nobody is waiting for a call any more
        changes += _fire(
            s,
            "intake_overdue",
            None,
            iid,
            d.due_at,
            config,
            event_ids=(d.version[1],),
            intake_id=iid,
            severity="critical" if d.urgent else "high",
        )
    return changes


def _symptom_episode(s: PatientState, episode_id: str | None, day: dt.date) -> Route | None:
    episode = _resolve(s, episode_id, day)
    if episode is not None:
        return episode
    if episode_id is not None and episode_id not in s.book.episodes and episode_id not in s.past:
        return None  # its own episode has not started yet: wait for it
    # A red flag or fall outside any episode's dates (e.g. reported the day after
    # discharge) is too important to wait: it goes to the most recent episode's clinician.
    return _latest_episode(s)


def _symptom_rules(
    s: PatientState,
    eid: str,
    at: dt.datetime,
    red_flags: tuple[str, ...],
    fall: bool,
    episode: Route | None,
    config: AlertConfig,
) -> list[AlertChange]:
    changes: list[AlertChange] = []
    if red_flags:
        changes += _fire(
            s, "red_flag", episode, eid, at, config, event_ids=(eid,), details=red_flags
        )
    if fall:
        changes += _fire(s, "fall", episode, eid, at, config, event_ids=(eid,))
    return changes


def _latest_episode(s: PatientState) -> Route | None:
    if not s.past:
        return max(s.book.episodes.values(), key=lambda e: e.start_date, default=None)
    routes: list[Route] = [*s.book.episodes.values(), *s.past.values()]
    return _first_latest(s, routes)


def _resolve(s: PatientState, episode_id: str | None, day: dt.date) -> Route | None:
    """``EpisodeBook.resolve`` over the live and the retired episodes: a retired episode
    routes a late report exactly as it did while its events were kept."""
    if not s.past:
        return s.book.resolve(episode_id, day)
    if episode_id is not None:
        named: Route | None = s.book.episodes.get(episode_id)
        if named is None:
            named = s.past.get(episode_id)
        return named if named is not None and named.covers(day) else None
    routes: list[Route] = [*s.book.episodes.values(), *s.past.values()]
    return _first_latest(s, [e for e in routes if e.covers(day)])


def _first_latest(s: PatientState, routes: list[Route]) -> Route | None:
    """The route with the latest start date; of equal ones, the first in the fold's order
    (start instant, then the start's event_id), as ``max`` over them sorted that way. Only
    the tied ones are ordered: a year of retired episodes is not sorted for each report."""
    if not routes:
        return None
    latest = max(e.start_date for e in routes)
    tied = [e for e in routes if e.start_date == latest]
    if len(tied) == 1:
        return tied[0]

    def key(e: Route) -> tuple[dt.datetime, str]:
        if isinstance(e, PastEpisode):
            return (e.started_at, e.start_event_id)
        return (e.started_at, _start_event_id(s, e))

    return min(tied, key=key)


def _start_event_id(s: PatientState, ep: Episode) -> str:
    """The event_id of the episode.started the fold took for ``ep`` (first at its instant)."""
    return min(
        (
            e.event_id
            for e in s.episode_events.values()
            if e.type == "episode.started"
            and e.episode_id == ep.episode_id
            and e.occurred_at == ep.started_at
        ),
        default="",
    )


def _evaluate_pending(s: PatientState, config: AlertConfig) -> list[AlertChange]:
    """Pending reports whose episode is now known, in arrival order, as if they had
    arrived after it (alerts carry the report as trigger and its own occurred_at)."""
    if not s.pending:
        return []
    changes: list[AlertChange] = []
    for eid, p in list(s.pending.items()):
        if p.type == "pain.reported":
            episode = _resolve(s, p.episode_id, p.local_date)
            if episode is None:
                continue
            changes += _pain_rules(
                s, eid, p.occurred_at, p.score, p.stale, p.baseline, episode, config
            )
        else:
            episode = _symptom_episode(s, p.episode_id, p.local_date)
            if episode is None:
                continue
            changes += _symptom_rules(s, eid, p.occurred_at, p.red_flags, p.fall, episode, config)
        del s.pending[eid]
    return changes


def _expire_pending(s: PatientState, now: dt.datetime, config: AlertConfig) -> list[AlertChange]:
    """Past the grace period with no episode: a red flag or fall becomes an unrouted alert
    for the clinic-wide recipient (never dropped); a pain report is let go."""
    changes: list[AlertChange] = []
    for eid, p in list(s.pending.items()):
        if p.known_at + config.pending_grace > now:
            continue
        if p.type == "symptom.reported":
            changes += _symptom_rules(s, eid, p.occurred_at, p.red_flags, p.fall, None, config)
        del s.pending[eid]
    return changes


# --- time-driven ---------------------------------------------------------------------------


def local_midnight(day: dt.date, timezone: str) -> dt.datetime:
    """The instant a local day starts in ``timezone`` (aware, in that zone)."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=ZoneInfo(timezone))


def on_tick(
    state: PatientState, now: dt.datetime, config: AlertConfig = DEFAULT_CONFIG
) -> tuple[PatientState, list[AlertChange]]:
    """Evaluate every local day boundary of every episode that passed up to ``now`` and was
    not evaluated before. Boundary D (00:00 of local day D in the episode's timezone):
    - adherence_low for day D-1 (the day that just ended), from day 8 of the episode;
      not for the end date itself, whose end comes after the episode ended;
    - inactivity as of day D, for days D inside the episode;
    - billing_at_risk for day D-1, up to and including the end date (see
      ``_billing_rule``): the boundary after the end date ends the last period.

    A tick with no new boundary returns ``state`` itself (no copy, nothing to save), and
    the facts a rule needs are gathered only when a new boundary asks for them, so the
    per-tick work follows the new day ends, not the history.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    book = state.book
    todo: list[tuple[Episode, dt.date, dt.date]] = []
    for ep in sorted(book.episodes.values(), key=lambda e: (e.start_date, e.episode_id)):
        today = now.astimezone(ZoneInfo(ep.timezone)).date()
        last = today if ep.end_date is None else min(today, ep.end_date + _ONE_DAY)
        first = state.day_cursor.get(ep.episode_id, ep.start_date) + _ONE_DAY
        if first <= last:
            todo.append((ep, first, last))
    expiring = any(p.known_at + config.pending_grace <= now for p in state.pending.values())
    intakes_due = _intakes_due(state, now)
    escalating = _escalations_due(state, now, config)
    if not todo and not expiring and not intakes_due and not escalating:
        return state, []
    s = state.copy_for_update()
    if s.clock is None or now > s.clock:
        s.clock = now
    counts: Mapping[dt.date, int] | None = None  # sessions per day, built on first need
    changes: list[AlertChange] = []
    for ep, day, last in todo:
        facts = _EpisodeFacts(s, ep)
        while day <= last:
            boundary = local_midnight(day, ep.timezone)
            ended = day - _ONE_DAY
            episode_day = (ended - ep.start_date).days + 1
            if ep.covers(day) and episode_day >= config.adherence_from_episode_day:
                if counts is None:
                    counts = sessions_by_day(s.completions, book)
                changes += _adherence_rule(s, book, counts, ep, ended, boundary, config)
            changes += _billing_rule(s, ep, ended, boundary, facts, config)
            if ep.covers(day):
                changes += _inactivity_rule(s, book, ep, day, boundary, config)
            s.day_cursor[ep.episode_id] = day
            day += _ONE_DAY
        changes += _catch_up_episode_end(s, ep, facts.ended, changes)
    changes += _expire_pending(s, now, config)
    changes += _intake_overdue_rule(s, intakes_due, config)
    changes += _escalate(s, now, config)
    prune(s, config)
    return s, changes


# --- the escalation ladder -----------------------------------------------------------------


def _escalation_step_due(a: Alert, now: dt.datetime, config: AlertConfig) -> dt.datetime | None:
    """When the next step of ``a``'s ladder was due, if it was by ``now`` (else None): only
    a critical alert still open and unacknowledged climbs; a snooze does not stop it (only
    an acknowledgement does, as the issue says: the snoozed alert is still nobody's). An
    unrouted one does not climb: it went to the organisation-wide recipient already."""
    if a.severity != "critical" or a.status != "open" or a.acknowledged_at is not None:
        return None
    if a.unrouted:
        return None  # already with the organisation-wide recipient, and no care team
    offsets = config.escalation_offsets
    level = len(a.escalations)
    if level >= len(offsets):
        return None
    at = a.fired_at + offsets[level]
    return at if at <= now else None


def _escalations_due(s: PatientState, now: dt.datetime, config: AlertConfig) -> bool:
    return any(_escalation_step_due(a, now, config) is not None for a in s.alerts.values())


def _escalate(s: PatientState, now: dt.datetime, config: AlertConfig) -> list[AlertChange]:
    """Take every step of the ladder due by ``now`` (a late tick takes both at once, each
    at its own instant ``fired_at`` + offset, as the offline evaluator does)."""
    changes: list[AlertChange] = []
    for aid in sorted(s.alerts, key=lambda k: (s.alerts[k].fired_at, k)):
        while (at := _escalation_step_due(s.alerts[aid], now, config)) is not None:
            a = s.alerts[aid]
            climbed = a.model_copy(update={"escalations": (*a.escalations, at)})
            s.alerts[aid] = climbed
            changes.append(AlertChange(change="escalated", alert=climbed))
    return changes


def _catch_up_episode_end(
    s: PatientState,
    ep: Episode,
    ended: tuple[dt.datetime, str] | None,
    changes: list[AlertChange],
) -> list[AlertChange]:
    """Course alerts this tick fired at a boundary before the episode.ended occurred: had
    the timer run on time, the episode.ended would have resolved them on arrival (as
    ``apply_event`` does), so a catch-up tick resolves them with it too."""
    if ended is None:
        return []
    at, event_id = ended
    out: list[AlertChange] = []
    for c in changes:
        a = c.alert
        if (
            c.change == "fired"
            and a.kind in _EPISODE_COURSE_KINDS
            and a.episode_id == ep.episode_id
            and a.fired_at <= at
            and s.alerts[a.id].status != "resolved"
        ):
            resolved = s.alerts[a.id].model_copy(
                update={"status": "resolved", "resolved_at": at, "resolved_by_event_id": event_id}
            )
            s.alerts[a.id] = resolved
            out.append(AlertChange(change="resolved", alert=resolved))
    return out


def _adherence_rule(
    s: PatientState,
    book: EpisodeBook,
    counts: Mapping[dt.date, int],
    ep: Episode,
    day: dt.date,
    boundary: dt.datetime,
    config: AlertConfig,
) -> list[AlertChange]:
    if ep.paused_on(day):
        return []  # suspended while the program is paused: neither fires nor resolves
    ratio = adherence_on(counts, book, day, config.adherence_window_days)
    threshold = config.adherence_low_fraction
    if ratio is not None and ratio < threshold:
        return _fire(
            s,
            "adherence_low",
            ep,
            f"{ep.episode_id}:{day.isoformat()}",
            boundary,
            config,
            value=round(float(ratio), 4),
            threshold=float(threshold),
        )
    # Back >= 50% (or nothing prescribed any more): all clear, decided at the day's end
    # like the firing, so there is no triggering event to record.
    return _resolve_kind(s, "adherence_low", boundary, None)


class _EpisodeFacts:
    """What billing_at_risk (and the episode-end catch-up) need about one episode during
    one tick, gathered lazily.

    Data days are billing's own (``billing.rules.episode_data_days`` over a
    ``PatientBillingState`` built from this state's data and episode events), computed at
    most once per tick and only if a day end needs them.
    """

    def __init__(self, s: PatientState, ep: Episode) -> None:
        self._s, self.ep = s, ep
        self._days: list[dt.date] | None = None
        # The episode's end in event time: (occurred_at, event_id) of its first episode.ended.
        ends = [
            (e.occurred_at, e.event_id)
            for e in s.episode_events.values()
            if e.type == "episode.ended" and e.episode_id == ep.episode_id
        ]
        self.ended = min(ends) if ends and ep.end_date is not None else None
        self._open = replace(ep, end_date=None)

    def as_known_at(self, boundary: dt.datetime) -> Episode:
        """The episode as it stood at ``boundary`` in event time: its end date cuts the
        period short only once the episode.ended has occurred (strictly before)."""
        if self.ended is not None and self.ended[0] < boundary:
            return self.ep
        return self._open

    def data_days(self, first: dt.date, last: dt.date) -> int:
        """Data days of the episode from ``first`` through ``last`` (inclusive)."""
        if self._days is None:
            billing_state = PatientBillingState(
                patient_id=self._s.patient_id,
                data_dates={(r.local_date, r.episode_id) for r in self._s.data.values()},
                episode_events=dict(self._s.episode_events),
            )
            self._days = sorted(episode_data_days(billing_state).get(self.ep.episode_id, ()))
        return bisect_right(self._days, last) - bisect_right(self._days, first - _ONE_DAY)


def _billing_rule(
    s: PatientState,
    ep: Episode,
    day: dt.date,
    boundary: dt.datetime,
    facts: _EpisodeFacts,
    config: AlertConfig,
) -> list[AlertChange]:
    """billing_at_risk at the end of local ``day`` (``boundary``), once per period.

    Fires when data days of the period through ``day`` + the period's dates after ``day``
    < 16 (98977 out of reach); value = that sum. An ``episode.ended`` cuts the period short
    (billing's ``period_of``): days left count only to the end date, from the instant the
    episode.ended occurred, so a day end judged before it is judged as it stood then (the
    streaming timer could not have known the end). The end of the period's last day is the
    period's end: it never fires there (the period is over) and resolves the period's alert.
    """
    period = period_of(ep, day)
    if period is None:
        return []
    aid = s.alert_id("billing_at_risk", _period_trigger(ep, period.index))
    if day == period.end:
        current = s.alerts.get(aid)
        if current is None or current.status == "resolved":
            return []
        resolved = current.model_copy(
            update={
                "status": "resolved",
                "resolved_at": max(boundary, current.fired_at),
                "resolved_by_event_id": None,
            }
        )
        s.alerts[aid] = resolved
        return [AlertChange(change="resolved", alert=resolved)]
    if aid in s.alerts or aid in s.cooldowns:
        return []  # once per period (and nothing to count once it fired)
    known = period_of(facts.as_known_at(boundary), day)
    assert known is not None and known.index == period.index
    left = (known.end - day).days
    if left >= DEVICE_FULL_DAYS:
        return []  # reachable whatever the data: no need to count (first half of a period)
    so_far = facts.data_days(period.start, day)
    if so_far + left >= DEVICE_FULL_DAYS:
        return []
    return _fire(
        s,
        "billing_at_risk",
        ep,
        _period_trigger(ep, period.index),
        boundary,
        config,
        value=so_far + left,
        threshold=DEVICE_FULL_DAYS,
        details=(
            f"period {period.index}: {known.start.isoformat()}..{known.end.isoformat()}",
            f"{so_far} data days, {left} days left",
        ),
    )


def _period_trigger(ep: Episode, index: int) -> str:
    return f"{ep.episode_id}:period-{index}"


def _inactivity_rule(
    s: PatientState,
    book: EpisodeBook,
    ep: Episode,
    day: dt.date,
    boundary: dt.datetime,
    config: AlertConfig,
) -> list[AlertChange]:
    if ep.paused_on(day):
        return []  # suspended while the program is paused
    # L = newest data date of this episode before `day` (data known now), or the start;
    # at least the date the program was last resumed.
    newest = max(ep.start_date, ep.resumed_by(day) or ep.start_date)
    floor = s.data_floor.get(ep.episode_id)
    if floor is not None and newest < floor < day:
        newest = floor
    for r in s.data.values():
        d = r.local_date
        if newest < d < day:
            owner = book.resolve(r.episode_id, d)
            if owner is not None and owner.episode_id == ep.episode_id:
                newest = d
    gap = (day - newest).days - 1  # full local days with no data
    if gap < config.inactivity_days:
        return []
    changes = _fire(
        s,
        "inactivity",
        ep,
        f"{ep.episode_id}:{newest.isoformat()}",
        boundary,
        config,
        value=gap,
        threshold=config.inactivity_days,
    )
    if changes:
        # Catching up a boundary that is already past: data dated on/after it is known, and
        # would have resolved the alert on arrival. Resolve with the first such event.
        later = sorted((r.occurred_at, r.event_id) for r in s.data.values() if r.local_date >= day)
        if later:
            at, key = later[0]
            changes += _resolve_kind(s, "inactivity", at, key)
    return changes


# --- acknowledgement -----------------------------------------------------------------------


def acknowledge(
    state: PatientState,
    alert_id_: str,
    at: dt.datetime,
    by: str,
    stored: Alert | None = None,
    config: AlertConfig | None = None,
    disposition: Disposition | None = None,
    note: str | None = None,
) -> tuple[PatientState, list[AlertChange]]:
    """Record a clinician's acknowledgement (with its disposition and note). Idempotent: a
    second one changes nothing.

    An open alert becomes ``acknowledged``; a resolved one keeps its status but records the
    acknowledgement (``Alert.acknowledged``, the one transition). Either way the cool-down
    of its kind starts at ``at``. Raises KeyError for an alert id this patient does not have.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at must be timezone-aware")
    current = state.alerts.get(alert_id_)
    if current is None and alert_id_ in state.cooldowns:
        return state, []  # acknowledged, then resolved: what is left is its cool-down
    if current is None:
        # Resolved alerts leave the state; the adapter passes the stored snapshot so an
        # acknowledgement still records and starts the cool-down.
        if (
            stored is None
            or stored.id != alert_id_
            or (stored.org_id, stored.patient_id) != state.key
        ):
            raise KeyError(alert_id_)
        current = stored
    if current.acknowledged_at is not None:
        return state, []
    s = state.copy_for_update()
    updated = current.acknowledged(at, by, disposition, note)
    s.alerts[alert_id_] = updated
    prune(s, DEFAULT_CONFIG if config is None else config)
    return s, [AlertChange(change="acknowledged", alert=updated)]


def snooze(
    state: PatientState,
    alert_id_: str,
    at: dt.datetime,
    by: str,
    until: dt.datetime,
    reason: str,
) -> tuple[PatientState, list[AlertChange]]:
    """Record a clinician's snooze of an open alert (``Alert.snoozed``, the one
    transition). Nothing changes for an alert the state no longer holds open (resolved or
    acknowledged meanwhile), for a kind that cannot be snoozed, or for the same snooze
    taken again (a replay)."""
    current = state.alerts.get(alert_id_)
    if current is None or current.snooze_refusal(at, until) is not None:
        return state, []
    if (current.snoozed_at, current.snoozed_until) == (at, until):
        return state, []
    s = state.copy_for_update()
    updated = current.snoozed(at, by, until, reason)
    s.alerts[alert_id_] = updated
    return s, [AlertChange(change="snoozed", alert=updated)]


# --- shared bookkeeping --------------------------------------------------------------------


def _may_fire(s: PatientState, kind: AlertKind, at: dt.datetime, config: AlertConfig) -> bool:
    if kind in ALWAYS_FIRE_KINDS or kind == "intake_overdue":  # per report / per intake
        return True
    for a in s.alerts.values():
        if a.kind != kind:
            continue
        if a.status == "open":
            return False  # one open alert per (patient, kind)
        if a.acknowledged_at is not None and at < a.acknowledged_at + config.cooldown:
            return False  # silent for the cool-down after an acknowledgement
    for c in s.cooldowns.values():
        if c.kind == kind and at < c.acknowledged_at + config.cooldown:
            return False
    return True


def _fire(
    s: PatientState,
    kind: AlertKind,
    episode: Route | None,
    trigger: str,
    at: dt.datetime,
    config: AlertConfig,
    *,
    event_ids: tuple[str, ...] = (),
    value: float | None = None,
    threshold: float | None = None,
    details: tuple[str, ...] = (),
    intake_id: str | None = None,
    severity: Severity | None = None,
) -> list[AlertChange]:
    aid = s.alert_id(kind, trigger)
    if aid in s.alerts or aid in s.cooldowns or not _may_fire(s, kind, at, config):
        return []  # the id check is what makes a replay harmless
    alert = Alert(
        id=aid,
        patient_id=s.patient_id,
        org_id=s.org_id,
        # No episode: unrouted, for the clinic-wide recipient ('*').
        episode_id=episode.episode_id if episode is not None else "",
        clinician_id=episode.clinician_id if episode is not None else CLINIC_WIDE,
        unrouted=episode is None,
        kind=kind,
        severity=severity if severity is not None else SEVERITY[kind],
        event_ids=event_ids,
        value=value,
        threshold=threshold,
        details=details,
        intake_id=intake_id,
        fired_at=at,
    )
    s.alerts[aid] = alert
    return [AlertChange(change="fired", alert=alert)]


def _resolve_kind(
    s: PatientState,
    kind: AlertKind,
    at: dt.datetime,
    event_id: str | None,
    *,
    episode_id: str | None = None,
) -> list[AlertChange]:
    """Auto-resolve every unresolved alert of ``kind`` (open or acknowledged)."""
    if kind in ALWAYS_FIRE_KINDS:
        return []  # red flags and falls close by acknowledgement only
    changes: list[AlertChange] = []
    for aid, a in list(s.alerts.items()):
        if a.kind != kind or a.status == "resolved":
            continue
        if episode_id is not None and a.episode_id != episode_id:
            continue
        # A late clearing event may be older than the alert; never resolve before firing.
        resolved = a.model_copy(
            update={
                "status": "resolved",
                "resolved_at": max(at, a.fired_at),
                "resolved_by_event_id": event_id,
            }
        )
        s.alerts[aid] = resolved
        changes.append(AlertChange(change="resolved", alert=resolved))
    return changes


# --- bounded state -------------------------------------------------------------------------

# Late data older than this (behind the newest instant seen) is not expected to change a
# cool-down decision: an acknowledged alert is dropped that long after its cool-down ended.
_COOLDOWN_SLACK = dt.timedelta(days=7)
# billing_at_risk counts data days of a 30-day period ending at most at the next boundary;
# with no episode running, the same month is kept for an enrolment that arrives late.
_DATA_DAYS_KEPT = 31
# A retired episode's routing facts are kept this long after its end date (the latest
# episode's always: out-of-episode red flags go to its clinician).
_PAST_EPISODE_DAYS = 365
# A completion no known episode covers (its enrolment not arrived yet: an EHR that enrols
# late) is kept this many days behind the newest instant seen, whatever the cursors say, so
# daily adherence counts it once its episode.started arrives, in any arrival order: the
# bound of a patient who never gets an episode (issue 17).
EPISODELESS_COMPLETION_DAYS = 120


def _running_cursors(s: PatientState) -> list[dt.date]:
    lows: list[dt.date] = []
    for ep in s.book.episodes.values():
        cursor = s.day_cursor.get(ep.episode_id, ep.start_date)
        if ep.end_date is None or cursor <= ep.end_date:
            lows.append(cursor)  # boundaries from cursor + 1 on are still to be evaluated
    return lows


def completions_kept_from(s: PatientState, config: AlertConfig = DEFAULT_CONFIG) -> dt.date | None:
    """The oldest local date whose completions ``prune`` keeps (None: it keeps them all).
    A trailing adherence window reaching before it can no longer be computed from the
    state (``alerts.rollup.daily_adherence`` leaves such days as they were written)."""
    lows = _running_cursors(s)
    if lows:
        return min(lows) - dt.timedelta(days=config.adherence_window_days)
    if s.clock is not None:
        return s.clock.date() - dt.timedelta(days=_DATA_DAYS_KEPT)
    return None


def prune(s: PatientState, config: AlertConfig = DEFAULT_CONFIG) -> None:
    """Drop, in place, what no future event or day boundary can need (module docstring of
    ``alerts.state``). Every rule gives the same answers after a prune as before it."""
    book = s.book
    lows = _running_cursors(s)
    if lows:
        low = min(lows)
        data_cut = low - dt.timedelta(days=_DATA_DAYS_KEPT)
        done_cut = low - dt.timedelta(days=config.adherence_window_days)
    elif s.clock is not None:
        # No episode still running: keep a month, for an enrolment that arrives late.
        data_cut = done_cut = s.clock.date() - dt.timedelta(days=_DATA_DAYS_KEPT)
    else:
        return
    thin_to = min(lows) if lows else None
    for key, r in list(s.data.items()):
        d = r.local_date
        if thin_to is not None and d <= thin_to and r.event_id:
            # Day ends up to the cursor are evaluated: only the date counts from now on
            # (billing_at_risk's data days, inactivity's L), not which event it was.
            s.data[key] = DataRecord(
                dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC), r.episode_id, ""
            )
        if d < data_cut:
            owner = book.resolve(r.episode_id, d)
            if owner is not None:
                floor = s.data_floor.get(owner.episode_id)
                if floor is None or d > floor:
                    s.data_floor[owner.episode_id] = d
            del s.data[key]
    waiting_cut = (
        s.clock.date() - dt.timedelta(days=EPISODELESS_COMPLETION_DAYS)
        if s.clock is not None
        else None
    )
    for key, c in list(s.completions.items()):
        d = c.local_date
        if d < done_cut and not (
            waiting_cut is not None and d >= waiting_cut and _resolve(s, c.episode_id, d) is None
        ):
            del s.completions[key]  # kept while it waits for its episode (above)
    if s.pain:
        newest = max(r.local_date for r in s.pain.values())
        pain_cut = newest - dt.timedelta(days=config.pain_baseline_days)
        for key, pr in list(s.pain.items()):
            if pr.local_date < pain_cut:
                del s.pain[key]
    if s.holds:
        kept = compact_holds(s.holds, book, data_cut)
        if len(kept) != len(s.holds):
            s.holds = kept
            s.invalidate_book()
    _retire_episodes(s, _retire_cut(lows, data_cut, config))
    _forget_past_episodes(s)
    for aid, a in list(s.alerts.items()):
        if not _alert_still_needed(s, a, config):
            del s.alerts[aid]
        elif a.status == "resolved" and a.acknowledged_at is not None:
            _to_cooldown(s, a)
    for aid, cool in list(s.cooldowns.items()):
        if not (
            _cooling(s, cool.acknowledged_at, config)
            or (cool.last_data is not None and _gap_may_recur(s, cool.episode_id, cool.last_data))
        ):
            del s.cooldowns[aid]


def _retire_cut(lows: list[dt.date], data_cut: dt.date, config: AlertConfig) -> dt.date:
    """An ended episode whose end date is before this and whose day ends
    are all evaluated is seen by no rule any more, except through its routing facts.

    The bound. An ended episode E is read by
    (1) its own day ends (inactivity, adherence_low, billing_at_risk; the boundary after
        its end date ends the last 30-day period and resolves its alert; a late first
        tick catches them all up): done once its day cursor is past its end date;
    (2) the adherence window of another episode's day end, which prorates the program of
        the episode covering each day of the window: a day end still to come is at
        D >= (lowest running cursor) + 1 and looks back ``adherence_window_days`` from
        D - 1, so E's days are out of reach once E ends before low + 1 - window;
    (3) the windows of an episode not known yet. Those start at day
        ``adherence_from_episode_day`` - ``adherence_window_days`` of that episode: never
        before its start with the defaults (8 > 7), where a later-starting episode wins
        every day it shares with E. With a configuration that reaches back before the
        start, the reach is bounded by the month of late enrolment the data is kept for
        (``data_cut``);
    (4) routing: a late pain report, red flag or fall dated in E or naming it, a pending
        report waiting for it, "the latest episode", and the refusal of a second active
        episode.started: all answered by the ``PastEpisode`` kept instead of the events.
    The pain baseline (pain reports), cool-downs (alerts), the pending grace (pending
    reports) and billing's own ledger (separate) do not read E's events, so they set no
    bound here. The rules alone would let E go a day after its end with no other episode
    running; but readers of the post-batch state see E through the book too: the
    worklist rollups (``alerts.rollup``) rewrite the last 8 days' trailing 7-day
    adherence each batch, i.e. up to 14 days back from the newest day, pinned to the end
    date of the latest episode. So E also waits for ``data_cut``, the month of data and
    completions the state keeps (then those rows could change no more anyway): with the
    defaults, E retires 31 days after its end date (behind the lowest running cursor,
    else the clock).
    """
    w = config.adherence_window_days
    cuts = [data_cut]
    if lows:
        cuts.append(min(lows) + dt.timedelta(days=1 - w))
    reach = w - config.adherence_from_episode_day
    if reach > 0:
        cuts.append(data_cut - dt.timedelta(days=reach))
    return min(cuts)


def _retire_episodes(s: PatientState, cut: dt.date) -> None:
    """Replace the events of each episode no rule can look at any more (``_retire_cut``)
    by its routing facts (``PastEpisode``)."""
    book = s.book
    going: dict[str, Episode] = {}
    for ep in book.episodes.values():
        cursor = s.day_cursor.get(ep.episode_id)
        if ep.end_date is None or cursor is None or cursor <= ep.end_date:
            continue  # day ends still to evaluate
        if ep.end_date >= cut:
            continue
        if any(
            a.episode_id == ep.episode_id and a.kind in TIME_DRIVEN_KINDS and a.status != "resolved"
            for a in s.alerts.values()
        ):
            continue  # its own events (a late episode.ended) may still resolve these
        going[ep.episode_id] = ep
    if not going:
        return
    kept = {k: e for k, e in s.episode_events.items() if e.episode_id not in going}
    after, _ = fold_book(kept.values())
    after = with_pauses(after, s.holds.values())
    if after.episodes != {k: e for k, e in book.episodes.items() if k not in going}:
        return  # the other episodes would fold differently without these: keep them all
    refused = s.refused_episode_starts
    for ep in going.values():
        own = sorted(
            (e for e in s.episode_events.values() if e.episode_id == ep.episode_id),
            key=lambda e: (e.occurred_at, e.event_id),
        )
        start = next(
            e
            for e in own
            if e.type == "episode.started"
            and e.occurred_at == ep.started_at
            and e.event_id not in refused
        )
        start_key = (start.occurred_at, 1, start.event_id)
        ends = [(e.occurred_at, 0, e.event_id) for e in own if e.type == "episode.ended"]
        # The fold applies an episode.ended sorted before the start right after it.
        ended_at = min(ends)[0] if min(ends) > start_key else start.occurred_at
        assert ep.end_date is not None
        s.past[ep.episode_id] = PastEpisode(
            ep.episode_id, ep.clinician_id, ep.end_date, ep.started_at, start.event_id, ended_at
        )
        # Its day cursor stays while the past episode does (inert: on_tick walks the
        # book); the stored form derives it from the end date.
        s.data_floor.pop(ep.episode_id, None)
    s.episode_events = kept
    s.invalidate_book()


def _forget_past_episodes(s: PatientState) -> None:
    """Past episodes a year after their end date, except the latest episode (routing of a
    red flag outside every episode). An episode.started of an unknown episode dated on
    or before a forgotten one's end is then ignored (``retired_to``)."""
    if not s.past or s.clock is None:
        return
    cut = s.clock.date() - dt.timedelta(days=_PAST_EPISODE_DAYS)
    latest = _latest_episode(s)
    for key, p in list(s.past.items()):
        if p.end_date < cut and p is not latest:
            del s.past[key]
            s.day_cursor.pop(key, None)
            if s.retired_to is None or p.end_date > s.retired_to:
                s.retired_to = p.end_date


def _to_cooldown(s: PatientState, a: Alert) -> None:
    """Resolved is final: of an acknowledged alert's snapshot only the cool-down (and
    inactivity's trigger) can still change a decision (``_may_fire``, ``_fire``'s id
    check, ``acknowledge``'s "already acknowledged")."""
    inactivity = a.kind == "inactivity"
    assert a.acknowledged_at is not None
    s.cooldowns[a.id] = Cooldown(
        a.id,
        a.kind,
        a.acknowledged_at,
        a.episode_id if inactivity else "",
        _inactivity_last(a) if inactivity else None,
    )
    del s.alerts[a.id]


def _cooling(s: PatientState, acknowledged_at: dt.datetime | None, config: AlertConfig) -> bool:
    """Its cool-down can still silence the kind (late data within ``_COOLDOWN_SLACK``)."""
    return (
        acknowledged_at is not None
        and s.clock is not None
        and (s.clock < acknowledged_at + config.cooldown + _COOLDOWN_SLACK)
    )


def _alert_still_needed(s: PatientState, a: Alert, config: AlertConfig) -> bool:
    if a.status == "open":
        return True
    if a.kind in ALWAYS_FIRE_KINDS:
        return False  # acknowledged is final; every report fires anyway
    if _cooling(s, a.acknowledged_at, config):
        return True  # its cool-down can still silence the kind
    if a.status == "acknowledged":
        return True  # not resolved yet: the condition can still clear it
    if a.kind == "inactivity":
        return _gap_may_recur(s, a.episode_id, _inactivity_last(a))
    return False  # other triggers (an event, a day end, a period) are evaluated once


def _inactivity_last(a: Alert) -> dt.date:
    # Trigger (episode, newest data date L); it fired at 00:00 of L + gap + 1 (local),
    # value = gap.
    return a.fired_at.date() - dt.timedelta(days=int(a.value or 0) + 1)


def _gap_may_recur(s: PatientState, episode_id: str, last: dt.date) -> bool:
    """Inactivity's trigger (episode, L) can fire again only while L is still the
    episode's newest data date and a day end inside the episode is still to come."""
    ep = s.book.episodes.get(episode_id)
    if ep is None:
        return False
    cursor = s.day_cursor.get(ep.episode_id)
    if ep.end_date is not None and cursor is not None and cursor >= ep.end_date:
        return False  # inactivity is judged at day ends D inside the episode: none left
    return _newest_data_date(s, ep) <= last


def _newest_data_date(s: PatientState, ep: Episode) -> dt.date:
    newest = s.data_floor.get(ep.episode_id, ep.start_date)
    for r in s.data.values():
        d = r.local_date
        if d > newest:
            owner = s.book.resolve(r.episode_id, d)
            if owner is not None and owner.episode_id == ep.episode_id:
                newest = d
    return newest
