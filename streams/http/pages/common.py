"""What every page of the dashboard shares: the templates and how a page is rendered,
the signed-in user (``page_user``, ``need``) and the HTML error answer (``PageError``),
the router every page module starts from, and the small text helpers of the tables (one
time convention: ``clinic_time``, every instant in the organisation's zone with its age).

Same access boundary as the JSON routes (streams.access): pages are for signed-in users
(a machine key gets 403: keys are for programs, and a page is for a person); a page
outside the user's permissions answers 403, a patient outside their scope 404, both
before anything is read; every page that shows patient data, the live stream included,
leaves an audit row naming the patients it showed. State-changing forms carry the
session's CSRF token in a ``csrf_token`` field (``streams.http.deps.principal`` checks it).

Errors under ``/ui`` are HTML pages with the navigation of the signed-in user
(``page_error`` for ``PageError``, ``http_error`` for what FastAPI refuses: a bad or
unknown query parameter 422, an unknown page 404, a form's missing CSRF token 403); the
JSON API keeps its JSON errors.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from alerts.models import Severity
from schemas.episodes import Episode
from streams.access import Permission, Principal
from streams.db.access import org_timezone
from streams.http.auth import reject_unknown_query
from streams.http.deps import Authenticate, Gateway, get_gateway
from streams.http.hardening import ID_REGEX
from streams.http.routes.events import ingest
from streams.http.webassets import WEB_DIR

ID_RE = re.compile(ID_REGEX)  # a patient id of the contract's shape

UTC = ZoneInfo("UTC")  # an organisation that never set its zone
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low")
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
    " script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)

templates = Environment(
    loader=FileSystemLoader(WEB_DIR / "templates"), autoescape=select_autoescape(["html"])
)


def page_router(prefix: str = "/ui") -> APIRouter:
    """A router of pages: a query parameter a page does not take is 422."""
    return APIRouter(prefix=prefix, dependencies=[Depends(reject_unknown_query)])


class PageError(Exception):
    """An HTML answer instead of the page: 401 becomes a redirect to the sign-in page."""

    def __init__(self, status: int, title: str, message: str = "") -> None:
        self.status, self.title, self.message = status, title, message


TITLES = {
    400: "Bad request",
    403: "Not permitted",
    404: "Not found",
    405: "Not allowed here",
    409: "Changed meanwhile",
    413: "Too large",
    422: "Bad request",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Try again",
}
MESSAGES = {
    404: "There is no page at this address.",
    413: "The form sent more than this page takes; nothing was stored.",
    422: "The address or form asks for something this page does not take.",
    500: "The server could not answer this request; nothing was changed by it. Try again,"
    " and tell your administrator if it goes on.",
}
STATIC_PATHS = "/ui/static/"
KEPT_HEADERS = frozenset({"allow", "retry-after"})


def is_page(request: Request) -> bool:
    path = request.url.path
    return path == "/ui" or path.startswith("/ui/")


async def viewer(request: Request) -> Principal | None:
    """The signed-in user for an error page's navigation (None: no nav)."""
    if request.url.path.startswith(STATIC_PATHS):
        return None
    try:
        who = await (await get_gateway(request)).authenticate(request)
    except Exception:  # an error page never fails for want of its navigation
        return None
    return who if who is not None and who.kind == "user" else None


def error_page(
    status: int, who: Principal | None, title: str, message: str, problems: list[str]
) -> HTMLResponse:
    return render(
        "error.html",
        status,
        who=who,
        status=status,
        title=title,
        message=message,
        problems=problems,
    )


async def page_error(request: Request, exc: Exception) -> Response:
    """The application's handler of ``PageError``."""
    if not isinstance(exc, PageError):
        raise exc
    if exc.status == 401:
        return RedirectResponse("/ui/sign-in", 303)
    return error_page(exc.status, await viewer(request), exc.title, exc.message, [])


def problems_of(detail: Any) -> list[str]:
    """FastAPI's error detail (a text, or a list of {loc, msg}) as lines for a person."""
    if isinstance(detail, str):
        return [detail]
    out = []
    for d in detail if isinstance(detail, list | tuple) else []:
        if isinstance(d, dict):
            loc = [str(x) for x in d.get("loc", ()) if x not in ("query", "path", "body")]
            msg = str(d.get("msg", "invalid"))
            out.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return out


async def http_error(request: Request, exc: Exception) -> Response:
    """The application's handler of FastAPI's refusals: HTML with the navigation under
    ``/ui`` (401: to the sign-in page), FastAPI's own JSON answer elsewhere."""
    if isinstance(exc, RequestValidationError):
        if not is_page(request):
            return await request_validation_exception_handler(request, exc)
        status, problems = 422, problems_of(list(exc.errors()))
    elif isinstance(exc, StarletteHTTPException):
        if not is_page(request):
            return await http_exception_handler(request, exc)
        status = exc.status_code
        problems = [] if status == 404 else problems_of(exc.detail)
    else:
        raise exc
    if status == 401:
        return RedirectResponse("/ui/sign-in", 303)
    page = error_page(
        status,
        await viewer(request),
        TITLES.get(status, "Error"),
        MESSAGES.get(status, ""),
        problems,
    )
    for name, value in (getattr(exc, "headers", None) or {}).items():
        if name.lower() in KEPT_HEADERS:  # 405 and 429 keep what the client needs
            page.headers[name] = value
    return page


async def hardening_page(request: Request, status: int, problems: list[str]) -> Response:
    """The request-hardening layer's refusals under /ui (``streams.http.hardening``: a NUL
    in the address 422, a form too large 413, an unhandled error 500) as HTML pages with
    the navigation."""
    return error_page(
        status,
        await viewer(request),
        TITLES.get(status, "Error"),
        MESSAGES.get(status, ""),
        problems,
    )


def render(name: str, code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(
        templates.get_template(name).render(**context),
        status_code=code,
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
    )


async def page_user(request: Request, authenticate: Authenticate) -> Principal:
    """The signed-in user, or a redirect to the sign-in page; a machine key gets 403.

    Called first in a page's body (not declared as a dependency), so that a request
    FastAPI refuses (a bad query or path) is refused before anyone is looked up."""
    who: Principal | None = await authenticate(request)
    if who is None:
        raise PageError(401, "Sign in")
    if who.kind != "user":
        raise PageError(403, "Not for machine keys", "The dashboard is for signed-in users.")
    return who


def need(who: Principal, *permissions: Permission) -> None:
    if not any(who.may(p) for p in permissions):
        raise PageError(403, "Not permitted", f"Your role ({who.role_text}) may not see this page.")


def elapsed(
    at: dt.datetime | None,
    now: dt.datetime,
    *,
    absent: str,
    within_hour: str | None = None,
    suffix: str = "",
) -> str:
    """How long before ``now`` ``at`` was, coarsely: "5 min", "7 h", "33 days" (with
    ``suffix``, e.g. " ago"). ``absent`` when there is no ``at``; ``within_hour``, when
    given, instead of the minutes; an ``at`` after ``now`` counts as no time at all."""
    if at is None:
        return absent
    minutes = max(int((now - at).total_seconds() // 60), 0)
    if minutes < 60:
        return within_hour if within_hour is not None else f"{minutes} min{suffix}"
    if minutes < 48 * 60:
        return f"{minutes // 60} h{suffix}"
    return f"{minutes // (24 * 60)} days{suffix}"


def age(at: dt.datetime, now: dt.datetime) -> str:
    """How far ``at`` is from ``now`` for a person: "just now", "5 min ago", "33 days ago",
    "in 3 h" (a time to come: a snooze's end, an intake's due time)."""
    if abs((now - at).total_seconds()) < 60:
        return "just now"
    if at > now:
        return f"in {elapsed(now, at, absent='')}"
    return elapsed(at, now, absent="", suffix=" ago")


def clinic_time(
    at: dt.datetime | str | None, now: dt.datetime, zone: ZoneInfo, *, absent: str = "—"
) -> str:
    """An instant as every page shows it (the one time convention, issue 17): in the
    clinic's zone with its age, "2026-12-06 10:04 CST (5 min ago)"; ``absent`` when none."""
    if at is None:
        return absent
    when = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
    local = when.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({age(when, now)})"


async def clinic_zone(conn: Any, who: Principal) -> ZoneInfo:
    """The zone of ``who``'s organisation (``rtm orgs timezone``), which pages show times in."""
    return ZoneInfo(await org_timezone(conn, who.org_id))


def episode_event(
    ep: Episode, event_type: str, event_id: str, now: dt.datetime, **fields: Any
) -> dict[str, Any]:
    """An event a dashboard form sends about one episode: the envelope every such event
    shares (dated ``now`` in the episode's time zone, the clinician portal as its source),
    then the type's own ``fields``."""
    return {
        "event_id": event_id,
        "schema_version": 1,
        "type": event_type,
        "patient_id": ep.patient_id,
        "occurred_at": now.astimezone(ZoneInfo(ep.timezone)).isoformat(),
        "source": {"kind": "clinician_portal", "id": "dashboard"},
        "episode_id": ep.episode_id,
        **fields,
    }


def clinician_form(who: Principal, patient_id: str, permission: Permission, only: str) -> str:
    """The signed-in clinician's id, for a form that changes a patient's record: users
    only (403), with ``permission``, a clinician (403 saying ``only``), a patient id of the
    contract's shape (404)."""
    if who.kind != "user":
        raise PageError(403, "Not for machine keys")
    need(who, permission)
    if who.clinician_id is None:
        raise PageError(403, "Not permitted", only)
    if not ID_RE.fullmatch(patient_id):
        raise PageError(404, "Unknown patient", "No such patient in your care.")
    return who.clinician_id


async def post_event(gateway: Gateway, who: Principal, item: dict[str, Any]) -> None:
    """A page's form sends one event the way of every event (the gateway's path to Kafka,
    then the worker) in ``who``'s name and organisation; a refusal or an unavailable stream
    is a PageError (nothing was sent). Then it waits, up to 5 s, for the worker to store
    the event, so that the page the form redirects to shows it."""
    answer = await ingest(gateway, who, [item])
    if not isinstance(answer, dict):
        raise PageError(503, "Try again", "The event stream is unavailable; nothing was sent.")
    if answer["rejected"]:
        raise PageError(422, "Refused", str(answer["rejected"][0]["errors"]))
    for _ in range(50):  # the worker stores it within moments
        if await gateway.store.known_event_ids(who.org_id, [item["event_id"]]):
            return
        await asyncio.sleep(0.1)
