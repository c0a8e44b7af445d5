"""`rtm billing export|reconcile` (adapters over billing/ and the TimescaleDB ledger)."""

from __future__ import annotations

from typing import Any

import click

from rtm.settings import Settings


def register(group: click.Group) -> None:
    """Attach the billing commands that need the database to the `rtm billing` group."""


def billing_summary(settings: Settings) -> dict[str, Any]:
    """Demo summary section: billable lines by code, patients on track for 98977."""
    return {}
