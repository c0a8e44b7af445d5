"""The confirmation page lists the lines the readiness checks block, each with its codes,
and lets billing staff override one with a reason (issue 20 item 4): a real browser
(Playwright driving Debian's chromium) against the real gateway, worker, Kafka and
PostgreSQL. The events (consent of one patient only) arrive through the gateway, as an
integration would send them; the billing profile and fees are loaded by the CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import EventFactory
from tests.integration.browser import chromium
from tests.integration.conftest import run_in_thread, running_stack, wait_for
from tests.integration.test_billing_view import View, _fetch, at, fetch
from tests.integration.test_claims_submit import setup_org
from tests.integration.test_pages import ZONE, Dash, _provision, sign_in
from tests.unit.test_billing_837p import claims_of, pyx12_errors

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def view(base_settings: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[View]:
    """``full`` consented (ready); ``few`` has no consent while the organisation sends
    consents: its line is blocked (CONSENT_MISSING). ``nodemo`` is unused here."""
    with running_stack(base_settings) as stack:
        tag = "ov" + uuid.uuid4().hex[:8]
        shots = stack.settings.state_dir / "artifacts" / "browser"
        shots.mkdir(parents=True, exist_ok=True)
        d = Dash(stack, tag, f"{tag}-org", shots=shots)
        run_in_thread(_provision(stack.settings, d))
        f = EventFactory()
        full, few = f.patient(1), f.patient(2)
        start = dt.datetime.now(ZONE).date() - dt.timedelta(days=75)
        end = start + dt.timedelta(days=29)
        events = [f.episode_started(p, at=at(start, 8)) for p in (full, few)]
        events += [
            f.exercise(p, at(start + dt.timedelta(days=i), 18))
            for p in (full, few)
            for i in range(20)
        ]
        events.append(
            {
                "event_id": f"{full}-consent",
                "schema_version": 1,
                "type": "consent.recorded",
                "patient_id": full,
                "occurred_at": at(start - dt.timedelta(days=1), 9),
                "episode_id": f"{full}-ep1",
                "method": "written",
                "scope": "rtm",
            }
        )
        d.post(events, "feed")

        async def stored() -> bool:
            rows = await _fetch(
                stack.settings.db.dsn, "SELECT count(*) AS n FROM events WHERE org_id = $1", d.org
            )
            return int(rows[0]["n"]) == len(events)

        run_in_thread(wait_for(stored, 90, "the events and the ledger"))
        setup_org(stack.settings.db.dsn, d.org, tmp_path_factory.mktemp("org"), [full, few])
        first = end.replace(day=1)
        last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
        yield View(d, end.strftime("%Y-%m"), first, last, full, few, "")


@pytest.fixture(scope="module")
def browser(view: View) -> Iterator[Any]:
    with chromium() as b:  # after the clinic's set-up
        yield b


def test_a_blocked_line_is_shown_refused_then_overridden_with_a_reason_and_submitted(
    view: View, browser: Any
) -> None:
    page = sign_in(browser, view.dash, "billing")
    page.goto(f"/ui/billing/submit?month={view.month}")
    blocked = page.inner_text("#blocked")
    assert view.few in blocked and "CONSENT_MISSING" in blocked
    assert view.full not in blocked
    claims = page.inner_text("#claims")
    assert view.full in claims and view.few not in claims  # the blocked line is not sent
    page.screenshot(path=str(view.dash.shots / "billing-blocked.png"), full_page=True)

    # a reason shorter than 10 characters: the server refuses it (the browser's own
    # minlength check removed, as a script posting the form would)
    form = page.locator("form.override").first
    form.locator("input[name=reason]").evaluate("el => el.removeAttribute('minlength')")
    form.locator("input[name=reason]").fill("because")
    form.locator("button").click()
    assert "at least 10 characters" in page.inner_text("main")
    assert (
        fetch(view, "SELECT 1 FROM billing_line_overrides WHERE org_id = $1", view.dash.org) == []
    )

    page.goto(f"/ui/billing/submit?month={view.month}")
    reason = "consent signed on paper at the first visit"
    page.locator("form.override").first.locator("input[name=reason]").fill(reason)
    page.locator("form.override").first.locator("button").click()
    page.wait_for_url(f"**/ui/billing/submit?month={view.month}")
    assert page.inner_text("#blocked") == "None."
    assert view.few in page.inner_text("#claims")  # let out: in this submission
    page.locator("#confirm-submit button").click()
    page.wait_for_url("**/ui/billing?month=*submitted=*")

    rows = fetch(
        view,
        "SELECT s.file_body, l.patient_id, l.readiness, l.checks, l.override_id"
        " FROM billing_export_lines l JOIN billing_exports s USING (export_id)"
        " WHERE l.org_id = $1",
        view.dash.org,
    )
    text = rows[0]["file_body"]
    assert pyx12_errors(text) == []
    assert sorted(c["ref"]["EA"] for c in claims_of(text)) == sorted([view.full, view.few])  # type: ignore[index]
    mine = {r["patient_id"]: r for r in rows}
    assert mine[view.few]["readiness"] == "blocked" and mine[view.few]["override_id"]
    assert "CONSENT_MISSING" in mine[view.few]["checks"]
    assert mine[view.full]["readiness"] == "warn" and mine[view.full]["override_id"] is None

    [row] = fetch(
        view,
        "SELECT actor, resource, patient_ids, detail::text AS d FROM audit_log"
        " WHERE org_id = $1 AND action = 'billing.override'",
        view.dash.org,
    )
    assert row["actor"] == f"user:{view.dash.user('billing')}"
    assert row["resource"] == "POST /ui/billing/override" and row["patient_ids"] == [view.few]
    detail = json.loads(row["d"])
    assert detail["reason"] == reason and detail["codes"] == ["CONSENT_MISSING"]
    page.close()
