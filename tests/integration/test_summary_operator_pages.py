"""The printable patient summary and the operator page in a real browser (Playwright
driving Debian's chromium) against the real gateway, worker, Kafka and PostgreSQL.

A clinician opens a patient, follows "Print summary" and prints it to PDF (chromium's
print, with the print stylesheet): the PDF's text holds the patient's numbers (pain
first, latest and count, the 7-day adherence the patient page shows, the sessions done,
this month's minutes, the period's data days, the acknowledged alert's disposition and
note, the episode) and none of the navigation or forms; the read is in the audit log; a
clinician outside the patient's team gets 404. An operator starts at the home page, opens
the operator page and sees the worker ready, the worker's and the gateway's own figures
(the page's "events stored" is the worker's /metrics figure), and after an invalid event
the gateway's dead-letter count one higher; no patient id on it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from streams.access import CSRF_HEADER, SESSION_COOKIE, hash_password, new_key
from streams.db import access as db
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.browser import PASSWORD, chromium
from tests.integration.browser import sign_in as browser_sign_in
from tests.integration.conftest import Stack, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")
pypdf = pytest.importorskip("pypdf")

ZONE = ZoneInfo("America/Chicago")
NOTE = "Sent to the emergency department the same hour"


@dataclass
class World:
    stack: Stack
    tag: str
    key: str = ""
    patient: str = ""
    cookies: dict[str, dict[str, str]] = field(default_factory=dict)

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def post(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        resp = httpx.post(
            f"{self.stack.url}/v1/events",
            json=events,
            timeout=30,
            headers={"Authorization": f"Bearer {self.key}"},
        )
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def api(self, name: str) -> dict[str, str]:
        if name not in self.cookies:
            resp = httpx.post(
                f"{self.stack.url}/v1/session",
                timeout=30,
                json={"username": self.user(name), "password": PASSWORD},
            )
            resp.raise_for_status()
            self.cookies[name] = {
                "Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}",
                CSRF_HEADER: resp.json()["csrf_token"],
            }
        return self.cookies[name]


def local(days_ago: int, hour: int = 10) -> str:
    day = dt.datetime.now(ZONE).date() - dt.timedelta(days=days_ago)
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=ZONE).isoformat()


async def _provision(settings: Settings, w: World) -> None:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        org = f"{w.tag}-org"
        await db.add_org(conn, org, "Summary clinic")
        pw = hash_password(PASSWORD)
        for name, role, clin in (
            ("c1", "clinician", "cid1"),
            ("c2", "clinician", "cid2"),
            ("op", "operator", None),
        ):
            await db.add_user(conn, org, w.user(name), role, pw, w.user(clin) if clin else None)
        key, key_id, salt, digest = new_key()
        await db.add_key(conn, key_id, org, ["producer", "integration"], "summary", salt, digest)
        w.key = key
    finally:
        await conn.close()


def _time_log(f: EventFactory, w: World, minutes: int) -> dict[str, Any]:
    return {
        "event_id": f"{f.prefix}-time1",
        "schema_version": 1,
        "type": "clinician.time_logged",
        "patient_id": w.patient,
        "occurred_at": local(0, 0),  # today: this month's minutes
        "clinician_id": w.user("cid1"),
        "clinician_role": "PT",
        "minutes": minutes,
        "activity": "call",
        "interactive": True,
    }


@pytest.fixture(scope="module")
def world(base_settings: Settings) -> Iterator[World]:
    with running_stack(base_settings) as stack:
        w = World(stack, "sum" + uuid.uuid4().hex[:8])
        run_in_thread(_provision(stack.settings, w))
        f = EventFactory()
        w.patient = f.patient(1)
        w.post(
            [
                f.episode_started(
                    w.patient,
                    at=local(12, 8),
                    clinician_id=w.user("cid1"),
                    episode_id=f"{w.patient}-ep1",
                )
            ]
        )
        data = [f.exercise(w.patient, local(day, 18)) for day in range(10, 0, -1)]
        data += [f.pain(w.patient, s, local(day, 9)) for s, day in ((3, 8), (5, 5), (7, 2))]
        data += [f.symptom(w.patient, local(2, 11), red_flags=["saddle_anesthesia"])]
        data += [_time_log(f, w, 25)]
        assert w.post(data)["accepted"] == len(data)

        async def red_flag() -> bool:
            resp = httpx.get(
                f"{stack.url}/v1/alerts",
                params={"patient_id": w.patient, "severity": "critical"},
                headers=w.api("c1"),
                timeout=30,
            )
            return bool(resp.json()["alerts"])

        run_in_thread(wait_for(red_flag, 90, "the red flag"))
        yield w


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    with chromium() as b:  # after the clinic's set-up
        yield b


def sign_in(browser: Any, w: World, name: str) -> Any:
    return browser_sign_in(browser, w.stack.url, w.user(name), 15_000)


def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = " ".join(" ".join((pg.extract_text() or "").split()) for pg in reader.pages)
    return unicodedata.normalize("NFKC", text)  # chromium's "fi" ligatures as letters


async def _audited(settings: Settings, resource: str) -> int:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE resource = $1 AND action = 'read'", resource
        )
        return n
    finally:
        await conn.close()


def test_the_printed_summary_is_a_pdf_with_the_patients_numbers(world: World, browser: Any) -> None:
    w, pid = world, world.patient
    alerts = httpx.get(
        f"{w.stack.url}/v1/alerts",
        params={"patient_id": pid, "severity": "critical"},
        headers=w.api("c1"),
        timeout=30,
    ).json()["alerts"]
    ack = httpx.post(
        f"{w.stack.url}/v1/alerts/{alerts[0]['id']}/ack",
        json={"disposition": "sent_to_ed", "note": NOTE},
        headers=w.api("c1"),
        timeout=30,
    )
    assert ack.status_code == 200, ack.text

    page = sign_in(browser, w, "c1")
    page.goto(f"/ui/patients/{pid}")
    latest = page.inner_text("#adherence-latest strong")  # what the patient page shows
    assert latest.endswith("%"), latest
    page.click("#print-summary")
    page.wait_for_url(f"**/ui/patients/{pid}/summary")
    assert "Patient summary" in page.inner_text("h1")
    pdf = page.pdf(format="A4", print_background=False)
    assert pdf.startswith(b"%PDF")
    text = pdf_text(pdf)
    assert pid in text
    assert f"Latest 7-day adherence: {latest}" in text, text[:800]
    assert re.search(r"sessions completed over the \d+ days shown: 10\b", text), text[:800]
    assert "Latest: 7/10; first: 3/10; 3 reports" in text, text[:1500]
    assert "This month: 25 treatment minutes" in text, text
    assert "10 of 16 (so far)" in text, text  # the period's data days: days 10..1
    assert "critical red flag acknowledged sent to ed" in text and NOTE in text, text
    assert f"{pid}-ep1" in text
    # printed: no navigation, no sign-out form, no link back
    for chrome in ("Sign out", "My patients", "Skip to content", "Use the browser"):
        assert chrome not in text, chrome
    (w.stack.settings.state_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    (w.stack.settings.state_dir / "artifacts" / "summary.pdf").write_bytes(pdf)

    resource = f"GET /ui/patients/{pid}/summary"
    assert run_in_thread(_audited(w.stack.settings, resource)) >= 1
    other = sign_in(browser, w, "c2")
    resp = other.goto(f"/ui/patients/{pid}/summary")
    assert resp is not None and resp.status == 404


def _worker_metric(w: World, name: str) -> float:
    s = w.stack.settings.worker
    text = httpx.get(f"http://{s.web_host}:{s.web_port}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_the_operator_page_shows_the_worker_and_gateway_figures(world: World, browser: Any) -> None:
    w = world
    page = sign_in(browser, w, "op")
    assert page.url.endswith("/ui/")
    page.click("#operator-link")
    page.wait_for_url("**/ui/operator")
    assert page.inner_text("#ready-worker .value") == "ready"
    assert "consuming: yes" in page.inner_text("#ready-worker")
    assert page.inner_text("#ready-gateway .value") == "ready"
    row = page.locator("#fig-gateway-dead")
    assert "rtm_gateway_events_rejected_total" in row.inner_text()
    before = int(row.locator(".value").inner_text())
    stored = _worker_metric(w, "rtm_worker_events_stored_total")
    assert page.inner_text("#fig-stored .value") == str(int(stored))
    assert "rtm_worker_consumer_lag" in page.inner_text("#fig-lag")
    assert page.inner_text("#fig-last-event .value").endswith(("ago", "min ago"))

    f = EventFactory()
    bad = f.pain(w.patient, 11, local(0, 0))  # out of range: refused per field
    answer = w.post([bad])
    assert answer["accepted"] == 0 and len(answer["rejected"]) == 1, answer
    page.reload()
    assert int(page.inner_text("#fig-gateway-dead .value")) == before + 1
    assert "pain.reported 1" in page.inner_text("#fig-gateway-dead .detail")
    assert w.patient not in page.content()  # no patient data on the operator page
    page.screenshot(path=str(w.stack.settings.state_dir / "artifacts" / "operator.png"))

    clinician = sign_in(browser, w, "c1")
    resp = clinician.goto("/ui/operator")
    assert resp is not None and resp.status == 403
