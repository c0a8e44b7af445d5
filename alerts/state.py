"""Per-patient state of the adherence and alert engine: compact and bounded (pure).

Only what the rules still need is kept, so a patient's state does not grow with history:
- the episode-shaping events that shaped the book (a refused second ``episode.started`` is
  dead-lettered and not kept);
- patient-data days (first event per local date and named episode) from 31 days before the
  oldest day boundary the timer has still to evaluate (billing_at_risk counts a 30-day
  period), plus, per episode, the newest data date dropped (inactivity's "L");
- completed sessions (one record per session, local date and named episode: the earliest
  completion) from 7 days before that boundary (the adherence window); one that no known
  episode covers (its ``episode.started`` not arrived yet) for 120 days behind the newest
  instant seen (``alerts.rules.EPISODELESS_COMPLETION_DAYS``), so a late enrolment still
  counts it: the bound for a patient who never gets an episode;
- pain reports in the baseline horizon (7 local days before the newest report);
- alerts that are not resolved; of an acknowledged alert that resolved, only a compact
  cool-down entry (id, kind, acknowledged_at) while its cool-down can matter;
- per-episode day cursors, and pending events (patient data whose episode is not known yet);
- the holds that pause and resume programs (falls, ``program.paused``, ``program.resumed``:
  ``alerts.pauses``): those of the last month, and of older ones per episode only the ones
  its pauses still depend on (``compact_holds``);
- episodes: the full episode events while any rule can still look at them; an episode the
  timer has finished and that no remaining day end can reach is *retired* to a compact
  ``PastEpisode`` (id, clinician, dates, active interval) that keeps routing and the
  second-active-episode refusal exact for late events (the bound: ``alerts.rules.prune``).
  A past episode is forgotten a year after its end, except the patient's latest.

Where a retired episode answers differently from its kept events (all far outside the
lateness the rules are built for, and on the safe side):
- a late event that would re-shape it (a re-sent ``episode.started`` that folds before
  the kept one, a ``program.updated``) is not kept: its first start and program stand;
- a back-dated ``episode.started`` of a new episode that would still be open at a past
  episode's start no longer makes the fold refuse that (long finished) episode and every
  later one: the past episodes keep routing;
- a year after its end a past episode is forgotten: a report dated in it is routed as one
  outside every episode (the latest episode's clinician; naming it, the clinic-wide
  recipient after the grace period), and an ``episode.started`` dated on or before the
  newest forgotten end is ignored (``retired_to``).

Duplicate detection is the driver's: the worker feeds only events the ``events`` table did
not have; the offline evaluator keeps a set of ids while it reads a file.

``encode_state`` / ``decode_state`` give the stored form (compact JSON arrays via orjson).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import TypeAdapter

from alerts.adherence import Completion
from alerts.models import Alert, AlertKind, alert_id
from alerts.pauses import HOLD_CODES, HOLD_KINDS, Hold, with_pauses
from schemas.episodes import EpisodeBook, EpisodeEvent, fold_book
from schemas.events import DEFAULT_ORG, PatientKey

_EPISODE_EVENT: TypeAdapter[EpisodeEvent] = TypeAdapter(EpisodeEvent)
_ALERT_JSON: TypeAdapter[Alert] = TypeAdapter(Alert)
# 3: adds past episodes ("pe"), cool-down entries ("cd") and the retired horizon ("rt");
# every other key is encoded as in 2, so a version-2 state decodes as it is (and is
# compacted by the next prune).
# 4: adds the organisation ("o", omitted for DEFAULT_ORG) and "li" (legacy alert ids).
# States of versions 2 and 3 were written when alert ids named no organisation: they
# decode with ``legacy_ids`` (infra/migrations/013 adds their "o").
# 5: adds the holds of paused programs ("ph"); earlier versions decode as they are (none).
STATE_VERSION = 5
_ONE_DAY = dt.timedelta(days=1)
_DECODABLE_VERSIONS = (2, 3, 4, 5)


@dataclass(frozen=True, slots=True)
class DataRecord:
    """The first patient-data event (by instant) of one local date and named episode.

    Once the timer has evaluated the day, only the date matters: ``event_id`` is then ""
    and ``occurred_at`` 00:00 UTC of that local date."""

    occurred_at: dt.datetime
    episode_id: str | None
    event_id: str

    @property
    def local_date(self) -> dt.date:
        return self.occurred_at.date()


@dataclass(frozen=True, slots=True)
class PainRecord:
    occurred_at: dt.datetime
    score: int

    @property
    def local_date(self) -> dt.date:
        return self.occurred_at.date()


@dataclass(frozen=True, slots=True)
class IntakeDue:
    """What the intake_overdue timer needs of one intake (docs/intake-rules.md): the version
    in force ((occurred_at, event_id): the latest instant, then the larger id), its due time
    and whether it is urgent (under ``AlertConfig.intake_rules``), the first contact (the
    earliest, one before the submission too) and whether the timer already looked at it
    after its due time. Kept for the patient's every intake: a handful, a few dozen bytes."""

    version: tuple[dt.datetime, str] | None = None  # None: only contacts arrived so far
    due_at: dt.datetime | None = None
    urgent: bool = False
    contacted_at: dt.datetime | None = None
    checked: bool = False  # the timer passed due_at (fired if it was not contacted)


@dataclass(frozen=True, slots=True)
class Pending:
    """A pain or symptom report whose episode is not known yet, evaluated when it arrives.

    What the rules would have decided from the pain history at arrival (``stale``: older
    than the newest known report; ``baseline``) is kept, so that a late episode gives the
    same alerts as an episode that came first.
    """

    event_id: str
    type: str  # "pain.reported" | "symptom.reported"
    occurred_at: dt.datetime
    known_at: dt.datetime  # when the system could first know it (max of occurred, received)
    episode_id: str | None
    score: int = 0
    stale: bool = False
    baseline: float | None = None
    red_flags: tuple[str, ...] = ()
    fall: bool = False

    @property
    def local_date(self) -> dt.date:
        return self.occurred_at.date()


@dataclass(frozen=True, slots=True)
class PastEpisode:
    """What the rules keep of a retired episode: enough to route a late report to it
    (``resolve``, "the latest episode") and to refuse a late ``episode.started`` that
    falls inside its active time, as the full episode events would have."""

    episode_id: str
    clinician_id: str
    end_date: dt.date
    # The active interval in event time, as the fold saw it: from the episode.started
    # (instant, event_id: ties at one instant fold by event_id) to the first episode.ended
    # (``ended_at == started_at`` when an episode.ended folded before the start).
    started_at: dt.datetime
    start_event_id: str
    ended_at: dt.datetime

    @property
    def start_date(self) -> dt.date:
        return self.started_at.date()  # as Episode.start_date: the start's local date

    def covers(self, day: dt.date) -> bool:
        return self.start_date <= day <= self.end_date


@dataclass(frozen=True, slots=True)
class Cooldown:
    """What is left of an acknowledged alert that resolved: it silences its kind until
    ``acknowledged_at`` + the configured cool-down, and its id may not fire again.

    ``episode_id`` and ``last_data`` (L of its trigger) only for inactivity, whose trigger
    (episode, L) can come round again while L is still the episode's newest data date."""

    alert_id: str
    kind: AlertKind
    acknowledged_at: dt.datetime
    episode_id: str = ""
    last_data: dt.date | None = None


def data_key(day: dt.date, episode_id: str | None) -> str:
    return f"{day.isoformat()}|{episode_id or ''}"


def completion_key(c: Completion) -> str:
    return f"{c.session_id or ''}|{c.local_date.isoformat()}|{c.episode_id or ''}"


@dataclass(eq=False)
class PatientState:
    """Everything the rules need about one patient.

    The pure functions of ``alerts.rules`` either return a new state (``on_event``,
    ``on_tick``, ``acknowledge``) or fold in place into a copy the caller owns
    (``copy_for_update``; the batch engine makes one copy per patient and batch).
    """

    patient_id: str
    # the patient is (org_id, patient_id): the same patient_id in another organisation has
    # a state of its own
    org_id: str = DEFAULT_ORG
    # alert ids as they were before patients were scoped by organisation (states stored
    # then): kept so that their open alerts, cool-downs and periods keep their ids
    legacy_ids: bool = False
    episode_events: dict[str, EpisodeEvent] = field(default_factory=dict)
    data: dict[str, DataRecord] = field(default_factory=dict)
    # per episode: the newest data date no longer in ``data`` (pruned)
    data_floor: dict[str, dt.date] = field(default_factory=dict)
    pain: dict[str, PainRecord] = field(default_factory=dict)
    completions: dict[str, Completion] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)
    # Per episode: the last local date whose start (00:00 in the episode's time zone) the
    # timer has evaluated. Makes on_tick idempotent and lets it catch up missed days.
    day_cursor: dict[str, dt.date] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    # The newest instant the state has seen (event occurred_at, tick now): the reference
    # for dropping acknowledged alerts whose cool-down can no longer matter.
    clock: dt.datetime | None = None
    # acknowledged and resolved alerts, by id, reduced to their cool-down
    cooldowns: dict[str, Cooldown] = field(default_factory=dict)
    # retired episodes, by episode_id (their events are no longer in ``episode_events``)
    past: dict[str, PastEpisode] = field(default_factory=dict)
    # The newest end date of a past episode that was forgotten: an episode.started of an
    # unknown episode dated on or before it is ignored (it could re-create a forgotten one).
    retired_to: dt.date | None = None
    # the patient's intakes, by intake_id (intake_overdue)
    intakes: dict[str, IntakeDue] = field(default_factory=dict)
    # falls, program.paused and program.resumed, by event_id: the pauses (alerts.pauses)
    holds: dict[str, Hold] = field(default_factory=dict)

    _book: EpisodeBook | None = field(default=None, repr=False)
    _refused: dict[str, str] = field(default_factory=dict, repr=False)
    # The stored forms of its alerts and episode events (``_stored_form``), by id() of the
    # object they were made from (which the entry keeps alive): an item is frozen, so while
    # the state holds the same object its form stays right; a new object (an alert
    # acknowledged, resolved) is dumped again. Replaced, never changed, by each encoding, so
    # copies may share it. Derived, not state.
    _forms: dict[int, tuple[object, dict[str, Any]]] = field(default_factory=dict, repr=False)

    @property
    def book(self) -> EpisodeBook:
        """The patient's episodes, folded in event-time order, with their programs' pauses
        (cached, derived)."""
        if self._book is None:
            book, self._refused = fold_book(self.episode_events.values())
            self._book = with_pauses(book, self.holds.values()) if self.holds else book
        return self._book

    @property
    def refused_episode_starts(self) -> dict[str, str]:
        """event_id -> reason, for kept episode.started events the book refuses."""
        _ = self.book
        return self._refused

    def invalidate_book(self) -> None:
        self._book = None

    @property
    def key(self) -> PatientKey:
        return (self.org_id, self.patient_id)

    def alert_id(self, kind: AlertKind, trigger: str) -> str:
        """The id of this patient's alert of ``kind`` for ``trigger``."""
        return alert_id(self.patient_id, kind, trigger, None if self.legacy_ids else self.org_id)

    def _facts(self) -> tuple[Any, ...]:
        return (
            self.patient_id,
            self.org_id,
            self.legacy_ids,
            self.episode_events,
            self.data,
            self.data_floor,
            self.pain,
            self.completions,
            self.alerts,
            self.day_cursor,
            self.pending,
            self.clock,
            self.cooldowns,
            self.past,
            self.retired_to,
            self.intakes,
            self.holds,
        )

    def __eq__(self, other: object) -> bool:
        # Value equality of the stored facts; the cached book is derived, not state.
        if not isinstance(other, PatientState):
            return NotImplemented
        return self._facts() == other._facts()

    __hash__ = None  # type: ignore[assignment]  # mutable container

    def copy_for_update(self) -> PatientState:
        """A copy whose containers may be changed without touching ``self``.

        Containers are copied, their items shared: every item is frozen, so a shallow copy
        per container is enough (the state is bounded, so this is cheap).
        """
        new = PatientState(
            patient_id=self.patient_id,
            org_id=self.org_id,
            legacy_ids=self.legacy_ids,
            episode_events=dict(self.episode_events),
            data=dict(self.data),
            data_floor=dict(self.data_floor),
            pain=dict(self.pain),
            completions=dict(self.completions),
            alerts=dict(self.alerts),
            day_cursor=dict(self.day_cursor),
            pending=dict(self.pending),
            clock=self.clock,
            cooldowns=dict(self.cooldowns),
            past=dict(self.past),
            retired_to=self.retired_to,
            intakes=dict(self.intakes),
            holds=dict(self.holds),
        )
        new._book, new._refused = self._book, self._refused  # shared until invalidated
        new._forms = self._forms
        return new


def new_state(patient_id: str, org_id: str = DEFAULT_ORG) -> PatientState:
    return PatientState(patient_id=patient_id, org_id=org_id)


# --- stored form ------------------------------------------------------------------------------


def _pts(v: str) -> dt.datetime:
    return dt.datetime.fromisoformat(v)


def _seconds(v: dt.timedelta) -> int | float:
    whole = v.days * 86400 + v.seconds
    return whole if not v.microseconds else whole + v.microseconds / 1e6


def state_to_dict(state: PatientState) -> dict[str, Any]:
    """A JSON-able dict of compact arrays (the stored form, decoded); round-trips with
    ``state_from_dict``."""
    return dict(orjson.loads(encode_state(state)))


def _stored_form(state: PatientState) -> dict[str, Any]:
    """The stored form before JSON: compact arrays, with instants and dates left as they
    are. orjson writes them in ISO 8601 exactly as ``isoformat()`` does (the offset, and
    the microseconds when there are any), in C: a batch encodes every state it touched,
    and the strings made here one by one were most of that time (docs/benchmarks.md,
    tenth round). An alert or episode event the state held at its last encoding (or
    decoding) as the same object is not dumped again (``PatientState._forms``): a year's
    open alerts cost every batch that touched the patient (eleventh round)."""
    known = state._forms
    forms: dict[int, tuple[object, dict[str, Any]]] = {}

    def form(item: EpisodeEvent | Alert) -> dict[str, Any]:
        hit = known.get(id(item))
        if hit is not None and hit[0] is item:
            made = hit[1]
        elif isinstance(item, Alert):  # each alert's org_id is the state's
            made = item.model_dump(
                mode="json", exclude_none=True, exclude_defaults=True, exclude={"org_id"}
            )
        else:
            made = item.model_dump(mode="json", exclude_none=True)
        forms[id(item)] = (item, made)
        return made

    out: dict[str, Any] = {"v": STATE_VERSION, "p": state.patient_id}
    if state.org_id != DEFAULT_ORG:
        out["o"] = state.org_id
    if state.legacy_ids:
        out["li"] = 1
    if state.episode_events:
        out["ep"] = [form(e) for e in state.episode_events.values()]
    if state.data:
        out["d"] = [
            [r.occurred_at, r.episode_id, r.event_id]
            if r.event_id
            else [r.local_date, r.episode_id]
            for r in state.data.values()
        ]
    if state.data_floor:
        out["df"] = dict(state.data_floor)
    if state.pain:
        out["pn"] = [[k, r.occurred_at, r.score] for k, r in state.pain.items()]
    if state.completions:
        out["c"] = [[c.occurred_at, c.session_id, c.episode_id] for c in state.completions.values()]
    if state.alerts:
        out["a"] = [form(a) for a in state.alerts.values()]
    # A past episode's cursor is the day after its end date unless an earlier
    # episode.ended moved the end: only then is it written.
    cursors = {
        k: v
        for k, v in state.day_cursor.items()
        if k not in state.past or v != state.past[k].end_date + _ONE_DAY
    }
    if cursors:
        out["dc"] = cursors
    if state.pending:
        out["pd"] = [
            [
                p.event_id,
                p.type,
                p.occurred_at,
                p.known_at,
                p.episode_id,
                p.score,
                p.stale,
                p.baseline,
                list(p.red_flags),
                p.fall,
            ]
            for p in state.pending.values()
        ]
    if state.clock is not None:
        out["t"] = state.clock
    if state.cooldowns:
        out["cd"] = [
            [c.alert_id, c.kind, c.acknowledged_at]
            + ([c.episode_id, c.last_data] if c.last_data else [])
            for c in state.cooldowns.values()
        ]
    if state.past:
        # The end as offsets from the start (days; seconds, whole when they are): a third
        # shorter than two more timestamps, and only instants are compared.
        out["pe"] = [
            [
                p.episode_id,
                p.clinician_id,
                p.started_at,
                p.start_event_id,
                (p.end_date - p.start_date).days,
                _seconds(p.ended_at - p.started_at),
            ]
            for p in state.past.values()
        ]
    if state.retired_to is not None:
        out["rt"] = state.retired_to
    if state.intakes:
        out["in"] = [
            [
                iid,
                list(d.version) if d.version is not None else None,
                d.due_at,
                int(d.urgent),
                d.contacted_at,
                int(d.checked),
            ]
            for iid, d in state.intakes.items()
        ]
    if state.holds:
        # [occurred_at, event_id, kind code], and the episode_id when the event names one
        out["ph"] = [
            [h.occurred_at, h.event_id, HOLD_CODES[h.kind]]
            + ([h.episode_id] if h.episode_id is not None else [])
            for h in state.holds.values()
        ]
    state._forms = forms
    return out


def state_from_dict(data: dict[str, Any]) -> PatientState:
    version = data.get("v")
    if version not in _DECODABLE_VERSIONS:
        raise ValueError(f"unknown alert state version {version!r}")
    s = PatientState(
        patient_id=data["p"],
        org_id=data.get("o", DEFAULT_ORG),
        legacy_ids=bool(data.get("li", version < 4)),
    )
    # A state the current encoder wrote holds each item's stored form as it is: kept, so the
    # next encoding of an unchanged item writes it again without dumping it.
    forms: dict[int, tuple[object, dict[str, Any]]] = s._forms if version == STATE_VERSION else {}
    for e in data.get("ep", ()):
        ev = _EPISODE_EVENT.validate_python(e)
        s.episode_events[ev.event_id] = ev
        forms[id(ev)] = (ev, e)
    for item in data.get("d", ()):
        if len(item) == 2:  # a day already evaluated: only its date counts
            day, ep = dt.date.fromisoformat(item[0]), item[1]
            r = DataRecord(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC), ep, "")
        else:
            at, ep, eid = item
            r = DataRecord(_pts(at), ep, eid)
        s.data[data_key(r.local_date, ep)] = r
    s.data_floor = {k: dt.date.fromisoformat(v) for k, v in data.get("df", {}).items()}
    for k, at, score in data.get("pn", ()):
        s.pain[k] = PainRecord(_pts(at), score)
    for at, session, ep in data.get("c", ()):
        c = Completion(occurred_at=_pts(at), session_id=session, episode_id=ep)
        s.completions[completion_key(c)] = c
    for a in data.get("a", ()):
        alert = _ALERT_JSON.validate_python({**a, "org_id": s.org_id})
        s.alerts[alert.id] = alert
        forms[id(alert)] = (alert, a)
    s.day_cursor = {k: dt.date.fromisoformat(v) for k, v in data.get("dc", {}).items()}
    for eid, typ, at, known, ep, score, stale, baseline, flags, fall in data.get("pd", ()):
        s.pending[eid] = Pending(
            eid, typ, _pts(at), _pts(known), ep, score, stale, baseline, tuple(flags), fall
        )
    if "t" in data:
        s.clock = _pts(data["t"])
    for item in data.get("cd", ()):
        aid, kind, acked = item[:3]
        ep, last = (item[3], dt.date.fromisoformat(item[4])) if len(item) > 3 else ("", None)
        s.cooldowns[aid] = Cooldown(aid, kind, _pts(acked), ep, last)
    for ep, clinician, started, start_eid, end_days, ended_s in data.get("pe", ()):
        started_at = _pts(started)
        p = s.past[ep] = PastEpisode(
            ep,
            clinician,
            started_at.date() + dt.timedelta(days=end_days),
            started_at,
            start_eid,
            started_at + dt.timedelta(seconds=ended_s),
        )
        s.day_cursor.setdefault(ep, p.end_date + _ONE_DAY)
    if "rt" in data:
        s.retired_to = dt.date.fromisoformat(data["rt"])
    for iid, version, due, urgent, contacted, checked in data.get("in", ()):
        s.intakes[iid] = IntakeDue(
            (_pts(version[0]), version[1]) if version is not None else None,
            _pts(due) if due is not None else None,
            bool(urgent),
            _pts(contacted) if contacted is not None else None,
            bool(checked),
        )
    for item in data.get("ph", ()):
        at, eid, code = item[:3]
        s.holds[eid] = Hold(_pts(at), eid, HOLD_KINDS[code], item[3] if len(item) > 3 else None)
    return s


def encode_state(state: PatientState) -> bytes:
    return orjson.dumps(_stored_form(state))


def decode_state(raw: bytes | str) -> PatientState:
    return state_from_dict(orjson.loads(raw))
