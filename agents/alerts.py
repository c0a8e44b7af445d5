"""The time-driven rules' clock (ticks) and the rtm.alerts publisher of the outbox.

The alert rules themselves run inside the ingest agent's batch transaction
(``agents/pipeline.py``: load states, ``alerts.batch.apply_batch``, write); this module
holds what is around them:
- ``register_clock``: the leader writes a tick into every partition of rtm.events, so
  each tick is ordered with the events of its partition (and a replay replays it);
- ``Publisher``: alert changes queued in ``alert_publish`` by the batch's transaction are
  sent to rtm.alerts after the commit and deleted once Kafka acknowledged them; a timer
  sends what a crashed worker left behind, so a kill between commit and publish loses none.

Why a database row per patient rather than a Faust table: after a worker was killed with a
backlog waiting, table recovery hung ("No event received for active tp ... since recovery
start"); a row also commits atomically with the alerts it produced, which a changelog cannot.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence

import orjson
from aiokafka.partitioner import murmur2

from streams.db.alerts import published, unpublished
from streams.db.events import EventStore, utc_now
from streams.kafka import control
from streams.kafka.app import Topology, timer
from streams.settings import Settings

log = logging.getLogger(__name__)


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (the gateway's producer uses the same)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class Publisher:
    def __init__(self, topology: Topology, store: EventStore) -> None:
        self.topology = topology
        self.store = store

    async def publish(
        self, rows: Sequence[tuple[int, str, str]], received: dict[str, dt.datetime] | None = None
    ) -> None:
        """Send (seq, key ``<org>/<patient_id>``, change JSON) to rtm.alerts, wait for
        Kafka's acks, then delete the rows. A failure leaves them for the timer."""
        if not rows:
            return
        futures = [
            await self.topology.alerts.send(key=pid.encode(), value=payload.encode())
            for _, pid, payload in rows
        ]
        await asyncio.gather(*futures)
        m = self.topology.metrics
        if received:
            now = utc_now()
            for _, _, payload in rows:
                change = orjson.loads(payload)
                if change["change"] != "fired":
                    continue
                for eid in change["alert"]["event_ids"]:
                    if eid in received:
                        m.e2e_alert.observe((now - received[eid]).total_seconds())
        async with self.store.acquire() as conn:
            await published(conn, [seq for seq, _, _ in rows])

    async def publish_left_behind(self, older_than_s: float) -> int:
        async with self.store.acquire() as conn:
            rows = await unpublished(conn, older_than_s, 1000)
        await self.publish(rows)
        return len(rows)


def register_publisher(topology: Topology, store: EventStore, settings: Settings) -> Publisher:
    publisher = Publisher(topology, store)

    @timer(topology, settings.alert_publish_retry_s)
    async def publish_left_behind() -> None:
        # database or broker away: the supervisor logs it, the rows wait for next time
        while await publisher.publish_left_behind(settings.alert_publish_retry_s) == 1000:
            pass

    return publisher


def register_clock(topology: Topology, settings: Settings) -> None:
    @timer(topology, settings.tick_interval_s or 3600.0, on_leader=True)
    async def clock() -> None:
        """Tick every partition with 'now' (the wall clock, or the fixed RTM_CLOCK_NOW)."""
        if not settings.tick_interval_s:
            return
        now = settings.clock_now or utc_now()
        # broker away: the supervisor logs it; the next tick catches up (rules use 'now')
        await send_ticks(topology, settings, now)
        topology.metrics.clock_last_tick.set_to_current_time()


async def send_ticks(topology: Topology, settings: Settings, now: dt.datetime) -> None:
    for p in range(settings.topic_partitions):
        await topology.events.send(key=None, value=control.tick(now), partition=p)
