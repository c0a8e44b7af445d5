"""Writes that must finish before a batch is acked (retried with backoff)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


async def write_until_done(op: Callable[[], Awaitable[T]], what: str) -> T:
    """Retry a database write with backoff; never let take() ack an unwritten batch.

    If the worker is stopped mid-write we finish the write first. Should it still fail,
    we exit hard so that Faust cannot commit the batch's offsets on the way out.
    """
    delay = 0.2
    while True:
        task = asyncio.ensure_future(op())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                await asyncio.wait_for(task, timeout=30)
            except Exception:
                log.critical("%s unfinished at shutdown; exiting before offsets commit", what)
                os._exit(75)
            raise
        except Exception as exc:
            log.warning("%s failed (%s); retrying in %.1fs", what, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
