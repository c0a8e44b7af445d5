"""The worklist's "My tasks" (issue 19 item 5): the care-pathway tasks still to do, overdue
first, with the step-up reason, read from the outcome rows the worker stores; in a real
browser (Debian's chromium) and in ``GET /v1/worklist``, both scoped to the clinician's
patients. Real gateway, worker, Kafka and PostgreSQL. Screenshot: <state dir>/artifacts/
browser/worklist-my-tasks.png."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest

from streams.settings import Settings
from tests.integration.browser import chromium, fetch, provision, sign_in
from tests.integration.conftest import run_in_thread, running_stack, wait_for
from tests.unit.test_alert_rules import BILLING

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")


def events(tag: str, clinician: str) -> list[dict[str, Any]]:
    """p-up: day 0 thirty days ago, baseline PSFS 3, pain 8 on day 22, week-4 PSFS 3.3:
    stepped up on day 26, its in-person visit (due day 29) and the week-4 review (due day
    28) overdue. p-new: started yesterday, its baseline PROM open (due in 6 days)."""
    day0 = dt.date.today() - dt.timedelta(days=30)

    def at(day: int, hour: int = 10) -> str:
        return f"{day0 + dt.timedelta(days=day)}T{hour:02d}:00:00+00:00"

    def ev(eid: str, type_: str, patient: str, when: str, **f: Any) -> dict[str, Any]:
        return {
            "event_id": f"{tag}-{eid}",
            "schema_version": 1,
            "type": type_,
            "patient_id": f"{tag}-{patient}",
            "occurred_at": when,
            **f,
        }

    def start(patient: str, when: str) -> dict[str, Any]:
        return ev(
            f"start-{patient}",
            "episode.started",
            patient,
            when,
            episode_id=f"{tag}-{patient}-ep",
            clinician_id=clinician,
            clinician_role="PT",
            timezone="UTC",
            program={"sessions_per_week": 3},
            billing=BILLING,
        )

    def form(day: int, *values: int) -> dict[str, Any]:
        answers = {f"a{i}": v for i, v in enumerate(values, 1)}
        return ev(
            f"f{day}", "assessment.completed", "p-up", at(day), instrument="psfs", answers=answers
        )

    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(microsecond=0)
    return [
        start("p-up", at(0, 9)),
        form(1, 3, 3, 3),
        ev("pain22", "pain.reported", "p-up", at(22), score=8),
        form(26, 3, 3, 4),
        start("p-new", yesterday.isoformat()),
    ]


def test_my_tasks_overdue_first_with_the_step_up_reason(base_settings: Settings) -> None:
    tag = "w" + uuid.uuid4().hex[:8]
    org, clinician = f"{tag}-org", f"{tag}-cid"
    with running_stack(base_settings, tick_interval_s=0) as stack:
        users = [(f"{tag}-pt", "clinician", clinician), (f"{tag}-other", "clinician", f"{tag}-x")]
        key = run_in_thread(provision(stack.settings, org, "Tasks clinic", users, "tasks"))
        sent = events(tag, clinician)
        assert stack.post(sent, key=key).json()["accepted"] == len(sent)

        async def rows() -> bool:
            got = await fetch(
                stack.settings, "SELECT count(*) AS n FROM episode_outcomes WHERE org_id = $1", org
            )
            return bool(got[0]["n"] == 2)

        run_in_thread(wait_for(rows, what="both episodes' outcome rows"))
        shots = stack.settings.state_dir / "artifacts" / "browser"
        shots.mkdir(parents=True, exist_ok=True)
        with chromium() as browser:
            page = sign_in(browser, stack.url, f"{tag}-pt")
            page.goto("/ui/worklist")
            table = page.locator("#my-tasks table")
            cells = [
                [c.strip() for c in r.split("\t")]
                for r in table.locator("tbody tr").all_inner_texts()
            ]
            page.screenshot(path=str(shots / "worklist-my-tasks.png"), full_page=True)
            assert [(c[0], c[1], c[3]) for c in cells] == [
                (f"{tag}-p-up", "week4 review", "overdue"),
                (f"{tag}-p-up", "in person visit", "overdue"),
                (f"{tag}-p-new", "baseline prom", "open"),
                (f"{tag}-p-new", "week4 prom", "open"),
                (f"{tag}-p-new", "week4 review", "open"),
            ]
            reason = "stepped up: no MCID at week 4 and pain ≥ 7"
            assert [c[4] for c in cells[:2]] == [reason, reason]
            assert all(c[4] == "—" for c in cells[2:])

            api = page.request.get("/v1/worklist").json()["tasks"]
            assert [(t["kind"], t["status"], t["step_up_reason"]) for t in api[:2]] == [
                ("week4_review", "overdue", "no_mcid_pain_7"),
                ("in_person_visit", "overdue", "no_mcid_pain_7"),
            ]

            # another clinician of the organisation sees none of these patients' tasks
            other = sign_in(browser, stack.url, f"{tag}-other")
            other.goto("/ui/worklist")
            assert other.locator("#my-tasks").count() == 0
            assert other.request.get("/v1/worklist").json()["tasks"] == []
        # the page's read is audited with the patients it showed
        audit = run_in_thread(
            fetch(
                stack.settings,
                "SELECT patient_ids FROM audit_log WHERE org_id = $1"
                " AND resource = 'GET /ui/worklist' AND actor LIKE $2",
                org,
                f"%:{tag}-pt",
            )
        )
        assert {f"{tag}-p-up", f"{tag}-p-new"} <= set(audit[0]["patient_ids"])
        assert httpx.get(f"{stack.url}/v1/worklist", timeout=10).status_code == 401
