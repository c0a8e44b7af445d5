"""Offline front ends: the same engine as the streaming worker, over a JSONL file.

- ``run_alerts_evaluate``: events in file order (= arrival order) through ``on_event``,
  then one ``on_tick`` per patient at ``as_of``. Because on_tick catches up every local
  day boundary not yet evaluated, a single tick at as_of gives the same time-driven alerts
  as a streaming timer that ticked all along, provided the events had arrived on time.
- ``run_adherence_evaluate``: the adherence CSV from the same per-patient state.

Events key their patient by (organisation, patient_id) as the worker does; a line without
an ``org_id`` stamp belongs to DEFAULT_ORG (as a record written straight to Kafka does).
Invalid lines are reported on stderr (line number and the field-naming messages) and
skipped. Return code: 0 if every line was valid, 1 if some were skipped (the output is
still complete for the valid ones).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from alerts.adherence import CSV_HEADER, daily_rows
from alerts.models import DEFAULT_CONFIG, Alert, AlertChange, AlertConfig
from alerts.rules import on_event, on_tick
from alerts.state import PatientState, new_state
from schemas.events import Event, PatientKey, validate_event


class _Reader:
    """Iterates the valid events of a JSONL file, reporting bad lines to ``err``."""

    def __init__(self, path: Path, err: TextIO) -> None:
        self.path, self.err, self.invalid = path, err, 0

    def __iter__(self) -> Iterator[Event]:
        with self.path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    self._bad(lineno, f"invalid JSON: {exc}")
                    continue
                result = validate_event(obj)
                if isinstance(result, list):
                    self._bad(lineno, "; ".join(e.message for e in result))
                    continue
                yield result

    def _bad(self, lineno: int, message: str) -> None:
        self.invalid += 1
        print(f"{self.path}:{lineno}: skipped: {message}", file=self.err)


def fold(
    events: Iterator[Event] | _Reader, config: AlertConfig = DEFAULT_CONFIG
) -> tuple[dict[PatientKey, PatientState], list[tuple[str, str]]]:
    """Fold events in order; return the states and (patient_id, alert_id) in firing order."""
    states, changes = fold_changes(events, config)
    return states, [(c.alert.patient_id, c.alert.id) for c in changes if c.change == "fired"]


def fold_changes(
    events: Iterator[Event] | _Reader, config: AlertConfig = DEFAULT_CONFIG
) -> tuple[dict[PatientKey, PatientState], list[AlertChange]]:
    """Fold events in order, each event_id once per organisation (as the worker, whose
    ``events`` table tells it which are new); return the states by (organisation,
    patient_id) and every alert change in order."""
    states: dict[PatientKey, PatientState] = {}
    seen: set[tuple[str, str]] = set()
    out: list[AlertChange] = []
    for event in events:
        key = event.patient_key
        if (key[0], event.event_id) in seen:
            continue
        seen.add((key[0], event.event_id))
        state = states.get(key) or new_state(event.patient_id, key[0])
        states[key], changes = on_event(state, event, config)
        out += changes
    return states, out


# Rules of a layer above (the care pathway's alerts, pathways.offline.pathway_alerts): given
# the file's events, the states after the tick and as-of, they add their alerts to the states
# and return the changes.
After = Callable[[list[Event], dict[PatientKey, PatientState], dt.datetime], list[AlertChange]]


def run_alerts_evaluate(
    events_path: Path,
    as_of: dt.datetime,
    out: TextIO,
    config: AlertConfig = DEFAULT_CONFIG,
    err: TextIO | None = None,
    after: After | None = None,
) -> int:
    """Print one JSON object per alert that fired (in firing order), with its status as of
    ``as_of``. Time-driven kinds have empty ``event_ids``. ``after`` (the CLI passes the
    care pathway's) runs last, as the worker runs it after the rules."""
    err = err if err is not None else sys.stderr
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        print("as_of needs an explicit UTC offset", file=err)
        return 2
    reader = _Reader(events_path, err)
    events = list(reader)
    states, changes = fold_changes(iter(events), config)
    for key in states:
        states[key], ch = on_tick(states[key], as_of, config)
        changes += ch
    if after is not None:
        changes += after(events, states, as_of)
    latest: dict[str, Alert] = {}  # firing order, last snapshot of each
    for c in changes:
        latest[c.alert.id] = c.alert
    for alert in latest.values():
        out.write(json.dumps(alert.model_dump(mode="json"), separators=(",", ":")) + "\n")
    return 1 if reader.invalid else 0


def run_adherence_evaluate(
    events_path: Path,
    out: TextIO,
    config: AlertConfig = DEFAULT_CONFIG,
    err: TextIO | None = None,
) -> int:
    """Print ``patient_id,date,prescribed,completed,adherence_7d`` for every date of every
    episode, up to its end date or, for an open episode, the patient's newest event date
    in the file (there is no clock offline)."""
    err = err if err is not None else sys.stderr
    reader = _Reader(events_path, err)
    newest: dict[PatientKey, dt.date] = {}

    def tracked() -> Iterator[Event]:
        for event in reader:
            day, key = event.local_date, event.patient_key
            if key not in newest or day > newest[key]:
                newest[key] = day
            yield event

    states, _ = fold(tracked(), config)
    out.write(CSV_HEADER + "\n")
    for key in sorted(states):
        state = states[key]
        rows = daily_rows(
            state.patient_id,
            state.completions,
            state.book,
            newest.get(key),
            config.adherence_window_days,
        )
        out.writelines(row.csv() + "\n" for row in rows)
    return 1 if reader.invalid else 0
