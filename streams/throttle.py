"""The sign-in throttle's policy (pure): a key's state, one attempt counted against it, and
what a success gives back. ``streams/services/signin.py`` applies it with the rows in
``streams/db/signin.py``."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace

from streams.settings import Settings


@dataclass(frozen=True)
class Policy:
    max_attempts: int
    window: dt.timedelta
    lock: dt.timedelta
    lock_max: dt.timedelta


@dataclass(frozen=True)
class Throttle:
    """One key's state: attempts in the window that started at ``window_start``, the
    current or last lock, locks in a row, attempts refused during the current lock."""

    attempts: int
    window_start: dt.datetime
    locked_until: dt.datetime | None = None
    locks: int = 0
    refused: int = 0


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    newly_locked: bool = False  # this attempt started a lock (audit it once)
    lock_s: float = 0.0


def admit(state: Throttle, now: dt.datetime, policy: Policy) -> tuple[Throttle, Verdict]:
    """Count one attempt: its new state and whether it may go on."""
    if state.locked_until is not None and now < state.locked_until:
        wait = (state.locked_until - now).total_seconds()
        return replace(state, refused=state.refused + 1), Verdict(False, _ceil_s(wait))
    locks = state.locks
    if state.locked_until is not None and now - state.locked_until >= policy.lock_max:
        locks = 0  # a long quiet spell after the last lock: start the backoff again
    attempts, start = state.attempts, state.window_start
    if now - start >= policy.window:
        attempts, start = 0, now
    attempts += 1
    if attempts <= policy.max_attempts:
        return Throttle(attempts, start, state.locked_until, locks), Verdict(True)
    lock_for = min(policy.lock * (2 ** min(locks, 30)), policy.lock_max)
    locked = Throttle(0, now, now + lock_for, locks + 1)
    seconds = lock_for.total_seconds()
    return locked, Verdict(False, _ceil_s(seconds), newly_locked=True, lock_s=seconds)


def after_success(state: Throttle, account: bool) -> Throttle | None:
    """The state after a successful sign-in: an account starts afresh (None); an address
    gives back this attempt only."""
    if account:
        return None
    return replace(state, attempts=max(state.attempts - 1, 0))


def _ceil_s(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def policies(settings: Settings) -> tuple[Policy, Policy]:
    """(per account, per client address)."""
    window = dt.timedelta(seconds=settings.gateway.signin_window_s)
    lock = dt.timedelta(seconds=settings.gateway.signin_lock_s)
    lock_max = dt.timedelta(
        seconds=max(settings.gateway.signin_lock_max_s, settings.gateway.signin_lock_s)
    )
    return (
        Policy(settings.gateway.signin_max_failures, window, lock, lock_max),
        Policy(settings.gateway.signin_client_max_failures, window, lock, lock_max),
    )


def touch_interval(idle: dt.timedelta) -> dt.timedelta:
    """How stale a session's last_seen may get before a request writes it again: a minute,
    or a tenth of the idle timeout if that is shorter."""
    return min(dt.timedelta(seconds=60), idle / 10)
