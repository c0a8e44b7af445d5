"""The gateway's authentication: who is calling, and the checks around it.

``Authenticator`` finds the caller (a machine key or a session cookie) and remembers it on
the request for the denial audit (``remember``/``remembered``); the dependencies that
answer 401/403 (``principal``, ``require``) are in ``streams.http.deps``, built on
``csrf_sent``; ``reject_unknown_query`` answers 422 naming query parameters a route does
not take; ``form_fields`` reads the pages' urlencoded forms.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from urllib.parse import parse_qs

from fastapi import HTTPException, Request, Response
from starlette.types import Scope

from streams.access import (
    CSRF_HEADER,
    SESSION_COOKIE,
    Principal,
    key_matches,
    parse_key,
    session_digest,
)
from streams.clock import Clock
from streams.db.access import key_record, session_user, team_clinicians, touch_session
from streams.db.events import EventStore
from streams.settings import Settings
from streams.throttle import touch_interval

KEY_CACHE_S = 5.0  # a disabled key stops working within this many seconds


class Authenticator:
    """Bearer machine keys (cached briefly: a key lookup per request would cost a round
    trip on the ingest path) and session cookies (looked up each request, so signing out
    or disabling a user takes effect at once).

    With the database away, a key verified before keeps working from the cache (ingest
    must go on: events go to Kafka, not the database); anything else answers 503."""

    def __init__(self, settings: Settings, clock: Clock, store: Callable[[], EventStore]) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store  # the gateway's store, once its lifespan opened it
        self._keys: dict[bytes, tuple[float, Principal | None]] = {}

    async def __call__(self, request: Request) -> Principal | None:
        who = await self._identify(request)
        remember(request, who)
        return who

    async def _identify(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return await self._key(token.strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return await self._session(cookie)
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
            async with self.store().acquire() as conn:
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

    async def _session(self, cookie: str) -> Principal | None:
        """A live session's user. Idle for ``RTM_SESSION_IDLE_S``: over. Use slides the
        idle timeout, writing ``last_seen`` at most once a minute per session."""
        now = self.clock.now()
        idle = dt.timedelta(seconds=self.settings.gateway.session_idle_s)
        digest = session_digest(cookie)
        try:
            async with self.store().acquire() as conn:
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


def remember(request: Request, who: Principal | None) -> None:
    """Keep the caller on the request for the denial audit (streams/http/denials.py)."""
    request.state.principal = who


def remembered(scope: Scope) -> Principal | None:
    """The caller ``remember`` kept on this request, if any."""
    who = (scope.get("state") or {}).get("principal")
    return who if isinstance(who, Principal) else None


def client_host(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def csrf_sent(request: Request) -> str:
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


async def reject_unknown_query(request: Request) -> None:
    """422 naming query parameters the route does not take (a misspelled filter must not
    silently widen the answer). ``async``: FastAPI would run a plain ``def`` dependency in
    its thread pool, on every API request and page."""
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


def set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    """The session cookie a sign-in sets (the API's and the page's): HttpOnly, Secure,
    SameSite=Lax, for the session's lifetime."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.gateway.session_ttl_s),
        httponly=True,
        secure=True,
        samesite="lax",
        path="/",
    )
