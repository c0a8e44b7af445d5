"""The escalation ladder (issue 17, item 2) through the real gateway, worker, Kafka and
PostgreSQL with local HTTP receivers: a critical alert nobody acknowledges reaches the rest
of the care team, then the organisation-wide recipient, at the configured offsets, each
step a signed delivery of the outbox; an acknowledged one goes no further."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from rtm.bench.receiver import Receiver
from rtm.devstack import DEV_USERS_FILE
from schemas.events import DEFAULT_ORG
from streams.db.access import add_team_member
from streams.db.deliveries import remove_webhook, set_webhook
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import running_stack, wait_for
from tests.integration.test_pages import CHROMIUM, playwright_sync

pytestmark = pytest.mark.integration

STEP1, STEP2 = 4.0, 8.0  # seconds: short offsets for the test (defaults 15 and 60 minutes)


def _at(seconds: float) -> dt.datetime:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).replace(microsecond=0)


def _escalations(r: Receiver, patient: str) -> list[tuple[float, list[dt.datetime]]]:
    """(arrival, the steps on the alert) of each escalation this receiver got for ``patient``."""
    return [
        (t, [dt.datetime.fromisoformat(x) for x in c["alert"]["escalations"]])
        for t, c in r.delivered()
        if c["change"] == "escalated" and c["alert"]["patient_id"] == patient
    ]


def _timeline(base_url: str, state_dir: Path, patient_id: str, alert_id: str) -> str:
    """The patient page's entry for the alert, as the dev admin sees it in chromium
    (signed in through the sign-in page; sync Playwright, so run off the event loop)."""
    users = json.loads((state_dir / DEV_USERS_FILE).read_text())
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_context(base_url=base_url).new_page()
            page.goto("/ui/sign-in")
            page.fill("#username", "admin")
            page.fill("#password", users["admin"]["password"])
            with page.expect_navigation():
                page.keyboard.press("Enter")
            page.goto(f"/ui/patients/{patient_id}")
            shots = state_dir / "artifacts" / "browser"
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "patient-alert-escalated.png"), full_page=True)
            return str(page.inner_text(f'#open-alerts li[data-alert="{alert_id}"]'))
        finally:
            browser.close()


async def test_an_unacknowledged_critical_climbs_the_ladder_and_an_acknowledged_one_stops(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory
) -> None:
    own, team, org = Receiver(secret="s-own"), Receiver(secret="s-team"), Receiver(secret="s-org")
    c_own, c_team = f"{factory.prefix}-own", f"{factory.prefix}-team"
    await set_webhook(db, c_own, own.url, "s-own")
    await set_webhook(db, c_team, team.url, "s-team")
    await set_webhook(db, "*", org.url, "s-org")
    await add_team_member(db, DEFAULT_ORG, f"{factory.prefix}-knee", c_own)
    await add_team_member(db, DEFAULT_ORG, f"{factory.prefix}-knee", c_team)
    p1, p2 = factory.patient(1), factory.patient(2)
    # wall clock = mono0's wall time + elapsed monotonic time (the receivers time arrivals)
    mono0, wall0 = time.monotonic(), dt.datetime.now(dt.UTC)

    def wall(mono: float) -> dt.datetime:
        return wall0 + dt.timedelta(seconds=mono - mono0)

    try:
        with running_stack(
            base_settings,
            tick_interval_s=0.5,
            escalate_care_team_after_s=STEP1,
            escalate_org_after_s=STEP2,
        ) as stack:
            # p2's report is dated a few seconds ahead: time to acknowledge it before step 1
            f1, f2 = _at(0), _at(4)
            events = [
                factory.episode_started(p1, at=_at(-3600).isoformat(), clinician_id=c_own),
                factory.episode_started(p2, at=_at(-3600).isoformat(), clinician_id=c_own),
                factory.pain(p1, 9, f1.isoformat()),
                factory.pain(p2, 9, f2.isoformat()),
            ]
            assert stack.post(events).json()["accepted"] == 4

            async def p2_stored() -> bool:
                return bool(await db.fetchval("SELECT id FROM alerts WHERE patient_id = $1", p2))

            await wait_for(p2_stored, timeout=30, what="p2's pain_high alert")
            a2 = await db.fetchval("SELECT id FROM alerts WHERE patient_id = $1", p2)
            resp = httpx.post(
                f"{stack.url}/v1/alerts/{a2}/ack",
                json={"disposition": "contacted_patient"},
                headers=stack.user_headers("admin"),
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
            acked_at = dt.datetime.fromisoformat(resp.json()["acknowledged_at"])
            assert acked_at < f2 + dt.timedelta(seconds=STEP1), "acknowledged too late to test"

            async def reached_the_organisation() -> bool:
                return bool(_escalations(org, p1))

            await wait_for(reached_the_organisation, timeout=60, what="step 2 at '*'")
            # p2's steps would have been due by now (and a tick or two later)
            while dt.datetime.now(dt.UTC) < f2 + dt.timedelta(seconds=STEP2 + 2):
                time.sleep(0.25)
            step1 = f1 + dt.timedelta(seconds=STEP1)
            step2 = f1 + dt.timedelta(seconds=STEP2)

            # step 1 at the care team's receiver, not before its offset, once
            [(t1, steps1)] = _escalations(team, p1)
            assert steps1 == [step1]
            assert wall(t1) >= step1 - dt.timedelta(milliseconds=200)
            # step 2 at the organisation's, not before its offset, once
            [(t2, steps2)] = _escalations(org, p1)
            assert steps2 == [step1, step2]
            assert wall(t2) >= step2 - dt.timedelta(milliseconds=200)
            # the alert's own clinician got the firing, no escalation to themselves
            assert [c["change"] for _, c in own.delivered() if c["alert"]["patient_id"] == p1] == [
                "fired"
            ]
            # every request was signed with its receiver's secret
            assert team.bad_signatures == org.bad_signatures == own.bad_signatures == 0
            # the acknowledged one went no further
            assert _escalations(team, p2) == [] and _escalations(org, p2) == []

            # the steps are shown on the alert (the API's read of it)
            alerts = httpx.get(
                f"{stack.url}/v1/alerts",
                params={"patient_id": p1},
                headers=stack.user_headers("admin"),
                timeout=30,
            ).json()["alerts"]
            (a1,) = alerts
            assert [dt.datetime.fromisoformat(x) for x in a1["escalations"]] == [step1, step2]
            changes = sorted(d["change"] for d in a1["deliveries"])
            assert changes == ["escalated-1:" + c_team, "escalated-2", "fired"]
            assert {d["status"] for d in a1["deliveries"]} == {"delivered"}
            # and on the patient page's timeline, in a real browser
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                text = pool.submit(
                    _timeline, stack.url, stack.settings.state_dir, p1, a1["id"]
                ).result()
            assert "Escalated to the care team at" in text
            assert "Escalated to the organisation at" in text
    finally:
        for c in (c_own, c_team, "*"):
            await remove_webhook(db, c)
        for r in (own, team, org):
            r.close()
