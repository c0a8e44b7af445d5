"""Time, at the edges: the one place the wall clock is read.

Every adapter that needs "now" (the gateway's received_at and sessions, the worker's ticks,
webhook signatures, the CLI's defaults) takes a ``Clock`` and calls ``clock.now()``; the
domain (``alerts/``, ``billing/``, ``intake/``, ``schemas/``) never asks for the time, it
is given it. ``clock_for(settings)`` is the clock of a process: ``FixedClock`` when
``RTM_CLOCK_NOW`` is set (replays, demos, tests: gateway, worker and CLI then agree on
"now"), else ``SystemClock``. A test that needs time to move uses a ``FixedClock`` and
``advance``s it (the shape of arroyo's ``utils/clock.py``).

A test greps the packages for wall-clock reads outside this module (and outside the
measurement tools, which time themselves with ``time.perf_counter``/``monotonic``).
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class FixedClock:
    """A clock that says one instant until it is moved (``advance``, ``set``)."""

    def __init__(self, at: dt.datetime) -> None:
        self.set(at)

    def set(self, at: dt.datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware instant")
        self._at = at.astimezone(dt.UTC)

    def advance(self, delta: dt.timedelta) -> None:
        self._at += delta

    def now(self) -> dt.datetime:
        return self._at

    def __repr__(self) -> str:
        return f"FixedClock({self._at.isoformat()})"


class HasClockNow(Protocol):
    @property
    def clock_now(self) -> dt.datetime | None: ...


def clock_for(settings: HasClockNow) -> Clock:
    """The process's clock: fixed at ``RTM_CLOCK_NOW`` when that is set, else the wall."""
    at = settings.clock_now
    return FixedClock(at) if at is not None else SystemClock()


SYSTEM_CLOCK: Clock = SystemClock()
