"""``/ui/``: where a signed-in user starts (the worklist for clinical roles, billing for
billing staff, the intake queue for schedulers, the outcome report for
managers, else a short home page)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from streams.http.deps import AuthenticateDep
from streams.http.pages.common import page_router, page_user, render

router = page_router()


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, authenticate: AuthenticateDep) -> Response:
    who = await page_user(request, authenticate)
    if who.may("read_clinical"):
        return RedirectResponse("/ui/worklist", 303)
    if who.may("read_billing"):
        return RedirectResponse("/ui/billing", 303)
    if who.may("read_intakes"):
        return RedirectResponse("/ui/intakes", 303)
    if who.may("read_outcomes"):
        return RedirectResponse("/ui/outcomes", 303)
    return render("home.html", who=who)
