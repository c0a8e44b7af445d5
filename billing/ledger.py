"""The billing ledger as rows (pure): events -> rows for the TimescaleDB tables, and rows
-> ``PatientBillingState`` objects equal to what the offline fold builds.

The ledger has three sets, mirroring ``PatientBillingState``, each row starting with the
patient's organisation (a patient is (org_id, patient_id); states come back keyed so):
- data days ``(org_id, patient_id, local_date, episode_id or "")`` (``""`` stands for "no episode
  named"; contract ids are never empty);
- time logs keyed by ``event_id``;
- episode events (``episode.started`` / ``program.updated`` / ``episode.ended``) keyed
  by ``event_id``, kept as contract JSON without ``received_at`` (set by the gateway, not
  part of what billing depends on; dropping it makes the ledger equal to a JSONL fold).

Within one batch the first occurrence of a key wins, as ``PatientBillingState.apply`` does,
and the database keeps the first row written (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from billing.state import PatientBillingState, TimeLog
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
    is_patient_data,
)

NO_EPISODE = ""
# Every type of the contract feeds the ledger: data days, time logs, episodes.
BILLING_EVENT_TYPES = EVENT_TYPES
_EPISODE_EVENT: TypeAdapter[EpisodeEvent] = TypeAdapter(EpisodeEvent)

# org_id, patient_id, local_date, episode_id|"", event_id
DataDayRow = tuple[str, str, dt.date, str, str]
# org_id, event_id, patient_id, episode_id, local_date, occurred_at, utc_offset_s, minutes,
# role, interactive
TimeLogRow = tuple[str, str, str, str | None, dt.date, dt.datetime, int, int, str, bool]
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


def strip_received(event: Event) -> Event:
    """The event as billing keeps it: without the gateway's stamps (``received_at``, and
    ``org_id``, which the ledger keeps in its own column)."""
    if event.received_at is None and event.org_id is None:
        return event
    return event.model_copy(update={"received_at": None, "org_id": None})


def ledger_rows(events: Iterable[Event]) -> LedgerRows:
    """Rows for the ledger tables, deduplicated within the batch (first occurrence wins)."""
    rows = LedgerRows()
    seen_days: set[tuple[str, str, dt.date, str]] = set()
    seen_ids: set[tuple[str, str]] = set()  # (org_id, event_id): event ids are per organisation
    for ev in events:
        org = ev.patient_key[0]
        if is_patient_data(ev):
            key = (
                org,
                ev.patient_id,
                ev.local_date,
                getattr(ev, "episode_id", None) or NO_EPISODE,
            )
            if key not in seen_days:
                seen_days.add(key)
                rows.data_days.append((*key, ev.event_id))
        elif isinstance(ev, ClinicianTimeLogged):
            if (org, ev.event_id) not in seen_ids:
                seen_ids.add((org, ev.event_id))
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
                    )
                )
        elif isinstance(ev, (EpisodeStarted, ProgramUpdated, EpisodeEnded)):
            if (org, ev.event_id) not in seen_ids:
                seen_ids.add((org, ev.event_id))
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


def fold_for_billing(
    events: Iterable[Event], states: dict[PatientKey, PatientBillingState] | None = None
) -> dict[PatientKey, PatientBillingState]:
    """The offline fold as the ledger sees it (``received_at`` dropped), by (organisation,
    patient_id): what ``states_from_rows`` must give back for the same events."""
    out = states if states is not None else {}
    for ev in events:
        if ev.type in BILLING_EVENT_TYPES:
            _state(out, ev.patient_key).apply(strip_received(ev))
    return out


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
