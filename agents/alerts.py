"""The worker's timers around the alert rules: the clock (ticks) and the outbox publisher.

The alert rules themselves run inside the ingest step (``streams/services/ingest.py``:
load states, ``alerts.batch.apply_batch``, write); this module wires what is around them:
- ``register_clock``: the leader writes a tick into every partition of rtm.events
  (``streams.kafka.control.send_ticks``), so each tick is ordered with the events of its
  partition (and a replay replays it); "now" is the process's clock (``RTM_CLOCK_NOW``
  when set);
- ``register_publisher``: the rtm.alerts publisher (``streams.services.alerts.Publisher``)
  and its timer, which sends what a crashed worker left in the outbox.

Why a database row per patient rather than a Faust table: after a worker was killed with a
backlog waiting, table recovery hung ("No event received for active tp ... since recovery
start"); a row also commits atomically with the alerts it produced, which a changelog cannot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

from streams.clock import Clock
from streams.kafka import control
from streams.kafka.app import Topology, timer
from streams.services.alerts import Outbox, Publisher
from streams.settings import Settings


class FaustTopics:
    """The step's Kafka side on the topology's Faust topics: rtm.events.dead (a dead
    letter is handed to the producer, not waited for) and rtm.alerts (waited for)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    async def dead_letter(self, key: bytes, value: bytes) -> None:
        await self.topology.dead.send(key=key, value=value)

    async def publish_alerts(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        acks = [await self.topology.alerts.send(key=k, value=v) for k, v in records]
        await asyncio.gather(*acks)


def register_publisher(
    topology: Topology, outbox: Outbox, settings: Settings, clock: Clock
) -> Publisher:
    publisher = Publisher(outbox, FaustTopics(topology), topology.metrics, clock)

    @timer(topology, settings.worker.alert_publish_retry_s)
    async def publish_left_behind() -> None:
        # database or broker away: the supervisor logs it, the rows wait for next time
        while await publisher.publish_left_behind(settings.worker.alert_publish_retry_s) == 1000:
            pass

    return publisher


def register_clock(topology: Topology, settings: Settings, time_source: Clock) -> None:
    @timer(topology, settings.worker.tick_interval_s or 3600.0, on_leader=True)
    async def clock() -> None:
        """Tick every partition with 'now' (the wall clock, or the fixed RTM_CLOCK_NOW)."""
        if not settings.worker.tick_interval_s:
            return

        async def send(value: bytes, partition: int) -> Awaitable[object]:
            ack: Awaitable[object] = await topology.events.send(
                key=None, value=value, partition=partition
            )
            return ack

        # broker away: the supervisor logs it; the next tick catches up (rules use 'now')
        await control.send_ticks(send, range(settings.kafka.topic_partitions), time_source.now())
        topology.metrics.clock_last_tick.set_to_current_time()
