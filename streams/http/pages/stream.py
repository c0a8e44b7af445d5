"""``/ui/stream``: server-sent events, one ``alert`` event per alert change in the
user's scope (the worklist and patient pages listen to it)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import orjson
from fastapi import Request
from fastapi.responses import StreamingResponse

from streams.db.access import audit_principal
from streams.db.alerts import alerts_changed_since, db_now
from streams.http.deps import AuthenticateDep, StoreDep
from streams.http.hardening import Instant
from streams.http.pages.common import need, page_router, page_user

STREAM_POLL_S = 1.0
# A change is read again for this long after the cursor passed it: a batch transaction
# stamps updated_at when it starts and may commit after a poll has moved on.
STREAM_OVERLAP = dt.timedelta(seconds=10)

router = page_router()


@router.get("/stream")
async def stream(
    request: Request, authenticate: AuthenticateDep, store: StoreDep, since: Instant | None = None
) -> StreamingResponse:
    """Server-sent events: ``event: alert`` with the alert (id, patient, kind, severity,
    status) for each change in the user's scope after ``since`` (default: now; at most an
    hour back). Each batch sent is audited like a read."""
    who = await page_user(request, authenticate)
    need(who, "read_clinical")
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
        while not await request.is_disconnected():
            async with store.acquire() as conn:
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
                        "GET /ui/stream",
                        [a["patient_id"] for _, a in fresh],
                        {"count": len(fresh)},
                    )
            for at, a in fresh:
                sent[(a["id"], a["status"])] = at
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
