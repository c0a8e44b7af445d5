"""What every page of the dashboard shares: the templates and how a page is rendered,
the signed-in user (``page_user``, ``need``) and the HTML error answer (``PageError``),
the router every page module starts from, and the small text helpers of the tables.

Same access boundary as the JSON routes (streams.access): pages are for signed-in users
(a machine key gets 403: keys are for programs, and a page is for a person); a page
outside the user's permissions answers 403, a patient outside their scope 404, both
before anything is read; every page that shows patient data, the live stream included,
leaves an audit row naming the patients it showed. State-changing forms carry the
session's CSRF token in a ``csrf_token`` field (``streams.http.deps.principal`` checks it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from alerts.models import Severity
from streams.access import Permission, Principal
from streams.http.auth import reject_unknown_query
from streams.http.deps import Authenticate
from streams.http.webassets import WEB_DIR

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


async def page_error(request: Request, exc: Exception) -> Response:
    """The application's handler of ``PageError``."""
    if not isinstance(exc, PageError):
        raise exc
    if exc.status == 401:
        return RedirectResponse("/ui/sign-in", 303)
    return render("error.html", exc.status, status=exc.status, title=exc.title, message=exc.message)


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
