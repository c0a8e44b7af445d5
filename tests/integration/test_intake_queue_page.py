"""The intake queue page for schedulers (issue 18 item 5, the metric of item 6).

Real gateway, worker, Kafka and PostgreSQL; Debian's chromium through Playwright. A clinic's
integration posts four intakes (a digital-PT one, an in-person one by its pain score, a
physician review by a serious-pathology flag, an urgent one by an emergency flag, two hours
old and so overdue) and another clinic one of its own. The scheduler signs in and lands on
the queue: urgent, physician review, then by due time, the red flags named, the overdue
intake's time in red. A clinician of the same clinic watches the same page. The scheduler
marks the digital-PT intake contacted (by video): an ``intake.contacted`` in the
scheduler's name and organisation goes through the gateway's event path, the worker stores
it once, the intake leaves the scheduler's list and, live, the clinician's (no reload), and
the worker observes its first-contact time by route. The scheduler reads no alerts and no
billing; a post without the CSRF token adds nothing; a clinician of the other clinic sees
none of the first clinic's intakes and cannot mark one contacted."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from streams.access import SESSION_COOKIE, hash_password, new_key
from streams.db import access as db
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.browser import CHROMIUM, PASSWORD, fetch
from tests.integration.browser import sign_in as browser_sign_in
from tests.integration.conftest import Stack, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")


def ago(minutes: int) -> str:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)
    return at.astimezone(dt.timezone(dt.timedelta(hours=-6))).isoformat(timespec="seconds")


@dataclass
class Clinic:
    stack: Stack
    tag: str
    org: str
    other_org: str
    urgent: str
    review: str
    digital: str
    in_person: str
    elsewhere: str  # the other clinic's patient

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def queue(self) -> list[str]:
        """The documented order: urgent, physician review, then by due time."""
        return [self.urgent, self.review, self.digital, self.in_person]


async def _provision(settings: Settings, tag: str, org: str, other: str) -> tuple[str, str]:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        pw = hash_password(PASSWORD)
        keys = []
        for o in (org, other):
            await db.add_org(conn, o, "Intake clinic")
            key, key_id, salt, digest = new_key()
            await db.add_key(conn, key_id, o, ["producer", "integration"], "intake", salt, digest)
            keys.append(key)
        await db.add_user(conn, org, f"{tag}-s1", "scheduler", pw, None)
        await db.add_user(conn, org, f"{tag}-c1", "clinician", pw, f"{tag}-cid-c1")
        await db.add_user(conn, other, f"{tag}-x1", "clinician", pw, f"{tag}-cid-x1")
        return keys[0], keys[1]
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def clinic(base_settings: Settings) -> Iterator[Clinic]:
    with running_stack(base_settings) as stack:
        tag = "iq" + uuid.uuid4().hex[:8]
        org, other = f"{tag}-org", f"{tag}-other"
        key, other_key = run_in_thread(_provision(stack.settings, tag, org, other))
        f = EventFactory()
        urgent, review, digital, in_person, elsewhere = (f.patient(i) for i in range(1, 6))
        events = [
            f.intake(in_person, ago(60), answers={"nprs": 8}, referral_source="specialist"),
            f.intake(digital, ago(120), answers={"nprs": 3}, referral_source="primary_care"),
            f.intake(review, ago(30), red_flags=["unexplained_weight_loss", "fever"]),
            f.intake(urgent, ago(120), red_flags=["saddle_anesthesia"], body_region="low_back"),
        ]
        resp = stack.post(events, key=key)
        assert resp.status_code == 200 and resp.json()["accepted"] == 4, resp.text
        resp = stack.post([f.intake(elsewhere, ago(10))], key=other_key)
        assert resp.status_code == 200 and resp.json()["accepted"] == 1, resp.text

        async def stored() -> bool:
            rows = await fetch(
                stack.settings,
                "SELECT 1 FROM intakes WHERE org_id = ANY($1::text[]) AND route IS NOT NULL",
                [org, other],
            )
            return len(rows) == 5

        run_in_thread(wait_for(stored, 90, "the five intakes"))
        yield Clinic(stack, tag, org, other, urgent, review, digital, in_person, elsewhere)


def sign_in(browser: Any, c: Clinic, name: str) -> Any:
    return browser_sign_in(browser, c.stack.url, c.user(name), 20_000)


def session(c: Clinic, name: str) -> tuple[dict[str, str], str]:
    resp = httpx.post(
        f"{c.stack.url}/v1/session",
        timeout=30,
        json={"username": c.user(name), "password": PASSWORD},
    )
    resp.raise_for_status()
    return {"Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}"}, resp.json()["csrf_token"]


def contact_post(c: Clinic, name: str, patient: str, csrf: bool = True) -> httpx.Response:
    headers, token = session(c, name)
    body = {"channel": "phone"} | ({"csrf_token": token} if csrf else {})
    return httpx.post(
        f"{c.stack.url}/ui/intakes/{patient}/{patient}-in/contacted",
        data=body,
        headers=headers,
        timeout=30,
        follow_redirects=False,
    )


def contacts(c: Clinic) -> list[dict[str, Any]]:
    rows = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT payload FROM events WHERE type = 'intake.contacted'"
            " AND org_id = ANY($1::text[])",
            [c.org, c.other_org],
        )
    )
    return [orjson.loads(r["payload"]) for r in rows]


def rows_of(page: Any) -> list[str]:
    return [str(r.get_attribute("data-patient")) for r in page.locator("#intakes tbody tr").all()]


def worker_metric(c: Clinic, name: str) -> float:
    text = httpx.get(
        f"http://127.0.0.1:{c.stack.settings.worker.web_port}/metrics", timeout=30
    ).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_scheduler_works_the_queue_and_a_contacted_intake_leaves_it_live(
    clinic: Clinic,
) -> None:
    c = clinic
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = sign_in(browser, c, "s1")
            assert page.url.endswith("/ui/intakes")  # where a scheduler starts
            nav = page.locator("nav[aria-label=Main]").inner_text()
            assert "Intake queue" in nav and "My patients" not in nav and "Billing" not in nav
            assert rows_of(page) == c.queue()
            urgent = page.locator(f'tr[data-patient="{c.urgent}"]')
            assert "saddle anesthesia" in urgent.locator(".flags").inner_text()
            assert "urgent" in urgent.locator(".route").inner_text()
            due = urgent.locator("td.due")
            assert "overdue by" in due.inner_text() and "overdue" in str(due.get_attribute("class"))
            color = due.evaluate("el => getComputedStyle(el).color")
            assert color == "rgb(139, 0, 0)", color  # red
            review = page.locator(f'tr[data-patient="{c.review}"]')
            assert "fever, unexplained weight loss" in review.locator(".flags").inner_text()
            assert "physician review" in review.locator(".route").inner_text()
            digital = page.locator(f'tr[data-patient="{c.digital}"]').inner_text()
            assert "digital PT" in digital and "3/10" in digital and "primary care" in digital
            assert "left" in digital and "2 h" in digital  # waited two hours, due in 70 h
            in_person = page.locator(f'tr[data-patient="{c.in_person}"]').inner_text()
            assert "high pain score (NPRS)" in in_person and "specialist" in in_person

            # a clinician of the clinic watches the same queue (not reloaded from here on)
            watcher = sign_in(browser, c, "c1")
            watcher.goto("/ui/intakes")
            assert rows_of(watcher) == c.queue()
            playwright_sync.expect(watcher.locator("#live-status")).to_contain_text("Connected")

            # no post without the CSRF token
            assert contact_post(c, "s1", c.digital, csrf=False).status_code == 403
            assert contacts(c) == []

            row = page.locator(f'tr[data-patient="{c.digital}"]')
            row.locator("select[name=channel]").select_option("video")
            with page.expect_navigation():
                row.get_by_role("button", name="Contacted").click()
            assert page.url.endswith("/ui/intakes")
            for _ in range(30):  # the form waits for the worker; a slow one: reload
                if c.digital not in rows_of(page):
                    break
                page.wait_for_timeout(1000)
                page.reload()
            assert rows_of(page) == [c.urgent, c.review, c.in_person]
            # live on the clinician's page: the row leaves without a reload
            watcher.locator(f'tr[data-patient="{c.digital}"]').wait_for(
                state="detached", timeout=30_000
            )
            assert rows_of(watcher) == [c.urgent, c.review, c.in_person]
            assert "contacted: " + c.digital in watcher.locator("#live-list").inner_text()

            # the scheduler reads no alerts and no billing
            for url in ("/ui/worklist", "/ui/billing", f"/ui/patients/{c.urgent}"):
                assert page.goto(url).status == 403, url
        finally:
            browser.close()

    # stored once, through the gateway (stamped) and the worker, in the scheduler's name
    (contact,) = contacts(c)
    assert contact["patient_id"] == c.digital and contact["intake_id"] == f"{c.digital}-in"
    assert contact["channel"] == "video" and contact["org_id"] == c.org
    assert contact["source"] == {"kind": "clinician_portal", "id": f"dashboard:{c.user('s1')}"}
    assert contact["received_at"] and "clinician_id" not in contact
    # a repeated press is refused: the intake was contacted
    assert contact_post(c, "s1", c.digital).status_code == 409
    assert len(contacts(c)) == 1
    audit = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT actor, action, resource FROM audit_log WHERE org_id = $1"
            " AND $2 = ANY(patient_ids)",
            c.org,
            c.digital,
        )
    )
    seen = {(r["actor"], r["action"], r["resource"]) for r in audit}
    scheduler = f"user:{c.user('s1')}"
    assert (scheduler, "read", "GET /ui/intakes") in seen
    assert (
        scheduler,
        "intake_contacted",
        f"POST /ui/intakes/{c.digital}/{c.digital}-in/contacted",
    ) in seen
    assert (f"user:{c.user('c1')}", "read", "GET /ui/stream?feed=intakes") in seen
    # the worker observed the first contact (two hours after submission), by route only
    name = 'rtm_intake_first_contact_seconds_count{route="digital_pt"}'
    assert worker_metric(c, name) == 1.0
    total = worker_metric(c, 'rtm_intake_first_contact_seconds_sum{route="digital_pt"}')
    assert 2 * 3600 <= total < 3 * 3600


def test_a_clinician_of_another_organisation_sees_none_of_it(clinic: Clinic) -> None:
    c = clinic
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = sign_in(browser, c, "x1")
            page.goto("/ui/intakes")
            assert rows_of(page) == [c.elsewhere]  # their own clinic's intake only
            text = page.inner_text("main")
            for pid in c.queue():
                assert pid not in text
        finally:
            browser.close()
    before = len(contacts(c))
    assert contact_post(c, "x1", c.urgent).status_code == 404
    assert len(contacts(c)) == before
    headers, _ = session(c, "x1")
    api = httpx.get(f"{c.stack.url}/v1/intakes?status=all", headers=headers, timeout=30)
    assert [i["patient_id"] for i in api.json()["intakes"]] == [c.elsewhere]
