"""Acting on an alert (issue 17, item 2): a disposition on every acknowledgement and a
bounded snooze, through the real gateway, worker, Kafka and PostgreSQL, by the API and in
a real browser (Playwright driving Debian's chromium).

One organisation; c1 treats pFlag (a red flag), pApi, pBack, pAck, pSnooze and pLast (each
a pain_high, critical; pLast's the newest, so it is the last row of the tier). The stack offers a few-second snooze (RTM_SNOOZE_DURATIONS) so a
snooze's end is seen: the alert leaves the worklist's tiers while snoozed and is back in
its tier, still open, after it. Screenshots go to <state dir>/artifacts/browser/.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from alerts.rollup import SNOOZED_TIER
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.browser import chromium
from tests.integration.conftest import read_topic, run_in_thread, running_stack, wait_for
from tests.integration.test_pages import (
    Dash,
    _provision,
    api_headers,
    local,
    sign_in,
)

pytestmark = pytest.mark.integration

SHORT = 20  # seconds: the short snooze the stack offers (long enough to see it on)
NAMES = ("pFlag", "pApi", "pBack", "pAck", "pSnooze", "pLast")


async def _fetch(settings: Settings, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def fetch(dash: Dash, sql: str, *args: Any) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = run_in_thread(_fetch(dash.stack.settings, sql, *args))
    return rows


def wait_until(dash: Dash, sql: str, *args: Any, what: str, timeout: float = 60) -> None:
    async def holds() -> bool:
        rows = await _fetch(dash.stack.settings, sql, *args)
        return bool(rows and rows[0][0])

    run_in_thread(wait_for(holds, timeout, what))


@pytest.fixture(scope="module")
def dash(base_settings: Settings) -> Iterator[Dash]:
    with running_stack(base_settings, snooze_durations=f"{SHORT}s,4h,24h,3d") as stack:
        tag = "act" + uuid.uuid4().hex[:8]
        shots = stack.settings.state_dir / "artifacts" / "browser"
        shots.mkdir(parents=True, exist_ok=True)
        d = Dash(stack, tag, f"{tag}-org", shots=shots)
        run_in_thread(_provision(stack.settings, d))
        f = EventFactory()
        d.patients = {n: f.patient(i) for i, n in enumerate(NAMES, 1)}
        d.post(
            [
                f.episode_started(
                    d.patients[n],
                    at=local(12, 8),
                    clinician_id=f"{tag}-cid1",
                    episode_id=f"{d.patients[n]}-ep1",
                )
                for n in NAMES
            ],
            "feed",
        )
        data: list[dict[str, Any]] = []
        for i, n in enumerate(NAMES):
            pid = d.patients[n]
            data += [f.exercise(pid, local(day, 18)) for day in range(11, 0, -1)]
            # the baseline PROM on time (day 1): no care-pathway task is overdue here
            data.append(
                {
                    "event_id": f"{pid}-baseline",
                    "schema_version": 1,
                    "type": "assessment.completed",
                    "patient_id": pid,
                    "occurred_at": local(11, 9),
                    "instrument": "psfs",
                    "answers": {"a1": 3, "a2": 3, "a3": 3},
                }
            )
            if n == "pFlag":
                data.append(f.symptom(pid, local(3, 11), red_flags=["saddle_anesthesia"]))
            else:  # pain >= 7, older for the earlier names: the tier's order is known
                data.append(f.pain(pid, 8, local(6 - i, 9)))
        d.post(data, "feed")
        wait_until(
            d,
            "SELECT count(*) = $2 FROM patient_rollups WHERE org_id = $1 AND open_critical = 1",
            d.org,
            len(NAMES),
            what="every patient's critical alert",
            timeout=90,
        )
        yield d


@pytest.fixture(scope="module")
def browser(dash: Dash) -> Iterator[Any]:
    with chromium() as b:  # after the clinic's set-up
        yield b


def _alert_of(dash: Dash, name: str, headers: dict[str, str]) -> dict[str, Any]:
    resp = httpx.get(
        f"{dash.stack.url}/v1/alerts",
        params={"patient_id": dash.patients[name]},
        headers=headers,
        timeout=30,
    )
    resp.raise_for_status()
    (alert,) = resp.json()["alerts"]
    return dict(alert)


def _worklist(dash: Dash, headers: dict[str, str]) -> list[dict[str, Any]]:
    resp = httpx.get(f"{dash.stack.url}/v1/worklist", headers=headers, timeout=30)
    resp.raise_for_status()
    rows: list[dict[str, Any]] = resp.json()["patients"]
    return rows


def _post(dash: Dash, path: str, headers: dict[str, str], body: Any) -> httpx.Response:
    return httpx.post(f"{dash.stack.url}{path}", json=body, headers=headers, timeout=30)


def test_acknowledging_requires_a_disposition_from_the_list_and_carries_it(dash: Dash) -> None:
    c1 = api_headers(dash, "c1")
    alert = _alert_of(dash, "pApi", c1)
    path = f"/v1/alerts/{alert['id']}/ack"
    for body in ({}, {"note": "called"}, {"disposition": "sent_home"}, {"disposition": None}):
        resp = _post(dash, path, c1, body)
        assert resp.status_code == 422, (body, resp.text)
        assert [e["loc"] for e in resp.json()["detail"]] == [["body", "disposition"]], body
    assert _alert_of(dash, "pApi", c1)["status"] == "open"  # nothing was recorded

    # snoozed first: acknowledging a snoozed alert works
    snoozed = _post(dash, path[:-3] + "snooze", c1, {"duration": "4h", "reason": "on leave"})
    assert snoozed.status_code == 200, snoozed.text
    body = {"disposition": "referred_physician", "note": "faxed Dr. Kim"}
    resp = _post(dash, path, c1, body)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["disposition"]) == (
        "acknowledged",
        body["disposition"],
    )

    read = _alert_of(dash, "pApi", c1)  # read back: disposition, note, who and when
    assert (read["status"], read["disposition"], read["ack_note"]) == (
        "acknowledged",
        "referred_physician",
        "faxed Dr. Kim",
    )
    assert read["acknowledged_by"] == dash.user("c1")
    at = dt.datetime.fromisoformat(read["acknowledged_at"])
    assert abs((dt.datetime.now(dt.UTC) - at).total_seconds()) < 120
    (audit,) = fetch(
        dash,
        "SELECT actor, detail FROM audit_log WHERE action = 'acknowledge' AND resource = $1",
        f"POST {path}",
    )
    assert audit["actor"] == f"user:{dash.user('c1')}"
    assert json.loads(audit["detail"])["disposition"] == "referred_physician"
    # the worker applies the same acknowledgement: the stream carries the disposition
    wait_until(
        dash,
        "SELECT open_critical = 0 AND open_snoozed = 0 FROM patient_rollups"
        " WHERE org_id = $1 AND patient_id = $2",
        dash.org,
        dash.patients["pApi"],
        what="the worker's acknowledgement",
    )
    mine: list[dict[str, Any]] = []
    for _ in range(10):  # rtm.alerts: the outbox publishes after the batch's commit
        changes = run_in_thread(
            read_topic(dash.stack.settings, dash.stack.settings.kafka.topic_alerts, 10_000, 3)
        )
        mine = [c for c in changes if c["alert"]["id"] == alert["id"]]
        if mine and mine[-1]["change"] == "acknowledged":
            break
    assert [c["change"] for c in mine] == ["fired", "snoozed", "acknowledged"]
    assert mine[-1]["alert"]["disposition"] == "referred_physician"
    assert mine[-1]["alert"]["ack_note"] == "faxed Dr. Kim"
    assert mine[1]["alert"]["snooze_reason"] == "on leave"


def test_a_snooze_is_bounded_refused_for_a_red_flag_and_audited(dash: Dash) -> None:
    c1 = api_headers(dash, "c1")
    flag = _alert_of(dash, "pFlag", c1)
    refused = _post(
        dash, f"/v1/alerts/{flag['id']}/snooze", c1, {"duration": "4h", "reason": "busy"}
    )
    assert refused.status_code == 409
    assert refused.json()["detail"] == "a red flag alert cannot be snoozed"
    back = _alert_of(dash, "pBack", c1)
    path = f"/v1/alerts/{back['id']}/snooze"
    for body, field in (
        ({"duration": "8d", "reason": "x"}, "duration"),
        ({"duration": "169h", "reason": "x"}, "duration"),
        ({"duration": "5h", "reason": "x"}, "duration"),  # not a configured choice
        ({"duration": "4h"}, "reason"),
        ({"duration": "4h", "reason": ""}, "reason"),
    ):
        resp = _post(dash, path, c1, body)
        assert resp.status_code == 422, (body, resp.text)
        assert [e["loc"] for e in resp.json()["detail"]] == [["body", field]], body
    assert "at most 7 days" in _post(dash, path, c1, {"duration": "8d", "reason": "x"}).text
    assert _alert_of(dash, "pBack", c1).get("snoozed_until") is None
    snoozes = "SELECT detail FROM audit_log WHERE action = 'snooze' AND resource = $1"
    assert not fetch(dash, snoozes, f"POST {path}")

    # a short snooze: out of the triage tiers, "snoozed until", then back in its tier
    before = [r["patient_id"] for r in _worklist(dash, c1)]
    resp = _post(dash, path, c1, {"duration": f"{SHORT}s", "reason": "calls back at noon"})
    assert resp.status_code == 200, resp.text
    until = dt.datetime.fromisoformat(resp.json()["snoozed_until"])
    (audit,) = fetch(dash, snoozes, f"POST {path}")
    detail = json.loads(audit["detail"])
    assert (detail["reason"], detail["until"]) == ("calls back at noon", until.isoformat())
    rows = _worklist(dash, c1)
    pid = dash.patients["pBack"]
    row = next(r for r in rows if r["patient_id"] == pid)
    assert (row["tier"], row["snoozed"]) == (SNOOZED_TIER, 1)
    assert dt.datetime.fromisoformat(row["snoozed_until"]) == until
    assert [r["patient_id"] for r in rows][-1] == pid  # after every tier
    assert pid != before[-1]  # it was not last before the snooze
    time.sleep(max((until - dt.datetime.now(dt.UTC)).total_seconds(), 0) + 1)
    rows = _worklist(dash, c1)
    row = next(r for r in rows if r["patient_id"] == pid)
    assert (row["tier"], row["snoozed"], row["snoozed_until"]) == (1, 0, None)
    assert [r["patient_id"] for r in rows] == before  # back in its place, still open
    assert _alert_of(dash, "pBack", c1)["status"] == "open"


def test_acknowledging_on_the_patient_page_requires_a_disposition_and_shows_it(
    dash: Dash, browser: Any
) -> None:
    pid = dash.patients["pAck"]
    page = sign_in(browser, dash, "c1")
    page.goto(f"/ui/patients/{pid}")
    item = page.locator("#open-alerts li.alert").first
    alert_id = item.get_attribute("data-alert")
    # without a disposition the browser does not send the form (it is required) ...
    page.fill(f"#note-{alert_id}", "left a voicemail")
    item.locator("form.ack button").click()
    assert page.evaluate(f"document.getElementById('disposition-{alert_id}').validity.valueMissing")
    page.wait_for_timeout(500)
    assert page.locator(f'#open-alerts li[data-alert="{alert_id}"]').count() == 1
    # ... and the server refuses one sent without it (422, nothing stored)
    status = page.evaluate(
        """async ([id, csrf]) => (await fetch(`/ui/alerts/${id}/ack`, {method: 'POST',
            headers: {'Content-Type': 'application/x-www-form-urlencoded'},
            body: `note=x&csrf_token=${csrf}`})).status""",
        [alert_id, page.locator("form.ack input[name=csrf_token]").first.input_value()],
    )
    assert status == 422
    page.screenshot(path=str(dash.shots / "patient-ack-disposition-required.png"), full_page=True)
    page.select_option(f"#disposition-{alert_id}", "left_message")
    item.locator("form.ack button").click()
    history = page.locator(f'#alert-history li[data-alert="{alert_id}"]')
    history.wait_for()
    text = history.inner_text()
    assert "Disposition: left message" in text and "Note: left a voicemail" in text
    assert f"by {dash.user('c1')} at " in text  # who and when, on the timeline
    page.screenshot(path=str(dash.shots / "patient-ack-disposition.png"), full_page=True)
    page.reload()  # stored, not only rendered
    assert "Disposition: left message" in page.inner_text(
        f'#alert-history li[data-alert="{alert_id}"]'
    )
    (row,) = fetch(dash, "SELECT disposition, status FROM alerts WHERE id = $1", alert_id)
    assert (row["disposition"], row["status"]) == ("left_message", "acknowledged")
    page.close()


def test_a_snooze_from_the_patient_page_resurfaces_the_alert_at_its_end(
    dash: Dash, browser: Any
) -> None:
    pid = dash.patients["pSnooze"]
    page = sign_in(browser, dash, "c1")
    before = page.locator("table.worklist tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.patient)"
    )
    assert pid in before and before[-1] != pid
    page.goto(f"/ui/patients/{dash.patients['pFlag']}")  # a red flag offers no snooze
    assert page.locator("#open-alerts form.snooze").count() == 0
    page.goto(f"/ui/patients/{pid}")
    item = page.locator("#open-alerts li.alert").first
    alert_id = item.get_attribute("data-alert")
    page.select_option(f"#snooze-{alert_id}", f"{SHORT}s")
    page.fill(f"#reason-{alert_id}", "waiting for the callback")
    item.locator("form.snooze button").click()
    snoozed = page.locator(f'#open-alerts li[data-alert="{alert_id}"] .snoozed')
    snoozed.wait_for()
    assert "Snoozed until" in snoozed.inner_text()
    assert "waiting for the callback" in snoozed.inner_text()
    page.screenshot(path=str(dash.shots / "patient-snoozed.png"), full_page=True)

    # the worklist: out of the triage tiers, "snoozed until …", counted as snoozed
    page.goto("/ui/worklist")
    row = page.locator(f'tr[data-patient="{pid}"]')
    for _ in range(40):  # the worker applies the snooze to the rollups within moments
        if "snoozed until" in row.inner_text():
            break
        page.wait_for_timeout(250)
        page.reload()
    assert "snoozed until" in row.inner_text()
    order = page.locator("table.worklist tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.patient)"
    )
    assert order[-1] == pid and sorted(order) == sorted(before)
    assert "snoozed: 1" in page.inner_text("#tier-counts")
    api = [r["patient_id"] for r in _worklist(dash, api_headers(dash, "c1"))]
    assert api == order  # the page's order is the API's
    page.screenshot(path=str(dash.shots / "worklist-snoozed.png"), full_page=True)

    # at its end, still open: back in its tier, without "snoozed"
    (until,) = fetch(dash, "SELECT snoozed_until FROM alerts WHERE id = $1", alert_id)
    time.sleep(max((until[0] - dt.datetime.now(dt.UTC)).total_seconds(), 0) + 1)
    page.reload()
    order = page.locator("table.worklist tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.patient)"
    )
    assert order == before
    assert "snoozed" not in row.inner_text()
    assert "snoozed" not in page.inner_text("#tier-counts")
    page.screenshot(path=str(dash.shots / "worklist-resurfaced.png"), full_page=True)
    page.goto(f"/ui/patients/{pid}")
    assert page.locator(f'#open-alerts li[data-alert="{alert_id}"]').count() == 1
    assert page.locator(f'#open-alerts li[data-alert="{alert_id}"] .snoozed').count() == 0
    page.close()
