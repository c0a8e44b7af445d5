"""Treatment time on the patient page (issue 17): a start/stop timer and manual entries
that post ``clinician.time_logged`` in the signed-in clinician's name and organisation
through the gateway's event path (``POST /ui/patients/{id}/time``; the timer's start,
``POST /ui/patients/{id}/timer``, only reads the injected clock), this month's entries, and
corrections: a correction is a new time log that ``supersedes`` the entry, never an edit
in place (the month then counts the correction instead)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from typing import Any, get_args
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from billing.rules import patient_local_date
from billing.state import PatientBillingState
from schemas.episodes import Episode
from schemas.events import ClinicianRole
from streams.access import Principal
from streams.db.access import audit_principal, in_scope
from streams.db.ledger import load_states
from streams.http.auth import form_fields
from streams.http.deps import GatewayDep, PrincipalDep
from streams.http.pages.common import (
    ID_RE,
    PageError,
    clinic_time,
    clinician_form,
    episode_event,
    page_router,
    post_event,
)

ACTIVITIES = ("review", "call", "video", "message", "program_edit")
LIVE_ACTIVITIES = ("call", "video")  # a live call with the patient: real-time audio or video
ROLES: tuple[str, ...] = get_args(ClinicianRole)
MAX_MINUTES = 240
NONCE_RE = re.compile(r"^[A-Za-z0-9._:+-]{1,64}$")

router = page_router()


def time_entries(
    payloads: Iterable[str],
    ledger: PatientBillingState | None,
    month_start: dt.date,
    now: dt.datetime,
    zone: ZoneInfo,
) -> list[dict[str, Any]]:
    """The patient's time logs of the (patient-local) month starting ``month_start``,
    newest first: each with whether the month counts it (``counted``) and, if not, the
    correction that replaced it."""
    counted = {log.event_id for log in ledger.counted_time_logs()} if ledger else set()
    logs = [
        e
        for e in (orjson.loads(p) for p in payloads)
        if e.get("type") == "clinician.time_logged"
        and dt.datetime.fromisoformat(e["occurred_at"]).date().replace(day=1) == month_start
    ]
    replaced_by = {e["supersedes"]: e["event_id"] for e in logs if e.get("supersedes")}
    out = []
    for e in sorted(logs, key=lambda e: (e["occurred_at"], e["event_id"]), reverse=True):
        at = dt.datetime.fromisoformat(e["occurred_at"])
        out.append(
            {
                "event_id": e["event_id"],
                "when": clinic_time(at, now, zone),
                "clinician_id": e["clinician_id"],
                "role": e["clinician_role"],
                "minutes": e["minutes"],
                "activity": e["activity"],
                "interactive": e["interactive"],
                "supersedes": e.get("supersedes"),
                "counted": e["event_id"] in counted,
                "replaced_by": replaced_by.get(e["event_id"]),
            }
        )
    return out


def time_context(
    who: Principal,
    payloads: Iterable[str],
    ledger: PatientBillingState | None,
    now: dt.datetime,
    timer: str,
    zone: ZoneInfo,
) -> dict[str, Any]:
    """The minutes section's entries and forms (the month's numbers come with the page)."""
    today = patient_local_date(ledger, now) if ledger is not None else now.date()
    active = ledger.book.active() if ledger is not None else None
    started = _instant(timer)
    return {
        "time_entries": time_entries(payloads, ledger, today.replace(day=1), now, zone),
        "may_log_time": (
            who.may("log_time") and who.clinician_id is not None and active is not None
        ),
        "default_role": active.clinician_role if active is not None else "PT",
        "roles": ROLES,
        "activities": ACTIVITIES,
        "timer_started": started.isoformat() if started else None,
        "timer_started_text": clinic_time(started, now, zone) if started else None,
        "time_nonce": hashlib.sha256(f"{who.name}|{now.isoformat()}".encode()).hexdigest()[:32],
    }


def _instant(text: str) -> dt.datetime | None:
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def _form_user(who: Principal, patient_id: str) -> str:
    """The clinician's id of a time form: signed-in clinicians only, a contract id."""
    return clinician_form(who, patient_id, "log_time", "Only a clinician logs treatment time.")


@router.post("/patients/{patient_id}/timer", response_class=HTMLResponse)
async def timer_form(patient_id: str, who: PrincipalDep, gateway: GatewayDep) -> Response:
    """Start the timer: back to the patient page with the injected clock's instant, which
    the stop form posts back (nothing is stored until the stop)."""
    _form_user(who, patient_id)
    async with gateway.store.acquire() as conn:
        if not await in_scope(conn, who.scope(), patient_id):
            raise PageError(404, "Unknown patient", f"No patient {patient_id} in your care.")
    started = quote(gateway.clock.now().isoformat(), safe="")
    return RedirectResponse(f"/ui/patients/{patient_id}?timer={started}#time", 303)


def _minutes(fields: dict[str, str], now: dt.datetime) -> int:
    """The entry's minutes: typed, or the timer's (from its start to the injected clock's
    now, whole minutes)."""
    if "started_at" in fields:
        started = _instant(fields["started_at"])
        if started is None or started > now:
            raise PageError(422, "Timer not running", "The timer's start is not readable.")
        minutes = int((now - started).total_seconds() // 60)
        if minutes < 1:
            raise PageError(422, "Under a minute", "The timer ran less than a minute: not logged.")
        if minutes > MAX_MINUTES:
            raise PageError(
                422, "Timer too long", f"The timer ran {minutes} minutes: log it as entries."
            )
        return minutes
    text = fields.get("minutes", "").strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_MINUTES:
        raise PageError(422, "Minutes", f"minutes: a whole number from 1 to {MAX_MINUTES}.")
    return int(text)


def _entry_fields(fields: dict[str, str]) -> tuple[str, bool, str, str]:
    """(activity, live call, role, nonce) of a time form, each checked."""
    activity = fields.get("activity", "")
    if activity not in ACTIVITIES:
        raise PageError(422, "Activity", "activity: one of " + ", ".join(ACTIVITIES) + ".")
    live = fields.get("interactive") == "on"
    if live and activity not in LIVE_ACTIVITIES:
        raise PageError(
            422, "Live call", "A live call with the patient is a call or a video (activity)."
        )
    role = fields.get("role", "")
    if role not in ROLES:
        raise PageError(422, "Role", "role: one of " + ", ".join(ROLES) + ".")
    nonce = fields.get("nonce", "")
    if not NONCE_RE.fullmatch(nonce):
        raise PageError(422, "Stale form", "Reload the page and try again.")
    return activity, live, role, nonce


def _correction_target(ledger: PatientBillingState, supersedes: str, today: dt.date) -> None:
    """A correction names a counted entry of this patient in the current month."""
    log = ledger.time_logs.get(supersedes)
    if log is None:
        raise PageError(404, "Unknown entry", f"No time entry {supersedes} of this patient.")
    if log.local_date.replace(day=1) != today.replace(day=1):
        raise PageError(409, "Month closed here", "Only this month's entries are corrected here.")
    if supersedes not in {t.event_id for t in ledger.counted_time_logs()}:
        raise PageError(409, "Already corrected", f"Entry {supersedes} was already corrected.")


def time_event(
    ep: Episode,
    clinician_id: str,
    entry: tuple[int, str, bool, str, str],
    supersedes: str | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The ``clinician.time_logged`` a form asks for, dated now in the episode's time zone.
    Its event_id is derived from the form (its nonce: the page's, or the timer's start),
    so a second click of the same form is the same event: a duplicate."""
    minutes, activity, live, role, nonce = entry
    seed = f"{ep.patient_id}|{clinician_id}|{nonce}|{supersedes or ''}"
    item = episode_event(
        ep,
        "clinician.time_logged",
        "ui-time-" + hashlib.sha256(seed.encode()).hexdigest()[:40],
        now,
        clinician_id=clinician_id,
        clinician_role=role,
        minutes=minutes,
        activity=activity,
        interactive=live,
    )
    if supersedes:
        item["supersedes"] = supersedes
    return item


@router.post("/patients/{patient_id}/time", response_class=HTMLResponse)
async def time_form(
    request: Request, patient_id: str, who: PrincipalDep, gateway: GatewayDep
) -> Response:
    """Log treatment time (typed minutes, or the timer's stop) or correct an entry, in the
    signed-in clinician's name and organisation, against the patient's open episode: the
    event goes the way of every event (the gateway's path to Kafka, then the worker),
    audited; then back to the patient page once the worker has stored it."""
    clinician_id = _form_user(who, patient_id)
    fields = form_fields(await request.body())
    now = gateway.clock.now()
    minutes = _minutes(fields, now)
    activity, live, role, nonce = _entry_fields(fields)
    supersedes = fields.get("supersedes", "") or None
    if supersedes is not None and not ID_RE.fullmatch(supersedes):
        raise PageError(404, "Unknown entry", "No such time entry.")
    store = gateway.store
    async with store.acquire() as conn:
        if not await in_scope(conn, who.scope(), patient_id):
            raise PageError(404, "Unknown patient", f"No patient {patient_id} in your care.")
        ledger = (await load_states(conn, who.org_id, [patient_id])).get(patient_id)
        resource = f"POST /ui/patients/{patient_id}/time"
        await audit_principal(conn, who, "log_time", resource, [patient_id])
    ep = ledger.book.active() if ledger is not None else None
    if ledger is None or ep is None:
        raise PageError(409, "No open episode", "Time is logged against an open episode.")
    if supersedes is not None:
        _correction_target(ledger, supersedes, patient_local_date(ledger, now))
    entry = (minutes, activity, live, role, nonce)
    item = time_event(ep, clinician_id, entry, supersedes, now)
    await post_event(gateway, who, item)
    return RedirectResponse(f"/ui/patients/{patient_id}#time", 303)
