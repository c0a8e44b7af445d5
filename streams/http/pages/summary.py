"""``/ui/patients/{id}/summary``: one patient's printable summary (the patient page's
data, from its own functions: adherence and pain over the episode, every alert with its
disposition, treatment minutes per month and RTM data days per device-supply period, the
program history). No forms and no navigation when printed (``@media print`` in app.css);
audited as a read of the patient."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from billing.rules import (
    DEVICE_FULL_DAYS,
    episode_data_days,
    month_bounds,
    month_totals,
    patient_local_date,
    period_of,
)
from billing.state import PatientBillingState
from streams.db.access import audit_principal, in_scope
from streams.db.alerts import db_now
from streams.db.events import pain_reports, patient_payloads
from streams.db.ledger import load_states
from streams.http.deps import AuthenticateDep, ClockDep, SettingsDep, StoreDep
from streams.http.pages.common import (
    ID_RE,
    PageError,
    clinic_time,
    need,
    page_router,
    page_user,
    render,
)
from streams.http.pages.patient import _alert_panel_context, _choices, _patient_view

router = page_router()

PAIN_WINDOW_DAYS = 365  # the summary's pain: the whole of an episode (the page shows 90)


@router.get("/patients/{patient_id}/summary", response_class=HTMLResponse)
async def summary_page(
    request: Request,
    patient_id: str,
    authenticate: AuthenticateDep,
    store: StoreDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> HTMLResponse:
    """The printable summary: the patient page's access rules (clinical users, the
    patient in scope: else 404), audited as a read."""
    who = await page_user(request, authenticate)
    need(who, "read_clinical")
    if not ID_RE.fullmatch(patient_id):
        raise PageError(404, "Unknown patient", "No such patient in your care.")
    async with store.acquire() as conn:
        if not await in_scope(conn, who.scope(), patient_id):
            raise PageError(404, "Unknown patient", f"No patient {patient_id} in your care.")
        now = await db_now(conn)
        payloads = await patient_payloads(conn, who.org_id, patient_id)
        since = (now - dt.timedelta(days=PAIN_WINDOW_DAYS)).date()
        pains = await pain_reports(conn, who.org_id, patient_id, since, None)
        panel = await _alert_panel_context(
            conn, who, patient_id, None, clock.now(), _choices(settings)
        )
        ledger = (await load_states(conn, who.org_id, [patient_id])).get(patient_id)
        resource = f"GET /ui/patients/{patient_id}/summary"
        await audit_principal(conn, who, "read", resource, [patient_id])
    zone = panel["zone"]
    view = await asyncio.to_thread(
        _patient_view, who.org_id, patient_id, payloads, pains, ledger, now, clock.now(), zone
    )
    periods, months = ([], []) if ledger is None else billing_history(ledger, now)
    scored = [d for d in view["adherence"] if d["pct"] != "—"]
    return render(
        "summary.html",
        who=who,
        nav="worklist",
        patient_id=patient_id,
        printed_at=clinic_time(clock.now(), clock.now(), zone),
        alerts=panel["alerts"],
        periods=periods,
        months=months,
        adherence_days=len(view["adherence"]),
        adherence_scored=len(scored),
        sessions_done=sum(d["completed"] for d in view["adherence"]),
        pain_first=view["pain"][0]["score"] if view["pain"] else None,
        **{k: view[k] for k in ("adherence", "pain", "episodes", "programs")},
        **{k: view[k] for k in ("adherence_latest", "adherence_gap", "pain_latest")},
        **{k: view[k] for k in ("minutes", "earned", "progress")},
    )


def billing_history(
    ledger: PatientBillingState, now: dt.datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each device-supply period of each episode up to the patient-local today with its
    data days (billing's own functions: ``period_of``, ``episode_data_days``), and each
    month with time logged (``month_totals``), oldest first."""
    today = patient_local_date(ledger, now)
    data_days = episode_data_days(ledger)
    periods: list[dict[str, Any]] = []
    for ep in sorted(ledger.book.episodes.values(), key=lambda e: (e.start_date, e.episode_id)):
        day = ep.start_date
        while day <= today and (period := period_of(ep, day)) is not None:
            last = min(period.end, today)
            n = sum(1 for d in data_days.get(ep.episode_id, ()) if period.start <= d <= last)
            periods.append(
                {
                    "episode_id": ep.episode_id,
                    "index": period.index,
                    "start": period.start.isoformat(),
                    "end": period.end.isoformat(),
                    "data_days": n,
                    "of": DEVICE_FULL_DAYS,
                    "open": period.end >= today,
                }
            )
            day = period.end + dt.timedelta(days=1)
    months = [
        {
            "month": start.strftime("%Y-%m"),
            "minutes": t.minutes,
            "interactive": t.interactive,
            "open": month_bounds(today)[0] == start,
        }
        for start, t in sorted(month_totals(ledger).items())
    ]
    return periods, months
