"""The batch engine (pure): one worker batch of events, ticks, acknowledgements and
snoozes.

``apply_batch(states, items, config, partition_of)`` folds the items in arrival order into
the patients' states (keyed by ``PatientKey``: (organisation, patient_id)) and returns only
what changed: the states it touched, every alert
change in order, and the ``episode.started`` events it refused. The worker's agent loads the
states, calls it, writes the result in the batch's transaction and publishes; the offline
evaluator runs the same rules through ``alerts.rules`` one event at a time.

Items are the events the ``events`` table did not have yet (duplicates never reach here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from alerts.models import DEFAULT_CONFIG, Alert, AlertChange, AlertConfig, Disposition
from alerts.rules import acknowledge, apply_event_outcome, on_tick, prune, snooze
from alerts.state import PatientState, new_state
from schemas.events import DEFAULT_ORG, EpisodeStarted, Event, PatientKey


@dataclass(frozen=True, slots=True)
class EventItem:
    event: Event
    # the record's JSON as received (the worker stores it as the event's payload instead of
    # serialising the model again); None: serialise the model
    raw: bytes | None = None

    @property
    def patient_id(self) -> str:
        return self.event.patient_id

    @property
    def key(self) -> PatientKey:
        return self.event.patient_key


@dataclass(frozen=True, slots=True)
class TickItem:
    """'Evaluate the time-driven rules as of ``now``' for every patient of ``partition``."""

    now: dt.datetime
    partition: int


@dataclass(frozen=True, slots=True)
class AckItem:
    patient_id: str
    alert_id: str
    at: dt.datetime
    by: str
    # The stored alert, for one that already left the state (resolved); None if unknown.
    stored: Alert | None = None
    org_id: str = DEFAULT_ORG
    disposition: Disposition | None = None
    note: str | None = None

    @property
    def key(self) -> PatientKey:
        return (self.org_id, self.patient_id)


@dataclass(frozen=True, slots=True)
class SnoozeItem:
    """A clinician's snooze of one open alert until ``until``."""

    patient_id: str
    alert_id: str
    at: dt.datetime
    by: str
    until: dt.datetime
    reason: str
    org_id: str = DEFAULT_ORG

    @property
    def key(self) -> PatientKey:
        return (self.org_id, self.patient_id)


Item = EventItem | TickItem | AckItem | SnoozeItem


@dataclass
class BatchResult:
    states: dict[PatientKey, PatientState] = field(default_factory=dict)  # touched ones only
    changes: list[AlertChange] = field(default_factory=list)
    refused: list[tuple[EpisodeStarted, str]] = field(default_factory=list)


def apply_batch(
    states: Mapping[PatientKey, PatientState],
    items: Sequence[Item],
    config: AlertConfig = DEFAULT_CONFIG,
    partition_of: Callable[[PatientKey], int] | None = None,
) -> BatchResult:
    """Fold ``items`` in order. ``states`` holds every patient an item names (missing ones
    start empty) and, for a tick, every patient of its partition; it is not modified.
    ``partition_of`` maps a patient to its partition (needed only with ticks)."""
    out = BatchResult()
    owned: dict[PatientKey, PatientState] = {}  # one copy per patient and batch, in place

    def mine(key: PatientKey) -> PatientState:
        s = owned.get(key)
        if s is None:
            base = states.get(key)
            s = owned[key] = (
                base.copy_for_update() if base is not None else new_state(key[1], key[0])
            )
        return s

    for item in items:
        if isinstance(item, EventItem):
            s = mine(item.key)
            changes, reason = apply_event_outcome(s, item.event, config)
            out.changes += changes
            if reason is not None and isinstance(item.event, EpisodeStarted):
                out.refused.append((item.event, reason))
        elif isinstance(item, TickItem):
            if partition_of is None:
                raise ValueError("ticks need partition_of")
            keys = {k for k in states if partition_of(k) == item.partition}
            keys |= {k for k in owned if partition_of(k) == item.partition}
            for key in sorted(keys):
                current = owned.get(key) or states[key]
                ticked, changes = on_tick(current, item.now, config)
                if ticked is not current:
                    owned[key] = ticked
                out.changes += changes
        else:
            known = owned.get(item.key) or states.get(item.key)
            if known is None:
                continue  # unknown patient: the API answered 404 already
            changed, changes = _clinician_action(known, item, config)
            if changed is not known:
                owned[item.key] = changed
            out.changes += changes
    for key, s in owned.items():
        prune(s, config)
        out.states[key] = s
    return out


def _clinician_action(
    s: PatientState, item: AckItem | SnoozeItem, config: AlertConfig
) -> tuple[PatientState, list[AlertChange]]:
    """An acknowledgement or a snooze applied to the patient's state (an unknown alert id
    changes nothing: the API answered 404 already)."""
    if isinstance(item, SnoozeItem):
        return snooze(s, item.alert_id, item.at, item.by, item.until, item.reason)
    try:
        return acknowledge(
            s,
            item.alert_id,
            item.at,
            item.by,
            item.stored,
            config,
            item.disposition,
            item.note,
        )
    except KeyError:
        return s, []
