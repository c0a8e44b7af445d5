"""The billing ledger as rows (pure): events -> rows for the TimescaleDB tables, and rows
-> ``PatientBillingState`` objects equal to what the offline fold builds.

The ledger has three sets, mirroring ``PatientBillingState``, each row starting with the
patient's organisation (a patient is (org_id, patient_id); states come back keyed so):
- data days ``(org_id, patient_id, local_date, episode_id or "")`` (``""`` stands for "no episode
  named"; contract ids are never empty);
- time logs keyed by ``event_id`` (a correction with the ``event_id`` it supersedes);
- episode events (``episode.started`` / ``program.updated`` / ``episode.ended``) keyed
  by ``event_id``, kept as contract JSON without ``received_at`` (set by the gateway, not
  part of what billing depends on; dropping it makes the ledger equal to a JSONL fold).

The rows of a batch are derived from the one reducer, ``PatientBillingState.apply``: an
event it takes as new gives its row, a duplicate none (the first occurrence wins), and the
database keeps the first row written (``ON CONFLICT DO NOTHING``). ``states_from_rows``
loads the rows back into the states ``billing.state.fold_events`` gives for the same events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from billing.state import BillingKey, PatientBillingState, TimeLog, billing_key, strip_received
from schemas.episodes import EpisodeEvent
from schemas.events import (
    DEFAULT_ORG,
    EVENT_TYPES,
    ClinicianTimeLogged,
    EpisodeEnded,
    EpisodeStarted,
    Event,
    PatientKey,
    ProgramUpdated,
)

NO_EPISODE = ""
# Every type of the contract feeds the ledger: data days, time logs, episodes.
BILLING_EVENT_TYPES = EVENT_TYPES
_EPISODE_EVENT: TypeAdapter[EpisodeEvent] = TypeAdapter(EpisodeEvent)

# org_id, patient_id, local_date, episode_id|"", event_id
DataDayRow = tuple[str, str, dt.date, str, str]
# org_id, event_id, patient_id, episode_id, local_date, occurred_at, utc_offset_s, minutes,
# role, interactive, supersedes
TimeLogRow = tuple[str, str, str, str | None, dt.date, dt.datetime, int, int, str, bool, str | None]
# org_id, event_id, patient_id, type, episode_id, occurred_at, payload (JSON text)
EpisodeEventRow = tuple[str, str, str, str, str, dt.datetime, str]


@dataclass
class LedgerRows:
    data_days: list[DataDayRow] = field(default_factory=list)
    time_logs: list[TimeLogRow] = field(default_factory=list)
    episode_events: list[EpisodeEventRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.data_days) + len(self.time_logs) + len(self.episode_events)


def _offset_s(when: dt.datetime) -> int:
    off = when.utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def ledger_rows(events: Iterable[Event]) -> LedgerRows:
    """Rows for the ledger tables: the events the one reducer (``PatientBillingState.apply``)
    would take as new over this batch (by ``billing_key``), each as its row, so a duplicate
    within the batch adds none (first occurrence wins) and the rows load back into the
    fold's states."""
    rows = LedgerRows()
    seen: set[tuple[PatientKey, BillingKey]] = set()
    for ev in events:
        key = billing_key(ev)
        patient = ev.patient_key
        if key is None or (patient, key) in seen:
            continue
        seen.add((patient, key))
        org = patient[0]
        if isinstance(ev, ClinicianTimeLogged):
            rows.time_logs.append(
                (
                    org,
                    ev.event_id,
                    ev.patient_id,
                    ev.episode_id,
                    ev.local_date,
                    ev.occurred_at,
                    _offset_s(ev.occurred_at),
                    ev.minutes,
                    ev.clinician_role,
                    ev.interactive,
                    ev.supersedes,
                )
            )
        elif isinstance(ev, (EpisodeStarted, ProgramUpdated, EpisodeEnded)):
            rows.episode_events.append(
                (
                    org,
                    ev.event_id,
                    ev.patient_id,
                    ev.type,
                    ev.episode_id,
                    ev.occurred_at,
                    strip_received(ev).model_dump_json(exclude_none=True),
                )
            )
        else:  # what else the reducer takes is a data day
            episode = getattr(ev, "episode_id", None) or NO_EPISODE
            rows.data_days.append((org, ev.patient_id, ev.local_date, episode, ev.event_id))
    return rows


def _state(states: dict[PatientKey, PatientBillingState], key: PatientKey) -> PatientBillingState:
    st = states.get(key)
    if st is None:
        st = states[key] = PatientBillingState(patient_id=key[1])
    return st


def _key(row: Any) -> PatientKey:
    org = row.get("org_id")
    return (org if org is not None else DEFAULT_ORG, row["patient_id"])


def states_from_rows(
    data_days: Iterable[Any],
    time_logs: Iterable[Any],
    episode_events: Iterable[Any],
) -> dict[PatientKey, PatientBillingState]:
    """Rebuild per-patient states, by (organisation, patient_id), from ledger rows
    (mappings or records with the column names of infra/migrations/003_billing.sql and
    ``org_id``; a row without one is DEFAULT_ORG's)."""
    states: dict[PatientKey, PatientBillingState] = {}
    for r in data_days:
        ep = r["episode_id"]
        _state(states, _key(r)).data_dates.add((r["local_date"], ep if ep != NO_EPISODE else None))
    for r in time_logs:
        tz = dt.timezone(dt.timedelta(seconds=r["utc_offset_s"]))
        _state(states, _key(r)).time_logs[r["event_id"]] = TimeLog(
            event_id=r["event_id"],
            local_date=r["local_date"],
            occurred_at=r["occurred_at"].astimezone(tz),
            minutes=r["minutes"],
            clinician_role=r["clinician_role"],
            interactive=r["interactive"],
            episode_id=r["episode_id"],
            supersedes=r.get("supersedes"),
        )
    for r in episode_events:
        payload = r["payload"]
        ev = (
            _EPISODE_EVENT.validate_json(payload)
            if isinstance(payload, (str, bytes))
            else _EPISODE_EVENT.validate_python(payload)
        )
        _state(states, _key(r)).episode_events[r["event_id"]] = ev
    return states


def state_differences(
    expected: PatientBillingState | None, actual: PatientBillingState | None
) -> list[str]:
    """Human-readable differences between two states of one patient (empty if equal)."""
    exp = expected or PatientBillingState(patient_id=(actual or expected).patient_id)  # type: ignore[union-attr]
    act = actual or PatientBillingState(patient_id=exp.patient_id)
    out: list[str] = []
    for day, ep in sorted(exp.data_dates - act.data_dates, key=lambda k: (k[0], k[1] or "")):
        out.append(f"data day {day} (episode {ep or '-'}) missing from the ledger")
    for day, ep in sorted(act.data_dates - exp.data_dates, key=lambda k: (k[0], k[1] or "")):
        out.append(f"data day {day} (episode {ep or '-'}) in the ledger but not in the events")
    for name in ("time_logs", "episode_events"):
        a, b = getattr(exp, name), getattr(act, name)
        label = name.replace("_", " ")[:-1]
        for eid in sorted(a.keys() - b.keys()):
            out.append(f"{label} {eid} missing from the ledger")
        for eid in sorted(b.keys() - a.keys()):
            out.append(f"{label} {eid} in the ledger but not in the events")
        for eid in sorted(a.keys() & b.keys()):
            if a[eid] != b[eid]:
                out.append(f"{label} {eid} differs: events {a[eid]!r} != ledger {b[eid]!r}")
    return out
