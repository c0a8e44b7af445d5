"""The sign-in page (``GET``/``POST /ui/sign-in``) and the sign-out form
(``POST /ui/sign-out``): the same accounts, cookie and audit as ``/v1/session``."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from streams.access import SESSION_COOKIE, session_digest
from streams.db.access import delete_session
from streams.http.auth import form_fields, set_session_cookie
from streams.http.deps import PrincipalDep, SettingsDep, StartSessionDep, StoreDep
from streams.http.hardening import cross_site
from streams.http.pages.common import PageError, page_router, render
from streams.services.signin import WRONG, Refused, Started

router = page_router()


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page() -> HTMLResponse:
    return render("sign_in.html")


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in_form(
    request: Request, settings: SettingsDep, start_session: StartSessionDep
) -> Response:
    """The form's sign-in: same accounts, cookie and audit as POST /v1/session. A sign-in
    posted from another site is refused (login CSRF: it would sign the browser in to the
    attacker's account)."""
    if cross_site(request):
        raise PageError(403, "Sign-in refused", "Sign in from this site's own sign-in page.")
    fields = form_fields(await request.body())
    username, password = fields.get("username", "")[:64], fields.get("password", "")[:256]
    started: Started | Refused = WRONG
    if username and password:
        started = await start_session(username, password, "POST /ui/sign-in")
    if isinstance(started, Refused):
        error = (
            "Unknown user or wrong password."
            if started.status == 401
            else f"Too many sign-in attempts. Try again in {started.retry_after_s} s."
        )
        page = render("sign_in.html", started.status, error=error, username=username)
        page.headers.update(started.headers)
        return page
    token = started.cookie
    response = RedirectResponse("/ui/", 303)
    set_session_cookie(response, token, settings)
    return response


@router.post("/sign-out", response_class=HTMLResponse)
async def sign_out_form(request: Request, who: PrincipalDep, store: StoreDep) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if who.kind == "user" and cookie:
        async with store.acquire() as conn:
            await delete_session(conn, session_digest(cookie))
    response = RedirectResponse("/ui/sign-in", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
