"""The manager's pages (issue 19 item 5; users ``manager`` and ``admin``):

- ``GET /ui/outcomes``: the organisation's outcome report by pathway version, clinician and
  body region (docs/pathways-and-outcomes.md, Report), each rate with its counts beside it,
  a rate without a denominator shown as "—" with the reason, and the MCID rate by adherence
  tertile;
- ``GET /ui/outcomes/export?format=csv|ndjson``: the same rows as a file (a read);
- ``GET /ui/outcomes/diff`` and ``POST /ui/outcomes/diff``: a draft pathway version (JSON,
  pasted or loaded from a file into the form) replayed over the organisation's episodes
  (``rtm pathways diff``): which episodes would change and how, and the counts per
  decision. POST because it carries a body; nothing is stored (no task, alert or bill).

Every view is audited as a read naming the patients whose episodes it stands on. The rows
come from ``streams.services.outcomes``."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

import pydantic
from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response

from pathways.model import parse_pathway
from pathways.offline import render as render_line
from pathways.outcomes import GroupBy
from streams.access import Principal
from streams.db.access import audit_principal
from streams.db.alerts import db_now
from streams.http.auth import form_fields
from streams.http.deps import AuthenticateDep, PrincipalDep, StoreDep
from streams.http.pages.common import PageError, need, page_router, page_user, problems_of, render
from streams.services.outcomes import (
    MAX_FOLD_EVENTS,
    REPORT_BY,
    OutcomeReport,
    TooManyEvents,
    context,
    default_source,
    draft_diff,
    outcome_report,
)

router = page_router()
ExportFormat = Literal["csv", "ndjson"]
MAX_DRAFT = 64_000  # characters of a draft version's JSON
TITLES: dict[GroupBy, str] = {
    "pathway": "By pathway version",
    "clinician": "By clinician",
    "body_region": "By body region",
    "org": "The organisation",
}
CSV_COLUMNS = (
    "by",
    "group",
    "episodes",
    "with_scores",
    "mcid_rate",
    "mcid_reached",
    "median_days_to_discharge",
    "discharged",
    "resolved_within_3_visits_rate",
    "resolved_within_3_visits",
    "ended_with_scores",
    "dropout_rate",
    "dropped_out",
    *(f"tertile{i}_{f}" for i in (1, 2, 3) for f in ("mcid_rate", "mcid_reached", "with_scores")),
)


async def _report(request: Request, authenticate: Any, store: Any, resource: str) -> Any:
    who = await page_user(request, authenticate)
    need(who, "read_outcomes")
    async with store.acquire() as conn:
        report = await outcome_report(conn, who.org_id, await db_now(conn))
        await audit_principal(conn, who, "read", resource, report.patient_ids)
    return who, report


def too_many(exc: TooManyEvents) -> PageError:
    return PageError(
        503,
        "Replay not available here",
        f"The organisation has {exc.count:,} pathway events; a replay on this page folds at"
        f" most {MAX_FOLD_EVENTS:,}. Export the events and run `rtm pathways diff` offline.",
    )


@router.get("/outcomes", response_class=HTMLResponse)
async def outcomes_page(
    request: Request, authenticate: AuthenticateDep, store: StoreDep
) -> HTMLResponse:
    """The report by pathway version, clinician and body region."""
    who, report = await _report(request, authenticate, store, "GET /ui/outcomes")
    return render(
        "outcomes.html",
        who=who,
        nav="outcomes",
        as_of=report.as_of.strftime("%Y-%m-%d %H:%M %Z"),
        sections=[(by, TITLES[by], report.groups[by]) for by in REPORT_BY],
        pending=report.pending,
    )


def csv_row(row: dict[str, Any]) -> list[object]:
    """One report object as the export's columns (a null rate is an empty cell)."""
    resolved, ended = row["resolved_within_3_visits_n"]
    tertiles = [
        (rate, n, d)
        for rate, (n, d) in zip(
            row["mcid_rate_by_adherence_tertile"], row["mcid_by_adherence_tertile_n"], strict=True
        )
    ]
    values = [
        row["by"],
        row["group"],
        row["episodes"],
        row["with_scores"],
        row["mcid_rate"],
        row["mcid_reached_n"],
        row["median_days_to_discharge"],
        row["discharged_n"],
        row["resolved_within_3_visits_rate"],
        resolved,
        ended,
        row["dropout_rate"],
        row["dropped_out_n"],
        *(x for t in tertiles for x in t),
    ]
    return ["" if v is None else v for v in values]


def export_text(report: OutcomeReport, fmt: ExportFormat) -> str:
    rows = [r for by in REPORT_BY for r in report.groups[by]]
    if fmt == "ndjson":
        return "".join(render_line(r) + "\n" for r in rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_row(r) for r in rows)
    return out.getvalue()


@router.get("/outcomes/export")
async def outcomes_export(
    request: Request,
    authenticate: AuthenticateDep,
    store: StoreDep,
    fmt: Annotated[ExportFormat, Query(alias="format")],
) -> Response:
    """The report's rows as CSV or NDJSON (``rtm outcomes report``'s objects): a read."""
    resource = f"GET /ui/outcomes/export?format={fmt}"
    _, report = await _report(request, authenticate, store, resource)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    day = report.as_of.date().isoformat()
    return Response(
        export_text(report, fmt),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="rtm-outcomes-{day}.{fmt}"',
            "Cache-Control": "no-store",
        },
    )


# --- the pathway diff -------------------------------------------------------------------


async def _diff_form(who: Principal, store: Any, **more: Any) -> dict[str, Any]:
    async with store.acquire() as conn:
        ctx = await context(conn, who.org_id, await db_now(conn))
    return {
        "who": who,
        "nav": "outcomes",
        "versions": sorted(ctx.versions),
        "source": more.pop("source", None) or default_source(ctx.versions),
        "draft": "",
        "problems": [],
        "result": None,
        "csrf": who.csrf_token,
        **more,
    }


@router.get("/outcomes/diff", response_class=HTMLResponse)
async def diff_page(
    request: Request, authenticate: AuthenticateDep, store: StoreDep
) -> HTMLResponse:
    """The form: a draft version's JSON and the version to compare it with."""
    who = await page_user(request, authenticate)
    need(who, "read_outcomes")
    return render("outcomes_diff.html", **await _diff_form(who, store))


def _item(part: str, x: dict[str, Any]) -> str:
    if part == "tasks":
        done = f", done {x['done_on']}" if x["done_on"] else ""
        return f"{x['kind'].replace('_', ' ')} due {x['due_on']} ({x['status']}{done})"
    return f"{x['decision'].replace('_', ' ')} on {x['on']} ({x['reason']})"


def diff_view(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The diff's rows as the page shows them: the changed episodes, then the summary."""
    *changed, summary = rows
    episodes = [
        {
            "episode_id": r["episode_id"],
            **{
                side: [_item(part, x) for part in ("decisions", "tasks") for x in r[side][part]]
                for side in ("only_from", "only_to")
            },
        }
        for r in changed
    ]
    return {"episodes": episodes, "summary": summary}


@router.post("/outcomes/diff", response_class=HTMLResponse)
async def diff_form(request: Request, who: PrincipalDep, store: StoreDep) -> HTMLResponse:
    """Replay the organisation's episodes under the chosen version and the draft; nothing
    is stored. A draft that is not a pathway version comes back with the reasons, kept in
    the form."""
    if who.kind != "user":
        raise PageError(403, "Not for machine keys")
    need(who, "read_outcomes")
    fields = form_fields(await request.body())
    text, source = fields.get("draft", ""), fields.get("source", "")
    if len(text) > MAX_DRAFT:
        raise PageError(413, "Too large", f"A draft version is at most {MAX_DRAFT} characters.")
    try:
        draft = parse_pathway(text)
    except pydantic.ValidationError as exc:
        problems = problems_of(list(exc.errors(include_url=False)))
        page = await _diff_form(who, store, source=source, draft=text, problems=problems)
        return render("outcomes_diff.html", 422, **page)
    async with store.acquire() as conn:
        try:
            rows, patients = await draft_diff(conn, who.org_id, await db_now(conn), source, draft)
        except KeyError:
            raise PageError(422, "Unknown version", f"No version {source} to compare.") from None
        except TooManyEvents as exc:
            raise too_many(exc) from None
        detail = {"from": source, "to": draft.key}
        await audit_principal(conn, who, "read", "POST /ui/outcomes/diff", patients, detail)
    page = await _diff_form(who, store, source=source, draft=text)
    page |= {"result": diff_view(rows), "target": draft.key}
    return render("outcomes_diff.html", **page)
