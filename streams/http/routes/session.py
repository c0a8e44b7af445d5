"""Sessions of local accounts: ``POST /v1/session`` (sign in), ``DELETE /v1/session``
(sign out), ``GET /v1/me`` (who the caller is and what it may do)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from streams.access import PERMISSIONS, SESSION_COOKIE, session_digest
from streams.db.access import delete_session
from streams.http.auth import reject_unknown_query, set_session_cookie
from streams.http.deps import PrincipalDep, SettingsDep, StartSessionDep, StoreDep
from streams.http.hardening import NoNul, refuse_cross_site
from streams.services.signin import Refused

router = APIRouter(dependencies=[Depends(reject_unknown_query)])


class SignIn(BaseModel):
    username: Annotated[NoNul, Field(min_length=1, max_length=64)]
    password: Annotated[NoNul, Field(min_length=1, max_length=256)]


@router.post(
    "/v1/session",
    dependencies=[Depends(refuse_cross_site)],
    responses={
        401: {"description": "unknown user or wrong password"},
        403: {"description": "a cross-site sign-in (login CSRF)"},
        429: {"description": "too many attempts: locked for Retry-After seconds"},
    },
)
async def sign_in(
    body: SignIn, response: Response, settings: SettingsDep, start_session: StartSessionDep
) -> dict[str, Any]:
    """Sign in with a local account: sets the session cookie (HTTP-only, Secure,
    SameSite=Lax) and returns the CSRF token for state-changing requests. Too many
    attempts: 429 with Retry-After (streams/services/signin.py)."""
    started = await start_session(body.username, body.password, "POST /v1/session")
    if isinstance(started, Refused):
        raise HTTPException(started.status, started.message, headers=started.headers)
    row, token, csrf = started.user, started.cookie, started.csrf
    set_session_cookie(response, token, settings)
    return {
        "username": row["username"],
        "role": row["role"],
        "org_id": row["org_id"],
        "clinician_id": row["clinician_id"],
        "csrf_token": csrf,
    }


@router.delete("/v1/session")
async def sign_out(
    request: Request, response: Response, who: PrincipalDep, store: StoreDep
) -> dict[str, str]:
    cookie = request.cookies.get(SESSION_COOKIE)
    if who.kind == "user" and cookie:
        async with store.acquire() as conn:
            await delete_session(conn, session_digest(cookie))
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"signed_out": who.actor}


@router.get("/v1/me")
async def me(who: PrincipalDep) -> dict[str, Any]:
    return {
        "actor": who.actor,
        "org_id": who.org_id,
        "roles": sorted(who.roles),
        "clinician_id": who.clinician_id,
        "csrf_token": who.csrf_token,
        "may": sorted(p for p in PERMISSIONS if who.may(p)),
    }
