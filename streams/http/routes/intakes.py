"""The intake queue for integrations (issue 18 item 5): ``GET /v1/intakes``, the caller's
organisation's intakes that arrived, in the queue's order (``urgent``, ``physician_review``,
then by due time), with the routing the worker stored and, as of now (the gateway's clock),
the time left to due and whether the intake is breached. Audited like the other patient
reads: the audit row names the patients returned."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request

from intake.rules import Route
from streams.access import Principal
from streams.db.access import audit_principal
from streams.db.intakes import IntakeStatus, QueuedIntake, list_intakes
from streams.http.deps import ClockDep, StoreDep, require

router = APIRouter()


def _row(q: QueuedIntake, now: dt.datetime) -> dict[str, Any]:
    """One intake as the API gives it: times in the intake zone's offset at that instant."""
    zone = ZoneInfo(q.timezone)
    contact = q.first_contact_at
    return {
        "intake_id": q.intake_id,
        "patient_id": q.patient_id,
        "route": q.route,
        "reasons": list(q.reasons),
        "red_flags": list(q.red_flags),
        "sbst": q.sbst,
        "nprs": q.nprs,
        "body_region": q.body_region,
        "referral_source": q.referral_source,
        "submitted_at": q.submitted_at.astimezone(zone).isoformat(),
        "due_at": q.due_at.astimezone(zone).isoformat(),
        "first_contact_at": contact.astimezone(zone).isoformat() if contact else None,
        "breached": (contact if contact is not None else now) > q.due_at,
        "seconds_to_due": None if contact else round((q.due_at - now).total_seconds()),
        "rules_version": q.rules_version,
    }


@router.get("/v1/intakes")
async def get_intakes(
    request: Request,
    store: StoreDep,
    clock: ClockDep,
    who: Principal = require("read_intakes"),
    status: IntakeStatus = "waiting",
    route: Route | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> dict[str, Any]:
    """The organisation's intakes: ``waiting`` for a first contact (default), ``contacted``
    or ``all``, optionally of one ``route``, in the queue's order."""
    now = clock.now()
    async with store.acquire() as conn:
        rows = await list_intakes(conn, who.org_id, status, route, limit)
        await audit_principal(
            conn,
            who,
            "read",
            "GET /v1/intakes",
            sorted({q.patient_id for q in rows}),
            {"status": status, "route": route, "count": len(rows)},
        )
    return {"as_of": now.isoformat(), "intakes": [_row(q, now) for q in rows]}
