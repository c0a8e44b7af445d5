"""The gateway's authentication and authorisation for HTTP routes (FastAPI dependencies).

``principal`` finds the caller (a machine key or a session cookie) or answers 401, and
checks the CSRF token on a signed-in user's state-changing request; ``require`` adds the
permission (``streams.access.PERMISSIONS``) or answers 403; ``reject_unknown_query``
answers 422 naming query parameters a route does not take.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from typing import Any

from fastapi import Depends, HTTPException, Request

from streams.access import (
    CSRF_HEADER,
    SESSION_COOKIE,
    Permission,
    Principal,
    key_matches,
    parse_key,
    session_digest,
)
from streams.db.access import key_record, session_user, team_clinicians, touch_session
from streams.services.signin import (
    Clock,
    Refused,
    SignInService,
    Started,
    wall_clock,
)
from streams.throttle import touch_interval

KEY_CACHE_S = 5.0  # a disabled key stops working within this many seconds


class Authenticator:
    """Bearer machine keys (cached briefly: a key lookup per request would cost a round
    trip on the ingest path) and session cookies (looked up each request, so signing out
    or disabling a user takes effect at once).

    With the database away, a key verified before keeps working from the cache (ingest
    must go on: events go to Kafka, not the database); anything else answers 503."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self._keys: dict[bytes, tuple[float, Principal | None]] = {}

    async def __call__(self, request: Request) -> Principal | None:
        who = await self._identify(request)
        request.state.principal = who  # for the denial audit (streams/http/denials.py)
        return who

    async def _identify(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return await self._key(token.strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return await self._session(cookie, clock_of(request), request.app.state.settings)
        return None

    async def _key(self, token: str) -> Principal | None:
        parsed = parse_key(token)
        if parsed is None:
            return None
        cache_key = session_digest(token)
        hit = self._keys.get(cache_key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        key_id, secret = parsed
        try:
            async with self.state["store"].acquire() as conn:
                row = await key_record(conn, key_id)
        except Exception as exc:  # database away: the last verdict, else 503
            if hit is not None:
                return hit[1]
            raise _unavailable(exc) from None
        who = None
        if row is not None and key_matches(bytes(row["salt"]), bytes(row["key_hash"]), secret):
            who = Principal("key", key_id, row["org_id"], frozenset(row["scopes"]))
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[cache_key] = (time.monotonic() + KEY_CACHE_S, who)
        return who

    async def _session(self, cookie: str, clock: Clock, settings: Any) -> Principal | None:
        """A live session's user. Idle for ``RTM_SESSION_IDLE_S``: over. Use slides the
        idle timeout, writing ``last_seen`` at most once a minute per session."""
        now = clock()
        idle = dt.timedelta(seconds=settings.session_idle_s)
        digest = session_digest(cookie)
        try:
            async with self.state["store"].acquire() as conn:
                row = await session_user(conn, digest, now, idle)
                if row is None:
                    return None
                if now - row["last_seen"] >= touch_interval(idle):
                    await touch_session(conn, digest, now)
                team: frozenset[str] = frozenset()
                if row["role"] == "clinician" and row["clinician_id"]:
                    team = await team_clinicians(conn, row["org_id"], row["clinician_id"])
        except HTTPException:
            raise
        except Exception as exc:
            raise _unavailable(exc) from None
        return Principal(
            "user",
            row["username"],
            row["org_id"],
            frozenset({row["role"]}),
            clinician_id=row["clinician_id"],
            team_clinicians=team,
            csrf_token=row["csrf_token"],
        )


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(
        503,
        f"cannot check credentials now ({type(exc).__name__}); retry",
        headers={"Retry-After": "5"},
    )


UNAUTHENTICATED = {"error": "sign in, or send a machine key (Authorization: Bearer <key>)"}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def principal(request: Request) -> Principal:
    """The caller, or 401. A signed-in user's state-changing request must carry the
    session's CSRF token in X-CSRF-Token (a cross-site form cannot read it)."""
    who: Principal | None = await request.app.state.authenticate(request)
    if who is None:
        raise HTTPException(401, UNAUTHENTICATED["error"], headers={"WWW-Authenticate": "Bearer"})
    if (
        who.kind == "user"
        and request.method not in _SAFE_METHODS
        and not hmac.compare_digest(await _csrf_sent(request), who.csrf_token or "")
    ):
        raise HTTPException(403, f"missing or wrong {CSRF_HEADER}")
    return who


async def _csrf_sent(request: Request) -> str:
    """The CSRF token of the request: the X-CSRF-Token header, or for a plain HTML form
    post (urlencoded, which a page cannot give headers) its ``csrf_token`` field. A
    cross-site form can send the field but cannot know its value, so the rule is the same."""
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return form_fields(await request.body()).get("csrf_token", "")
    return ""


MAX_FORM_FIELDS = 50  # the pages' forms send at most 5; more is 413


def form_fields(body: bytes) -> dict[str, str]:
    """An urlencoded form body, first value of each field (the pages' forms send no
    repeated fields; parsed here so the gateway needs no multipart library). More than
    MAX_FORM_FIELDS fields: 413; a NUL character in a name or value: 422."""
    from urllib.parse import parse_qs

    try:
        parsed = parse_qs(
            body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError:
        raise HTTPException(413, f"more than {MAX_FORM_FIELDS} form fields") from None
    for name, values in parsed.items():
        if "\x00" in name or any("\x00" in v for v in values):
            shown = name.replace("\x00", "\\x00")
            raise HTTPException(422, [{"loc": ["form", shown], "msg": "must not contain NUL"}])
    return {k: v[0] for k, v in parsed.items()}


def require(*permissions: Permission) -> Any:
    """A dependency: the caller, if it holds any of ``permissions``; else 403."""

    async def dependency(who: Principal = Depends(principal)) -> Principal:
        if not any(who.may(p) for p in permissions):
            raise HTTPException(403, f"{who.role_text or 'this principal'} may not do this")
        return who

    return Depends(dependency)


def reject_unknown_query(request: Request) -> None:
    """422 naming query parameters the route does not take (a misspelled filter must not
    silently widen the answer)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known: set[str] = set()
    todo = [dependant]
    while todo:  # the route's own query parameters and those of its dependencies
        d = todo.pop()
        known.update(p.alias for p in d.query_params)
        todo.extend(d.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["query", name],
                    "type": "unknown_parameter",
                    "msg": f"unknown query parameter {name!r}",
                }
                for name in unknown
            ],
        )


def clock_of(request: Request) -> Clock:
    """The gateway's clock: ``app.state.clock`` when a test sets one, else the wall clock."""
    clock: Clock = getattr(request.app.state, "clock", wall_clock)
    return clock


def sign_in_service(request: Request) -> SignInService:
    """The process's sign-in service (made on first use, from the app's settings)."""
    service: SignInService | None = getattr(request.app.state, "sign_in", None)
    if service is None:
        service = SignInService(request.app.state.settings)
        request.app.state.sign_in = service
    return service


async def start_session(
    request: Request, username: str, password: str, resource: str
) -> Started | Refused:
    """Check a local account's password and open a session (streams/services/signin.py: throttled,
    equal work for unknown and disabled names, argon2 off the event loop, audited).
    Shared by the JSON sign-in and the sign-in page."""
    client = request.client.host if request.client else "unknown"
    return await sign_in_service(request).sign_in(
        request.app.state.store, clock_of(request), username, password, client, resource
    )
