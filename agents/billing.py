"""Billing agent: the RTM ledger (data days, time logs, episode events) in TimescaleDB."""

from __future__ import annotations

from typing import Any

from rtm.settings import Settings
from streams.app import Topology
from streams.store import EventStore


def register(topology: Topology, store: EventStore, settings: Settings) -> Any:
    return None
