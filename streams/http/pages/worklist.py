"""``/ui/worklist``: "My patients" by need, from the stream's rollups
(streams/db/rollups.py), one page of ``PAGE_SIZE``, with filters; above them "My tasks",
the care-pathway tasks still to do (overdue first) with the step-up reason, from the stored
outcome rows (streams/db/outcome_rows.py)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from alerts.models import ALERT_KINDS, AlertKind, Severity
from alerts.rollup import SNOOZED_TIER, TIER_NAMES
from billing.rules import billing_progress, patient_local_date
from streams.db.access import audit_principal
from streams.db.alerts import db_now
from streams.db.ledger import load_states
from streams.db.outcome_rows import open_tasks
from streams.db.rollups import tier_counts
from streams.db.rollups import worklist_page as rows_by_need
from streams.http.deps import AuthenticateDep, ClockDep, StoreDep
from streams.http.pages.common import (
    SEVERITIES,
    clinic_time,
    clinic_zone,
    elapsed,
    need,
    page_router,
    page_user,
    render,
)

KINDS: tuple[AlertKind, ...] = ALERT_KINDS
PAGE_SIZE = 50
TASKS_SHOWN = 50  # "my tasks": the care-pathway tasks still to do, overdue first

router = page_router()


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


# A pain change counts from the NPRS's minimal clinically important difference (2 points,
# the pain_increase rule's delta): 9 after a week of 10 is not "falling".
PAIN_MCID = 2


def pain_text(r: dict[str, Any]) -> str:
    """Latest pain against its baseline (median of the 7 days before): rising or falling
    only by at least the MCID, else steady."""
    if r["latest_pain"] is None:
        return "—"
    base = r["pain_baseline"]
    if base is None:
        return f"{r['latest_pain']}/10"
    delta = r["latest_pain"] - base
    trend = "rising" if delta >= PAIN_MCID else ("falling" if delta <= -PAIN_MCID else "steady")
    return f"{r['latest_pain']}/10, {trend} (baseline {base:g})"


@router.get("/worklist", response_class=HTMLResponse)
async def worklist_page(
    request: Request,
    authenticate: AuthenticateDep,
    store: StoreDep,
    clock: ClockDep,
    severity: Severity | Literal[""] = "",
    kind: AlertKind | Literal[""] = "",
    status: Literal["open", "all"] = "open",
    q: Annotated[str, Query(max_length=64)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    """My patients by need (the rollups the stream keeps; one page of PAGE_SIZE)."""
    who = await page_user(request, authenticate)
    need(who, "read_clinical")
    async with store.acquire() as conn:
        now = await db_now(conn)
        # snoozes end by the injected clock (the API's worklist reads the same)
        at = clock.now()
        rows = await rows_by_need(
            conn,
            who.scope(),
            now=at,
            severity=severity or None,
            kind=kind or None,
            only_open=status == "open",
            search=q.strip() or None,
            limit=PAGE_SIZE + 1,
            offset=(page - 1) * PAGE_SIZE,
        )
        more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
        counts = await tier_counts(conn, who.scope(), at)
        zone = await clinic_zone(conn, who)
        ledgers = await load_states(conn, who.org_id, [r["patient_id"] for r in rows])
        tasks = await open_tasks(conn, who.scope(), TASKS_SHOWN)
        await audit_principal(
            conn,
            who,
            "read",
            "GET /ui/worklist",
            sorted({r["patient_id"] for r in [*rows, *tasks]}),
            {"count": len(rows), "tasks": len(tasks), "query": dict(request.query_params)},
        )
    for t in tasks:
        t["step_up_text"] = step_up_text(t["step_up_reason"])
    for r in rows:
        r["waiting"] = elapsed(r["eff_since"], now, absent="—")
        r["waiting_since"] = clinic_time(r["eff_since"], now, zone, absent="")
        r["last_activity_text"] = clinic_time(r["last_activity_at"], now, zone, absent="")
        r["snoozed_text"] = _snoozed_text(r, at, zone)
        r["last_activity"] = elapsed(
            r["last_activity_at"],
            now,
            absent="no activity",
            within_hour="within the hour",
            suffix=" ago",
        )
        latest = r["spark"][-1] if r["spark"] else None
        r["adherence_text"] = "—" if latest is None else f"{latest:.0%}"
        r["sparkline"] = sparkline(r["spark"])
        r["pain_text"] = pain_text(r)
        ledger = ledgers.get(r["patient_id"])
        progress = (
            billing_progress(ledger, patient_local_date(ledger, now))
            if ledger is not None
            else None
        )
        r["progress"] = (
            progress.period.codes if progress and progress.period else "no active period"
        )
    f = {"severity": severity, "kind": kind, "status": status, "q": q}
    return render(
        "worklist.html",
        who=who,
        nav="worklist",
        live=True,
        since=now.isoformat(),
        rows=rows,
        tasks=tasks,
        # SNOOZED_TIER follows the tiers: every open alert snoozed
        tiers=[
            (name, counts[i]) for i, name in enumerate((*TIER_NAMES, "snoozed")) if counts.get(i)
        ],
        f=f,
        severities=SEVERITIES,
        kinds=KINDS,
        prev_url=_page_url(f, page - 1) if page > 1 else None,
        next_url=_page_url(f, page + 1) if more else None,
    )


def step_up_text(reason: str | None) -> str | None:
    """The step-up's reason in words (``no_mcid_pain_7``: the version's pain threshold)."""
    if reason is None:
        return None
    m = re.fullmatch(r"no_mcid_pain_(\d+)", reason)
    if m is None:
        return reason.replace("_", " ")
    return f"no MCID at week 4 and pain ≥ {m.group(1)}"


def _snoozed_text(r: dict[str, Any], now: dt.datetime, zone: ZoneInfo) -> str | None:
    """ "snoozed until …" for a patient whose open alerts are all snoozed, "n snoozed until
    …" when only some are; None without a snooze still on."""
    until = r["snoozed_until"]
    if until is None:
        return None
    when = clinic_time(until, now, zone)
    if r["eff_tier"] == SNOOZED_TIER:
        return f"snoozed until {when}"
    return f"some snoozed until {when}"


def _page_url(filters: dict[str, str], page: int) -> str:
    """The worklist with these filters (the ones set) on another page."""
    return "/ui/worklist?" + urlencode({**{k: v for k, v in filters.items() if v}, "page": page})
