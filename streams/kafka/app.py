"""The Faust application and its topology, in one readable place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import faust
from prometheus_client import CollectorRegistry, generate_latest

from streams.kafka.supervise import Supervisor
from streams.kafka.transport import faust_credentials
from streams.metrics import WorkerMetrics
from streams.settings import Settings


@dataclass
class Topology:
    app: faust.App
    events: faust.TopicT
    dead: faust.TopicT
    alerts: faust.TopicT
    metrics: WorkerMetrics
    registry: CollectorRegistry
    supervisor: Supervisor


def build_app(settings: Settings, registry: CollectorRegistry | None = None) -> Topology:
    registry = registry or CollectorRegistry()
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        # Faust's own consumer group (timers' leader election) is apart from the ingest
        # consumer's group, which keeps the plain app id (agents/ingest.py).
        f"{settings.worker.app_id}-faust",
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        # TLS / SASL as for every other Kafka client (RTM_KAFKA_SECURITY_PROTOCOL, ...)
        broker_credentials=faust_credentials(settings),
        store="memory://",
        autodiscover=False,
        # Faust's per-app folder, under the state dir rather than the working directory
        datadir=str(settings.state_dir / "faust" / "{conf.name}-data"),
        topic_partitions=settings.kafka.topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        # web_host is only the advertised name; web_bind is where it listens (Faust's
        # default is 0.0.0.0: an unauthenticated /metrics on every interface).
        web_host=settings.worker.web_host,
        web_bind=settings.worker.web_host,
        web_port=settings.worker.web_port,
        web_in_thread=False,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=8192,
        # A worker that dies is noticed in seconds, not Faust's default minute, so its
        # partitions move to the survivors quickly.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.kafka.topic_partitions,
        )

    metrics = WorkerMetrics(registry)
    topology = Topology(
        app=app,
        events=raw_topic(settings.kafka.topic_events),
        dead=raw_topic(settings.kafka.topic_dead),
        alerts=raw_topic(settings.kafka.topic_alerts),
        metrics=metrics,
        registry=registry,
        supervisor=Supervisor(metrics.task_failures),
    )

    @app.page("/metrics")
    async def metrics_page(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # aiohttp wants the charset apart from the media type
        return web.bytes(generate_latest(registry), content_type="text/plain; version=0.0.4")

    return topology


_F = TypeVar("_F", bound=Callable[[], Awaitable[None]])


def timer(topology: Topology, interval: float, **options: Any) -> Callable[[_F], _F]:
    """``app.timer`` with its type (Faust's decorators are untyped), run under the
    topology's supervisor: an exception is logged, counted and retried with backoff instead
    of crashing the worker. The function is returned as it is."""

    def register(fn: _F) -> _F:
        name = str(options.pop("name", fn.__name__))
        body = topology.supervisor.timer_body(name, fn)
        topology.app.timer(interval, name=name, **options)(body)
        return fn

    return register


def task(topology: Topology, name: str | None = None) -> Callable[[_F], _F]:
    """``app.task`` with its type, run under the supervisor: started once when the worker
    starts, and again after a backoff whenever it raises."""

    def register(fn: _F) -> _F:
        label = name or fn.__name__
        topology.app.task(topology.supervisor.task_body(label, fn))
        return fn

    return register
