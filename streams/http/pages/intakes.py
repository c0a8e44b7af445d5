"""``/ui/intakes``: the intake queue (issue 18 item 5), for schedulers, clinicians and
admins, scoped to their organisation (the queue is the organisation's, not a care team's:
nobody treats a patient before the first contact). The intakes waiting for a first contact
in the queue's order (``urgent``, ``physician_review``, then by due time; the table
``streams.db.intakes`` keeps), each with its route, its reasons in words (red flags
named), STarT Back tier, NPRS, body region, referral source, how long it has waited and
the time left to its due time (overdue in red); audited like every read of patient data.

"Contacted" (``POST /ui/intakes/{patient_id}/{intake_id}/contacted``, CSRF-checked) posts
an ``intake.contacted`` with the channel chosen, in the signed-in user's name (its source
names the user; a clinician's own clinician id) and organisation, through the gateway's
event path (``streams.http.routes.events.ingest``: Kafka, then the worker), audited; the
intake then leaves the waiting list, live on every open queue page (``/ui/stream?feed=
intakes``). "Start episode" is the clinic's integration path: an ``episode.started``
carrying ``intake_id`` needs the program, the billing NPIs and the treating clinician,
which this page does not have, so the page shows the intake id to give it."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, get_args
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from schemas.events import ContactChannel
from streams.db.access import audit_principal
from streams.db.alerts import db_now
from streams.db.intakes import QueuedIntake, get_intake, list_intakes
from streams.http.auth import form_fields
from streams.http.deps import AuthenticateDep, ClockDep, GatewayDep, PrincipalDep, StoreDep
from streams.http.pages.common import (
    ID_RE,
    PageError,
    clinic_time,
    clinic_zone,
    elapsed,
    need,
    page_router,
    page_user,
    post_event,
    render,
)

CHANNELS: tuple[str, ...] = get_args(ContactChannel)
QUEUE_LIMIT = 500
ROUTE_WORDS = {
    "urgent": "urgent (same day)",
    "physician_review": "physician review",
    "in_person_pt": "in-person PT",
    "digital_pt": "digital PT",
}

router = page_router()


def reason_text(code: str) -> str:
    """A routing reason code (intake.routing.REASON_CODES) in words."""
    kind, _, value = code.partition(":")
    if kind == "red_flag":
        return f"red flag: {value.replace('_', ' ')}"
    if kind == "sbst":
        return f"STarT Back {value} risk"
    if code == "nprs:high":
        return "high pain score (NPRS)"
    if code == "default":
        return "no flag, no high score"
    return code.replace("_", " ")


def time_left(due: dt.datetime, now: dt.datetime) -> tuple[str, bool]:
    """(text, overdue): "2 h left", "overdue by 35 min"."""
    if due <= now:
        return f"overdue by {elapsed(due, now, absent='')}", True
    return f"{elapsed(now, due, absent='')} left", False


def _row(q: QueuedIntake, now: dt.datetime, zone: ZoneInfo) -> dict[str, Any]:
    left, overdue = time_left(q.due_at, now)
    return {
        "patient_id": q.patient_id,
        "intake_id": q.intake_id,
        "route": q.route,
        "route_text": ROUTE_WORDS.get(q.route, q.route.replace("_", " ")),
        "reasons": [reason_text(r) for r in q.reasons],
        "red_flags": sorted(f.replace("_", " ") for f in q.red_flags),
        "sbst": (q.sbst or {}).get("tier"),
        "nprs": q.nprs,
        "body_region": q.body_region.replace("_", " "),
        "referral_source": (q.referral_source or "—").replace("_", " "),
        "waiting": elapsed(q.submitted_at, now, absent="—"),
        "submitted_at": q.submitted_at.isoformat(),
        "submitted": clinic_time(q.submitted_at, now, zone),
        "due_at": q.due_at.isoformat(),
        "due": clinic_time(q.due_at, now, zone),
        "left": left,
        "overdue": overdue,
    }


@router.get("/intakes", response_class=HTMLResponse)
async def intakes_page(
    request: Request, authenticate: AuthenticateDep, store: StoreDep, clock: ClockDep
) -> HTMLResponse:
    """The organisation's intakes waiting for a first contact, in the queue's order."""
    who = await page_user(request, authenticate)
    need(who, "read_intakes")
    now = clock.now()
    async with store.acquire() as conn:
        since = await db_now(conn)  # the live stream's cursor is the database's time
        queued = await list_intakes(conn, who.org_id, "waiting", None, QUEUE_LIMIT)
        zone = await clinic_zone(conn, who)
        await audit_principal(
            conn,
            who,
            "read",
            "GET /ui/intakes",
            sorted({q.patient_id for q in queued}),
            {"count": len(queued)},
        )
    return render(
        "intakes.html",
        who=who,
        nav="intakes",
        live=True,
        feed="intakes",
        since=since.isoformat(),
        rows=[_row(q, now, zone) for q in queued],
        channels=CHANNELS,
        more=len(queued) >= QUEUE_LIMIT,
    )


def contact_event(
    who_name: str, clinician_id: str | None, q: QueuedIntake, channel: str, now: dt.datetime
) -> dict[str, Any]:
    """The ``intake.contacted`` the form posts, dated now in the intake's zone. Its event id
    is derived from the intake, so a second click (or a second scheduler's) is the same
    event: a duplicate, not a second contact."""
    digest = hashlib.sha256(f"{q.patient_id}|{q.intake_id}".encode()).hexdigest()[:40]
    event: dict[str, Any] = {
        "event_id": f"ui-contact-{digest}",
        "schema_version": 1,
        "type": "intake.contacted",
        "patient_id": q.patient_id,
        "occurred_at": now.astimezone(ZoneInfo(q.timezone)).isoformat(),
        "source": {"kind": "clinician_portal", "id": f"dashboard:{who_name}"},
        "intake_id": q.intake_id,
        "channel": channel,
    }
    if clinician_id is not None:
        event["clinician_id"] = clinician_id
    return event


@router.post("/intakes/{patient_id}/{intake_id}/contacted", response_class=HTMLResponse)
async def contacted_form(
    request: Request, patient_id: str, intake_id: str, who: PrincipalDep, gateway: GatewayDep
) -> Response:
    """Record the first contact of a waiting intake, in the signed-in user's name and
    organisation, through the gateway's event path; audited; back to the queue once the
    worker has stored it (or after a few seconds)."""
    if who.kind != "user":
        raise PageError(403, "Not for machine keys")
    need(who, "contact_intake")
    if not (ID_RE.fullmatch(patient_id) and ID_RE.fullmatch(intake_id)):
        raise PageError(404, "Unknown intake", "No such intake in your organisation.")
    channel = form_fields(await request.body()).get("channel", "")
    if channel not in CHANNELS:
        raise PageError(
            422, "Channel required", f"Choose how the patient was contacted: {', '.join(CHANNELS)}."
        )
    store = gateway.store
    async with store.acquire() as conn:
        q = await get_intake(conn, who.org_id, patient_id, intake_id)
        if q is None:
            raise PageError(404, "Unknown intake", "No such intake in your organisation.")
        resource = f"POST /ui/intakes/{patient_id}/{intake_id}/contacted"
        await audit_principal(
            conn, who, "intake_contacted", resource, [patient_id], {"channel": channel}
        )
    if q.first_contact_at is not None:
        raise PageError(409, "Already contacted", "This intake's first contact is recorded.")
    item = contact_event(who.name, who.clinician_id, q, channel, gateway.clock.now())
    await post_event(gateway, who, item)
    return RedirectResponse("/ui/intakes", 303)
