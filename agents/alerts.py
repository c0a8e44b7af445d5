"""Alerts step: per-patient rule state and alerts in TimescaleDB, alerts on rtm.alerts.

Per batch: load the patients' states, apply the pure rules in arrival order, write the
alerts (upsert by deterministic id) and the new states in ONE transaction, then publish,
then Faust commits the offsets. A crash before the commit replays the batch against the
already-saved states: nothing fires twice, nothing is lost; a publish may repeat (consumers
dedupe by alert id + change).

Why not a Faust table: after a worker was killed with a backlog waiting, table recovery
hung here ("No event received for active tp ... since recovery start"), the
faust-streaming recovery/backpressure problem; a database row per patient also commits
atomically with the alerts it produced, which a changelog cannot.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Sequence

import orjson
from aiokafka.partitioner import murmur2

from agents.persist import write_until_done
from alerts.models import DEFAULT_CONFIG, AlertChange
from alerts.rules import acknowledge, apply_event, on_tick
from alerts.state import PatientState, new_state
from rtm.settings import Settings
from schemas.events import EpisodeStarted
from streams import control
from streams.alert_store import queue_deliveries, upsert_alerts
from streams.app import Topology
from streams.producer import dead_letter_payload
from streams.store import EventStore, utc_now

log = logging.getLogger(__name__)


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (the gateway's producer uses the same)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class StateStore:
    """Per-patient rule states in TimescaleDB, with decoded copies kept in memory.

    A cached state is used only while its revision equals the stored one, so a patient
    whose partition moved to another worker and back is re-read, never stale.
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[str, tuple[int, PatientState]] = {}

    async def load(self, conn: Any, patient_ids: list[str]) -> dict[str, PatientState]:
        revs = {
            r["patient_id"]: int(r["rev"])
            for r in await conn.fetch(
                "SELECT patient_id, rev FROM alert_state WHERE patient_id = ANY($1::text[])",
                patient_ids,
            )
        }
        stale = [p for p, rev in revs.items() if self._cache.get(p, (-1,))[0] != rev]
        if stale:
            for r in await conn.fetch(
                "SELECT patient_id, rev, state FROM alert_state"
                " WHERE patient_id = ANY($1::text[])",
                stale,
            ):
                # pydantic's JSON path: no intermediate dict
                state = PatientState.model_validate_json(r["state"])
                self._cache[r["patient_id"]] = (int(r["rev"]), state)
        out = {}
        for pid in patient_ids:
            if pid in revs:
                out[pid] = self._cache[pid][1]
            else:
                self._cache.pop(pid, None)
                out[pid] = new_state(pid)
        return out

    async def patients_of_partition(self, conn: Any, part: int) -> list[str]:
        rows = await conn.fetch("SELECT patient_id FROM alert_state WHERE part = $1", part)
        return [r["patient_id"] for r in rows]

    async def save(self, conn: Any, states: dict[str, PatientState]) -> None:
        if not states:
            return
        pids = list(states)
        rows = await conn.fetch(
            "INSERT INTO alert_state (patient_id, part, rev, state)"
            " SELECT p, part, 1, st FROM unnest($1::text[], $2::int[], $3::text[]) AS t(p, part, st)"
            " ON CONFLICT (patient_id) DO UPDATE SET rev = alert_state.rev + 1,"
            " state = EXCLUDED.state, updated_at = now()"
            " RETURNING patient_id, rev",
            pids,
            [partition_of(p.encode(), self.partitions) for p in pids],
            [states[p].model_dump_json() for p in pids],
        )
        for r in rows:
            self._cache[r["patient_id"]] = (int(r["rev"]), states[r["patient_id"]])


Item = tuple[str, Any, int]  # ("event", Event, 0) | ("tick", now, partition) | ("ack", dict, 0)


class AlertsStep:
    """One batch of events, ticks and acks through the rules, in arrival order."""

    def __init__(self, topology: Topology, store: EventStore, settings: Settings) -> None:
        self.topology = topology
        self.store = store
        self.partitions = settings.topic_partitions
        self.states = StateStore(settings.topic_partitions)
        self.config = DEFAULT_CONFIG

    async def __call__(self, items: Sequence[Item]) -> None:
        if items:
            await write_until_done(lambda: self._process(items), "alerts")

    async def _process(self, items: Sequence[Item]) -> None:
        """Load states, apply the rules, write alerts and states in one transaction, then
        publish."""
        patients = {i[1].patient_id if i[0] == "event" else i[1]["patient_id"]
                    for i in items if i[0] != "tick"}
        changes: list[AlertChange] = []
        received: dict[str, dt.datetime] = {}
        refused: list[tuple[EpisodeStarted, str]] = []
        async with self.store.acquire() as conn:
            async with conn.transaction():
                for kind, _, part in items:
                    if kind == "tick":
                        patients.update(await self.states.patients_of_partition(conn, part))
                states = await self.states.load(conn, sorted(patients))
                loaded = dict(states)
                for kind, item, part in items:
                    if kind == "tick":
                        for pid, state in states.items():
                            if partition_of(pid.encode(), self.partitions) == part:
                                states[pid], ch = on_tick(state, item, self.config)
                                changes.extend(ch)
                    elif kind == "ack":
                        try:
                            states[item["patient_id"]], ch = acknowledge(
                                states[item["patient_id"]], item["alert_id"], item["at"],
                                item["by"])
                        except KeyError:
                            continue  # unknown alert id: the API answered 404 already
                        changes.extend(ch)
                    else:
                        pid = item.patient_id
                        if states[pid] is loaded[pid]:
                            if item.event_id in states[pid].seen_event_ids:
                                continue  # re-delivered: the saved state has it already
                            # One copy per patient and batch, then folded in place.
                            states[pid] = states[pid].copy_for_update()
                        ch = apply_event(states[pid], item, self.config)
                        if isinstance(item, EpisodeStarted):
                            reason = states[pid].refused_episode_starts.get(item.event_id)
                            if reason is not None:
                                refused.append((item, reason))
                        if ch and item.received_at is not None:
                            received[item.event_id] = item.received_at
                        changes.extend(ch)
                await upsert_alerts(conn, changes)
                await queue_deliveries(conn, changes)
                await self.states.save(
                    conn, {p: s for p, s in states.items() if s is not loaded[p]})
        m = self.topology.metrics
        for event, reason in refused:
            # events.md: a second active episode is rejected (409-style) with a clear
            # reason; the log keeps the event, every derived number ignores it.
            err = {"field": "episode_id", "message": f"episode_id: {reason} (conflict)"}
            await self.topology.dead.send(
                key=event.patient_id.encode(),
                value=dead_letter_payload(orjson.loads(event.model_dump_json()), [err], "worker"),
            )
            m.dead_letters.labels("episode_conflict").inc()
        now_wall = utc_now()
        for ch in changes:
            await self.topology.alerts.send(
                key=ch.alert.patient_id.encode(), value=ch.model_dump_json().encode()
            )
            if ch.change == "fired":
                m.alerts_fired.labels(ch.alert.kind, ch.alert.severity).inc()
                for eid in ch.alert.event_ids:
                    if eid in received:
                        m.e2e_alert.observe((now_wall - received[eid]).total_seconds())


def register_clock(topology: Topology, settings: Settings) -> None:
    @topology.app.timer(settings.tick_interval_s or 3600.0, on_leader=True)
    async def clock() -> None:
        """Tick every partition with 'now' (the wall clock, or the fixed RTM_CLOCK_NOW)."""
        if not settings.tick_interval_s:
            return
        now = settings.clock_now or utc_now()
        await send_ticks(topology, settings, now)


async def send_ticks(topology: Topology, settings: Settings, now: dt.datetime) -> None:
    for p in range(settings.topic_partitions):
        await topology.events.send(key=None, value=control.tick(now), partition=p)
