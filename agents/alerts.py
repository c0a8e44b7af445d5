"""Alerts agent: per-patient rule state in a Faust table, alerts to TimescaleDB and rtm.alerts.

Order per batch: compute with the pure rules, write the alerts (idempotent upsert by their
deterministic id), publish them, then save the states to the table. A crash between the
writes replays the batch; the same ids come out, so nothing fires twice and nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import faust
from aiokafka.partitioner import murmur2
from pydantic import ValidationError

from alerts.models import DEFAULT_CONFIG, AlertChange
from alerts.rules import acknowledge, on_event, on_tick
from alerts.state import PatientState, new_state, state_from_dict, state_to_dict
from agents.persist import write_until_done
from rtm.settings import Settings
from schemas.events import parse_event_json
from streams import control
from streams.alert_store import upsert_alerts
from streams.app import Topology
from streams.store import EventStore, utc_now

log = logging.getLogger(__name__)


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (the gateway's producer uses the same)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class StateCache:
    """Decoded states beside the Faust table, so a batch does not re-parse every state.

    The table holds the truth (changelogged, restored on rebalance); a cached entry is used
    only while its revision equals the table's.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self._cache: dict[bytes, tuple[int, PatientState]] = {}

    def get(self, key: bytes, patient_id: str) -> PatientState:
        stored = self.table.get(key)
        if stored is None:
            return new_state(patient_id)
        rev = int(stored.get("_rev", 0))
        hit = self._cache.get(key)
        if hit is not None and hit[0] == rev:
            return hit[1]
        state = state_from_dict({k: v for k, v in stored.items() if k != "_rev"})
        self._cache[key] = (rev, state)
        return state

    def put(self, key: bytes, state: PatientState) -> None:
        stored = self.table.get(key)
        rev = int(stored.get("_rev", 0)) + 1 if stored is not None else 1
        data = state_to_dict(state)
        data["_rev"] = rev
        self.table[key] = data
        self._cache[key] = (rev, state)


def register(topology: Topology, store: EventStore, settings: Settings) -> Any:
    app, m = topology.app, topology.metrics
    table = app.Table(
        "alert-state",
        default=None,
        schema=faust.Schema(key_type=bytes, key_serializer="raw", value_serializer="json"),
        partitions=settings.topic_partitions,
        # Changelog records go to the partition of the patient's events (same partitioner).
        use_partitioner=True,
    )
    cache = StateCache(table)
    config = DEFAULT_CONFIG

    @app.agent(topology.events, name="alerts")
    async def alerts_agent(stream: Any) -> None:
        async for events in stream.take_events(
            settings.worker_batch_size, within=settings.worker_batch_within_s
        ):
            states: dict[bytes, PatientState] = {}
            loaded: dict[bytes, PatientState] = {}
            changes: list[AlertChange] = []
            received: dict[str, dt.datetime] = {}

            def current(key: bytes, patient_id: str) -> PatientState:
                if key not in states:
                    states[key] = loaded[key] = cache.get(key, patient_id)
                return states[key]

            for ev in events:
                raw: bytes = ev.value
                if raw.startswith(control.TICK_PREFIX):
                    _, now = control.parse(raw)
                    part = ev.message.partition
                    for key in list(table.keys()):
                        if partition_of(key, settings.topic_partitions) != part:
                            continue
                        state, ch = on_tick(current(key, key.decode()), now, config)
                        states[key] = state
                        changes.extend(ch)
                    continue
                if raw.startswith(control.ACK_PREFIX):
                    _, a = control.parse(raw)
                    key = a["patient_id"].encode()
                    try:
                        state, ch = acknowledge(current(key, a["patient_id"]), a["alert_id"],
                                                a["at"], a["by"])
                    except KeyError:
                        continue  # unknown alert id: the API answered 404 already
                    states[key] = state
                    changes.extend(ch)
                    continue
                try:
                    event = parse_event_json(raw)
                except ValidationError:
                    continue  # the persist agent dead-letters it
                key = event.patient_id.encode()
                state, ch = on_event(current(key, event.patient_id), event, config)
                states[key] = state
                if ch and event.received_at is not None:
                    received[event.event_id] = event.received_at
                changes.extend(ch)

            if changes:
                async def write() -> None:
                    async with store.acquire() as conn:
                        await upsert_alerts(conn, changes)

                await write_until_done(write, "alerts")
                now_wall = utc_now()
                for ch in changes:
                    await topology.alerts.send(
                        key=ch.alert.patient_id.encode(), value=ch.model_dump_json().encode()
                    )
                    if ch.change == "fired":
                        m.alerts_fired.labels(ch.alert.kind, ch.alert.severity).inc()
                        for eid in ch.alert.event_ids:
                            if eid in received:
                                m.e2e_alert.observe((now_wall - received[eid]).total_seconds())
            for key, state in states.items():
                if state is not loaded[key]:
                    cache.put(key, state)

    @app.timer(settings.tick_interval_s or 3600.0, on_leader=True)
    async def clock() -> None:
        """Tick every partition with 'now' (the wall clock, or the fixed RTM_CLOCK_NOW)."""
        if not settings.tick_interval_s:
            return
        now = settings.clock_now or utc_now()
        await send_ticks(topology, settings, now)

    return alerts_agent


async def send_ticks(topology: Topology, settings: Settings, now: dt.datetime) -> None:
    for p in range(settings.topic_partitions):
        await topology.events.send(key=None, value=control.tick(now), partition=p)
