"""The billing view separates reviewing from billing, page errors are HTML with the
navigation, and the audit log filters by prefix and dates, one page at a time (issue 17,
item 5 and parts of item 1): a real browser (Playwright driving Debian's chromium) against
the real gateway, worker, Kafka and PostgreSQL.

One organisation with a billing user and an admin; three patients whose first 30-day
period closed weeks ago: ``full`` (20 data days: 98977), ``few`` (5: 98985), both with
demographics, and ``nodemo`` (5 days, no demographics: its claim is refused). The billing
profile and the fee schedule are loaded by the CLI, as a clinic would. Screenshots go to
<state dir>/artifacts/browser/.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from billing.rules import ClaimLine
from rtm.cli.billing import run_submit
from streams.services.claims import SubmissionResult
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.browser import chromium
from tests.integration.conftest import run_in_thread, running_stack, wait_for
from tests.integration.test_claims_submit import setup_org
from tests.integration.test_pages import (
    ZONE,
    Dash,
    _provision,
    api_headers,
    sign_in,
)
from tests.unit.test_billing_837p import claims_of, pyx12_errors, segments

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")


@dataclass
class View:
    dash: Dash
    month: str
    first: dt.date
    last: dt.date
    full: str
    few: str
    nodemo: str

    @property
    def dsn(self) -> str:
        return self.dash.stack.settings.db.dsn


def at(day: dt.date, hour: int) -> str:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=ZONE).isoformat()


async def _fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def fetch(v: View, sql: str, *args: Any) -> list[asyncpg.Record]:
    return list(run_in_thread(_fetch(v.dsn, sql, *args)))


def exports(v: View) -> int:
    rows = fetch(v, "SELECT count(*) AS n FROM billing_exports WHERE org_id = $1", v.dash.org)
    return int(rows[0]["n"])


def cli_dry_run(v: View) -> SubmissionResult:
    """What `rtm billing submit --org ORG --from FIRST --to LAST --dry-run` would send now
    (the command's own body, not recorded)."""
    result: SubmissionResult = run_in_thread(
        run_submit(
            v.dsn,
            org_id=v.dash.org,
            date_from=v.first,
            date_to=v.last,
            fmt="x12",
            as_of=dt.datetime.now(dt.UTC),
            created_by="test",
            dry_run=True,
        )
    )
    return result


@pytest.fixture(scope="module")
def view(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[View]:
    with running_stack(base_settings) as stack:
        tag = "bv" + uuid.uuid4().hex[:8]
        shots = stack.settings.state_dir / "artifacts" / "browser"
        shots.mkdir(parents=True, exist_ok=True)
        d = Dash(stack, tag, f"{tag}-org", shots=shots)
        run_in_thread(_provision(stack.settings, d))
        f = EventFactory()
        full, few, nodemo = f.patient(1), f.patient(2), f.patient(3)
        start = dt.datetime.now(ZONE).date() - dt.timedelta(days=75)
        end = start + dt.timedelta(days=29)  # period 1 closed weeks ago
        d.post([f.episode_started(p, at=at(start, 8)) for p in (full, few, nodemo)], "feed")
        data = [f.exercise(full, at(start + dt.timedelta(days=i), 18)) for i in range(20)]
        for p in (few, nodemo):
            data += [f.exercise(p, at(start + dt.timedelta(days=i), 18)) for i in range(5)]
        d.post(data, "feed")
        posted = 3 + len(data)

        async def stored() -> bool:  # the worker writes events and ledger in one transaction
            rows = await _fetch(
                stack.settings.db.dsn, "SELECT count(*) AS n FROM events WHERE org_id = $1", d.org
            )
            return int(rows[0]["n"]) == posted

        run_in_thread(wait_for(stored, 90, "the events and the ledger"))
        setup_org(stack.settings.db.dsn, d.org, tmp_path_factory.mktemp("org"), [full, few])
        first = end.replace(day=1)
        last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
        yield View(d, end.strftime("%Y-%m"), first, last, full, few, nodemo)


@pytest.fixture(scope="module")
def browser(view: View) -> Iterator[Any]:
    with chromium() as b:  # after the clinic's set-up
        yield b


# --- reviewing records nothing ------------------------------------------------------------------


def test_every_preview_button_records_nothing(view: View, browser: Any) -> None:
    page = sign_in(browser, view.dash, "billing")
    page.goto(f"/ui/billing?month={view.month}")
    lines = page.inner_text("#lines")
    assert view.full in lines and "98977" in lines and view.few in lines
    before = exports(view)
    buttons = page.locator("form.preview button")
    assert buttons.count() == 3
    assert "test draft, not recorded" in buttons.nth(2).inner_text()
    assert page.locator("form.export").count() == 0  # no "Export and record" any more
    texts = []
    for i in range(buttons.count()):
        with page.expect_download() as download:
            buttons.nth(i).click()
        path = download.value.path()
        assert path is not None and "not-recorded" in download.value.suggested_filename
        texts.append(Path(path).read_text())
    csv, fhir, x12 = texts
    assert csv.startswith("#") and view.full in csv
    assert '"resourceType"' in fhir and view.full in fhir
    assert x12.startswith("ISA") and segments(x12)[0][15] == "T"  # a test interchange
    page.goto(f"/ui/billing?month={view.month}")
    assert exports(view) == before
    assert view.full in page.inner_text("#lines")  # still to bill
    assert "Nothing submitted for this month yet" in page.inner_text("main")
    page.screenshot(path=str(view.dash.shots / "billing-view.png"), full_page=True)
    audited = fetch(
        view,
        "SELECT count(*) AS n FROM audit_log WHERE org_id = $1 AND actor = $2"
        " AND resource = 'GET /ui/billing/preview' AND action = 'read'",
        view.dash.org,
        f"user:{view.dash.user('billing')}",
    )
    assert audited[0]["n"] == 3  # each look is a read, audited
    page.close()


def test_a_submit_without_the_confirmation_records_nothing(view: View, browser: Any) -> None:
    page = sign_in(browser, view.dash, "billing")
    page.goto(f"/ui/billing?month={view.month}")
    csrf = page.input_value("form.signout input[name=csrf_token]")
    before = exports(view)
    assert cli_dry_run(view).claims  # there is something a submit would record
    bare = page.request.post(
        "/ui/billing/submit", form={"csrf_token": csrf, "month": view.month}, max_redirects=0
    )
    assert bare.status == 303 and bare.headers["location"].endswith(
        f"/ui/billing/submit?month={view.month}"
    )
    stale = page.request.post(
        "/ui/billing/submit",
        form={"csrf_token": csrf, "month": view.month, "confirm": "0" * 32},
        max_redirects=0,
    )
    assert stale.status == 409 and "changed since you reviewed" in stale.text()
    assert exports(view) == before
    # the confirmation step itself, then cancel
    with page.expect_navigation():
        page.click("#review-submit")
    assert "/ui/billing/submit" in page.url
    assert view.full in page.inner_text("#claims")
    with page.expect_navigation():
        page.click("#confirm-submit a")
    assert page.url.endswith(f"/ui/billing?month={view.month}")
    assert exports(view) == before
    page.close()


def test_a_confirmed_submit_records_what_rtm_billing_submit_would_and_shows_it(
    view: View, browser: Any
) -> None:
    expected = cli_dry_run(view)
    want = {(c.claim_id, ln.model_dump_json()) for c in expected.claims for ln in c.record}
    assert {c.first.patient_id for c in expected.claims} == {view.full, view.few}
    assert [(p.patient_id, p.field) for p in expected.problems] == [(view.nodemo, "demographics")]

    page = sign_in(browser, view.dash, "billing")
    page.goto(f"/ui/billing?month={view.month}")
    page.click("#review-submit")
    claims = page.inner_text("#claims")
    assert view.full in claims and view.few in claims and "98977" in claims
    assert "medicare" in page.inner_text("#summary") and "$0.00" not in page.inner_text("#summary")
    problems = page.inner_text("#problems")
    assert view.nodemo in problems and "demographics" in problems
    page.screenshot(path=str(view.dash.shots / "billing-confirm.png"), full_page=True)
    with page.expect_navigation():
        page.click("#confirm-submit button")
    assert "submitted=" in page.url
    submission_id = int(page.url.rsplit("submitted=", 1)[1])
    assert f"Submission #{submission_id} recorded" in page.inner_text("#submitted-now")
    assert f"#{submission_id}" in page.inner_text("#submitted")
    lines_left = page.locator("#lines")
    if lines_left.count():
        assert view.full not in lines_left.inner_text() and view.few not in lines_left.inner_text()
    page.screenshot(path=str(view.dash.shots / "billing-submitted.png"), full_page=True)

    # recorded: exactly the claims and lines `rtm billing submit` would have sent
    got = {
        (r["claim_id"], r["line"])
        for r in fetch(
            view,
            "SELECT claim_id, line::text AS line FROM billing_export_lines WHERE export_id = $1",
            submission_id,
        )
    }
    assert {(c, ClaimLine.model_validate_json(j)) for c, j in got} == {
        (c, ClaimLine.model_validate_json(j)) for c, j in want
    }
    [head] = fetch(
        view,
        "SELECT format, usage, control_number, claim_count, created_by, file_body"
        " FROM billing_exports WHERE export_id = $1 AND org_id = $2",
        submission_id,
        view.dash.org,
    )
    assert (head["format"], head["usage"], head["claim_count"]) == ("x12", "P", 2)
    assert head["control_number"] > 0 and head["created_by"] == f"user:{view.dash.user('billing')}"
    text = head["file_body"]
    assert pyx12_errors(text) == [] and segments(text)[0][15] == "P"
    assert {c["clm"][1] for c in claims_of(text)} == {c.claim_id for c in expected.claims}  # type: ignore[index]
    with page.expect_download() as download:
        page.click("#submitted-now a")
    path = download.value.path()
    assert path is not None and Path(path).read_text() == text
    # afterwards the CLI sees them submitted: nothing left but the refused claim
    after = cli_dry_run(view)
    assert after.claims == [] and [p.patient_id for p in after.problems] == [view.nodemo]
    [audit] = fetch(
        view,
        "SELECT patient_ids FROM audit_log WHERE org_id = $1 AND action = 'export'"
        " AND resource = 'POST /ui/billing/submit'",
        view.dash.org,
    )
    assert sorted(audit["patient_ids"]) == sorted([view.full, view.few])
    page.close()


# --- HTML error pages ---------------------------------------------------------------------------


def test_page_errors_are_html_with_the_navigation_and_the_api_keeps_json(
    view: View, browser: Any
) -> None:
    page = sign_in(browser, view.dash, "admin")
    for url, status, says in (
        ("/ui/worklist?bogus=1", 422, "bogus"),
        ("/ui/billing?month=2026-13", 422, "month"),
        ("/ui/no-such-page", 404, "no page at this address"),
    ):
        resp = page.goto(url)
        assert resp is not None and resp.status == status, url
        assert resp.headers["content-type"].startswith("text/html")
        assert says in page.inner_text("main").lower(), url
        nav = page.inner_text("nav[aria-label=Main]")
        assert "Audit log" in nav and "Billing" in nav
    page.screenshot(path=str(view.dash.shots / "error-404.png"), full_page=True)
    page.close()
    billing = sign_in(browser, view.dash, "billing")
    resp = billing.goto("/ui/audit")
    assert resp is not None and resp.status == 403
    assert "Billing" in billing.inner_text("nav[aria-label=Main]")
    billing.close()
    api = httpx.get(
        f"{view.dash.stack.url}/v1/billing/conventions?bogus=1",
        headers=api_headers(view.dash, "billing"),
        timeout=30,
    )
    assert api.status_code == 422 and api.json()["detail"][0]["loc"] == ["query", "bogus"]


# --- the audit log: prefixes, dates, pages ------------------------------------------------------


def test_the_audit_log_filters_by_prefix_and_dates_and_pages(view: View, browser: Any) -> None:
    headers = api_headers(view.dash, "billing")
    for _ in range(60):  # 60 audited reads of `few`'s billing progress
        resp = httpx.get(
            f"{view.dash.stack.url}/v1/patients/{view.few}/billing", headers=headers, timeout=30
        )
        assert resp.status_code == 200
    page = sign_in(browser, view.dash, "admin")
    actor = f"user:{view.dash.tag}-bil"  # a prefix of the billing user's actor
    page.goto(f"/ui/audit?actor={actor}")
    rows = page.locator("#audit tbody tr")
    assert rows.count() == 50  # one page
    assert all(f"user:{view.dash.user('billing')}" in r for r in rows.all_inner_texts())
    first_page = rows.evaluate_all("rows => rows.map(r => r.dataset.audit)")
    assert page.locator("#newer").count() == 0  # the newest page
    with page.expect_navigation():
        page.click("#older")
    ids = "rows => rows.map(r => r.dataset.audit)"  # the rows' times show their age
    second_page = page.locator("#audit tbody tr").evaluate_all(ids)
    assert second_page and not set(second_page) & set(first_page)
    with page.expect_navigation():
        page.click("#newer")
    assert page.locator("#audit tbody tr").evaluate_all(ids) == first_page

    prefix = view.full.rsplit("-", 1)[0] + "-p"  # every patient of this test
    page.goto(f"/ui/audit?patient={prefix}&action=rea")
    text = page.inner_text("#audit")
    assert view.few in text and "No rows" not in text
    assert all(
        r.split("\t")[3].startswith("rea")
        for r in page.locator("#audit tbody tr").all_inner_texts()
    )
    today = dt.datetime.now(dt.UTC).date()
    tomorrow, yesterday = today + dt.timedelta(days=1), today - dt.timedelta(days=1)
    page.goto(f"/ui/audit?actor={actor}&from={tomorrow}&to={tomorrow}")
    assert "No rows" in page.inner_text("#audit")
    page.goto(f"/ui/audit?actor={actor}&from={yesterday}&to={today}")
    assert page.locator("#audit tbody tr").count() == 50
    page.screenshot(path=str(view.dash.shots / "audit-paged.png"), full_page=True)
    resp = page.goto(f"/ui/audit?from={today}&to={yesterday}")
    assert resp is not None and resp.status == 422
    page.close()
    # every view of the page is itself audited, with its filters and the patients it showed
    views = fetch(
        view,
        "SELECT patient_ids, detail->>'patient' AS patient FROM audit_log WHERE org_id = $1"
        " AND actor = $2 AND action = 'read_audit' AND resource = 'GET /ui/audit'",
        view.dash.org,
        f"user:{view.dash.user('admin')}",
    )
    assert len(views) == 6  # the 422 (to before from) is refused before anything is read
    assert any(r["patient"] == prefix and view.few in r["patient_ids"] for r in views)
