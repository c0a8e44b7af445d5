"""Clinician API on the gateway: alerts, acknowledgement, adherence and pain.

Adherence and pain are recomputed from the events hypertable with the same pure functions
the stream and the offline evaluators use (one rules engine).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from alerts.adherence import daily_rows
from alerts.evaluate import fold
from alerts.state import PatientState
from schemas.events import parse_event_json
from streams.db.alerts import acknowledge, get_alert, list_alerts
from streams.db.events import pain_reports, patient_has_events, patient_payloads

router = APIRouter()


class AckBody(BaseModel):
    by: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")] = (
        "clinician"
    )


def _cursor(value: str | None) -> tuple[dt.datetime, str] | None:
    if value is None:
        return None
    try:
        ts, _, alert_id = value.partition("|")
        return dt.datetime.fromisoformat(ts), alert_id
    except ValueError:
        raise HTTPException(422, [{"loc": ["query", "before"], "msg": "bad cursor"}]) from None


@router.get("/v1/alerts")
async def get_alerts(
    request: Request,
    clinician_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["open", "acknowledged", "resolved"] | None = None,
    since: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(description="cursor from next_before")] = None,
) -> dict[str, Any]:
    """Newest first. Page on with ?before=<next_before> until it is null."""
    if since is not None and since.tzinfo is None:
        raise HTTPException(422, [{"loc": ["query", "since"], "msg": "needs a UTC offset"}])
    async with request.app.state.store.acquire() as conn:
        items = await list_alerts(conn, clinician_id, status, since, limit, _cursor(before))
    next_before = None
    if len(items) == limit:
        last = items[-1]
        next_before = f"{last['fired_at']}|{last['id']}"
    return {"alerts": items, "next_before": next_before}


@router.post("/v1/alerts/{alert_id}/ack")
async def ack_alert(request: Request, alert_id: str, body: AckBody | None = None) -> dict[str, Any]:
    """Acknowledge: recorded at once, and sent to the stream so the cool-down applies."""
    by = (body or AckBody()).by
    store = request.app.state.store
    async with store.acquire() as conn:
        alert = await get_alert(conn, alert_id)
        if alert is None:
            raise HTTPException(404, f"unknown alert {alert_id}")
        at = dt.datetime.now(dt.timezone.utc)
        if alert.status == "open":
            acked = alert.model_copy(
                update={"status": "acknowledged", "acknowledged_at": at, "acknowledged_by": by}
            )
            await acknowledge(conn, acked)
            alert = acked
    if alert.status == "acknowledged":
        await request.app.state.producer.send_ack(alert_id, alert.patient_id, at, by)
    return orjson.loads(alert.model_dump_json())


async def _patient_state(request: Request, patient_id: str) -> PatientState:
    """Fold the patient's stored events in arrival order (stored_at, then event time)."""
    async with request.app.state.store.acquire() as conn:
        rows = await patient_payloads(conn, patient_id)
    if not rows:
        raise HTTPException(404, f"unknown patient {patient_id}")
    states, _ = fold(parse_event_json(p) for p in rows)
    return states[patient_id]


def _range(frm: dt.date | None, to: dt.date | None) -> None:
    if frm is not None and to is not None and frm > to:
        raise HTTPException(422, [{"loc": ["query", "from"], "msg": "from is after to"}])


@router.get("/v1/patients/{patient_id}/adherence")
async def adherence(
    request: Request,
    patient_id: str,
    frm: Annotated[dt.date | None, Query(alias="from")] = None,
    to: dt.date | None = None,
) -> dict[str, Any]:
    """Daily prescribed and completed sessions and trailing 7-day adherence."""
    _range(frm, to)
    state = await _patient_state(request, patient_id)
    last = max((r.local_date for r in state.data.values()), default=None)
    if to is not None and (last is None or to > last):
        last = to
    rows = daily_rows(patient_id, state.completions, state.book, last)
    return {
        "patient_id": patient_id,
        "days": [
            {
                "date": r.date.isoformat(),
                "prescribed": round(float(r.prescribed), 4),
                "completed": r.completed,
                "adherence_7d": None if r.adherence_7d is None else round(float(r.adherence_7d), 4),
            }
            for r in rows
            if (frm is None or r.date >= frm) and (to is None or r.date <= to)
        ],
    }


@router.get("/v1/patients/{patient_id}/pain")
async def pain(
    request: Request,
    patient_id: str,
    frm: Annotated[dt.date | None, Query(alias="from")] = None,
    to: dt.date | None = None,
) -> dict[str, Any]:
    """Pain reports (NPRS 0-10) by patient-local date, oldest first."""
    _range(frm, to)
    async with request.app.state.store.acquire() as conn:
        if not await patient_has_events(conn, patient_id):
            raise HTTPException(404, f"unknown patient {patient_id}")
        rows = await pain_reports(conn, patient_id, frm, to)
    reports = []
    for r in rows:
        p = orjson.loads(r["payload"])
        reports.append({"event_id": r["event_id"], "date": r["local_date"].isoformat(),
                        "occurred_at": p["occurred_at"], "score": p["score"],
                        "context": p.get("context")})
    return {"patient_id": patient_id, "reports": reports}
