"""`rtm worker`: the Faust worker process with every agent registered."""

from __future__ import annotations

import faust

from agents import delivery, pipeline
from streams.settings import Settings
from streams.app import Topology, build_app
from streams.db.events import EventStore


def build_worker_topology(settings: Settings) -> tuple[Topology, EventStore]:
    topology = build_app(settings)
    store = EventStore(settings.dsn, max_size=8)
    pipeline.register(topology, store, settings)  # rtm.events: persist, billing, alerts
    delivery.register(topology, store, settings)  # rtm.alerts: webhooks
    return topology, store


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    topology, _store = build_worker_topology(settings)
    worker = faust.Worker(topology.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
