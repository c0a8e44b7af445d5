"""Risk rules (pure): the alert engine of design/alert-rules.md.

Three entry points, each ``(state, ...) -> (new_state, changes)``; none reads the clock or
modifies its input:

- ``on_event``: event-driven rules (red_flag, fall, pain_high, pain_increase) and the
  auto-resolution of inactivity by patient data. Events are taken in arrival order;
  a repeated event_id changes nothing.
- ``on_tick``: time-driven rules at the local day boundaries (00:00 in the episode's
  ``timezone``) that passed since the previous tick: inactivity at the start of day
  L + 4, adherence_low at the end of each day from day 8. A boundary is evaluated once,
  so a second tick with the same ``now`` fires nothing; a late first tick catches up
  every missed boundary, which is how the offline evaluator (one tick at --as-of) and the
  streaming timer (a tick every few seconds) agree.
- ``acknowledge``: a clinician's acknowledgement (starts the cool-down).

Time-driven alerts carry the boundary instant as ``fired_at`` (not the tick time), and all
alert ids are derived from (patient, kind, trigger), so a replay gives identical alerts.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from alerts.adherence import Completion, adherence_on, sessions_by_day
from alerts.models import (
    ALWAYS_FIRE_KINDS,
    DEFAULT_CONFIG,
    SEVERITY,
    Alert,
    AlertChange,
    AlertConfig,
    AlertKind,
    alert_id,
)
from alerts.state import DataRecord, PainRecord, PatientState
from schemas.episodes import Episode, EpisodeBook
from schemas.events import (
    EpisodeEnded,
    EpisodeStarted,
    Event,
    ExerciseCompleted,
    PainReported,
    ProgramUpdated,
    SymptomReported,
    is_patient_data,
)

_ONE_DAY = dt.timedelta(days=1)
# Kinds that "resolve when the condition clears" and are about an episode's course: they
# also close when their episode ends (the condition no longer applies).
_EPISODE_COURSE_KINDS: tuple[AlertKind, ...] = ("inactivity", "adherence_low")

# Hook for billing_at_risk (low), deliberately not implemented yet: at the end of local
# day d of a 30-day period, fire once per period when "data days so far + days left after
# d < 16" (billing.rules.billing_at_risk(PatientBillingState, d) answers that; a
# PatientBillingState can be built from this state's `data` and `episode_events`); trigger
# "episode_id:period-k" so it fires once per period, fired_at = the day-end boundary;
# resolve at the period's end. It goes in on_tick, next to _adherence_rule.


# --- event-driven --------------------------------------------------------------------------


def on_event(
    state: PatientState, event: Event, config: AlertConfig = DEFAULT_CONFIG
) -> tuple[PatientState, list[AlertChange]]:
    """Fold one event (arrival order) and apply the event-driven rules."""
    if event.patient_id != state.patient_id:
        raise ValueError(f"event {event.event_id} belongs to another patient than this state")
    if event.event_id in state.seen_event_ids:
        return state, []  # duplicate or replay: never counted or fired twice
    s = state.copy_for_update()
    return s, apply_event(s, event, config)


def apply_event(
    s: PatientState, event: Event, config: AlertConfig = DEFAULT_CONFIG
) -> list[AlertChange]:
    """``on_event`` on a state the caller owns (from ``copy_for_update``), in place.

    For a batch of one patient's events: one copy for the batch instead of one per event.
    """
    if event.patient_id != s.patient_id:
        raise ValueError(f"event {event.event_id} belongs to another patient than this state")
    if event.event_id in s.seen_event_ids:
        return []  # duplicate or replay: never counted or fired twice
    s.seen_event_ids.add(event.event_id)
    changes: list[AlertChange] = []

    if isinstance(event, (EpisodeStarted, ProgramUpdated, EpisodeEnded)):
        s.episode_events[event.event_id] = event
        s.invalidate_book()
        if isinstance(event, EpisodeEnded):
            for kind in _EPISODE_COURSE_KINDS:
                changes += _resolve_kind(
                    s, kind, event.occurred_at, event.event_id, episode_id=event.episode_id
                )
        return changes

    if is_patient_data(event):
        s.data[event.event_id] = DataRecord(
            occurred_at=event.occurred_at, episode_id=getattr(event, "episode_id", None)
        )
        # Rule table: inactivity "resolves when any patient-data event" arrives.
        changes += _resolve_kind(s, "inactivity", event.occurred_at, event.event_id)

    if isinstance(event, ExerciseCompleted):
        s.completions[event.event_id] = Completion.of(event)
    elif isinstance(event, PainReported):
        changes += _pain_rules(s, event, config)
    elif isinstance(event, SymptomReported):
        changes += _symptom_rules(s, event, config)
    return changes


def _pain_rules(s: PatientState, event: PainReported, config: AlertConfig) -> list[AlertChange]:
    newest = max((r.occurred_at for r in s.pain.values()), default=None)
    # Stored first: even a late report counts in later baselines.
    s.pain[event.event_id] = PainRecord(occurred_at=event.occurred_at, score=event.score)
    if newest is not None and event.occurred_at < newest:
        return []  # older than the newest known report: changes no pain state
    episode = s.book.resolve(event.episode_id, event.local_date)
    at, eid, score = event.occurred_at, event.event_id, event.score
    changes: list[AlertChange] = []

    if score >= config.pain_high_threshold:
        if episode is not None:  # no episode, no clinician to route to
            changes += _fire(
                s, "pain_high", episode, eid, at, config,
                event_ids=(eid,), value=score, threshold=config.pain_high_threshold,
            )
    else:
        changes += _resolve_kind(s, "pain_high", at, eid)

    baseline = pain_baseline(s.pain, event.event_id, event.local_date, config)
    if baseline is not None:  # fewer than 2 reports in d-7..d-1: neither fires nor resolves
        threshold = baseline + config.pain_increase_delta
        if score >= threshold:
            if episode is not None:
                changes += _fire(
                    s, "pain_increase", episode, eid, at, config,
                    event_ids=(eid,), value=score, threshold=threshold,
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


def _symptom_rules(
    s: PatientState, event: SymptomReported, config: AlertConfig
) -> list[AlertChange]:
    if not event.red_flags and not event.fall:
        return []  # an empty report is a check-in
    episode = s.book.resolve(event.episode_id, event.local_date) or _latest_episode(s.book)
    if episode is None:
        return []  # never enrolled: nobody to route to
    eid, at = event.event_id, event.occurred_at
    changes: list[AlertChange] = []
    if event.red_flags:
        changes += _fire(
            s, "red_flag", episode, eid, at, config,
            event_ids=(eid,), details=tuple(event.red_flags),
        )
    if event.fall:
        changes += _fire(s, "fall", episode, eid, at, config, event_ids=(eid,))
    return changes


def _latest_episode(book: EpisodeBook) -> Episode | None:
    # A red flag or fall outside any episode's dates (e.g. reported the day after
    # discharge) is too important to drop: it goes to the most recent episode's clinician.
    eps = list(book.episodes.values())
    return max(eps, key=lambda e: e.start_date) if eps else None


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
    - inactivity as of day D, for days D inside the episode.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    s = state.copy_for_update()
    book = s.book
    counts = sessions_by_day(s.completions, book)
    changes: list[AlertChange] = []
    for ep in sorted(book.episodes.values(), key=lambda e: (e.start_date, e.episode_id)):
        today = now.astimezone(ZoneInfo(ep.timezone)).date()
        last = today if ep.end_date is None else min(today, ep.end_date)
        day = s.day_cursor.get(ep.episode_id, ep.start_date) + _ONE_DAY
        while day <= last:
            boundary = local_midnight(day, ep.timezone)
            ended = day - _ONE_DAY
            episode_day = (ended - ep.start_date).days + 1
            if episode_day >= config.adherence_from_episode_day:
                changes += _adherence_rule(s, book, counts, ep, ended, boundary, config)
            # (billing_at_risk for `ended` goes here, see the hook at the top.)
            if ep.covers(day):
                changes += _inactivity_rule(s, book, ep, day, boundary, config)
            s.day_cursor[ep.episode_id] = day
            day += _ONE_DAY
    return s, changes


def _adherence_rule(
    s: PatientState,
    book: EpisodeBook,
    counts: Mapping[dt.date, int],
    ep: Episode,
    day: dt.date,
    boundary: dt.datetime,
    config: AlertConfig,
) -> list[AlertChange]:
    ratio = adherence_on(counts, book, day, config.adherence_window_days)
    threshold = config.adherence_low_fraction
    if ratio is not None and ratio < threshold:
        return _fire(
            s, "adherence_low", ep, f"{ep.episode_id}:{day.isoformat()}", boundary, config,
            value=round(float(ratio), 4), threshold=float(threshold),
        )
    # Back >= 50% (or nothing prescribed any more): all clear, decided at the day's end
    # like the firing, so there is no triggering event to record.
    return _resolve_kind(s, "adherence_low", boundary, None)


def _inactivity_rule(
    s: PatientState,
    book: EpisodeBook,
    ep: Episode,
    day: dt.date,
    boundary: dt.datetime,
    config: AlertConfig,
) -> list[AlertChange]:
    # L = newest data date of this episode before `day` (data known now), or the start.
    newest = ep.start_date
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
        s, "inactivity", ep, f"{ep.episode_id}:{newest.isoformat()}", boundary, config,
        value=gap, threshold=config.inactivity_days,
    )
    if changes:
        # Catching up a boundary that is already past: data dated on/after it is known, and
        # would have resolved the alert on arrival. Resolve with the first such event.
        later = sorted(
            (r.occurred_at, key) for key, r in s.data.items() if r.local_date >= day
        )
        if later:
            at, key = later[0]
            changes += _resolve_kind(s, "inactivity", at, key)
    return changes


# --- acknowledgement -----------------------------------------------------------------------


def acknowledge(
    state: PatientState, alert_id_: str, at: dt.datetime, by: str
) -> tuple[PatientState, list[AlertChange]]:
    """Record a clinician's acknowledgement. Idempotent: a second one changes nothing.

    An open alert becomes ``acknowledged``; a resolved one keeps its status but records the
    acknowledgement. Either way the cool-down of its kind starts at ``at``.
    Raises KeyError for an alert id this patient does not have.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at must be timezone-aware")
    current = state.alerts[alert_id_]
    if current.acknowledged_at is not None:
        return state, []
    s = state.copy_for_update()
    status = "acknowledged" if current.status == "open" else current.status
    updated = current.model_copy(
        update={"status": status, "acknowledged_at": at, "acknowledged_by": by}
    )
    s.alerts[alert_id_] = updated
    return s, [AlertChange(change="acknowledged", alert=updated)]


# --- shared bookkeeping --------------------------------------------------------------------


def _may_fire(s: PatientState, kind: AlertKind, at: dt.datetime, config: AlertConfig) -> bool:
    if kind in ALWAYS_FIRE_KINDS:
        return True
    for a in s.alerts.values():
        if a.kind != kind:
            continue
        if a.status == "open":
            return False  # one open alert per (patient, kind)
        if a.acknowledged_at is not None and at < a.acknowledged_at + config.cooldown:
            return False  # silent for the cool-down after an acknowledgement
    return True


def _fire(
    s: PatientState,
    kind: AlertKind,
    episode: Episode,
    trigger: str,
    at: dt.datetime,
    config: AlertConfig,
    *,
    event_ids: tuple[str, ...] = (),
    value: float | None = None,
    threshold: float | None = None,
    details: tuple[str, ...] = (),
) -> list[AlertChange]:
    aid = alert_id(s.patient_id, kind, trigger)
    if aid in s.alerts or not _may_fire(s, kind, at, config):
        return []  # the id check is what makes a replay harmless
    alert = Alert(
        id=aid,
        patient_id=s.patient_id,
        episode_id=episode.episode_id,
        clinician_id=episode.clinician_id,
        kind=kind,
        severity=SEVERITY[kind],
        event_ids=event_ids,
        value=value,
        threshold=threshold,
        details=details,
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
