"""A fall pauses the program; the clinician resumes it from the patient page (issue 17).

Real gateway, worker, Kafka and PostgreSQL; Debian's chromium through Playwright. A fall
posted by the patient's app pauses the program: the patient page says "Program paused since
<date> (fall)". The clinician presses Resume: the page posts (with the session's CSRF
token) a ``program.resumed`` in the clinician's own name and organisation through the
gateway's event path to Kafka; the worker stores it exactly once, and the page shows the
program resumed. A post without the CSRF token, another clinician's post and a repeated
post add nothing."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import orjson
import pytest

from streams.access import SESSION_COOKIE, hash_password, new_key
from streams.db import access as db
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import Stack, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "a long demo password"
ZONE = ZoneInfo("America/Chicago")


def local(days_ago: int, hour: int = 10) -> str:
    day = dt.datetime.now(ZONE).date() - dt.timedelta(days=days_ago)
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=ZONE).isoformat()


@dataclass
class Clinic:
    stack: Stack
    tag: str
    org: str
    key: str
    patient: str
    fall_date: str

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def clinician(self, name: str) -> str:
        return f"{self.tag}-cid-{name}"


async def _provision(settings: Settings, tag: str, org: str) -> str:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        await db.add_org(conn, org, "Pause clinic")
        pw = hash_password(PASSWORD)
        for name in ("c1", "c2"):
            await db.add_user(conn, org, f"{tag}-{name}", "clinician", pw, f"{tag}-cid-{name}")
        key, key_id, salt, digest = new_key()
        await db.add_key(conn, key_id, org, ["producer", "integration"], "pause", salt, digest)
        return key
    finally:
        await conn.close()


async def _fetch(settings: Settings, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _program_events(c: Clinic, etype: str) -> list[dict[str, Any]]:
    rows = run_in_thread(
        _fetch(
            c.stack.settings,
            "SELECT payload FROM events WHERE org_id = $1 AND patient_id = $2 AND type = $3",
            c.org,
            c.patient,
            etype,
        )
    )
    return [orjson.loads(r["payload"]) for r in rows]


@pytest.fixture(scope="module")
def clinic(base_settings: Settings) -> Iterator[Clinic]:
    with running_stack(base_settings) as stack:
        tag = "pz" + uuid.uuid4().hex[:8]
        org = f"{tag}-org"
        key = run_in_thread(_provision(stack.settings, tag, org))
        f = EventFactory()
        p = f.patient(1)
        fall = f.symptom(p, local(2, 11), fall=True)
        events = [
            f.episode_started(
                p, at=local(10, 8), clinician_id=f"{tag}-cid-c1", episode_id=f"{p}-ep1"
            ),
            *[f.exercise(p, local(day, 18)) for day in range(9, 2, -1)],
            fall,
        ]
        resp = stack.post(events, key=key)
        assert resp.status_code == 200 and resp.json()["accepted"] == len(events), resp.text
        c = Clinic(stack, tag, org, key, p, local(2)[:10])

        async def stored() -> bool:
            rows = await _fetch(
                stack.settings,
                "SELECT 1 FROM alerts WHERE patient_id = $1 AND kind = 'fall'",
                p,
            )
            return bool(rows)

        run_in_thread(wait_for(stored, 90, "the fall's alert"))
        yield c


def sign_in(browser: Any, c: Clinic, name: str) -> Any:
    context = browser.new_context(base_url=c.stack.url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto("/ui/sign-in")
    page.fill("#username", c.user(name))
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert not page.url.endswith("/ui/sign-in"), page.inner_text("main")[:300]
    return page


def session(c: Clinic, name: str) -> tuple[dict[str, str], str]:
    resp = httpx.post(
        f"{c.stack.url}/v1/session",
        timeout=30,
        json={"username": c.user(name), "password": PASSWORD},
    )
    resp.raise_for_status()
    return {"Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}"}, resp.json()["csrf_token"]


def form_post(c: Clinic, name: str, action: str, csrf: bool = True) -> httpx.Response:
    headers, token = session(c, name)
    body = {"episode_id": f"{c.patient}-ep1"} | ({"csrf_token": token} if csrf else {})
    return httpx.post(
        f"{c.stack.url}/ui/patients/{c.patient}/program/{action}",
        data=body,
        headers=headers,
        timeout=30,
        follow_redirects=False,
    )


def test_a_fall_pauses_the_program_and_the_clinician_resumes_it_from_the_page(
    clinic: Clinic,
) -> None:
    c = clinic
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = sign_in(browser, c, "c1")
            page.goto(f"/ui/patients/{c.patient}")
            state = page.locator(f"#program-{c.patient}-ep1 .program-state")
            assert f"Program paused since {c.fall_date} (fall)" in state.inner_text()

            # neither a post without the CSRF token nor another clinician's gets through
            assert form_post(c, "c1", "resume", csrf=False).status_code == 403
            assert form_post(c, "c2", "resume").status_code == 404
            assert _program_events(c, "program.resumed") == []

            with page.expect_navigation():
                page.get_by_role("button", name="Resume program").click()
            today = dt.datetime.now(ZONE).date().isoformat()
            state = page.locator(f"#program-{c.patient}-ep1 .program-state")
            for _ in range(30):  # the form waits for the worker; a slow one: reload
                if "Program resumed" in state.inner_text():
                    break
                time.sleep(1)
                page.reload()
            assert f"Program resumed on {today}" in state.inner_text(), state.inner_text()
            # a second press (a stale page) changes nothing: the program is not paused
            assert form_post(c, "c1", "resume").status_code == 409
            assert len(_program_events(c, "program.resumed")) == 1
            # and pauses it again by hand (a clinician's pause, e.g. after a red flag)
            with page.expect_navigation():
                page.get_by_role("button", name="Pause program").click()
            for _ in range(30):
                if "Program paused" in state.inner_text():
                    break
                time.sleep(1)
                page.reload()
            assert f"Program paused since {today} (clinician)" in state.inner_text()
        finally:
            browser.close()

    # stored once, through the gateway (stamped) and the worker, in c1's name and org
    (resumed,) = _program_events(c, "program.resumed")
    assert resumed["clinician_id"] == c.clinician("c1")
    assert resumed["org_id"] == c.org and resumed["received_at"]
    assert resumed["episode_id"] == f"{c.patient}-ep1"
    assert resumed["occurred_at"][:10] == today
    (paused,) = _program_events(c, "program.paused")
    assert (paused["clinician_id"], paused["org_id"]) == (c.clinician("c1"), c.org)
    assert form_post(c, "c1", "pause").status_code == 409  # already paused
    audit = run_in_thread(
        _fetch(
            c.stack.settings,
            "SELECT actor FROM audit_log WHERE org_id = $1 AND action = 'resume_program'"
            " AND $2 = ANY(patient_ids)",
            c.org,
            c.patient,
        )
    )
    assert {r["actor"] for r in audit} == {f"user:{c.user('c1')}"}
