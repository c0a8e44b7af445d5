"""Sign-in that cannot be hammered (issue 16, item 3).

- **Throttle, in the database** (``sign_in_throttle``), so that every gateway process
  counts against the same numbers: one row per account name (known or not: an unknown
  name locks like a known one, so locking says nothing about which names exist) and one
  per client address, keyed by an HMAC with a per-installation key (``app_keys``), so the
  table holds no names or addresses. An attempt is counted *before* the password is
  checked (rows locked ``FOR UPDATE``), so a burst of parallel guesses cannot all slip in
  before the first failure is written. Past ``RTM_SIGNIN_MAX_FAILURES`` attempts on an
  account (``RTM_SIGNIN_CLIENT_MAX_FAILURES`` from one address) within
  ``RTM_SIGNIN_WINDOW_S`` the key is locked for ``RTM_SIGNIN_LOCK_S``, twice as long at
  each further lock up to ``RTM_SIGNIN_LOCK_MAX_S`` (forgiven after that long without a
  lock); while locked every attempt answers 429 with ``Retry-After``, the right password
  too, and nothing is checked. A lock leaves one ``access.sign_in_locked`` audit row. A
  successful sign-in clears its account's count and takes back its own attempt from the
  address's count (a success must not reset an address that guesses other accounts).
- **Equal work for every name**: a disabled or unknown user's attempt is checked against a
  dummy argon2id hash made with the same parameters, and does the same database work, so
  timing does not tell which names exist.
- **Off the event loop**: argon2 runs in a small thread pool (``RTM_SIGNIN_HASH_WORKERS``,
  threads at a lower CPU priority where the OS allows), and no database connection is held
  while a hash is checked: parallel sign-ins queue for the pool, not for the loop.
- **Sessions**: a new sign-in keeps at most ``RTM_SESSION_MAX_PER_USER`` sessions for the
  user, ending the least recently used beyond it (audited with the sign-in).

The policy (``admit``) is a pure function of the key's state and the time; the clock is
injected (``streams.clock.Clock``: the gateway's, a ``FixedClock`` in tests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass
from typing import Any

from streams.access import hash_password, new_session_token, verify_password
from streams.clock import Clock
from streams.db import signin as db
from streams.db.access import audit, create_session, trim_sessions
from streams.db.signin import sign_in_key
from streams.settings import Settings
from streams.throttle import Verdict, admit, after_success, policies

NO_ORG = "-"  # the audit log's organisation for attempts that belong to none
ANONYMOUS = "anonymous"


# --- password checks off the event loop ----------------------------------------------------------


class PasswordChecker:
    """argon2id verification in a bounded thread pool (threads at nice 10 on Linux, where
    niceness is per thread, so sign-ins yield the CPU to the event loop)."""

    def __init__(self, workers: int) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self._dummy: str | None = None
        self._lock = threading.Lock()
        self._pool.submit(self._dummy_hash)  # made now, before the first unknown name

    def _dummy_hash(self) -> str:
        with self._lock:
            if self._dummy is None:
                # same parameters as every stored hash: unknown names cost the same time
                self._dummy = hash_password(os.urandom(16).hex())
            return self._dummy

    async def check(self, stored: str | None, password: str) -> bool:
        """Verify against ``stored``, or against the dummy hash when there is none (the
        answer is then False, after the same work)."""
        loop = asyncio.get_running_loop()
        if stored is None:
            await loop.run_in_executor(
                self._pool, lambda: verify_password(self._dummy_hash(), password)
            )
            return False
        return await loop.run_in_executor(self._pool, verify_password, stored, password)

    async def warm(self) -> None:
        """Make the dummy hash now (the first unknown name would otherwise pay for it)."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._dummy_hash)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: the default priority
        pass


# --- the sign-in --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    user: Any  # the user's row
    cookie: str
    csrf: str


@dataclass(frozen=True)
class Refused:
    status: int  # 401 or 429
    message: str
    retry_after_s: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.status == 429 else {}


WRONG = Refused(401, "unknown user or wrong password")


def subject(key: bytes, kind: str, value: str) -> bytes:
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).digest()


def username_digest(key: bytes, username: str) -> str:
    """How the audit log names an attempted username that is not an account: a keyed
    hash (64 bits, hex), equal for equal names, that readers of the log cannot test
    guesses against (a password typed into the name field stays unreadable)."""
    return subject(key, "username", username)[:8].hex()


class SignInService:
    """Sign-ins for one gateway process (shared state lives in the database)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.account_policy, self.client_policy = policies(settings)
        self.checker = PasswordChecker(settings.gateway.signin_hash_workers)
        self._key: bytes | None = None
        self._attempts = 0

    async def _hmac_key(self, conn: Any) -> bytes:
        if self._key is None:
            self._key = await sign_in_key(conn)
        return self._key

    async def sign_in(
        self,
        store: Any,
        clock: Clock,
        username: str,
        password: str,
        client: str,
        resource: str,
    ) -> Started | Refused:
        now = clock.now()
        async with store.acquire() as conn:
            key = await self._hmac_key(conn)
            account_key = subject(key, "account", username)
            client_key = subject(key, "client", client)
            async with conn.transaction():
                user = await db.user_for_sign_in(conn, username)
                states = await db.lock_throttle(conn, [account_key, client_key], now)
                verdicts: list[tuple[str, Verdict]] = []
                for kind, k, policy in (
                    ("account", account_key, self.account_policy),
                    ("client", client_key, self.client_policy),
                ):
                    new, verdict = admit(states[k], now, policy)
                    await db.save_throttle(conn, k, new, now)
                    verdicts.append((kind, verdict))
                    if not verdict.allowed:
                        break  # a locked account costs the address nothing
                refused = [(kind, v) for kind, v in verdicts if not v.allowed]
                for kind, v in refused:
                    if v.newly_locked:
                        await audit(
                            conn,
                            **self._who(key, user, username, kind, client),
                            action="access.sign_in_locked",
                            resource=resource,
                            detail={
                                "scope": kind,
                                "client": client,
                                "lock_s": v.lock_s,
                                "until": (now + dt.timedelta(seconds=v.lock_s)).isoformat(),
                                **self._name_detail(key, user, username),
                            },
                        )
            self._attempts += 1
            if self._attempts % 100 == 0:
                await db.prune_throttle(conn, now - self.account_policy.lock_max * 2)
        if refused:
            wait = max(v.retry_after_s for _, v in refused)
            return Refused(429, f"too many sign-in attempts; try again in {wait} s", wait)

        stored = user["password_hash"] if user is not None and not user["disabled"] else None
        ok = await self.checker.check(stored, password)  # no connection held meanwhile

        async with store.acquire() as conn, conn.transaction():
            if not ok:
                reason = (
                    "unknown_user"
                    if user is None
                    else ("disabled" if user["disabled"] else "wrong_password")
                )
                await audit(
                    conn,
                    **self._who(key, user, username, "account", client),
                    action="access.sign_in_failed",
                    resource=resource,
                    detail={
                        "reason": reason,
                        "client": client,
                        **self._name_detail(key, user, username),
                    },
                )
                return WRONG
            assert user is not None  # a verified password belongs to an existing account
            states = await db.lock_throttle(conn, [account_key, client_key], now)
            for k, is_account in ((account_key, True), (client_key, False)):
                after = after_success(states[k], is_account)
                if after is None:
                    await db.clear_throttle(conn, k)
                else:
                    await db.save_throttle(conn, k, after, now)
            ended = await trim_sessions(
                conn,
                user["user_id"],
                keep=self.settings.gateway.session_max_per_user - 1,
                now=now,
                idle=dt.timedelta(seconds=self.settings.gateway.session_idle_s),
            )
            token, digest, csrf = new_session_token()
            await create_session(
                conn,
                digest,
                user["user_id"],
                csrf,
                now=now,
                ttl=dt.timedelta(seconds=self.settings.gateway.session_ttl_s),
            )
            await audit(
                conn,
                org_id=user["org_id"],
                actor=f"user:{user['username']}",
                role=user["role"],
                action="access.sign_in",
                resource=resource,
                detail={"client": client, "sessions_ended": ended} if ended else {"client": client},
            )
        return Started(user, token, csrf)

    @staticmethod
    def _who(key: bytes, user: Any, username: str, kind: str, client: str) -> dict[str, str]:
        """org_id, actor and role of an attempt's audit row: the account when it exists,
        else no organisation and an anonymous actor (client locks: the address)."""
        if user and kind == "account":
            return {
                "org_id": user["org_id"],
                "actor": f"user:{user['username']}",
                "role": user["role"],
            }
        actor = f"client:{client}" if kind == "client" else ANONYMOUS
        return {"org_id": NO_ORG, "actor": actor, "role": "-"}

    @staticmethod
    def _name_detail(key: bytes, user: Any, username: str) -> dict[str, str]:
        if user:
            return {"username": user["username"]}
        return {"username_digest": username_digest(key, username)}
