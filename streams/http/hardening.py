"""The gateway's request hardening (issue 16): bounded inputs, one 500 answer, headers.

- **Bounded dates.** Every date a route or page takes lies in the contract's years
  (2000-2100: ``Day``, ``Instant``), and a range spans at most ``MAX_SPAN_DAYS``
  (``check_span``); otherwise 422 naming the parameter. A fold or a render therefore never
  walks more than a bounded window, and no date arithmetic overflows.
- **Ids.** Path ids carry the contract's id pattern (``ID_REGEX``); integer ids are
  bounded to PostgreSQL's ``bigint`` (``INT64_MAX``).
- **NUL.** PostgreSQL text cannot hold ``\\x00``: ``Hardening`` refuses it in the path and
  every query value (422), ``NoNul`` in JSON body fields, ``streams.http.auth.form_fields`` in
  form fields.
- **One 500.** ``Hardening`` is the outermost handler of the application: an exception no
  route handled answers ``{"error": "internal error"}`` (no traceback, no message: either
  may carry patient data), is logged with its type, route template and stack frames, and is
  counted in ``rtm_gateway_requests_total{status="500"}`` like every other answer.
- **Pages.** Under ``/ui`` these refusals are HTML pages with the signed-in user's
  navigation (``page_answer``, given by the application: ``streams.http.pages.common``),
  and a form body over ``MAX_PAGE_BODY`` bytes (by its Content-Length) is 413 before it
  is read; the JSON API keeps its JSON answers.
- **Headers** on every answer: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  no-referrer``, ``Cache-Control: no-store`` (all but the static assets under
  ``/ui/static/``) and, when the gateway serves TLS, ``Strict-Transport-Security``.
- **Login CSRF.** ``cross_site`` says whether a browser sent a request from another site
  (``Sec-Fetch-Site``, else ``Origin`` against ``Host``); the sign-in routes refuse those.
"""

from __future__ import annotations

import datetime as dt
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter
from pydantic import AfterValidator
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.events import NUL_MESSAGE, YEAR_MAX, YEAR_MIN

log = logging.getLogger("rtm.gateway")

MAX_SPAN_DAYS = 400  # the longest date range any route answers (a year and a month)
INT64_MAX = 2**63 - 1  # PostgreSQL bigint: export, submission and alert-list ids
ID_REGEX = r"^[A-Za-z0-9._:-]{1,64}$"  # the contract's Id64 (schemas.events)
STATIC_PREFIX = "/ui/static/"  # assets: they keep their own Cache-Control
HSTS = "max-age=31536000"
INTERNAL_ERROR = {"error": "internal error"}
MAX_PAGE_BODY = 64 * 1024  # the pages' forms send a few hundred bytes
# (request, status, problems) -> the HTML page of a refusal under /ui
PageAnswer = Callable[[Request, int, list[str]], Awaitable[Response]]
_DATE_TEXT = f"{YEAR_MIN}-01-01 and {YEAR_MAX}-12-31"


def _day(value: dt.date) -> dt.date:
    if not YEAR_MIN <= value.year <= YEAR_MAX:
        raise ValueError(f"date must be between {_DATE_TEXT}")
    return value


def _instant(value: dt.datetime) -> dt.datetime:
    # the year as written (in its own offset), like the contract's timestamps
    if not YEAR_MIN <= value.year <= YEAR_MAX:
        raise ValueError(f"timestamp must be between {_DATE_TEXT}")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    return value


Day = Annotated[dt.date, AfterValidator(_day)]
Instant = Annotated[dt.datetime, AfterValidator(_instant)]
NoNul = Annotated[str, AfterValidator(_no_nul)]


def unprocessable(where: str, name: str, message: str, kind: str = "value_error") -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors (loc, type, msg)."""
    return HTTPException(422, [{"loc": [where, name], "type": kind, "msg": message}])


def check_span(
    frm: dt.date | None,
    to: dt.date | None,
    where: str = "query",
    names: tuple[str, str] = ("from", "to"),
) -> None:
    """422 naming ``to`` when both dates are given and more than MAX_SPAN_DAYS apart."""
    if frm is None or to is None:
        return
    if (to - frm).days > MAX_SPAN_DAYS:
        raise unprocessable(
            where,
            names[1],
            f"{names[0]} and {names[1]} are {(to - frm).days} days apart;"
            f" at most {MAX_SPAN_DAYS} days per request",
            "range_too_long",
        )


def in_years(day: dt.date) -> bool:
    return YEAR_MIN <= day.year <= YEAR_MAX


def cross_site(request: Request) -> bool:
    """True when a browser says the request comes from another site: ``Sec-Fetch-Site:
    cross-site`` (same-origin, same-site and none, a typed URL, pass), or without that
    header an ``Origin`` whose host is not ours (``null`` included). A client that sends
    neither (curl, the CLI, tests) is not a browser and passes."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() not in ("same-origin", "same-site", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    host = request.headers.get("host", "").lower()
    return origin.strip().lower() == "null" or urlsplit(origin.strip()).netloc.lower() != host


async def refuse_cross_site(request: Request) -> None:
    """A dependency for the JSON sign-in: a cross-site sign-in (login CSRF) is 403."""
    if cross_site(request):
        raise HTTPException(403, "cross-site sign-in refused")


def _nul_problem(scope: Scope) -> dict[str, Any] | None:
    if "\x00" in scope.get("path", ""):
        return {"loc": ["path"], "type": "nul", "msg": f"path {NUL_MESSAGE}"}
    query = scope.get("query_string", b"").decode("latin-1")
    if "%00" in query or "\x00" in query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                shown = name.replace("\x00", "\\x00")
                return {"loc": ["query", shown], "type": "nul", "msg": f"{shown} {NUL_MESSAGE}"}
    return None


def _page_body_too_large(scope: Scope) -> bool:
    """A request under /ui whose Content-Length says more than MAX_PAGE_BODY bytes."""
    path = scope.get("path", "")
    if not path.startswith("/ui/"):
        return False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return not value.isdigit() or int(value) > MAX_PAGE_BODY
    return False


class Hardening:
    """Pure ASGI middleware around the whole application (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, requests: Counter, tls: bool, page_answer: PageAnswer | None = None
    ) -> None:
        self.app = app
        self.requests = requests
        self.tls = tls
        self.page_answer = page_answer

    async def refuse(self, scope: Scope, status: int, problems: list[dict[str, Any]]) -> Response:
        """A refusal: a page under /ui (when the application gave ``page_answer``), else
        JSON (422/413: FastAPI's ``detail`` list; 500: ``INTERNAL_ERROR``)."""
        path = scope.get("path", "")
        if self.page_answer is not None and (path == "/ui" or path.startswith("/ui/")):
            return await self.page_answer(Request(scope), status, [str(p["msg"]) for p in problems])
        if status == 500:
            return JSONResponse(INTERNAL_ERROR, status_code=500)
        return JSONResponse({"detail": problems}, status_code=status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith(STATIC_PREFIX)
        started = False

        async def send_hardened(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                if not static:
                    headers["Cache-Control"] = "no-store"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if self.tls:
                    headers["Strict-Transport-Security"] = HSTS
                # counted when the answer starts (before the body: a scrape right after a
                # response sees it; a live stream is counted when it opens)
                route = getattr(scope.get("route"), "path", "unmatched")
                self.requests.labels(route, str(message["status"])).inc()
            await send(message)

        try:
            problem = _nul_problem(scope)
            if problem is not None:
                answer = await self.refuse(scope, 422, [problem])
                await answer(scope, receive, send_hardened)
                return
            if _page_body_too_large(scope):
                too_large = {"loc": ["body"], "msg": f"a form of more than {MAX_PAGE_BODY} bytes"}
                await (await self.refuse(scope, 413, [too_large]))(scope, receive, send_hardened)
                return
            await self.app(scope, receive, send_hardened)
        except Exception as exc:  # the one place an unhandled error becomes an answer
            route = getattr(scope.get("route"), "path", "unmatched")
            # type, route template and frames only: an exception's message or the request
            # path may carry patient data
            log.error(
                "unhandled %s in %s %s\n%s",
                type(exc).__name__,
                scope.get("method", ""),
                route,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            if not started:  # answered and counted as a 500 through send_hardened
                await (await self.refuse(scope, 500, []))(scope, receive, send_hardened)
            # else the answer had begun (a live stream, counted with its status): it ends here
