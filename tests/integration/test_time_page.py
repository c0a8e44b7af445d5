"""Treatment time from the patient page (issue 17): the timer, a manual entry with the
live-call tick, the entries, a correction that supersedes, and the month's code.

Real gateway, worker, Kafka and PostgreSQL; Debian's chromium through Playwright. A
clinician starts the timer (the page carries its start, from the gateway's clock) and
stops it 12 minutes later (the test stands the start 12 minutes back: the stop posts what
the clock says since the start): 12 minutes of review, and the page says no code can be
earned without a live call. A manual entry of 5 minutes with the live-call tick earns
98979 (17 minutes); correcting the timer's entry to 15 minutes posts a new event that
supersedes it: the month counts 20 minutes, not 32, and the page shows 98980. Every post
is a ``clinician.time_logged`` in the clinician's own name and organisation, through the
gateway to Kafka, stored once by the worker; the worker's ledger and the offline fold of
the stored events (``rtm billing evaluate``'s) agree. A post without the CSRF token,
another team's clinician and a repeated form add nothing; the posts are audited."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlparse
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import orjson
import pytest

from billing.rules import compute_claims, month_totals
from billing.state import fold_events
from schemas.events import parse_event_json
from streams.access import SESSION_COOKIE
from streams.db.ledger import ledger_states
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.browser import CHROMIUM, PASSWORD, fetch, provision
from tests.integration.browser import sign_in as browser_sign_in
from tests.integration.conftest import Stack, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")

ZONE = ZoneInfo("America/Chicago")


@dataclass
class Clinic:
    stack: Stack
    tag: str
    org: str
    key: str
    patient: str
    other: str  # another patient of c1, with a time log of its own

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def clinician(self, name: str) -> str:
        return f"{self.tag}-cid-{name}"


async def _provision(settings: Settings, tag: str, org: str) -> str:
    users = [(f"{tag}-{n}", "clinician", f"{tag}-cid-{n}") for n in ("c1", "c2")]
    return await provision(settings, org, "Time clinic", users, "time")


def _time_logs(c: Clinic, patient: str | None = None) -> list[dict[str, Any]]:
    rows = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT payload FROM events WHERE org_id = $1 AND patient_id = $2"
            " AND type = 'clinician.time_logged' ORDER BY stored_at",
            c.org,
            patient or c.patient,
        )
    )
    return [orjson.loads(r["payload"]) for r in rows]


@pytest.fixture(scope="module")
def clinic(base_settings: Settings) -> Iterator[Clinic]:
    with running_stack(base_settings) as stack:
        tag = "tm" + uuid.uuid4().hex[:8]
        org = f"{tag}-org"
        key = run_in_thread(_provision(stack.settings, tag, org))
        f = EventFactory()
        p, other = f.patient(1), f.patient(2)
        start = (dt.datetime.now(ZONE) - dt.timedelta(days=3)).replace(microsecond=0)
        events = [
            f.episode_started(
                pid, at=start.isoformat(), clinician_id=f"{tag}-cid-c1", episode_id=f"{pid}-ep1"
            )
            for pid in (p, other)
        ]
        events.append(
            {
                "event_id": f"{other}-t1",
                "schema_version": 1,
                "type": "clinician.time_logged",
                "patient_id": other,
                "occurred_at": (start + dt.timedelta(hours=2)).isoformat(),
                "episode_id": f"{other}-ep1",
                "clinician_id": f"{tag}-cid-c1",
                "clinician_role": "PT",
                "minutes": 7,
                "activity": "review",
                "interactive": False,
            }
        )
        resp = stack.post(events, key=key)
        assert resp.status_code == 200 and resp.json()["accepted"] == 3, resp.text

        async def stored() -> bool:
            rows = await fetch(
                stack.settings,
                "SELECT 1 FROM billing_episode_events WHERE org_id = $1"
                " UNION ALL SELECT 1 FROM billing_time_logs WHERE org_id = $1",
                org,
            )
            return len(rows) == 3

        run_in_thread(wait_for(stored, 90, "the episodes and the time log"))
        yield Clinic(stack, tag, org, key, p, other)


def sign_in(browser: Any, c: Clinic, name: str) -> Any:
    return browser_sign_in(browser, c.stack.url, c.user(name), 20_000)


def form_post(c: Clinic, name: str, body: dict[str, str], csrf: bool = True) -> httpx.Response:
    resp = httpx.post(
        f"{c.stack.url}/v1/session",
        timeout=30,
        json={"username": c.user(name), "password": PASSWORD},
    )
    resp.raise_for_status()
    headers = {"Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}"}
    token = {"csrf_token": resp.json()["csrf_token"]} if csrf else {}
    return httpx.post(
        f"{c.stack.url}/ui/patients/{c.patient}/time",
        data=body | token,
        headers=headers,
        timeout=30,
        follow_redirects=False,
    )


def _minutes_text(page: Any, until: str) -> str:
    """The minutes line once it says ``until`` (the form waits for the worker; a slow one:
    reload)."""
    text = ""
    for _ in range(30):
        text = str(page.locator("#minutes-text").inner_text())
        if until in text:
            break
        time.sleep(1)
        page.reload()
    return text


def test_the_timer_a_live_call_and_a_correction_earn_the_months_code(clinic: Clinic) -> None:
    c = clinic
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = sign_in(browser, c, "c1")
            page.goto(f"/ui/patients/{c.patient}")
            assert page.locator("#minutes").inner_text() == "0"

            # the timer: started by the gateway's clock, stopped 12 minutes later
            with page.expect_navigation():
                page.get_by_role("button", name="Start timer").click()
            assert "Timer running since" in page.locator("#timer").inner_text()
            started = dt.datetime.fromisoformat(parse_qs(urlparse(page.url).query)["timer"][0])
            earlier = quote((started - dt.timedelta(minutes=12)).isoformat(), safe="")
            page.goto(f"/ui/patients/{c.patient}?timer={earlier}")
            page.select_option("#t-activity", "review")
            with page.expect_navigation():
                page.get_by_role("button", name="Stop timer and log").click()
            text = _minutes_text(page, "12")
            assert "Treatment minutes: 12" in text, text
            assert "no live call with the patient this month" in text
            assert "to the next code" not in text and "codes earned" not in text

            # a manual entry with the live-call tick: 17 minutes, 98979
            page.fill("#m-minutes", "5")
            page.select_option("#m-activity", "call")
            page.check("#m-live")
            with page.expect_navigation():
                page.get_by_role("button", name="Log time").click()
            text = _minutes_text(page, "17")
            assert "Treatment minutes: 17 (3 to the next code); codes earned: 98979" in text
            assert "no live call" not in text

            # correct the timer's entry to 15 minutes: a new event that supersedes it
            (timed,) = [e for e in _time_logs(c) if e["minutes"] == 12]
            row = page.locator(f'tr[data-entry="{timed["event_id"]}"]')
            row.locator("summary").click()
            row.locator('input[name="minutes"]').fill("15")
            with page.expect_navigation():
                row.get_by_role("button", name="Save correction").click()
            text = _minutes_text(page, "20")
            assert "Treatment minutes: 20 (20 to the next code); codes earned: 98980" in text

            # the entries: the correction counted, the original corrected by it
            entries = page.locator("#time-entries tbody tr")
            assert entries.count() == 3
            (fix,) = [e for e in _time_logs(c) if e.get("supersedes")]
            old = page.locator(f'tr[data-entry="{timed["event_id"]}"] .entry-state')
            assert old.inner_text() == f"no: corrected by {fix['event_id']}"
            new = page.locator(f'tr[data-entry="{fix["event_id"]}"] .entry-state')
            assert new.inner_text() == f"yes (corrects {timed['event_id']})"
        finally:
            browser.close()

    logs = _time_logs(c)
    assert sorted((e["minutes"], e["interactive"], e.get("supersedes")) for e in logs) == [
        (5, True, None),
        (12, False, None),
        (15, False, timed["event_id"]),
    ]
    for e in logs:  # through the gateway (stamped) and the worker, in c1's name and org
        assert (e["clinician_id"], e["org_id"], e["clinician_role"]) == (
            c.clinician("c1"),
            c.org,
            "PT",
        )
        assert e["received_at"] and e["episode_id"] == f"{c.patient}-ep1"

    # a repeated form (the same nonce) is the same event; no CSRF token, another team's
    # clinician, another patient's entry: nothing
    again = {"nonce": "fixed-nonce", "minutes": "3", "activity": "message", "role": "PT"}
    assert form_post(c, "c1", again).status_code == 303
    assert form_post(c, "c1", again).status_code == 303
    assert form_post(c, "c1", again | {"nonce": "n2"}, csrf=False).status_code == 403
    assert form_post(c, "c2", again | {"nonce": "n3"}).status_code == 404
    other = again | {"nonce": "n4", "supersedes": f"{c.other}-t1"}
    assert form_post(c, "c1", other).status_code == 404
    assert len(_time_logs(c)) == 4
    audit = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT actor FROM audit_log WHERE org_id = $1 AND action = 'log_time'"
            " AND $2 = ANY(patient_ids)",
            c.org,
            c.patient,
        )
    )
    assert len(audit) >= 5 and {r["actor"] for r in audit} == {f"user:{c.user('c1')}"}

    # the gateway refuses a correction naming another patient's entry, by field
    bad = dict(logs[0], event_id=f"{c.patient}-bad", supersedes=f"{c.other}-t1")
    for stamp in ("received_at", "org_id"):
        bad.pop(stamp, None)
    resp = c.stack.post([bad], key=c.key)
    assert resp.status_code == 200 and resp.json()["accepted"] == 0, resp.text
    (err,) = resp.json()["rejected"][0]["errors"]
    assert err["field"] == "supersedes" and "another patient's" in err["message"]

    # the worker's ledger and the offline fold of the stored events agree: 23 minutes
    async def both() -> tuple[Any, Any]:
        conn = await asyncpg.connect(c.stack.settings.db.dsn)
        try:
            ledger = await ledger_states(conn, c.org, [c.patient])
            rows = await conn.fetch(
                "SELECT payload FROM events WHERE org_id = $1 AND patient_id = $2",
                c.org,
                c.patient,
            )
        finally:
            await conn.close()
        return ledger, fold_events(parse_event_json(r["payload"]) for r in rows)

    ledger, folded = run_in_thread(both())
    key = (c.org, c.patient)
    assert ledger[key].time_logs == folded[key].time_logs
    assert [t.minutes for t in month_totals(ledger[key]).values()] == [23]
    as_of = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)
    assert compute_claims(ledger.values(), as_of, include_open=True) == compute_claims(
        folded.values(), as_of, include_open=True
    )
