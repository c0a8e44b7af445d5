"""The dashboard in a real browser (Playwright driving Debian's chromium) against the real
gateway, worker, Kafka and PostgreSQL.

One organisation with two clinicians (c1 treats pCrit, pHigh and pCalm; c2 treats pOther),
a billing user and an admin. c1 signs in with the keyboard, sees the worklist in need order
(the order of GET /v1/worklist), opens a patient with the keyboard, acknowledges an alert
with a note and sees it leave the open list, and sees a newly posted red flag appear
without a reload; c2 sees none of c1's patients (404 on their page); billing previews
without recording anything (tests/integration/test_billing_view.py submits); the admin
finds the reads in the audit log. Screenshots of each page go to
<state dir>/artifacts/browser/.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from streams.access import CSRF_HEADER, SESSION_COOKIE, hash_password, new_key
from streams.db import access as db
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.browser import chromium
from tests.integration.conftest import Stack, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "a long demo password"
ZONE = ZoneInfo("America/Chicago")


@dataclass
class Dash:
    stack: Stack
    tag: str
    org: str
    keys: dict[str, str] = field(default_factory=dict)
    patients: dict[str, str] = field(default_factory=dict)
    shots: Path = Path(".")

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def post(self, events: list[dict[str, Any]], key: str) -> dict[str, Any]:
        resp = httpx.post(
            f"{self.stack.url}/v1/events",
            json=events,
            timeout=30,
            headers={"Authorization": f"Bearer {self.keys[key]}"},
        )
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        assert body["accepted"] == len(events), body
        return body


def local(days_ago: float, hour: int = 10) -> str:
    """An instant days ago at ``hour`` in the patients' zone (with its offset). Today's
    (``days_ago`` 0) only at hour 0: a later hour is in the future early in the local day,
    and the gateway refuses it (this failed at 00:28 in the clinic's zone)."""
    day = dt.datetime.now(ZONE).date() - dt.timedelta(days=int(days_ago))
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=ZONE).isoformat()


async def _provision(settings: Settings, d: Dash) -> None:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        await db.add_org(conn, d.org, "Browser clinic", ZONE.key)  # a US clinic
        pw = hash_password(PASSWORD)
        for name, role, clin in (
            ("c1", "clinician", "cid1"),
            ("c2", "clinician", "cid2"),
            ("billing", "billing", None),
            ("admin", "admin", None),
        ):
            await db.add_user(
                conn, d.org, d.user(name), role, pw, f"{d.tag}-{clin}" if clin else None
            )
        key, key_id, salt, digest = new_key()
        await db.add_key(conn, key_id, d.org, ["producer", "integration"], "browser", salt, digest)
        d.keys["feed"] = key
    finally:
        await conn.close()


async def _fetch(settings: Settings, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One read of the stack's database, on a connection of its own."""
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _rollups(settings: Settings, pids: list[str]) -> dict[str, Any]:
    rows = await _fetch(
        settings,
        "SELECT patient_id, open_critical, open_high FROM"
        " patient_rollups WHERE patient_id = ANY($1::text[])",
        pids,
    )
    return {r["patient_id"]: (r["open_critical"], r["open_high"]) for r in rows}


@pytest.fixture(scope="module")
def dash(base_settings: Settings) -> Iterator[Dash]:
    with running_stack(base_settings) as stack:
        tag = "web" + uuid.uuid4().hex[:8]
        shots = stack.settings.state_dir / "artifacts" / "browser"
        shots.mkdir(parents=True, exist_ok=True)
        d = Dash(stack, tag, f"{tag}-org", shots=shots)
        run_in_thread(_provision(stack.settings, d))
        f = EventFactory()
        names = ("pCrit", "pHigh", "pCalm", "pOther")
        d.patients = {n: f.patient(i) for i, n in enumerate(names, 1)}
        clin = {"pCrit": "cid1", "pHigh": "cid1", "pCalm": "cid1", "pOther": "cid2"}
        d.post(
            [
                f.episode_started(
                    d.patients[n],
                    at=local(12, 8),
                    clinician_id=f"{tag}-{clin[n]}",
                    episode_id=f"{d.patients[n]}-ep1",
                )
                for n in names
            ],
            "feed",
        )
        data: list[dict[str, Any]] = []
        for n in names:
            pid = d.patients[n]
            data += [
                f.exercise(pid, local(day, 18))
                for day in range(11, 0, -1)
                if n != "pHigh" or day % 3 == 0
            ]
            data += [f.pain(pid, 3, local(day, 9)) for day in (6, 4, 3)]
            data.append(baseline_prom(pid, local(11, 9)))  # no care-pathway task overdue
        # pCrit: a red flag (critical); pHigh: pain up 3 over its baseline (high);
        # pOther: a red flag, but c2's patient
        data += [
            f.symptom(d.patients["pCrit"], local(2, 11), red_flags=["saddle_anesthesia"]),
            f.pain(d.patients["pHigh"], 6, local(1, 9)),
            f.symptom(d.patients["pOther"], local(2, 11), red_flags=["progressive_weakness"]),
        ]
        d.post(data, "feed")
        pids = [d.patients[n] for n in ("pCrit", "pHigh", "pOther")]

        async def rolled_up() -> bool:
            r = await _rollups(stack.settings, pids)
            return (
                r.get(d.patients["pCrit"], (0, 0))[0] >= 1
                and r.get(d.patients["pHigh"], (0, 0))[1] >= 1
                and r.get(d.patients["pOther"], (0, 0))[0] >= 1
            )

        run_in_thread(wait_for(rolled_up, 90, "the rollups of the alerts"))
        yield d


@pytest.fixture(scope="module")
def browser(dash: Dash) -> Iterator[Any]:
    with chromium() as b:  # after the clinic's set-up
        yield b


def sign_in(browser: Any, dash: Dash, name: str) -> Any:
    """A new browser context signed in through the sign-in page, with the keyboard."""
    context = browser.new_context(base_url=dash.stack.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/ui/")
    assert page.url.endswith("/ui/sign-in")
    assert page.evaluate("document.activeElement.id") == "username"  # autofocus
    page.keyboard.type(dash.user(name))
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_load_state()
    assert not page.url.endswith("/ui/sign-in"), page.inner_text("main")[:300]
    return page


def baseline_prom(pid: str, at: str) -> dict[str, Any]:
    """The baseline PROM sent on time: the care pathway's first task done, so these
    patients' only alerts are the rules' (no task_overdue)."""
    return {
        "event_id": f"{pid}-baseline",
        "schema_version": 1,
        "type": "assessment.completed",
        "patient_id": pid,
        "occurred_at": at,
        "instrument": "psfs",
        "answers": {"a1": 3, "a2": 3, "a3": 3},
    }


def api_headers(dash: Dash, name: str) -> dict[str, str]:
    resp = httpx.post(
        f"{dash.stack.url}/v1/session",
        timeout=30,
        json={"username": dash.user(name), "password": PASSWORD},
    )
    resp.raise_for_status()
    return {
        "Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}",
        CSRF_HEADER: resp.json()["csrf_token"],
    }


def test_clinician_works_the_worklist_with_the_keyboard_and_sees_alerts_live(
    dash: Dash, browser: Any
) -> None:
    p = dash.patients
    page = sign_in(browser, dash, "c1")
    assert page.url.endswith("/ui/worklist")
    order = page.locator("table.worklist tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.patient)"
    )
    assert order[:2] == [p["pCrit"], p["pHigh"]], order
    assert p["pOther"] not in order and p["pCalm"] not in order  # c2's; no open alert
    api = httpx.get(
        f"{dash.stack.url}/v1/worklist", headers=api_headers(dash, "c1"), timeout=30
    ).json()["patients"]
    assert [r["patient_id"] for r in api] == order  # the page's order is the API's
    row = page.locator(f'tr[data-patient="{p["pCrit"]}"]')
    assert "1 critical" in row.inner_text() and "/16 toward 98977" in row.inner_text()
    assert "saddle anesthesia" in row.inner_text()  # the red flag named, not only "red flag"
    assert row.locator("td.waiting .age").inner_text().endswith(("min", " h", "days"))
    assert "red flag or fall: 1" in page.inner_text("#tier-counts")  # counts per tier
    assert row.locator("svg.spark").count() == 1
    page.screenshot(path=str(dash.shots / "worklist.png"), full_page=True)

    # all patients, filtered by the form (htmx swaps the table)
    page.select_option("#f-status", "all")
    page.wait_for_selector(f'tr[data-patient="{p["pCalm"]}"]')
    page.select_option("#f-severity", "high")
    page.wait_for_function(
        "() => [...document.querySelectorAll('table.worklist tbody tr')]"
        ".map(r => r.dataset.patient).join() === '" + p["pHigh"] + "'"
    )
    page.goto("/ui/worklist")

    # a new red flag arrives while the page is open: it shows up without a reload
    page.evaluate("window.__still_here = true")
    page.wait_for_function(
        "() => document.getElementById('live-status').textContent.startsWith('Connected')"
    )
    f = EventFactory()
    dash.post([f.symptom(p["pHigh"], local(0, 0), red_flags=["bladder_dysfunction"])], "feed")
    page.wait_for_selector(f'#live-list li:has-text("{p["pHigh"]}")', timeout=30_000)
    assert "critical" in page.locator("#live-list li").first.inner_text()
    assert "bladder dysfunction" in page.locator("#live-list li").first.inner_text()
    assert page.evaluate("window.__still_here") is True
    page.screenshot(path=str(dash.shots / "worklist-live.png"), full_page=True)

    # keyboard: the skip link comes first, then Tab reaches the first patient; Enter opens
    page.goto("/ui/worklist")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    first = page.locator("table.worklist tbody tr th a").first.inner_text()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == first:
            break
    else:
        pytest.fail("Tab never reached the first patient's link")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/ui/patients/{first}")
    page.close()


def test_clinician_acknowledges_an_alert_with_a_note_on_the_patient_page(
    dash: Dash, browser: Any
) -> None:
    pid = dash.patients["pCrit"]
    page = sign_in(browser, dash, "c1")
    page.goto(f"/ui/patients/{pid}")
    page.wait_for_selector("#adherence-chart .uplot")  # uPlot from the pinned npm package
    page.wait_for_selector("#pain-chart .uplot")
    assert f"{pid}-ep1" in page.inner_text("#ep-h + table")  # episodes and programs
    assert "Treatment minutes" in page.inner_text("#bill-h + p")
    page.screenshot(path=str(dash.shots / "patient.png"), full_page=True)
    open_alert = page.locator("#open-alerts li.alert").first
    alert_id = open_alert.get_attribute("data-alert")
    assert "red flag" in open_alert.inner_text()
    assert "saddle anesthesia" in open_alert.inner_text()  # named on the patient page
    # filtering the history to resolved alerts still lists the open ones
    page.goto(f"/ui/patients/{pid}?status=resolved")
    assert page.locator(f'#open-alerts li[data-alert="{alert_id}"]').count() == 1
    page.goto(f"/ui/patients/{pid}")
    # the disposition is required (issue 17): chosen first, then the note by keyboard
    page.select_option(f"#disposition-{alert_id}", "sent_to_ed")
    # keyboard: into the note, type, Tab to the button, Enter
    page.focus(f"#note-{alert_id}")
    page.keyboard.type("called, sent to ED")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector(f'#alert-history li[data-alert="{alert_id}"]')
    assert page.locator(f'#open-alerts li[data-alert="{alert_id}"]').count() == 0
    assert "Note: called, sent to ED" in page.inner_text(
        f'#alert-history li[data-alert="{alert_id}"]'
    )
    assert "Disposition: sent to ed" in page.inner_text(
        f'#alert-history li[data-alert="{alert_id}"]'
    )
    # when it was acknowledged, in the clinic's zone with its age
    acked = page.inner_text(f'#alert-history li[data-alert="{alert_id}"]')
    assert re.search(r" at \d{4}-\d\d-\d\d \d\d:\d\d C[SD]T \((just now|\d+ min ago)\)", acked), (
        acked
    )
    assert page.evaluate("document.activeElement.id") == "alert-panel"
    page.screenshot(path=str(dash.shots / "patient-acknowledged.png"), full_page=True)

    async def stored() -> tuple[str, str, str]:
        (r,) = await _fetch(
            dash.stack.settings,
            "SELECT status, ack_note, acknowledged_by FROM alerts WHERE id = $1",
            alert_id,
        )
        return r["status"], r["ack_note"], r["acknowledged_by"]

    assert run_in_thread(stored()) == ("acknowledged", "called, sent to ED", dash.user("c1"))
    page.close()


def test_another_clinician_sees_none_of_the_first_ones_patients(dash: Dash, browser: Any) -> None:
    p = dash.patients
    page = sign_in(browser, dash, "c2")
    text = page.inner_text("main")
    assert p["pOther"] in text
    assert all(p[n] not in text for n in ("pCrit", "pHigh", "pCalm"))
    resp = page.goto(f"/ui/patients/{p['pCrit']}")
    assert resp is not None and resp.status == 404
    assert p["pCrit"] in page.inner_text("main")  # only the id it asked for, no data
    assert page.locator("#adherence-chart").count() == 0
    page.close()


def test_billing_previews_without_recording_and_admin_audits(dash: Dash, browser: Any) -> None:
    page = sign_in(browser, dash, "billing")
    assert page.url.endswith("/ui/billing")
    assert "Close to 16 data days" in page.inner_text("main")
    assert "needs" in page.inner_text("#close")  # 11 data days of 30: still reachable
    page.screenshot(path=str(dash.shots / "billing.png"), full_page=True)
    with page.expect_download() as download:
        page.click("form.preview button[value=csv]")
    path = download.value.path()
    assert path is not None and Path(path).read_text().startswith("#")
    page.goto("/ui/billing")
    assert "No exports recorded yet" in page.inner_text("main")  # a preview records nothing
    page.close()

    admin = sign_in(browser, dash, "admin")
    admin.goto(f"/ui/audit?actor=user:{dash.user('c1')}")
    rows = admin.inner_text("#audit")
    assert f"GET /ui/patients/{dash.patients['pCrit']}" in rows
    assert "GET /ui/worklist" in rows and "acknowledge" in rows
    admin.screenshot(path=str(dash.shots / "audit.png"), full_page=True)
    admin.close()


# --- phones (issue 17 item 4) ---------------------------------------------------------------

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
SIDEWAYS = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def test_no_page_scrolls_sideways_on_a_phone_and_alerts_come_first(
    dash: Dash, browser: Any
) -> None:
    """At 390x844 no page is wider than the screen (the worklist and the billing lines are
    stacked cards, the labels the tables' headers); on the patient page the open alerts
    come right under the patient's name, above the charts. Screenshots at both sizes."""
    p = dash.patients
    month = dt.datetime.now(ZONE).strftime("%Y-%m")
    pages = {
        "c1": {
            "worklist": "/ui/worklist",
            "patient": f"/ui/patients/{p['pCrit']}",
            "not-found": "/ui/patients/nobody-here",
        },
        "billing": {"billing": f"/ui/billing?month={month}"},
        "admin": {"audit": "/ui/audit", "worklist-admin": "/ui/worklist?status=all"},
    }
    wide: dict[str, int] = {}
    for user, urls in pages.items():
        page = sign_in(browser, dash, user)
        for name, url in urls.items():
            for size, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
                page.set_viewport_size(viewport)
                page.goto(url)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(dash.shots / f"{name}-{size}.png"), full_page=True)
                if size == "phone":
                    wide[name] = int(page.evaluate(SIDEWAYS))
        if user == "c1":
            page.set_viewport_size(PHONE)
            page.goto(pages["c1"]["patient"])
            page.wait_for_load_state("networkidle")
            alerts_y = page.locator("#alert-panel").bounding_box()["y"]
            chart_y = page.locator("#adh-h").bounding_box()["y"]
            name_y = page.locator("main h1").bounding_box()["y"]
            assert name_y < alerts_y < chart_y, (name_y, alerts_y, chart_y)
            page.goto(pages["c1"]["worklist"])
            # a card per patient: the row is one column, its cells labelled
            label = page.locator("table.worklist tbody tr td").first.evaluate(
                "td => getComputedStyle(td, '::before').content"
            )
            assert label == '"Open alerts"', label
        page.context.close()
    assert wide == dict.fromkeys(wide, 0), wide


def test_the_live_stream_ends_with_the_session_and_says_so(dash: Dash, browser: Any) -> None:
    """Issue 17: an open tab kept receiving live alerts with patient ids after a sign-out in
    another tab. Now the stream ends with the session: the page says so, drops the list and
    receives no later alert."""
    p = dash.patients
    page = sign_in(browser, dash, "c1")
    page.wait_for_function(
        "() => document.getElementById('live-status').textContent.startsWith('Connected')"
    )
    other = page.context.new_page()  # another tab of the same browser: the same session
    other.goto("/ui/worklist")
    with other.expect_navigation():
        other.click("form.signout button")
    page.wait_for_function(
        "() => document.getElementById('live-status').textContent.includes('signed out')",
        timeout=15_000,
    )
    f = EventFactory()
    flag = f.symptom(p["pCrit"], local(0, 0), red_flags=["fever"])
    dash.post([flag], "feed")

    async def fired() -> bool:  # there is an alert the ended stream would have carried
        return bool(
            await _fetch(
                dash.stack.settings,
                "SELECT id FROM alerts WHERE $1 = ANY(event_ids)",
                flag["event_id"],
            )
        )

    run_in_thread(wait_for(fired, timeout=30, what="the red flag's alert"))
    page.wait_for_timeout(3_000)  # several polls of a stream that would still be open
    assert page.locator("#live-list li").count() == 0
    page.screenshot(path=str(dash.shots / "worklist-live-ended.png"), full_page=True)
    page.context.close()


def test_a_new_red_flag_is_named_and_lands_above_26_older_pain_highs_within_3_s(
    dash: Dash, browser: Any
) -> None:
    """Issue 17 harm items 1 and 2: a saddle-anaesthesia red flag posted now shows "saddle"
    in the live list within 3 s, on the worklist in the first 3 rows above 26 patients
    whose pain_high fired days ago, and on the patient page."""
    f = EventFactory()
    older = [f.patient(100 + i) for i in range(26)]
    fresh = f.patient(200)
    cid = f"{dash.tag}-cid1"
    dash.post(
        [
            f.episode_started(p, at=local(20, 8), clinician_id=cid, episode_id=f"{p}-ep1")
            for p in [*older, fresh]
        ],
        "feed",
    )
    dash.post([f.pain(p, 9, local(3 + i % 5, 9)) for i, p in enumerate(older)], "feed")
    dash.post([baseline_prom(p, local(19, 9)) for p in [*older, fresh]], "feed")
    headers = api_headers(dash, "c1")

    async def all_older_listed() -> bool:
        rows = httpx.get(f"{dash.stack.url}/v1/worklist", headers=headers, timeout=30).json()
        return set(older) <= {r["patient_id"] for r in rows["patients"]}

    run_in_thread(wait_for(all_older_listed, 90, "the 26 older pain_high patients"))
    page = sign_in(browser, dash, "c1")
    page.wait_for_function(
        "() => document.getElementById('live-status').textContent.startsWith('Connected')"
    )
    dash.post([f.symptom(fresh, local(0, 0), red_flags=["saddle_anesthesia"])], "feed")
    page.wait_for_selector(f'#live-list li:has-text("{fresh}")', timeout=3_000)
    assert "saddle" in page.locator(f'#live-list li:has-text("{fresh}")').inner_text()
    page.goto("/ui/worklist")
    order = page.locator("table.worklist tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.patient)"
    )
    assert fresh in order[:3], order[:5]
    assert set(older) <= set(order[order.index(fresh) + 1 :])  # every older one below it
    assert "saddle" in page.locator(f'tr[data-patient="{fresh}"]').inner_text()
    page.goto(f"/ui/patients/{fresh}")
    assert "saddle" in page.inner_text("#alert-panel")
    page.screenshot(path=str(dash.shots / "worklist-red-flag-first.png"), full_page=True)
    page.context.close()


# --- one time convention (issue 17 item 1) --------------------------------------------------


def clinic_text(at: dt.datetime) -> tuple[str, set[str]]:
    """How a page shows ``at`` in the clinic's zone, and its possible ages (the hour may
    turn between reading the clock here and on the server)."""
    shown = at.astimezone(ZONE)
    hours = int((dt.datetime.now(dt.UTC) - at).total_seconds() // 3600)
    return f"{shown:%Y-%m-%d %H:%M} {shown.tzname()}", {f"{h} h ago" for h in (hours, hours + 1)}


def test_times_are_in_the_clinics_zone_with_their_age_in_a_far_browser_zone(
    dash: Dash, browser: Any
) -> None:
    """A US clinic (America/Chicago) read from a browser in Pacific/Auckland (19 hours
    ahead): a patient's pain 9 of yesterday 09:00 clinic time shows as "<date> 09:00 CST
    (N h ago)" on the patient page (pain table and the alert it fired) and as the patient's
    last activity and the start of the wait on the worklist; never in the browser's zone."""
    f = EventFactory()
    pid = f.patient(300)
    dash.post([f.episode_started(pid, at=local(20, 8), clinician_id=f"{dash.tag}-cid1")], "feed")
    dash.post([f.pain(pid, 9, local(1, 9))], "feed")
    headers = api_headers(dash, "c1")

    async def listed() -> bool:
        rows = httpx.get(f"{dash.stack.url}/v1/worklist", headers=headers, timeout=30).json()
        return pid in {r["patient_id"] for r in rows["patients"]}

    run_in_thread(wait_for(listed, 90, "the patient's pain_high on the worklist"))
    at = dt.datetime.fromisoformat(local(1, 9))
    when, ages = clinic_text(at)
    far = dt.datetime.fromisoformat(local(1, 9)).astimezone(ZoneInfo("Pacific/Auckland"))
    context = browser.new_context(base_url=dash.stack.url, timezone_id="Pacific/Auckland")
    context.set_default_timeout(15_000)
    page = context.new_page()
    assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == "Pacific/Auckland"
    page.goto("/ui/sign-in")
    page.fill("#username", dash.user("c1"))
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    row = page.locator(f'tr[data-patient="{pid}"]')
    for cell in ("td.last-activity", "td.waiting"):
        text = row.locator(cell).inner_text()
        assert when in text and any(a in text for a in ages), (cell, text, when, ages)
        assert f"{far:%H:%M}" not in text
    page.goto(f"/ui/patients/{pid}")
    pain_row = page.locator("#pain-h ~ details table tbody tr", has_text=when)
    assert pain_row.count() == 1, page.locator("#pain-h ~ details table").text_content()
    assert any(a in str(pain_row.text_content()) for a in ages), pain_row.text_content()
    fired = page.locator("#open-alerts li.alert").first.inner_text()
    assert when in fired and any(a in fired for a in ages), fired
    page.screenshot(path=str(dash.shots / "patient-far-browser-zone.png"), full_page=True)
    context.close()
