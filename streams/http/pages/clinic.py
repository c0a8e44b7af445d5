"""The clinic's dashboard: server-rendered pages (Jinja2) on the gateway, under /ui.

Same access boundary as the JSON routes (streams.access): pages are for signed-in users
(a machine key gets 403: keys are for programs, and a page is for a person); a page
outside the user's permissions answers 403, a patient outside their scope 404, both
before anything is read; every page that shows patient data, the live stream included,
leaves an audit row naming the patients it showed. State-changing forms carry the
session's CSRF token in a ``csrf_token`` field (``streams.http.auth.principal`` checks it).

- ``/ui/worklist``: "My patients" by need, from the stream's rollups (streams/db/rollups.py);
- ``/ui/patients/{id}``: charts, alert timeline with acknowledge + note, episodes, minutes;
- ``/ui/stream``: server-sent events, one ``alert`` event per alert change in scope;
- ``/ui/billing`` (streams/http/pages/billing.py) and ``/ui/audit`` (admins).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from alerts.models import ALERT_KINDS, AlertKind, Severity
from streams.access import SESSION_COOKIE, Permission, Principal, session_digest
from streams.db.access import audit_principal, delete_session, in_scope, query_audit
from streams.http.auth import form_fields, principal, reject_unknown_query, start_session
from streams.http.hardening import ID_REGEX, Instant, cross_site
from streams.http.webassets import VENDOR_FILES, WEB_DIR, node_modules
from streams.services.signin import WRONG, Refused, Started
from streams.settings import Settings

SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low")
KINDS: tuple[AlertKind, ...] = ALERT_KINDS
PAGE_SIZE = 50
STREAM_POLL_S = 1.0
# A change is read again for this long after the cursor passed it: a batch transaction
# stamps updated_at when it starts and may commit after a poll has moved on.
STREAM_OVERLAP = dt.timedelta(seconds=10)
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
    " script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)
PatientId = Annotated[str, Query(pattern=ID_REGEX)]
ID_RE = re.compile(ID_REGEX)

templates = Environment(
    loader=FileSystemLoader(WEB_DIR / "templates"), autoescape=select_autoescape(["html"])
)


class PageError(Exception):
    """An HTML answer instead of the page: 401 becomes a redirect to the sign-in page."""

    def __init__(self, status: int, title: str, message: str = "") -> None:
        self.status, self.title, self.message = status, title, message


def render(name: str, code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(
        templates.get_template(name).render(**context),
        status_code=code,
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
    )


async def page_user(request: Request) -> Principal:
    """The signed-in user, or a redirect to the sign-in page; a machine key gets 403."""
    who: Principal | None = await request.app.state.authenticate(request)
    if who is None:
        raise PageError(401, "Sign in")
    if who.kind != "user":
        raise PageError(403, "Not for machine keys", "The dashboard is for signed-in users.")
    return who


def need(who: Principal, *permissions: Permission) -> None:
    if not any(who.may(p) for p in permissions):
        raise PageError(403, "Not permitted", f"Your role ({who.role_text}) may not see this page.")


def sparkline(values: list[float | None], width: int = 84, height: int = 22) -> Markup:
    """An inline SVG of the last days' 7-day adherence (0-100%), with a text label."""
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    label = ", ".join("—" if v is None else f"{v:.0%}" for v in values) or "no data"
    if len(points) < 2:
        return Markup('<span class="muted sr-only">{}</span>').format(label)
    step = width / max(len(values) - 1, 1)
    coords = " ".join(f"{i * step:.1f},{height - 2 - v * (height - 4):.1f}" for i, v in points)
    return Markup(
        '<svg class="spark" width="{w}" height="{h}" role="img" aria-label='
        '"7-day adherence, last days: {label}"><polyline points="{c}"/></svg>'
    ).format(w=width, h=height, label=label, c=coords)


def _ago(at: dt.datetime | None, now: dt.datetime) -> str:
    if at is None:
        return "no activity"
    hours = (now - at).total_seconds() / 3600
    if hours < 1:
        return "within the hour"
    if hours < 48:
        return f"{int(hours)} h ago"
    return f"{int(hours // 24)} days ago"


def _waiting(since: dt.datetime | None, now: dt.datetime) -> str:
    """How long the patient's most urgent open alert has waited: "2 min", "5 h", "33 days"."""
    if since is None:
        return "—"
    minutes = max(int((now - since).total_seconds() // 60), 0)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} days"


def _pain_text(r: dict[str, Any]) -> str:
    if r["latest_pain"] is None:
        return "—"
    base = r["pain_baseline"]
    if base is None:
        return f"{r['latest_pain']}/10"
    delta = r["latest_pain"] - base
    trend = "rising" if delta >= 1 else ("falling" if delta <= -1 else "steady")
    return f"{r['latest_pain']}/10, {trend} (baseline {base:g})"


router = APIRouter(prefix="/ui", dependencies=[Depends(reject_unknown_query)])


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    who = await page_user(request)
    if who.may("read_clinical"):
        return RedirectResponse("/ui/worklist", 303)
    if who.may("read_billing"):
        return RedirectResponse("/ui/billing", 303)
    return render("home.html", who=who)


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page() -> HTMLResponse:
    return render("sign_in.html")


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in_form(request: Request) -> Response:
    """The form's sign-in: same accounts, cookie and audit as POST /v1/session. A sign-in
    posted from another site is refused (login CSRF: it would sign the browser in to the
    attacker's account)."""
    if cross_site(request):
        raise PageError(403, "Sign-in refused", "Sign in from this site's own sign-in page.")
    fields = form_fields(await request.body())
    username, password = fields.get("username", "")[:64], fields.get("password", "")[:256]
    settings: Settings = request.app.state.settings
    started: Started | Refused = WRONG
    if username and password:
        started = await start_session(request, username, password, "POST /ui/sign-in")
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
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_ttl_s),
        httponly=True,
        secure=True,
        samesite="lax",
        path="/",
    )
    return response


@router.post("/sign-out", response_class=HTMLResponse)
async def sign_out_form(request: Request, who: Principal = Depends(principal)) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if who.kind == "user" and cookie:
        async with request.app.state.store.acquire() as conn:
            await delete_session(conn, session_digest(cookie))
    response = RedirectResponse("/ui/sign-in", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/worklist", response_class=HTMLResponse)
async def worklist_page(
    request: Request,
    severity: Severity | Literal[""] = "",
    kind: AlertKind | Literal[""] = "",
    status: Literal["open", "all"] = "open",
    q: Annotated[str, Query(max_length=64)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    """My patients by need (the rollups the stream keeps; one page of PAGE_SIZE)."""
    from alerts.rollup import TIER_NAMES
    from billing.rules import billing_progress, patient_local_date
    from streams.db.alerts import db_now
    from streams.db.ledger import load_states
    from streams.db.rollups import tier_counts
    from streams.db.rollups import worklist_page as rows_by_need

    who = await page_user(request)
    need(who, "read_clinical")
    async with request.app.state.store.acquire() as conn:
        now = await db_now(conn)
        rows = await rows_by_need(
            conn,
            who.scope(),
            severity=severity or None,
            kind=kind or None,
            only_open=status == "open",
            search=q.strip() or None,
            limit=PAGE_SIZE + 1,
            offset=(page - 1) * PAGE_SIZE,
        )
        more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
        counts = await tier_counts(conn, who.scope())
        ledgers = await load_states(conn, who.org_id, [r["patient_id"] for r in rows])
        await audit_principal(
            conn,
            who,
            "read",
            "GET /ui/worklist",
            [r["patient_id"] for r in rows],
            {"count": len(rows), "query": dict(request.query_params)},
        )
    for r in rows:
        r["waiting"] = _waiting(r["tier_since"], now)
        r["last_activity"] = _ago(r["last_activity_at"], now)
        latest = r["spark"][-1] if r["spark"] else None
        r["adherence_text"] = "—" if latest is None else f"{latest:.0%}"
        r["sparkline"] = sparkline(r["spark"])
        r["pain_text"] = _pain_text(r)
        ledger = ledgers.get(r["patient_id"])
        progress = (
            billing_progress(ledger, patient_local_date(ledger, now))
            if ledger is not None
            else None
        )
        r["progress"] = (
            progress.period.summary if progress and progress.period else "no active period"
        )
    f = {"severity": severity, "kind": kind, "status": status, "q": q}

    def url(p: int) -> str:
        return "/ui/worklist?" + urlencode({**{k: v for k, v in f.items() if v}, "page": p})

    return render(
        "worklist.html",
        who=who,
        nav="worklist",
        live=True,
        since=now.isoformat(),
        rows=rows,
        tiers=[(name, counts[i]) for i, name in enumerate(TIER_NAMES) if counts.get(i)],
        f=f,
        severities=SEVERITIES,
        kinds=KINDS,
        prev_url=url(page - 1) if page > 1 else None,
        next_url=url(page + 1) if more else None,
    )


async def _alert_panel_context(
    conn: Any, who: Principal, patient_id: str, status: str | None
) -> dict[str, Any]:
    from streams.db.alerts import list_alerts

    alerts = await list_alerts(conn, who.scope(), patient_id=patient_id, status=status, limit=500)
    if status not in (None, "open"):
        # the filter applies to the history: the open alerts are always listed
        open_ = await list_alerts(
            conn, who.scope(), patient_id=patient_id, status="open", limit=500
        )
        alerts = open_ + [a for a in alerts if a["status"] != "open"]
    for a in alerts:
        a["fired_at_text"] = dt.datetime.fromisoformat(a["fired_at"]).strftime("%Y-%m-%d %H:%M %z")
    # open first (most severe first), then the rest newest first
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    alerts.sort(key=lambda a: (0, rank[a["severity"]]) if a["status"] == "open" else (1, 0))
    return {
        "alerts": alerts,
        "patient_id": patient_id,
        "status": status or "",
        "may_ack": who.may("acknowledge"),
        "csrf": who.csrf_token,
    }


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
async def patient_page(
    request: Request,
    patient_id: str,
    status: Literal["open", "acknowledged", "resolved", ""] = "",
) -> HTMLResponse:
    """One patient: daily adherence, pain with its baseline, alerts with acknowledgement,
    episodes and programs, this month's treatment minutes."""
    from streams.db.alerts import db_now
    from streams.db.events import pain_reports, patient_payloads
    from streams.db.ledger import load_states

    who = await page_user(request)
    need(who, "read_clinical")
    if not ID_RE.fullmatch(patient_id):  # no id of the contract: no patient
        raise PageError(404, "Unknown patient", "No such patient in your care.")
    async with request.app.state.store.acquire() as conn:
        if not await in_scope(conn, who.scope(), patient_id):
            raise PageError(404, "Unknown patient", f"No patient {patient_id} in your care.")
        now = await db_now(conn)
        payloads = await patient_payloads(conn, who.org_id, patient_id)
        pains = await pain_reports(
            conn, who.org_id, patient_id, (now - dt.timedelta(days=90)).date(), None
        )
        panel = await _alert_panel_context(conn, who, patient_id, status or None)
        ledger = (await load_states(conn, who.org_id, [patient_id])).get(patient_id)
        await audit_principal(conn, who, "read", f"GET /ui/patients/{patient_id}", [patient_id])
    # the fold of the patient's whole history and the charts: in a worker thread
    view = await asyncio.to_thread(
        _patient_view, who.org_id, patient_id, payloads, pains, ledger, now
    )
    return render(
        "patient.html",
        who=who,
        nav="worklist",
        live=True,
        since=now.isoformat(),
        **view,
        **panel,
    )


def _patient_view(
    org_id: str,
    patient_id: str,
    payloads: list[Any],
    pains: list[Any],
    ledger: Any,
    now: dt.datetime,
) -> dict[str, Any]:
    """The patient page's data (pure: the fold, the last 90 adherence days, pain with its
    baselines, episodes, billing progress)."""
    from alerts.adherence import covered_days, rows_on
    from alerts.evaluate import fold
    from alerts.rollup import pain_baselines
    from billing.rules import billing_progress, patient_local_date
    from schemas.events import parse_event_json

    states, _ = fold(parse_event_json(p) for p in payloads)
    state = states.get((org_id, patient_id))
    adherence: list[dict[str, Any]] = []
    episodes: list[dict[str, Any]] = []
    if state is not None:
        last = max((r.local_date for r in state.data.values()), default=None)
        days = covered_days(state.book, last)[-90:]  # only these 90 are computed
        for row in rows_on(patient_id, state.completions, state.book, days):
            pct = None if row.adherence_7d is None else round(float(row.adherence_7d) * 100, 1)
            adherence.append(
                {
                    "date": row.date.isoformat(),
                    "completed": row.completed,
                    "prescribed": float(row.prescribed),
                    "pct": pct,
                }
            )
        for ep in sorted(state.book.episodes.values(), key=lambda e: e.start_date):
            program = f"{ep.sessions_per_week}"
            for day, spw in ep.program_changes:
                program += f", {spw} from {day}"
            episodes.append(
                {
                    "episode_id": ep.episode_id,
                    "clinician_id": ep.clinician_id,
                    "start_date": ep.start_date,
                    "end_date": ep.end_date,
                    "program": program,
                    "payer": ep.billing.payer,
                }
            )
    reports = [
        (
            dt.datetime.fromisoformat(orjson.loads(r["payload"])["occurred_at"]),
            int(orjson.loads(r["payload"])["score"]),
        )
        for r in pains
    ]
    baselines = pain_baselines(reports)
    pain = [
        {"occurred_at": at.isoformat(), "score": s, "baseline": b}
        for (at, s), b in zip(reports, baselines, strict=True)
    ]
    progress = (
        billing_progress(ledger, patient_local_date(ledger, now)) if ledger is not None else None
    )

    def epoch(day: str) -> int:
        return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp())

    chart = {
        "adherence": {
            "x": [epoch(d["date"]) for d in adherence],
            "pct": [d["pct"] for d in adherence],
            "done": [d["completed"] for d in adherence],
        },
        "pain": {
            "x": [int(at.timestamp()) for at, _ in reports],
            "score": [s for _, s in reports],
            "baseline": baselines,
        },
    }
    for d in adherence:
        d["pct"] = "—" if d["pct"] is None else f"{d['pct']:.0f}%"
    return {
        "adherence": adherence,
        "pain": pain,
        "episodes": episodes,
        "adherence_latest": adherence[-1]["pct"] if adherence else "no data",
        "pain_latest": f"{reports[-1][1]}/10" if reports else "no reports",
        # JSON inside <script>: "</" must not close the element
        "chart_json": Markup(orjson.dumps(chart).decode().replace("</", "<\\/")),
        "minutes": progress.month.minutes if progress else 0,
        "minutes_to_next": progress.month.minutes_to_next if progress else None,
        "earned": list(progress.month.earned) if progress else [],
        "progress": (
            progress.period.summary if progress and progress.period else "no active period"
        ),
    }


@router.post("/alerts/{alert_id}/ack", response_class=HTMLResponse)
async def ack_form(
    request: Request, alert_id: str, who: Principal = Depends(principal)
) -> Response:
    """Acknowledge from the patient page (the JSON route's rules: scope, the caller's own
    name, the note stored, audited, sent to the stream); htmx gets the alert panel back,
    a plain form post a redirect to the patient page."""
    from streams.http.routes.alerts import AckBody, ack_alert

    if who.kind != "user":
        raise PageError(403, "Not for machine keys")
    need(who, "acknowledge")
    if not ID_RE.fullmatch(alert_id):
        raise PageError(404, "Unknown alert", "No such alert.")
    note = form_fields(await request.body()).get("note", "").strip()[:2000] or None
    try:
        acked = await ack_alert(request, alert_id, AckBody(note=note), who)
    except HTTPException as exc:
        raise PageError(exc.status_code, "Unknown alert", str(exc.detail)) from None
    patient_id = acked["patient_id"]
    if request.headers.get("HX-Request") != "true":
        return RedirectResponse(f"/ui/patients/{patient_id}", 303)
    async with request.app.state.store.acquire() as conn:
        panel = await _alert_panel_context(conn, who, patient_id, None)
        await audit_principal(conn, who, "read", f"POST /ui/alerts/{alert_id}/ack", [patient_id])
    return render("_alerts.html", **panel)


@router.get("/stream")
async def stream(request: Request, since: Instant | None = None) -> StreamingResponse:
    """Server-sent events: ``event: alert`` with the alert (id, patient, kind, severity,
    status) for each change in the user's scope after ``since`` (default: now; at most an
    hour back). Each batch sent is audited like a read."""
    from streams.db.alerts import alerts_changed_since, db_now

    who = await page_user(request)
    need(who, "read_clinical")
    store = request.app.state.store
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


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    actor: Annotated[str, Query(max_length=128)] = "",
    patient: Annotated[str, Query(max_length=64)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """The organisation's audit log (admins), newest first; reading it is audited too."""
    who = await page_user(request)
    need(who, "read_audit")
    async with request.app.state.store.acquire() as conn:
        rows = await query_audit(
            conn,
            org_id=who.org_id,
            actor=actor or None,
            patient_id=patient or None,
            action=action or None,
            limit=200,
        )
        await audit_principal(
            conn,
            who,
            "read_audit",
            "GET /ui/audit",
            {p for r in rows for p in r["patient_ids"]},
            {"actor": actor, "patient": patient, "action": action},
        )
    return render(
        "audit.html",
        who=who,
        nav="audit",
        rows=rows,
        f={"actor": actor, "patient": patient, "action": action},
    )


def mount(app: FastAPI, settings: Settings) -> None:
    """The dashboard's routes, its static files and its HTML error pages."""
    from streams.http.pages import billing as pages_billing

    app.include_router(router)
    app.include_router(pages_billing.router)

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        if exc.status == 401:
            return RedirectResponse("/ui/sign-in", 303)
        return render(
            "error.html", exc.status, status=exc.status, title=exc.title, message=exc.message
        )

    vendor = node_modules(settings)

    if settings.env == "dev":  # outside dev /docs (and /redoc, always) answer 404

        @app.get("/docs", include_in_schema=False)
        async def api_docs() -> HTMLResponse:
            """Swagger UI over /openapi.json, from the vendored pinned assets (no CDN)."""
            return render("docs.html")

    @app.get("/ui/static/vendor/{name}", include_in_schema=False)
    async def vendor_file(name: str) -> FileResponse:
        """The pinned npm libraries (streams/http/webassets.py), by a fixed list of names."""
        rel = VENDOR_FILES.get(name)
        path = vendor / rel if rel else None
        if path is None or not path.is_file():
            raise HTTPException(404, f"no vendor file {name} (run make install)")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/ui/static", StaticFiles(directory=Path(WEB_DIR / "static")), name="ui-static")
