"""The sign-in throttle's policy (streams/services/signin.py), driven by an injected clock: no
sleeping, no database."""

from __future__ import annotations

import asyncio
import datetime as dt

from argon2 import extract_parameters

from streams.access import hash_password
from streams.http.denials import denial_target
from streams.services.signin import PasswordChecker, subject, username_digest
from streams.settings import Settings
from streams.throttle import Policy, Throttle, admit, after_success, policies, touch_interval

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
POLICY = Policy(
    max_attempts=5,
    window=dt.timedelta(minutes=15),
    lock=dt.timedelta(seconds=60),
    lock_max=dt.timedelta(hours=1),
)


class FakeClock:
    def __init__(self, at: dt.datetime = T0) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += dt.timedelta(seconds=seconds)


def attempts(state: Throttle, clock: FakeClock, n: int, every_s: float = 0.5) -> list[bool]:
    """Make n attempts; the verdicts' `allowed`, the state left in ``attempts.state``."""
    out = []
    for _ in range(n):
        state, verdict = admit(state, clock(), POLICY)
        out.append(verdict.allowed)
        clock.advance(every_s)
    attempts.state = state  # type: ignore[attr-defined]
    return out


def test_twenty_quick_attempts_lock_after_five_and_the_lock_ends() -> None:
    clock = FakeClock()
    state = Throttle(0, clock())
    allowed = []
    locked_now = []
    retry = []
    for _ in range(20):  # 20 attempts in 10 s
        state, verdict = admit(state, clock(), POLICY)
        allowed.append(verdict.allowed)
        locked_now.append(verdict.newly_locked)
        retry.append(verdict.retry_after_s)
        clock.advance(0.5)
    assert allowed == [True] * 5 + [False] * 15
    assert locked_now.count(True) == 1 and locked_now[5]  # one lock, audited once
    assert retry[5] == 60 and retry[6] == 60 and 50 <= retry[-1] < 60  # Retry-After counts down
    assert state.refused == 14
    lock_began = T0 + dt.timedelta(seconds=2.5)  # the sixth attempt
    assert state.locked_until == lock_began + dt.timedelta(seconds=60)
    clock.at = lock_began + dt.timedelta(seconds=59.5)  # still locked
    state, verdict = admit(state, clock(), POLICY)
    assert not verdict.allowed and verdict.retry_after_s == 1
    clock.advance(0.5)  # the lock is over: the next attempt goes on to the password
    state, verdict = admit(state, clock(), POLICY)
    assert verdict.allowed and state.attempts == 1


def test_each_further_lock_doubles_up_to_the_cap_and_a_quiet_hour_forgives() -> None:
    clock = FakeClock()
    state = Throttle(0, clock())
    lengths = []
    for _ in range(8):
        for _ in range(6):
            state, verdict = admit(state, clock(), POLICY)
        assert verdict.newly_locked
        lengths.append(verdict.lock_s)
        assert state.locked_until is not None
        clock.at = state.locked_until
    assert lengths == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    clock.advance(3600)  # an hour without a lock: the backoff starts again
    for _ in range(6):
        state, verdict = admit(state, clock(), POLICY)
    assert verdict.newly_locked and verdict.lock_s == 60


def test_the_window_forgets_old_attempts() -> None:
    clock = FakeClock()
    state = Throttle(0, clock())
    assert attempts(state, clock, 4) == [True] * 4
    state = attempts.state  # type: ignore[attr-defined]
    clock.advance(15 * 60)
    assert attempts(state, clock, 5) == [True] * 5  # a fresh window: five more
    assert attempts(attempts.state, clock, 1) == [False]  # type: ignore[attr-defined]


def test_success_clears_an_account_and_gives_back_one_attempt_of_an_address() -> None:
    state = Throttle(4, T0)
    assert after_success(state, account=True) is None
    back = after_success(state, account=False)
    assert back is not None and back.attempts == 3
    assert after_success(Throttle(0, T0), account=False) == Throttle(0, T0)


def test_policies_and_touch_interval_come_from_settings() -> None:
    s = Settings(signin_max_failures=3, signin_client_max_failures=9, signin_lock_s=10)
    account, client = policies(s)
    assert (account.max_attempts, client.max_attempts) == (3, 9)
    assert account.lock == dt.timedelta(seconds=10)
    assert touch_interval(dt.timedelta(minutes=30)) == dt.timedelta(seconds=60)
    assert touch_interval(dt.timedelta(seconds=3)) == dt.timedelta(seconds=0.3)


def test_unknown_names_cost_a_verification_with_the_same_parameters() -> None:
    checker = PasswordChecker(workers=1)
    try:
        assert asyncio.run(checker.check(None, "anything")) is False
        dummy = checker._dummy_hash()
        assert extract_parameters(dummy) == extract_parameters(hash_password("x"))
        stored = hash_password("right")
        assert asyncio.run(checker.check(stored, "right")) is True
        assert asyncio.run(checker.check(stored, "wrong")) is False
    finally:
        checker.close()


def test_keyed_digests_name_no_one() -> None:
    key = b"k" * 32
    assert username_digest(key, "Summer2026!") == username_digest(key, "Summer2026!")
    assert username_digest(key, "Summer2026!") != username_digest(b"j" * 32, "Summer2026!")
    assert "Summer" not in username_digest(key, "Summer2026!")
    assert subject(key, "account", "x") != subject(key, "client", "x")


def test_denial_targets() -> None:
    class Route:
        path = "/fhir/Observation"

    assert denial_target({"path_params": {"patient_id": "p1"}}) == ("patient", "p1")
    assert denial_target({"path_params": {"alert_id": "a1"}}) == ("alert", "a1")
    fhir = {"path_params": {}, "route": Route(), "query_string": b"patient=Patient/p2"}
    assert denial_target(fhir) == ("patient", "p2")
    assert denial_target({"path_params": {}, "route": None}) is None
