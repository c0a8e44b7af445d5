"""``/ui/patients/{id}``: one patient's charts (daily adherence, pain with its baseline),
the alert timeline with acknowledgement and note (``POST /ui/alerts/{id}/ack``, the JSON
route's rules), episodes and programs, this month's treatment minutes."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any, Literal

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from alerts.adherence import covered_days, rows_on
from alerts.evaluate import fold
from alerts.rollup import newest_day, pain_baselines
from alerts.state import PatientState
from billing.rules import billing_progress, patient_local_date
from schemas.events import parse_event_json
from streams.access import Principal
from streams.db.access import audit_principal, in_scope
from streams.db.alerts import db_now, list_alerts
from streams.db.events import pain_reports, patient_payloads
from streams.db.ledger import load_states
from streams.http.auth import form_fields
from streams.http.deps import (
    AuthenticateDep,
    ClockDep,
    PrincipalDep,
    ProducerDep,
    StoreDep,
)
from streams.http.hardening import ID_REGEX
from streams.http.pages.common import SEVERITIES, PageError, need, page_router, page_user, render
from streams.services.alerts import acknowledge

ID_RE = re.compile(ID_REGEX)

router = page_router()


async def _alert_panel_context(
    conn: Any, who: Principal, patient_id: str, status: str | None
) -> dict[str, Any]:
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
    authenticate: AuthenticateDep,
    store: StoreDep,
    clock: ClockDep,
    status: Literal["open", "acknowledged", "resolved", ""] = "",
) -> HTMLResponse:
    """One patient: daily adherence, pain with its baseline, alerts with acknowledgement,
    episodes and programs, this month's treatment minutes."""
    who = await page_user(request, authenticate)
    need(who, "read_clinical")
    if not ID_RE.fullmatch(patient_id):  # no id of the contract: no patient
        raise PageError(404, "Unknown patient", "No such patient in your care.")
    async with store.acquire() as conn:
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
        _patient_view, who.org_id, patient_id, payloads, pains, ledger, now, clock.now()
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
    clock_now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The patient page's data (pure: the fold, the last 90 adherence days up to the
    patient-local today, pain with its baselines, episodes, billing progress)."""
    states, _ = fold(parse_event_json(p) for p in payloads)
    state = states.get((org_id, patient_id))
    adherence: list[dict[str, Any]] = []
    episodes: list[dict[str, Any]] = []
    gap: dict[str, Any] | None = None
    if state is not None:
        # to the patient-local today, as the worklist's rollups (alerts.rollup.newest_day)
        today = newest_day(state, clock_now if clock_now is not None else now)
        days = covered_days(state.book, today)[-90:]  # only these 90 are computed
        gap = _data_gap(state, days)
        for row in rows_on(patient_id, state.completions, state.book, days):
            pct = None if row.adherence_7d is None else round(float(row.adherence_7d) * 100, 1)
            adherence.append(
                {
                    "date": row.date.isoformat(),
                    "completed": row.completed,
                    "prescribed": float(row.prescribed),
                    "pct": pct,
                    "no_data": gap is not None and row.date > gap["last"],
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
            # the days without data, shaded: from the last data day to the last day shown
            "gap": [epoch(gap["last"].isoformat()), epoch(gap["until"].isoformat())]
            if gap is not None
            else None,
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
        "adherence_gap": gap["text"] if gap is not None else None,
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


def _data_gap(state: PatientState, days: list[dt.date]) -> dict[str, Any] | None:
    """'no data since Oct 25 (41 days)' when the chart's last day (the patient-local
    today, or the end of the last episode) is two or more days after the newest
    patient-data day ("no data yet" without any); None otherwise. ``last``: the newest
    data day (the shading starts there), ``until``: the chart's last day."""
    if not days:
        return None
    until = days[-1]
    last = max((r.local_date for r in state.data.values() if r.local_date <= until), default=None)
    if last is None:
        return {"last": days[0] - dt.timedelta(days=1), "until": until, "text": "no data yet"}
    if (until - last).days < 2:
        return None
    n = (until - last).days
    return {"last": last, "until": until, "text": f"no data since {last:%b} {last.day} ({n} days)"}


@router.post("/alerts/{alert_id}/ack", response_class=HTMLResponse)
async def ack_form(
    request: Request,
    alert_id: str,
    who: PrincipalDep,
    store: StoreDep,
    producer: ProducerDep,
    clock: ClockDep,
) -> Response:
    """Acknowledge from the patient page (the JSON route's rules: scope, the caller's own
    name, the note stored, audited, sent to the stream); htmx gets the alert panel back,
    a plain form post a redirect to the patient page."""
    if who.kind != "user":
        raise PageError(403, "Not for machine keys")
    need(who, "acknowledge")
    if not ID_RE.fullmatch(alert_id):
        raise PageError(404, "Unknown alert", "No such alert.")
    note = form_fields(await request.body()).get("note", "").strip()[:2000] or None
    # audited as the JSON route's acknowledgement, which this form is
    source = f"POST /v1/alerts/{alert_id}/ack"
    acked = await acknowledge(store, producer, clock, who, alert_id, note, source=source)
    if acked is None:
        raise PageError(404, "Unknown alert", f"unknown alert {alert_id}")
    patient_id = acked.patient_id
    if request.headers.get("HX-Request") != "true":
        return RedirectResponse(f"/ui/patients/{patient_id}", 303)
    async with store.acquire() as conn:
        panel = await _alert_panel_context(conn, who, patient_id, None)
        await audit_principal(conn, who, "read", f"POST /ui/alerts/{alert_id}/ack", [patient_id])
    return render("_alerts.html", **panel)
