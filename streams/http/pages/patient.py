"""``/ui/patients/{id}``: one patient's charts (daily adherence, pain with its baseline, the
primary outcome measure with its baseline and MCID band), the care pathway of each episode
(version, stage, open and overdue tasks, decisions; ``streams.services.outcomes``),
the alert timeline with acknowledgement, disposition and note (``POST /ui/alerts/{id}/ack``)
and snooze (``POST /ui/alerts/{id}/snooze``; the JSON routes' rules), episodes and programs
with their pauses (``POST /ui/patients/{id}/program/{pause|resume}``: a ``program.paused`` /
``program.resumed`` in the signed-in clinician's name, through the gateway's event path),
this month's treatment minutes with their entries, the timer and the time forms
(``streams.http.pages.timelog``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from alerts.adherence import covered_days, rows_on
from alerts.evaluate import fold
from alerts.models import DISPOSITIONS, ESCALATION_STEPS, UNSNOOZABLE_KINDS, Alert
from alerts.rollup import newest_day, pain_baselines
from alerts.state import PatientState
from billing.rules import billing_progress, patient_local_date
from schemas.episodes import Episode, EpisodeBook
from schemas.events import parse_event_json
from streams.access import Principal
from streams.db.access import audit_principal, in_scope
from streams.db.alerts import db_now, list_alerts
from streams.db.events import pain_reports, patient_payloads
from streams.db.ledger import load_states
from streams.db.program_templates import latest_templates
from streams.http.auth import form_fields
from streams.http.deps import (
    AuthenticateDep,
    ClockDep,
    GatewayDep,
    PrincipalDep,
    ProducerDep,
    SettingsDep,
    StoreDep,
)
from streams.http.pages.common import (
    ID_RE,
    SEVERITIES,
    UTC,
    PageError,
    clinic_time,
    clinic_zone,
    clinician_form,
    episode_event,
    need,
    page_router,
    page_user,
    post_event,
    render,
)
from streams.http.pages.programs import program_histories
from streams.http.pages.timelog import time_context
from streams.services.alerts import SnoozeRefused, acknowledge, snooze
from streams.services.outcomes import patient_outcomes
from streams.settings import Settings

_LIST = ", ".join(d.replace("_", " ") for d in DISPOSITIONS)

router = page_router()


async def _alert_panel_context(
    conn: Any,
    who: Principal,
    patient_id: str,
    status: str | None,
    now: dt.datetime,
    snooze_choices: Sequence[str],
) -> dict[str, Any]:
    alerts = await list_alerts(conn, who.scope(), patient_id=patient_id, status=status, limit=500)
    if status not in (None, "open"):
        # the filter applies to the history: the open alerts are always listed
        open_ = await list_alerts(
            conn, who.scope(), patient_id=patient_id, status="open", limit=500
        )
        alerts = open_ + [a for a in alerts if a["status"] != "open"]
    zone = await clinic_zone(conn, who)
    for a in alerts:
        a["fired_at_text"] = clinic_time(a["fired_at"], now, zone)
        a["acknowledged_at_text"] = clinic_time(a.get("acknowledged_at"), now, zone, absent="")
        until = a.get("snoozed_until")
        # a snooze still on at the injected clock; one that ended is shown no more
        on = a["status"] == "open" and until is not None and now < dt.datetime.fromisoformat(until)
        a["snoozed_until_text"] = clinic_time(until, now, zone) if on else None
        # the escalation ladder's steps taken (issue 17): to whom and when
        a["escalations_text"] = [
            (ESCALATION_STEPS[min(i, len(ESCALATION_STEPS) - 1)], at, clinic_time(at, now, zone))
            for i, at in enumerate(a.get("escalations") or ())
        ]
    # open first (most severe first), then the rest newest first
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    alerts.sort(key=lambda a: (0, rank[a["severity"]]) if a["status"] == "open" else (1, 0))
    return {
        "alerts": alerts,
        "patient_id": patient_id,
        "status": status or "",
        "may_ack": who.may("acknowledge"),
        "csrf": who.csrf_token,
        "zone": zone,
        "dispositions": DISPOSITIONS,
        "snooze_choices": list(snooze_choices),
        "unsnoozable": UNSNOOZABLE_KINDS,
    }


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
async def patient_page(
    request: Request,
    patient_id: str,
    authenticate: AuthenticateDep,
    store: StoreDep,
    clock: ClockDep,
    settings: SettingsDep,
    status: Literal["open", "acknowledged", "resolved", ""] = "",
    timer: str = "",
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
        panel = await _alert_panel_context(
            conn, who, patient_id, status or None, clock.now(), _choices(settings)
        )
        panel["may_manage_program"] = who.may("manage_program") and who.clinician_id is not None
        zone = panel["zone"]
        ledger = (await load_states(conn, who.org_id, [patient_id])).get(patient_id)
        hep_templates = await latest_templates(conn, who.org_id)
        pathways, left_out = await patient_outcomes(conn, who.org_id, patient_id, payloads, now)
        await audit_principal(conn, who, "read", f"GET /ui/patients/{patient_id}", [patient_id])
    # the fold of the patient's whole history and the charts: in a worker thread
    view = await asyncio.to_thread(
        _patient_view, who.org_id, patient_id, payloads, pains, ledger, now, clock.now(), zone
    )
    view |= time_context(who, payloads, ledger, now, timer[:64], zone)
    view |= {"hep": program_histories(payloads), "hep_templates": hep_templates}
    view |= prom_context(pathways, left_out)
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
    zone: ZoneInfo = UTC,
) -> dict[str, Any]:
    """The patient page's data (pure: the fold, the last 90 adherence days up to the
    patient-local today, pain with its baselines, episodes, billing progress); the pain
    reports' times in the clinic's ``zone``."""
    states, _ = fold(parse_event_json(p) for p in payloads)
    state = states.get((org_id, patient_id))
    adherence: list[dict[str, Any]] = []
    episodes: list[dict[str, Any]] = []
    gap: dict[str, Any] | None = None
    programs = [] if state is None else program_states(state.book)
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
                    "pauses": [
                        {
                            "start": pause.start.isoformat(),
                            "end": pause.end.isoformat() if pause.end else None,
                            "reason": pause.reason,
                        }
                        for pause in ep.pauses
                    ],
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
        {
            "occurred_at": at.isoformat(),
            "occurred_at_text": clinic_time(at, clock_now or now, zone),
            "score": s,
            "baseline": b,
        }
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
            "zone": zone.key,  # drawn in the clinic's zone, as the table reads
        },
    }
    for d in adherence:
        d["pct"] = "—" if d["pct"] is None else f"{d['pct']:.0f}%"
    return {
        "adherence": adherence,
        "pain": pain,
        "episodes": episodes,
        "programs": programs,
        "adherence_latest": adherence[-1]["pct"] if adherence else "no data",
        "adherence_gap": gap["text"] if gap is not None else None,
        "pain_latest": f"{reports[-1][1]}/10" if reports else "no reports",
        # JSON inside <script>: "</" must not close the element
        "chart_json": Markup(orjson.dumps(chart).decode().replace("</", "<\\/")),
        "minutes": progress.month.minutes if progress else 0,
        "minutes_to_next": progress.month.minutes_to_next if progress else None,
        "interactive": progress.month.interactive if progress else False,
        "earned": list(progress.month.earned) if progress else [],
        "progress": (progress.period.codes if progress and progress.period else "no active period"),
    }


def prom_context(pathways: list[dict[str, Any]], left_out: list[str]) -> dict[str, Any]:
    """The pathway panels, and the newest episode's primary scores for the PROM chart (its
    baseline and the score that reaches the MCID from it: the band between them)."""
    newest = pathways[0] if pathways else None
    prom = None
    if newest is not None and newest["scores"]:
        prom = {
            "x": [s["x"] for s in newest["scores"]],
            "score": [s["score"] for s in newest["scores"]],
            "baseline": newest["baseline"],
            "target": newest["target"],
            "label": newest["instrument"],
        }
    return {
        "pathways": pathways,
        "pathways_left_out": left_out,
        "prom_json": Markup(orjson.dumps(prom).decode().replace("</", "<\\/")),
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


def _choices(settings: Settings) -> list[str]:
    return list(settings.alerting.snooze_choices)


def _form_alert(who: Principal, alert_id: str) -> None:
    """A clinician's action form on an alert: a signed-in user who may acknowledge, an
    alert id of the contract."""
    if who.kind != "user":
        raise PageError(403, "Not for machine keys")
    need(who, "acknowledge")
    if not ID_RE.fullmatch(alert_id):
        raise PageError(404, "Unknown alert", "No such alert.")


async def _panel_answer(
    request: Request,
    store: StoreDep,
    who: Principal,
    alert: Alert,
    resource: str,
    now: dt.datetime,
    settings: Settings,
) -> Response:
    """htmx gets the alert panel back, a plain form post a redirect to the patient page."""
    patient_id = alert.patient_id
    if request.headers.get("HX-Request") != "true":
        return RedirectResponse(f"/ui/patients/{patient_id}", 303)
    async with store.acquire() as conn:
        panel = await _alert_panel_context(conn, who, patient_id, None, now, _choices(settings))
        await audit_principal(conn, who, "read", resource, [patient_id])
    return render("_alerts.html", **panel)


@router.post("/alerts/{alert_id}/ack", response_class=HTMLResponse)
async def ack_form(
    request: Request,
    alert_id: str,
    who: PrincipalDep,
    store: StoreDep,
    producer: ProducerDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> Response:
    """Acknowledge from the patient page (the JSON route's rules: scope, the caller's own
    name, a disposition from the list required, the note stored, audited, sent to the
    stream); htmx gets the alert panel back, a plain form post a redirect to the patient
    page."""
    _form_alert(who, alert_id)
    fields = form_fields(await request.body())
    disposition = fields.get("disposition", "")
    if disposition not in DISPOSITIONS:
        raise PageError(
            422, "Disposition required", "Choose what was done about the alert: " + _LIST
        )
    note = fields.get("note", "").strip()[:2000] or None
    # audited as the JSON route's acknowledgement, which this form is
    source = f"POST /v1/alerts/{alert_id}/ack"
    acked = await acknowledge(
        store, producer, clock, who, alert_id, disposition, note, source=source
    )
    if acked is None:
        raise PageError(404, "Unknown alert", f"unknown alert {alert_id}")
    resource = f"POST /ui/alerts/{alert_id}/ack"
    return await _panel_answer(request, store, who, acked, resource, clock.now(), settings)


# --- paused programs ---------------------------------------------------------------------


def program_states(book: EpisodeBook) -> list[dict[str, Any]]:
    """Each open episode's program: paused (since when, why) or running (resumed when)."""
    out: list[dict[str, Any]] = []
    for ep in sorted(book.episodes.values(), key=lambda e: e.start_date):
        if ep.end_date is not None:
            continue
        last = ep.pauses[-1] if ep.pauses else None
        out.append(
            {
                "episode_id": ep.episode_id,
                "paused": last is not None and last.end is None,
                "since": last.start.isoformat() if last else None,
                "reason": last.reason if last else None,
                "resumed_on": last.end.isoformat() if last and last.end else None,
            }
        )
    return out


def program_event(
    ep: Episode, action: Literal["pause", "resume"], clinician_id: str, now: dt.datetime
) -> dict[str, Any] | None:
    """The ``program.paused`` / ``program.resumed`` the form asks for, dated now in the
    episode's time zone (its patient-local date), or None when there is nothing to do
    (already paused; not paused). Its event_id is derived from the pause it resumes (or
    the resume it follows), so a second click is the same event: a duplicate."""
    last = ep.pauses[-1] if ep.pauses else None
    paused = last is not None and last.end is None
    if paused == (action == "pause"):
        return None
    after = "" if last is None else (last.event_id if paused else last.resumed_by or "")
    digest = hashlib.sha256(f"{ep.episode_id}|{after}".encode()).hexdigest()[:40]
    kind = "program.paused" if action == "pause" else "program.resumed"
    return episode_event(ep, kind, f"ui-{action}-{digest}", now, clinician_id=clinician_id)


@router.post("/patients/{patient_id}/program/{action}", response_class=HTMLResponse)
async def program_form(
    request: Request,
    patient_id: str,
    action: Literal["pause", "resume"],
    who: PrincipalDep,
    gateway: GatewayDep,
) -> Response:
    """Pause or resume the program of one of the patient's open episodes, in the signed-in
    clinician's name and organisation: the event goes the way of every event (the
    gateway's path to Kafka, then the worker), audited; then back to the patient page
    once the worker has stored it (or after a few seconds)."""
    clinician = clinician_form(
        who, patient_id, "manage_program", "Only a clinician pauses or resumes a program."
    )
    episode_id = form_fields(await request.body()).get("episode_id", "")
    store = gateway.store
    async with store.acquire() as conn:
        if not await in_scope(conn, who.scope(), patient_id):
            raise PageError(404, "Unknown patient", f"No patient {patient_id} in your care.")
        payloads = await patient_payloads(conn, who.org_id, patient_id)
        resource = f"POST /ui/patients/{patient_id}/program/{action}"
        await audit_principal(conn, who, f"{action}_program", resource, [patient_id])
    states, _ = await asyncio.to_thread(fold, (parse_event_json(p) for p in payloads))
    state = states.get((who.org_id, patient_id))
    ep = None if state is None else state.book.episodes.get(episode_id)
    if ep is None or ep.end_date is not None:
        raise PageError(404, "Unknown episode", f"No open episode {episode_id} of this patient.")
    item = program_event(ep, action, clinician, gateway.clock.now())
    if item is None:
        done = "paused" if action == "pause" else "running"
        raise PageError(409, "Nothing to do", f"The program is already {done}.")
    await post_event(gateway, who, item)
    return RedirectResponse(f"/ui/patients/{patient_id}", 303)


@router.post("/alerts/{alert_id}/snooze", response_class=HTMLResponse)
async def snooze_form(
    request: Request,
    alert_id: str,
    who: PrincipalDep,
    store: StoreDep,
    producer: ProducerDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> Response:
    """Snooze from the patient page (the JSON route's rules: a configured duration, a
    reason, never a red flag; audited, sent to the stream)."""
    _form_alert(who, alert_id)
    fields = form_fields(await request.body())
    duration = settings.alerting.snooze_choices.get(fields.get("duration", ""))
    reason = fields.get("reason", "").strip()[:500]
    if duration is None or not reason:
        raise PageError(
            422, "Duration and reason required", "Choose how long and say why to snooze."
        )
    source = f"POST /v1/alerts/{alert_id}/snooze"
    try:
        snoozed = await snooze(
            store, producer, clock, who, alert_id, duration, reason, source=source
        )
    except SnoozeRefused as e:
        raise PageError(409, "Cannot snooze", str(e)) from None
    if snoozed is None:
        raise PageError(404, "Unknown alert", f"unknown alert {alert_id}")
    resource = f"POST /ui/alerts/{alert_id}/snooze"
    return await _panel_answer(request, store, who, snoozed, resource, clock.now(), settings)
