"""The ingest step wired into the worker: ``streams.services.ingest.Ingest`` on the
PostgreSQL store (``streams.db.batch.PgIngestStore``), the topology's Faust topics and the
process's clock, fed whole fetches of rtm.events by ``agents.ingest.IngestConsumer``; and
the consumer-lag gauge."""

from __future__ import annotations

import datetime as dt
import logging

from agents.alerts import FaustTopics, register_clock, register_publisher
from agents.ingest import FetchCollector, IngestConsumer
from agents.refresh import register_refresh
from alerts.models import AlertConfig
from intake.rules import load_rules
from schemas.events import PatientKey
from streams.clock import clock_for
from streams.db.batch import PgIngestStore
from streams.db.pool import Pool
from streams.kafka.app import Topology, task, timer
from streams.kafka.control import patient_partition
from streams.services.ingest import DeadLetterGuard, Ingest
from streams.settings import Settings

log = logging.getLogger(__name__)


def build_step(topology: Topology, pool: Pool, settings: Settings) -> Ingest:
    """The step and its ports, and the timers around it (the clock, the outbox)."""
    clock = clock_for(settings)
    partitions = settings.kafka.topic_partitions

    def partition_of(key: PatientKey) -> int:
        return patient_partition(key, partitions)

    store = PgIngestStore(pool, partition_of, settings.worker.state_cache)
    m = topology.metrics.state_cache
    m.patients.set_function(lambda: len(store.cache))
    m.dropped.set_function(lambda: store.cache.dropped)
    m.reads.set_function(lambda: store.cache.reads)
    publisher = register_publisher(topology, store, settings, clock)
    register_clock(topology, settings, clock)
    return Ingest(
        store,
        FaustTopics(topology),
        publisher,
        topology.metrics,
        clock,
        partitions=partitions,
        max_future_skew_s=settings.gateway.max_future_skew_s,
        guard=DeadLetterGuard(
            settings.worker.dead_letter_max_consecutive,
            settings.worker.dead_letter_max_ratio,
            settings.worker.dead_letter_window_s,
            settings.worker.dead_letter_min_records,
        ),
        config=alert_config(settings),
        lanes=settings.worker.lanes,
        lane_min_items=settings.worker.lane_min_items,
    )


def alert_config(settings: Settings) -> AlertConfig:
    """The rules' configuration: the defaults, with the worker's intake rule set if one is
    configured (RTM_INTAKE_RULES_FILE; a file that does not load stops the worker) and its
    escalation offsets (RTM_ESCALATE_CARE_TEAM_AFTER_S, RTM_ESCALATE_ORG_AFTER_S)."""
    w = settings.worker
    path = w.intake_rules_file
    ladder = {
        "escalate_care_team_after": dt.timedelta(seconds=w.escalate_care_team_after_s),
        "escalate_org_after": dt.timedelta(seconds=w.escalate_org_after_s),
    }
    if path is None:
        return AlertConfig(**ladder)
    return AlertConfig(intake_rules=load_rules(path.read_bytes()), **ladder)


def register(
    topology: Topology,
    pool: Pool,
    settings: Settings,
    collector: FetchCollector | None = None,
) -> IngestConsumer:
    step = build_step(topology, pool, settings)
    consumer = IngestConsumer(settings, step.record_batch, topology.metrics, collector)

    @task(topology)
    async def ingest() -> None:
        """rtm.events, whole fetches at a time (agents/ingest.py says why not an agent)."""
        await consumer.run()

    register_lag(topology, settings, consumer)
    register_refresh(topology, settings, step.idle_for, step.publisher, step.store.warm_states)
    return consumer


def register_lag(topology: Topology, settings: Settings, consumer: IngestConsumer) -> None:
    """rtm_worker_consumer_lag{topic,partition}: log end minus committed offset, for every
    partition of rtm.events this worker holds; partitions it no longer holds are dropped."""
    if not settings.worker.lag_interval_s:
        return
    gauge = topology.metrics.consumer_lag
    topic = settings.kafka.topic_events
    shown: set[int] = set()

    @timer(topology, settings.worker.lag_interval_s, name="consumer_lag")
    async def consumer_lag() -> None:
        try:
            lags = await consumer.lag()
        except Exception as exc:  # not started, mid-rebalance, broker away: try next time
            log.debug("consumer lag not measured: %r", exc)
            return
        if lags is None:
            return
        for partition, value in lags.items():
            gauge.labels(topic, str(partition)).set(value)
        for partition in shown - set(lags):
            try:
                gauge.remove(topic, str(partition))
            except KeyError:
                pass
        shown.clear()
        shown.update(lags)
