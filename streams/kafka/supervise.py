"""One supervisor for every timer and background task of the worker.

A timer body or a task that raises would crash Faust ("We experienced a crash!") and end
the worker: that is how a PostgreSQL restart used to take alerts down until a person
noticed (an ``asyncpg.InternalClientError`` no per-timer list of exception types knew).
Listing exception types per timer is the wrong depth. Here every exception but
``asyncio.CancelledError`` and :class:`ConfigurationError` is logged (type only: messages
can carry data), counted in ``rtm_worker_task_failures_total{task}``, shown on ``/readyz``
and retried with backoff. Only a configuration error ends the process, with exit status
78 (``EX_CONFIG``), which the process restarter (``rtm worker --restart``, the compose
file, the systemd unit) does not restart: the same settings would fail again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Counter

log = logging.getLogger(__name__)

EX_CONFIG = 78  # sysexits.h: the one exit status the restarter does not restart


class ConfigurationError(Exception):
    """A setting the process cannot run with: the only error that ends the worker."""


@dataclass
class TaskHealth:
    failures: int = 0  # in a row, since the last success
    total: int = 0
    last_error: str | None = None
    retry_at: float = 0.0  # monotonic time before which a failing timer is skipped


def _exit_on_configuration_error(name: str, exc: ConfigurationError) -> None:
    log.critical("%s: configuration error, stopping the worker: %s", name, exc)
    logging.shutdown()
    os._exit(EX_CONFIG)


class Supervisor:
    """Runs timer bodies and tasks so that no exception ends the worker.

    Backoff after ``n`` failures in a row: ``base_s * 2^(n-1)``, at most ``cap_s``; a failing
    timer skips its ticks until then, a failing task is started again after it.
    """

    def __init__(
        self,
        failures: Counter | None = None,
        base_s: float = 0.5,
        cap_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        on_configuration_error: Callable[
            [str, ConfigurationError], None
        ] = _exit_on_configuration_error,
    ) -> None:
        self.counter = failures
        self.base_s, self.cap_s = base_s, cap_s
        self.monotonic = monotonic
        self.on_configuration_error = on_configuration_error
        self.tasks: dict[str, TaskHealth] = {}
        self.bodies: list[Callable[[], Awaitable[None]]] = []  # what timer/task_body made

    def _health(self, name: str) -> TaskHealth:
        return self.tasks.setdefault(name, TaskHealth())

    def backoff(self, failures: int) -> float:
        return float(min(self.base_s * 2 ** max(failures - 1, 0), self.cap_s))

    def failed(self, name: str, exc: BaseException) -> float:
        """Record a failure; the delay before the next try."""
        h = self._health(name)
        h.failures += 1
        h.total += 1
        h.last_error = type(exc).__name__
        delay = self.backoff(h.failures)
        h.retry_at = self.monotonic() + delay
        if self.counter is not None:
            self.counter.labels(name).inc()
        # the type, not the message (it can carry values of patient rows); the traceback at
        # debug level for whoever turns it on
        log.warning(
            "%s failed (%s, %d in a row); retrying in %.1f s",
            name,
            h.last_error,
            h.failures,
            delay,
        )
        log.debug("%s failure", name, exc_info=exc)
        return delay

    def succeeded(self, name: str) -> None:
        h = self._health(name)
        if h.failures:
            log.info("%s recovered after %d failures", name, h.failures)
        h.failures = 0
        h.retry_at = 0.0

    def failing(self) -> dict[str, str]:
        """Tasks whose last run failed, for /readyz: name -> "ErrorType (n in a row)"."""
        return {
            name: f"{h.last_error} ({h.failures} in a row)"
            for name, h in sorted(self.tasks.items())
            if h.failures
        }

    async def _attempt(self, name: str, work: Awaitable[None]) -> float | None:
        """Run ``work`` once under the policy: None when it succeeded, else the delay
        before the next try (cancellation and a configuration error pass through)."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except ConfigurationError as exc:
            self.on_configuration_error(name, exc)
            raise
        except Exception as exc:
            return self.failed(name, exc)
        self.succeeded(name)
        return None

    async def run_once(self, name: str, fn: Callable[[], Awaitable[None]]) -> bool:
        """One timer tick: skipped while backing off; True when it ran and succeeded."""
        h = self._health(name)
        if h.failures and self.monotonic() < h.retry_at:
            return False
        return await self._attempt(name, fn()) is None

    async def run_forever(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """A task: started again after a backoff whenever it raises; done when it returns."""
        while (delay := await self._attempt(name, fn())) is not None:
            await asyncio.sleep(delay)

    def _body(
        self,
        name: str,
        fn: Callable[[], Awaitable[None]],
        run: Callable[[str, Callable[[], Awaitable[None]]], Awaitable[object]],
    ) -> Callable[[], Awaitable[None]]:
        @functools.wraps(fn)
        async def body() -> None:
            await run(name, fn)

        self.bodies.append(body)
        return body

    def timer_body(
        self, name: str, fn: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        return self._body(name, fn, self.run_once)

    def task_body(
        self, name: str, fn: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        return self._body(name, fn, self.run_forever)

    def spawn(self, name: str, coro: Awaitable[None]) -> asyncio.Task[None]:
        """A one-off background task whose exception is logged and counted, never lost."""

        async def guarded() -> None:
            await self._attempt(name, coro)

        return asyncio.ensure_future(guarded())
