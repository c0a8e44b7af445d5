"""The batch engine (pure): one worker batch of events, ticks and acknowledgements.

``apply_batch(states, items, config, partition_of)`` folds the items in arrival order into
the patients' states and returns only what changed: the states it touched, every alert
change in order, and the ``episode.started`` events it refused. The worker's agent loads the
states, calls it, writes the result in the batch's transaction and publishes; the offline
evaluator runs the same rules through ``alerts.rules`` one event at a time.

Items are the events the ``events`` table did not have yet (duplicates never reach here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from alerts.models import DEFAULT_CONFIG, Alert, AlertChange, AlertConfig
from alerts.rules import acknowledge, apply_event_outcome, on_tick, prune
from alerts.state import PatientState, new_state
from schemas.events import EpisodeStarted, Event


@dataclass(frozen=True, slots=True)
class EventItem:
    event: Event

    @property
    def patient_id(self) -> str:
        return self.event.patient_id


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


Item = EventItem | TickItem | AckItem


@dataclass
class BatchResult:
    states: dict[str, PatientState] = field(default_factory=dict)  # touched ones only
    changes: list[AlertChange] = field(default_factory=list)
    refused: list[tuple[EpisodeStarted, str]] = field(default_factory=list)


def apply_batch(
    states: Mapping[str, PatientState],
    items: Sequence[Item],
    config: AlertConfig = DEFAULT_CONFIG,
    partition_of: Callable[[str], int] | None = None,
) -> BatchResult:
    """Fold ``items`` in order. ``states`` holds every patient an item names (missing ones
    start empty) and, for a tick, every patient of its partition; it is not modified.
    ``partition_of`` maps a patient to its partition (needed only with ticks)."""
    out = BatchResult()
    owned: dict[str, PatientState] = {}  # one copy per patient and batch, folded in place

    def mine(pid: str) -> PatientState:
        s = owned.get(pid)
        if s is None:
            base = states.get(pid)
            s = owned[pid] = base.copy_for_update() if base is not None else new_state(pid)
        return s

    for item in items:
        if isinstance(item, EventItem):
            s = mine(item.patient_id)
            changes, reason = apply_event_outcome(s, item.event, config)
            out.changes += changes
            if reason is not None and isinstance(item.event, EpisodeStarted):
                out.refused.append((item.event, reason))
        elif isinstance(item, TickItem):
            if partition_of is None:
                raise ValueError("ticks need partition_of")
            pids = {p for p in states if partition_of(p) == item.partition}
            pids |= {p for p in owned if partition_of(p) == item.partition}
            for pid in sorted(pids):
                current = owned.get(pid) or states[pid]
                ticked, changes = on_tick(current, item.now, config)
                if ticked is not current:
                    owned[pid] = ticked
                out.changes += changes
        else:
            known = owned.get(item.patient_id) or states.get(item.patient_id)
            if known is None:
                continue  # unknown patient: the API answered 404 already
            s = known
            try:
                acked, changes = acknowledge(
                    s, item.alert_id, item.at, item.by, item.stored, config
                )
            except KeyError:
                continue  # unknown alert id: the API answered 404 already
            if acked is not s:
                owned[item.patient_id] = acked
            out.changes += changes
    for pid, s in owned.items():
        prune(s, config)
        out.states[pid] = s
    return out
