"""A fall pauses the program; the clinician resumes it from the patient page (issue 17).

Real gateway, worker, Kafka and PostgreSQL; Debian's chromium through Playwright. Three
patients with the same week of sessions and nothing for 11 days: one fell (paused), one
only checked in (the control), one fell and was resumed 8 days ago. The worker's timer
fires inactivity and adherence_low for the control and, from the resume date on, for the
resumed one, and nothing of the two for the paused one; the offline evaluator (``rtm alerts
evaluate`` over the stored events) gives the same alerts. A fall
posted by the patient's app pauses the program: the patient page says "Program paused since
<date> (fall)". The clinician presses Resume: the page posts (with the session's CSRF
token) a ``program.resumed`` in the clinician's own name and organisation through the
gateway's event path to Kafka; the worker stores it exactly once, and the page shows the
program resumed. A post without the CSRF token, another clinician's post and a repeated
post add nothing."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from alerts.evaluate import run_alerts_evaluate
from alerts.state import decode_state
from pathways.alerting import pathway_alerts
from streams.access import SESSION_COOKIE
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.browser import CHROMIUM, PASSWORD, fetch, provision
from tests.integration.browser import sign_in as browser_sign_in
from tests.integration.conftest import Stack, refreshed, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")

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
    patient: str  # fell 11 days ago: paused
    control: str  # checked in 11 days ago, no fall
    resumed: str  # fell 11 days ago, resumed 8 days ago
    fall_date: str

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def clinician(self, name: str) -> str:
        return f"{self.tag}-cid-{name}"


async def _provision(settings: Settings, tag: str, org: str) -> str:
    users = [(f"{tag}-{n}", "clinician", f"{tag}-cid-{n}") for n in ("c1", "c2")]
    return await provision(settings, org, "Pause clinic", users, "pause")


def _program_events(c: Clinic, etype: str) -> list[dict[str, Any]]:
    rows = run_in_thread(
        fetch(
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
        p, control, resumed = f.patient(1), f.patient(2), f.patient(3)
        clinician = f"{tag}-cid-c1"
        for pid in (p, control, resumed):
            # one request per patient: the worker takes its events together, before a tick
            events = [
                f.episode_started(
                    pid, at=local(20, 8), clinician_id=clinician, episode_id=f"{pid}-ep1"
                ),
                *[f.exercise(pid, local(day, 18)) for day in range(19, 11, -1)],
                f.symptom(pid, local(11, 11), fall=pid != control),
            ]
            if pid == resumed:
                events.append(
                    {
                        "event_id": f"{pid}-resume",
                        "schema_version": 1,
                        "type": "program.resumed",
                        "patient_id": pid,
                        "occurred_at": local(8),
                        "episode_id": f"{pid}-ep1",
                        "clinician_id": clinician,
                    }
                )
            resp = stack.post(events, key=key)
            assert resp.status_code == 200 and resp.json()["accepted"] == len(events), resp.text
        c = Clinic(stack, tag, org, key, p, control, resumed, local(11)[:10])

        async def stored() -> bool:
            rows = await fetch(
                stack.settings,
                "SELECT 1 FROM alerts WHERE patient_id = $1 AND kind = 'fall'",
                p,
            )
            return bool(rows)

        run_in_thread(wait_for(stored, 90, "the fall's alert"))
        yield c


async def _alerts(c: Clinic) -> dict[str, tuple[str, str, str, dt.datetime]]:
    rows = await fetch(
        c.stack.settings,
        "SELECT id, patient_id, kind, status, fired_at FROM alerts"
        " WHERE org_id = $1 AND patient_id = ANY($2::text[])",
        c.org,
        [c.patient, c.control, c.resumed],
    )
    return {r["id"]: (r["patient_id"], r["kind"], r["status"], r["fired_at"]) for r in rows}


async def _ticked_today(c: Clinic, pid: str) -> bool:
    """The worker's timer has evaluated today's start for the patient's episode."""
    rows = await fetch(
        c.stack.settings,
        "SELECT state FROM alert_state WHERE org_id = $1 AND patient_id = $2",
        c.org,
        pid,
    )
    if not rows:
        return False
    cursor = decode_state(rows[0]["state"]).day_cursor.get(f"{pid}-ep1")
    return cursor is not None and cursor >= dt.datetime.now(ZONE).date()


def test_while_paused_inactivity_and_adherence_low_stay_silent_and_a_resume_restores_them(
    clinic: Clinic, tmp_path: Path
) -> None:
    c = clinic

    async def settled() -> bool:
        kinds = {(pid, kind) for pid, kind, _, _ in (await _alerts(c)).values()}
        return all(
            (pid, kind) in kinds
            for pid in (c.control, c.resumed)
            for kind in ("inactivity", "adherence_low")
        ) and all([await _ticked_today(c, pid) for pid in (c.patient, c.control, c.resumed)])

    run_in_thread(wait_for(settled, 120, "the timer's day ends of the three patients"))
    # and the care pathway's alerts, raised by the worker's refresh once its marks settle
    settings = c.stack.settings
    run_in_thread(wait_for(lambda: refreshed(settings, c.org), 120, "the pathways refreshed"))
    streamed = run_in_thread(_alerts(c))
    by_patient: dict[str, dict[str, dt.datetime]] = {}
    for pid, kind, _, fired_at in streamed.values():
        by_patient.setdefault(pid, {})[kind] = fired_at
    # the paused patient: the fall, and neither of the two suspended rules
    assert "fall" in by_patient[c.patient]
    assert not {"inactivity", "adherence_low"} & set(by_patient[c.patient])
    # resumed 8 days ago with no data since: L = the resume date, inactivity fires at the
    # start of its day + 4; adherence_low once the window's unpaused days (the sessions
    # before the fall, the days since the resume) fall below 50%: at the end of resume + 2
    resume_day = dt.date.fromisoformat(local(8)[:10])
    midnight = dt.datetime.combine(resume_day + dt.timedelta(days=4), dt.time(), ZONE)
    assert by_patient[c.resumed]["inactivity"] == midnight
    assert by_patient[c.resumed]["adherence_low"] == midnight - dt.timedelta(days=1)
    assert by_patient[c.control]["inactivity"] < by_patient[c.resumed]["inactivity"]

    # the offline evaluator over the stored events (arrival order) agrees
    rows = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT payload FROM events WHERE org_id = $1 AND patient_id = ANY($2::text[])"
            " ORDER BY stored_at, occurred_at",
            c.org,
            [c.patient, c.control, c.resumed],
        )
    )
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("".join(r["payload"] + "\n" for r in rows))
    out = io.StringIO()
    assert run_alerts_evaluate(jsonl, dt.datetime.now(dt.UTC), out, after=pathway_alerts) == 0
    offline = {
        a["id"]: (a["patient_id"], a["kind"], a["status"], dt.datetime.fromisoformat(a["fired_at"]))
        for a in map(json.loads, out.getvalue().splitlines())
    }
    assert offline == streamed


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
        fetch(
            c.stack.settings,
            "SELECT actor FROM audit_log WHERE org_id = $1 AND action = 'resume_program'"
            " AND $2 = ANY(patient_ids)",
            c.org,
            c.patient,
        )
    )
    assert {r["actor"] for r in audit} == {f"user:{c.user('c1')}"}
