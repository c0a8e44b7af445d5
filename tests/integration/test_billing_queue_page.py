"""The biller's month-end queue (issue 20 item 6, its last "Done when" line): in a real
browser (Playwright driving Debian's chromium) against the real gateway, worker, Kafka and
PostgreSQL, the biller filters the queue to blocked, reads the codes in words, overrides
one line with a reason, confirms a submission, and sees the claim move to Submitted;
nothing is recorded before the confirmation. The clinic is the override page's (``full``
consented, ``few`` without consent while the organisation sends consents: blocked).
Screenshots at 1440x900 and 390x844 in <state dir>/artifacts/browser/."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_billing_override_page import browser, view
from tests.integration.test_billing_view import View, exports, fetch
from tests.integration.test_claims_submit import rtm
from tests.integration.test_pages import DESKTOP, PHONE, SIDEWAYS, sign_in
from tests.unit.test_billing_837p import segments

pytestmark = pytest.mark.integration
__all__ = ["browser", "view"]  # the fixtures, imported

REASON = "consent signed on paper at the first visit, scanned today"


def rows(page: Any) -> list[list[str]]:
    """The queue's rows as shown: [status, claim, line, readiness, checks, action]."""
    return [
        [td.strip() for td in tr.locator("td").all_inner_texts()]
        for tr in page.locator("#queue tbody tr").all()
    ]


def test_the_biller_filters_to_blocked_overrides_a_line_confirms_and_the_claim_is_submitted(
    view: View, browser: Any
) -> None:
    page = sign_in(browser, view.dash, "billing")
    page.set_viewport_size(DESKTOP)
    page.goto(f"/ui/billing?month={view.month}")
    page.click("#open-queue")
    page.wait_for_url(f"**/ui/billing/queue?month={view.month}")

    # filter to blocked through the form
    page.select_option("#q-status", "blocked")
    page.click("#queue-filter button")
    page.wait_for_url("**status=blocked*")
    blocked = rows(page)
    assert blocked and all(r[0] == "Blocked" for r in blocked)
    assert all(view.few in r[2] for r in blocked) and view.full not in page.inner_text("#queue")
    # the codes in words, the blocking one marked
    assert "No consent on file for the episode CONSENT_MISSING (blocks)" in blocked[0][4]
    assert exports(view) == 0  # looking records nothing
    page.screenshot(path=str(view.dash.shots / "billing-queue-blocked-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.reload()
    assert int(page.evaluate(SIDEWAYS)) == 0  # no sideways scroll at 390 px
    page.screenshot(path=str(view.dash.shots / "billing-queue-blocked-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)

    # override one line with a reason (POST): recorded, audited, the line now Ready
    line = blocked[0][2].split("\n")[0].split(" GP")[0].strip()
    form = page.locator("form.override").first
    form.locator("input[name=reason]").fill(REASON)
    form.locator("button").click()
    page.wait_for_url("**/ui/billing/queue?month=*status=blocked")
    assert len(rows(page)) == len(blocked) - 1
    page.goto(f"/ui/billing/queue?month={view.month}&status=ready")
    ready = {r[2].split("\n")[0]: r for r in rows(page)}
    mine = next(r for text, r in ready.items() if text.startswith(line))
    assert "override #" in mine[3] and mine[1] == "—"
    [audit] = fetch(
        view,
        "SELECT actor, detail::text AS d FROM audit_log"
        " WHERE org_id = $1 AND action = 'billing.override'",
        view.dash.org,
    )
    assert audit["actor"] == f"user:{view.dash.user('billing')}"
    assert json.loads(audit["d"])["reason"] == REASON
    assert exports(view) == 0  # an override is not a submission

    # the confirmation step records nothing; confirming submits through the real path
    page.click("#review-submit")
    page.wait_for_url(f"**/ui/billing/submit?month={view.month}")
    assert view.few in page.inner_text("#claims")
    assert exports(view) == 0
    page.locator("#confirm-submit button").click()
    page.wait_for_url("**/ui/billing?month=*submitted=*")
    assert exports(view) == 1

    # back in the queue: the claim moved to Submitted, with its ISA13 and file
    page.goto(f"/ui/billing/queue?month={view.month}&status=submitted")
    submitted = rows(page)
    moved = [r for r in submitted if r[2].startswith(line)]
    assert moved and moved[0][0] == "Submitted" and moved[0][1] not in ("", "—")
    assert {view.few, view.full} <= {r[2].split()[0] for r in submitted}
    history = page.inner_text("#submissions")
    [control] = [
        r["control_number"]
        for r in fetch(
            view, "SELECT control_number FROM billing_exports WHERE org_id = $1", view.dash.org
        )
    ]
    assert f"ISA13 {control:09d}" in history
    body = page.request.get(page.locator("#submissions a").first.get_attribute("href")).text()
    assert int(segments(body)[0][13]) == control
    page.goto(f"/ui/billing/queue?month={view.month}&status=blocked")
    assert "No lines match the filter" in page.inner_text("main")
    page.screenshot(
        path=str(view.dash.shots / "billing-queue-submitted-desktop.png"), full_page=True
    )
    page.set_viewport_size(PHONE)
    page.goto(f"/ui/billing/queue?month={view.month}")
    assert int(page.evaluate(SIDEWAYS)) == 0
    page.screenshot(path=str(view.dash.shots / "billing-queue-submitted-phone.png"), full_page=True)

    reads = fetch(
        view,
        "SELECT count(*) AS n FROM audit_log WHERE org_id = $1 AND resource = 'GET /ui/billing/queue'",
        view.dash.org,
    )
    assert int(reads[0]["n"]) >= 5  # every look at the queue is audited
    page.close()


def cli(view: View, *args: str) -> Any:
    """`rtm ...` against the stack's database, off the browser's event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(rtm, view.dsn, *args).result()


def test_a_loaded_835_moves_a_claim_to_denied_with_its_outcome_and_only_billing_staff_see_it(
    view: View, browser: Any, tmp_path: Path
) -> None:
    """``full``'s claim (submitted above, or here by the CLI when run alone) denied by an
    835 with CO-50: Denied in the queue, and the denial named escaped (no plan-of-care gate
    fired: the organisation sends no plans of care)."""
    res = cli(
        view,
        "billing",
        "submit",
        "--org",
        view.dash.org,
        "--from",
        str(view.first),
        "--to",
        str(view.last),
        "--out",
        str(tmp_path / "f.x12"),
    )
    assert res.exit_code == 0, res.output
    [line] = fetch(
        view,
        "SELECT claim_id, cpt, date_of_service, checks FROM billing_export_lines"
        " WHERE org_id = $1 AND patient_id = $2",
        view.dash.org,
        view.full,
    )
    era = tmp_path / "era.835"
    era.write_text(
        "ISA*00*          *00*          *ZZ*04412          *ZZ*SUBM12345      *261201*1200*^"
        "*00501*000000902*0*P*:~GS*HP*04412*SUBM12345*20261201*1200*902*X*005010X221A1~"
        f"ST*835*0001~CLP*{line['claim_id']}*4*42*0**MB*ICN-902~"
        f"SVC*HC:{line['cpt']}:GP*42*0**1~DTM*472*{line['date_of_service']:%Y%m%d}~"
        "CAS*CO*50*42~SE*6*0001~GE*1*902~IEA*1*000000902~"
    )
    res = cli(view, "billing", "escaped-denials", "--remit", str(era), "--org", view.dash.org)
    assert res.exit_code == 0 and res.stdout.strip().endswith(",escaped"), res.output
    assert "POC_UNKNOWN" in line["checks"]

    page = sign_in(browser, view.dash, "billing")
    page.goto(f"/ui/billing/queue?month={view.month}&status=denied")
    [denied] = rows(page)
    assert denied[0] == "Denied CO-50 (escaped)" and denied[1] == line["claim_id"]
    assert denied[2].startswith(f"{view.full} ")
    denials = page.inner_text("#denials")
    assert "CO-50" in denials and "escaped" in denials and view.full in denials
    page.goto(f"/ui/billing?month={view.month}")  # the billing view names them too
    assert "escaped" in page.inner_text("#denials")
    resp = page.goto(f"/ui/billing/queue?month={view.month}&status=lost")
    assert resp is not None and resp.status == 422
    page.close()

    clinician = sign_in(browser, view.dash, "c1")
    resp = clinician.goto(f"/ui/billing/queue?month={view.month}")
    assert resp is not None and resp.status == 403
    assert view.full not in clinician.inner_text("main")
    clinician.close()
