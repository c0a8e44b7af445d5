"""Clinician API on the gateway: alerts, acknowledgement (with a disposition) and snooze,
worklist, adherence and pain.

Every route takes the caller (``streams.http.deps.principal``), reads only inside its scope
(a patient outside it answers 404, as an unknown one does; ``{patient_id}`` names a patient
of the caller's own organisation, whatever another organisation calls by that id) and
leaves an audit row naming the patients whose data it returned. Adherence and pain are
recomputed from the events hypertable with the same pure functions the stream and the
offline evaluators use.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from alerts.adherence import daily_rows, last_covered
from alerts.evaluate import fold
from alerts.models import AlertKind, Disposition, Severity
from alerts.rollup import newest_day
from alerts.state import PatientState
from schemas.events import parse_event_json
from streams.access import Principal
from streams.db.access import audit_principal, in_scope
from streams.db.alerts import list_alerts, worklist
from streams.db.events import EventStore, pain_reports, patient_payloads
from streams.db.outcome_rows import open_tasks
from streams.http.deps import ClockDep, ProducerDep, SettingsDep, StoreDep, require
from streams.http.hardening import ID_REGEX, MAX_SPAN_DAYS, Day, NoNul, check_span, in_years
from streams.services.alerts import SnoozeRefused, acknowledge, snooze
from streams.settings import SNOOZE_MAX_S, Settings, parse_duration

router = APIRouter()
PatientId = Annotated[str, Query(pattern=ID_REGEX)]
PatientPath = Annotated[str, Path(pattern=ID_REGEX)]


class AckBody(BaseModel):
    disposition: Disposition = Field(description="what was done about the alert")
    note: Annotated[NoNul, Field(max_length=2000)] | None = None


class SnoozeBody(BaseModel):
    duration: Annotated[NoNul, Field(max_length=16)] = Field(
        description="one of the configured durations (RTM_SNOOZE_DURATIONS; default 4h,"
        " 24h, 3d), at most 7 days"
    )
    reason: Annotated[NoNul, Field(min_length=1, max_length=500)]


def snooze_duration(settings: Settings, text: str) -> dt.timedelta:
    """The configured snooze duration ``text`` names; 422 naming ``duration`` otherwise
    (more than 7 days, or not one of the configured choices)."""
    choices = settings.alerting.snooze_choices
    try:
        wanted = parse_duration(text)
    except ValueError as e:
        raise HTTPException(422, [{"loc": ["body", "duration"], "msg": str(e)}]) from None
    if wanted.total_seconds() > SNOOZE_MAX_S:
        raise HTTPException(422, [{"loc": ["body", "duration"], "msg": "at most 7 days"}])
    if wanted not in choices.values():
        msg = "one of " + ", ".join(choices)
        raise HTTPException(422, [{"loc": ["body", "duration"], "msg": msg}])
    return wanted


def _cursor(value: str | None) -> tuple[dt.datetime, str] | None:
    """``<fired_at>|<alert id>`` as next_before gave it."""
    if value is None:
        return None
    bad = HTTPException(422, [{"loc": ["query", "before"], "msg": "bad cursor"}])
    ts, _, alert_id = value.partition("|")
    try:
        at = dt.datetime.fromisoformat(ts)
    except ValueError:
        raise bad from None
    if at.tzinfo is None or not in_years(at.date()) or not re.fullmatch(ID_REGEX, alert_id):
        raise bad
    return at, alert_id


@router.get("/v1/alerts")
async def get_alerts(
    request: Request,
    store: StoreDep,
    who: Principal = require("read_clinical"),
    clinician_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["open", "acknowledged", "resolved"] | None = None,
    severity: Severity | None = None,
    kind: AlertKind | None = None,
    patient_id: PatientId | None = None,
    since: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(description="cursor from next_before")] = None,
) -> dict[str, Any]:
    """Alerts in the caller's scope, newest first. Page on with ?before=<next_before>
    until it is null."""
    if since is not None and since.tzinfo is None:
        raise HTTPException(422, [{"loc": ["query", "since"], "msg": "needs a UTC offset"}])
    if since is not None and not 2000 <= since.year <= 2100:  # the contract's range
        raise HTTPException(422, [{"loc": ["query", "since"], "msg": "year outside 2000-2100"}])
    cursor = _cursor(before)
    async with store.acquire() as conn:
        items = await list_alerts(
            conn,
            who.scope(),
            clinician_id=clinician_id,
            status=status,
            severity=severity,
            kind=kind,
            patient_id=patient_id,
            since=since,
            limit=limit,
            before=cursor,
        )
        await audit_principal(
            conn,
            who,
            "read",
            "GET /v1/alerts",
            [a["patient_id"] for a in items],
            {"count": len(items), "query": dict(request.query_params)},
        )
    next_before = None
    if len(items) == limit:
        last = items[-1]
        next_before = f"{last['fired_at']}|{last['id']}"
    return {"alerts": items, "next_before": next_before}


@router.get("/v1/worklist")
async def get_worklist(
    store: StoreDep,
    clock: ClockDep,
    who: Principal = require("read_clinical"),
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """ "Who needs me today?": patients in scope with open alerts, by need (a red flag or
    fall, other critical, high, low adherence, inactivity, billing at risk; longest waiting
    first; a patient whose open alerts are all snoozed after them, with ``snoozed_until``),
    and ``tasks``, their care-pathway tasks still to do (overdue first, then by due date;
    each with its episode's ``step_up_reason``, null without a step-up)."""
    async with store.acquire() as conn:
        rows = await worklist(conn, who.scope(), clock.now(), limit)
        tasks = await open_tasks(conn, who.scope(), limit)
        await audit_principal(
            conn,
            who,
            "read",
            "GET /v1/worklist",
            sorted({r["patient_id"] for r in [*rows, *tasks]}),
            {"count": len(rows), "tasks": len(tasks)},
        )
    for t in tasks:
        t["due_on"] = t["due_on"].isoformat()
    return {"patients": rows, "tasks": tasks}


@router.post("/v1/alerts/{alert_id}/ack")
async def ack_alert(
    alert_id: Annotated[str, Path(pattern=ID_REGEX)],
    body: AckBody,
    store: StoreDep,
    producer: ProducerDep,
    clock: ClockDep,
    who: Principal = require("acknowledge"),
) -> dict[str, Any]:
    """Acknowledge, in the caller's own name, with a disposition (required) and an
    optional note: recorded at once, and sent to the stream so the cool-down applies."""
    alert = await acknowledge(
        store,
        producer,
        clock,
        who,
        alert_id,
        body.disposition,
        body.note,
        source=f"POST /v1/alerts/{alert_id}/ack",
    )
    if alert is None:
        raise HTTPException(404, f"unknown alert {alert_id}")
    out: dict[str, Any] = orjson.loads(alert.model_dump_json())
    return out


@router.post(
    "/v1/alerts/{alert_id}/snooze",
    responses={409: {"description": "the alert cannot be snoozed (a red flag, not open)"}},
)
async def snooze_alert(
    alert_id: Annotated[str, Path(pattern=ID_REGEX)],
    body: SnoozeBody,
    store: StoreDep,
    producer: ProducerDep,
    clock: ClockDep,
    settings: SettingsDep,
    who: Principal = require("acknowledge"),
) -> dict[str, Any]:
    """Snooze an open alert, in the caller's own name, for one of the configured durations
    with a reason: it leaves the worklist's tiers until ``snoozed_until`` and comes back in
    its tier then if still open. A red flag cannot be snoozed (409)."""
    duration = snooze_duration(settings, body.duration)
    try:
        alert = await snooze(
            store,
            producer,
            clock,
            who,
            alert_id,
            duration,
            body.reason,
            source=f"POST /v1/alerts/{alert_id}/snooze",
        )
    except SnoozeRefused as e:
        raise HTTPException(409, str(e)) from None
    if alert is None:
        raise HTTPException(404, f"unknown alert {alert_id}")
    out: dict[str, Any] = orjson.loads(alert.model_dump_json())
    return out


async def _patient_state(
    store: EventStore, who: Principal, patient_id: str, resource: str
) -> PatientState:
    """Fold the patient's (of the caller's organisation) stored events in arrival order
    (stored_at, then event time), in a worker thread: a patient's whole history must not
    hold the event loop. ``resource`` names the request in the audit row."""
    async with store.acquire() as conn:
        rows = (
            await patient_payloads(conn, who.org_id, patient_id)
            if await in_scope(conn, who.scope(), patient_id)
            else []
        )
        if rows:
            await audit_principal(conn, who, "read", resource, [patient_id])
    if not rows:
        raise HTTPException(404, f"unknown patient {patient_id}")
    states, _ = await asyncio.to_thread(lambda: fold(parse_event_json(p) for p in rows))
    return states[(who.org_id, patient_id)]


def _range(frm: dt.date | None, to: dt.date | None) -> None:
    if frm is not None and to is not None and frm > to:
        raise HTTPException(422, [{"loc": ["query", "from"], "msg": "from is after to"}])
    check_span(frm, to)


def adherence_days(
    patient_id: str,
    state: PatientState,
    frm: dt.date | None,
    to: dt.date | None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """The rows of [frm, to] (at most MAX_SPAN_DAYS + 1 days), and only those computed.
    Open episodes run to the patient-local today (``now`` in the latest episode's zone, as
    the worklist's rollups do; ``alerts.rollup.newest_day``) or the newest data date when
    later, or to ``to`` when later still. Without ``to`` the window ends on the last
    covered date; without ``from`` it starts MAX_SPAN_DAYS before its end (without ``to``
    but with ``from``, it ends MAX_SPAN_DAYS after ``from``)."""
    span = dt.timedelta(days=MAX_SPAN_DAYS)
    last = newest_day(state, now)
    if to is not None and (last is None or to > last):
        last = to
    end = to if to is not None else last_covered(state.book, last)
    if end is None:
        return []
    if frm is not None and to is None:
        end = min(end, frm + span)
    start = frm if frm is not None else end - span
    rows = daily_rows(patient_id, state.completions, state.book, last, first=start, until=end)
    return [
        {
            "date": r.date.isoformat(),
            "prescribed": round(float(r.prescribed), 4),
            "completed": r.completed,
            "adherence_7d": None if r.adherence_7d is None else round(float(r.adherence_7d), 4),
        }
        for r in rows
    ]


@router.get("/v1/patients/{patient_id}/adherence")
async def adherence(
    request: Request,
    patient_id: PatientPath,
    store: StoreDep,
    clock: ClockDep,
    frm: Annotated[Day | None, Query(alias="from")] = None,
    to: Day | None = None,
    who: Principal = require("read_clinical"),
) -> dict[str, Any]:
    """Daily prescribed and completed sessions and trailing 7-day adherence, for at most
    MAX_SPAN_DAYS + 1 days (see ``adherence_days``)."""
    _range(frm, to)
    resource = f"{request.method} {request.url.path}"
    state = await _patient_state(store, who, patient_id, resource)
    days = await asyncio.to_thread(adherence_days, patient_id, state, frm, to, clock.now())
    return {"patient_id": patient_id, "days": days}


@router.get("/v1/patients/{patient_id}/pain")
async def pain(
    patient_id: PatientPath,
    store: StoreDep,
    frm: Annotated[Day | None, Query(alias="from")] = None,
    to: Day | None = None,
    who: Principal = require("read_clinical"),
) -> dict[str, Any]:
    """Pain reports (NPRS 0-10) by patient-local date, oldest first."""
    _range(frm, to)
    async with store.acquire() as conn:
        if not await in_scope(conn, who.scope(), patient_id):
            raise HTTPException(404, f"unknown patient {patient_id}")
        rows = await pain_reports(conn, who.org_id, patient_id, frm, to)
        await audit_principal(
            conn, who, "read", f"GET /v1/patients/{patient_id}/pain", [patient_id]
        )
    reports = []
    for r in rows:
        p = orjson.loads(r["payload"])
        reports.append(
            {
                "event_id": r["event_id"],
                "date": r["local_date"].isoformat(),
                "occurred_at": p["occurred_at"],
                "score": p["score"],
                "context": p.get("context"),
            }
        )
    return {"patient_id": patient_id, "reports": reports}
