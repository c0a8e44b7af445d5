"""``/ui/stream``: server-sent events, one ``alert`` event per alert change in the
user's scope (the worklist and patient pages listen to it); with ``feed=intakes``, one
``intake`` event per change of an intake of the user's organisation (the intake queue
page listens to it: streams/http/pages/intakes.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from fastapi import Request
from fastapi.responses import StreamingResponse

from streams.access import SESSION_COOKIE, Principal, session_digest
from streams.db.access import audit_principal, session_user
from streams.db.alerts import alerts_changed_since, db_now
from streams.db.intakes import intakes_changed_since
from streams.http.deps import AuthenticateDep, ClockDep, SettingsDep, StoreDep
from streams.http.hardening import Instant
from streams.http.pages.common import need, page_router, page_user
from streams.settings import Settings

STREAM_POLL_S = 1.0
# The page's session is checked every this many polls (a sign-out ends the stream within
# about 5 s), not at every poll: one query fewer per second per open tab.
SESSION_CHECK_POLLS = 5
# A change is read again for this long after the cursor passed it: a batch transaction
# stamps updated_at when it starts and may commit after a poll has moved on.
STREAM_OVERLAP = dt.timedelta(seconds=10)

router = page_router()


@router.get("/stream")
async def stream(
    request: Request,
    authenticate: AuthenticateDep,
    store: StoreDep,
    clock: ClockDep,
    settings: SettingsDep,
    since: Instant | None = None,
    feed: Literal["alerts", "intakes"] = "alerts",
) -> StreamingResponse:
    """Server-sent events: ``event: alert`` with the alert (id, patient, kind, severity,
    status) for each change in the user's scope after ``since`` (default: now; at most an
    hour back); with ``feed=intakes``, ``event: intake`` per intake change instead. Each
    batch sent is audited like a read."""
    who = await page_user(request, authenticate)
    need(who, "read_intakes" if feed == "intakes" else "read_clinical")
    async with store.acquire() as conn:
        now = await db_now(conn)
    if since is None or since.tzinfo is None or since > now:
        since = now
    cursor = max(since, now - dt.timedelta(hours=1))

    async def events() -> AsyncIterator[bytes]:
        nonlocal cursor
        sent: dict[tuple[str, str], dt.datetime] = {}
        yield b"retry: 2000\n\n"
        idle = 0.0
        polls = 0
        while not await request.is_disconnected():
            polls += 1
            async with store.acquire() as conn:
                checking = polls % SESSION_CHECK_POLLS == 1
                if checking and not await _still_signed_in(conn, request, settings, clock.now()):
                    # signed out (here or in another tab), idle or disabled: nothing more
                    # for this page, and it says so (the browser must not reconnect)
                    yield b'event: end\ndata: {"reason":"signed_out"}\n\n'
                    return
                if feed == "intakes":
                    changed = await _intake_changes(conn, who, cursor - STREAM_OVERLAP)
                else:
                    changed = await alerts_changed_since(conn, who.scope(), cursor - STREAM_OVERLAP)
                fresh = [
                    (at, a)
                    for at, a in changed
                    if at >= since and (a["id"], a["status"]) not in sent
                ]
                if fresh:
                    await audit_principal(
                        conn,
                        who,
                        "read",
                        "GET /ui/stream" if feed == "alerts" else "GET /ui/stream?feed=intakes",
                        [a["patient_id"] for _, a in fresh],
                        {"count": len(fresh)},
                    )
            for at, a in fresh:
                sent[(a["id"], a["status"])] = at
                if feed == "intakes":
                    yield b"event: intake\ndata: " + orjson.dumps(a) + b"\n\n"
                    continue
                body = {
                    k: a.get(k)
                    # details: the red flags by name (a banner must not say only "red flag")
                    for k in (
                        "id",
                        "patient_id",
                        "kind",
                        "severity",
                        "status",
                        "fired_at",
                        "details",
                    )
                }
                yield b"event: alert\ndata: " + orjson.dumps(body) + b"\n\n"
            if changed:
                cursor = max(cursor, changed[-1][0])
            horizon = cursor - STREAM_OVERLAP * 2
            for k in [k for k, at in sent.items() if at < horizon]:
                del sent[k]
            idle = 0.0 if fresh else idle + STREAM_POLL_S
            if idle >= 15:
                idle = 0.0
                yield b": keep-alive\n\n"
            await asyncio.sleep(STREAM_POLL_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _still_signed_in(
    conn: Any, request: Request, settings: Settings, now: dt.datetime
) -> bool:
    """Whether the page's session is still live (not signed out, idle, expired or disabled),
    without sliding its idle timeout: an open stream does not keep a session alive."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return False
    idle = dt.timedelta(seconds=settings.gateway.session_idle_s)
    return await session_user(conn, session_digest(cookie), now, idle) is not None


async def _intake_changes(
    conn: Any, who: Principal, since: dt.datetime
) -> list[tuple[dt.datetime, dict[str, Any]]]:
    """The organisation's intake changes as the stream sends them: which intake, its route
    and whether it still waits (``status``: waiting or contacted); no clinical detail (the
    page reloads for that)."""
    return [
        (
            at,
            {
                "id": f"{q.patient_id}/{q.intake_id}",
                "patient_id": q.patient_id,
                "intake_id": q.intake_id,
                "route": q.route,
                "status": "waiting" if q.first_contact_at is None else "contacted",
            },
        )
        for at, q in await intakes_changed_since(conn, who.org_id, since)
    ]
