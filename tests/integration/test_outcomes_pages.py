"""The manager's view and the PROM chart (issue 19 item 5, its browser "Done when" line).

Real gateway, worker, Kafka and PostgreSQL; Debian's chromium through Playwright. A clinic
of three physiotherapists with six patients each, on ``msk-default@1`` and PSFS (higher is
better, MCID 2), with a planted effect: five of the ``good`` clinician's patients go from
3 to 6 by week 4, one of each other clinician's does. Two patients of each other clinician
report pain in week 4 (one 6, one 7) and do not improve: v1 steps up the one at 7; a draft
v2 stepping up at pain >= 6 also the one at 6. Then:
- the manager sees the report by clinician with the good clinician's MCID rate above the
  others', counts beside each rate, and the rows equal ``rtm outcomes report`` over the
  stored events; the CSV export's numbers equal the page's;
- the manager replays the draft v2 and sees exactly the two episodes stepped up at pain 6;
  a draft that is not a pathway comes back with the reason, the text kept;
- a clinician sees the PROM chart with the MCID band on a stepped-up patient's page, the
  step-up decision with its reason and the overdue in-person visit task;
- another organisation's manager sees none of it, and a manager opens no patient page.
Screenshots at 1440x900 and 390x844 (no sideways scroll at 390) in
<state dir>/artifacts/browser/."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from click.testing import CliRunner

from pathways.model import builtin
from rtm.cli import main
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.browser import chromium, fetch, provision, sign_in
from tests.integration.conftest import Stack, refreshed, run_in_thread, running_stack, wait_for
from tests.integration.test_pages import DESKTOP, PHONE, SIDEWAYS

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")

ZONE = ZoneInfo("America/Chicago")
CLINICIANS = ("good", "c2", "c3")
PER_CLINICIAN = 6
REGIONS = ("other", "neck", "low_back")  # PSFS for all three without licences


def local(days_ago: int, hour: int = 10) -> str:
    day = dt.datetime.now(ZONE).date() - dt.timedelta(days=days_ago)
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=ZONE).isoformat()


def psfs(pid: str, eid: str, at: str, value: int) -> dict[str, Any]:
    return {
        "event_id": eid,
        "schema_version": 1,
        "type": "assessment.completed",
        "patient_id": pid,
        "occurred_at": at,
        "episode_id": f"{pid}-ep1",
        "instrument": "psfs",
        "answers": {"a1": value, "a2": value, "a3": value},
    }


def patient_events(f: EventFactory, pid: str, clinician: str, kind: str, i: int) -> list[Any]:
    """One episode started 40 days ago (day 0): PSFS 3 on day 1, week-4 PSFS on day 28
    (6: the MCID reached; else 4), pain on day 24; three of the good clinician's patients
    seen once in person and discharged on day 32."""
    improves = i < 5 if kind == "good" else i == 0
    pain = 3 if kind == "good" else {0: 6, 1: 6, 2: 7}.get(i, 3)
    events = [
        f.episode_started(
            pid,
            at=local(40, 8),
            episode_id=f"{pid}-ep1",
            clinician_id=clinician,
            body_region=REGIONS[i % 3],
        ),
        psfs(pid, f"{pid}-psfs-base", local(39), 3),
        f.pain(pid, pain, local(16, 12)),
        psfs(pid, f"{pid}-psfs-w4", local(12), 6 if improves else 4),
    ]
    if kind == "good" and i < 3:
        events += [
            {
                "event_id": f"{pid}-visit",
                "schema_version": 1,
                "type": "visit.completed",
                "patient_id": pid,
                "occurred_at": local(30, 11),
                "episode_id": f"{pid}-ep1",
                "mode": "in_person",
            },
            {
                "event_id": f"{pid}-end",
                "schema_version": 1,
                "type": "episode.ended",
                "patient_id": pid,
                "occurred_at": local(8, 18),
                "episode_id": f"{pid}-ep1",
                "reason": "discharged",
            },
        ]
    return events


@dataclass
class Clinic:
    stack: Stack
    tag: str
    org: str
    other_org: str
    patients: dict[str, list[str]] = field(default_factory=dict)  # clinician kind -> ids
    shots: Path = Path()

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def clinician(self, kind: str) -> str:
        return f"{self.tag}-cid-{kind}"


async def _provision(settings: Settings, tag: str, org: str, other: str) -> tuple[str, str]:
    users: list[tuple[str, str, str | None]] = [
        (f"{tag}-{k}", "clinician", f"{tag}-cid-{k}") for k in CLINICIANS
    ]
    users.append((f"{tag}-manager", "manager", None))
    key = await provision(settings, org, "Outcomes clinic", users, "outcomes")
    other_users = [(f"{tag}-b-manager", "manager", None), (f"{tag}-b-c1", "clinician", "b-c1")]
    other_key = await provision(settings, other, "Other clinic", other_users, "outcomes-b")
    return key, other_key


def _stored(settings: Settings, org: str, n: int) -> Any:
    async def done() -> bool:
        rows = await fetch(settings, "SELECT count(*) AS n FROM events WHERE org_id = $1", org)
        return int(rows[0]["n"]) >= n

    return wait_for(done, 120, f"{n} events of {org} stored")


@pytest.fixture(scope="module")
def clinic(base_settings: Settings) -> Iterator[Clinic]:
    with running_stack(base_settings) as stack:
        tag = "oc" + uuid.uuid4().hex[:8]
        org, other = f"{tag}-org", f"{tag}-org-b"
        key, other_key = run_in_thread(_provision(stack.settings, tag, org, other))
        c = Clinic(stack, tag, org, other, shots=stack.settings.state_dir / "artifacts" / "browser")
        c.shots.mkdir(parents=True, exist_ok=True)
        f = EventFactory()
        events: list[Any] = []
        for k, kind in enumerate(CLINICIANS):
            c.patients[kind] = [f.patient(10 * k + i) for i in range(PER_CLINICIAN)]
            for i, pid in enumerate(c.patients[kind]):
                events += patient_events(f, pid, c.clinician(kind), kind, i)
        resp = stack.post(events, key=key)
        assert resp.status_code == 200 and resp.json()["accepted"] == len(events), resp.text
        # the other organisation: one patient of its own, improving
        theirs = patient_events(f, "b-p1", "b-c1", "good", 0)
        resp = stack.post(theirs, key=other_key)
        assert resp.status_code == 200 and resp.json()["accepted"] == len(theirs), resp.text
        run_in_thread(_stored(stack.settings, org, len(events)))
        run_in_thread(_stored(stack.settings, other, len(theirs)))
        settings = stack.settings
        for o in (org, other):  # the report reads the outcome rows the worker's refresh keeps
            run_in_thread(wait_for(lambda o=o: refreshed(settings, o), 90, f"{o} refreshed"))
        yield c


@pytest.fixture(scope="module")
def browser(clinic: Clinic) -> Iterator[Any]:
    with chromium() as b:  # after the clinic's set-up
        yield b


COUNTS = re.compile(r"\((\d+) of (\d+)\)")


def report_rows(page: Any, by: str) -> dict[str, dict[str, Any]]:
    """The report table's rows as shown: group -> MCID rate, its counts, episodes."""
    out = {}
    for tr in page.locator(f"table.report[data-by={by}] tbody tr").all():
        cell = tr.locator("td.mcid-rate")
        m = COUNTS.search(cell.inner_text())
        out[tr.get_attribute("data-group")] = {
            "rate": float(cell.get_attribute("data-rate")),
            "counts": (int(m.group(1)), int(m.group(2))) if m else None,
            "episodes": int(tr.locator("td.episodes").inner_text()),
        }
    return out


def offline_report(c: Clinic, tmp_path: Path, by: str, as_of: str) -> list[dict[str, Any]]:
    """``rtm outcomes report`` over the organisation's stored events."""
    rows = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT payload FROM events WHERE org_id = $1 ORDER BY stored_at",
            c.org,
        )
    )
    path = tmp_path / f"events-{by}.jsonl"
    path.write_text("".join(r["payload"] + "\n" for r in rows))
    args = ["outcomes", "report", "--events", str(path), "--as-of", as_of, "--by", by]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_manager_sees_the_planted_effect_with_counts_and_exports_the_same_numbers(
    clinic: Clinic, browser: Any, tmp_path: Path
) -> None:
    c = clinic
    page = sign_in(browser, c.stack.url, c.user("manager"))
    assert page.url.endswith("/ui/outcomes")  # a manager starts at the report
    page.set_viewport_size(DESKTOP)
    started = time.perf_counter()
    page.reload()
    print(f"report page over {3 * PER_CLINICIAN} episodes: {time.perf_counter() - started:.2f} s")
    as_of = dt.datetime.now(dt.UTC).isoformat()
    shown = report_rows(page, "clinician")
    good, others = c.clinician("good"), [c.clinician(k) for k in ("c2", "c3")]
    assert set(shown) == {good, *others}
    assert shown[good]["counts"] == (5, 6) and shown[good]["rate"] == 83.3
    for o in others:
        assert shown[o]["counts"] == (1, 6) and shown[o]["rate"] == 16.7
        assert shown[good]["rate"] > shown[o]["rate"]
    assert report_rows(page, "pathway")["msk-default@1"]["counts"] == (7, 18)
    # a rate without a denominator is "—" with the reason: no c2 episode was discharged
    c2_row = page.locator(f"table.report[data-by=clinician] tr[data-group='{others[0]}']")
    assert "— (no episode ended discharged or goals met)" in c2_row.inner_text()
    page.screenshot(path=str(c.shots / "outcomes-report-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.reload()
    assert int(page.evaluate(SIDEWAYS)) == 0
    page.screenshot(path=str(c.shots / "outcomes-report-phone.png"), full_page=True)

    # the CSV export: the same numbers as the page
    with page.expect_download() as got:
        page.click("#export-csv")
    exported = list(csv.DictReader(io.StringIO(Path(got.value.path()).read_text())))
    by_clinician = {r["group"]: r for r in exported if r["by"] == "clinician"}
    assert set(by_clinician) == set(shown)
    for group, row in shown.items():
        e = by_clinician[group]
        assert float(e["mcid_rate"]) == row["rate"]
        assert (int(e["mcid_reached"]), int(e["with_scores"])) == row["counts"]
        assert int(e["episodes"]) == row["episodes"]
    assert {r["by"] for r in exported} == {"pathway", "clinician", "body_region"}

    # the NDJSON export is rtm outcomes report's rows over the stored events
    ndjson = page.context.request.get("/ui/outcomes/export?format=ndjson")
    assert ndjson.ok
    lines = [json.loads(x) for x in ndjson.text().splitlines()]
    for by in ("pathway", "clinician", "body_region"):
        assert [r for r in lines if r["by"] == by] == offline_report(c, tmp_path, by, as_of)

    # audited: a read naming the patients the report stands on
    audit = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT resource, patient_ids FROM audit_log WHERE org_id = $1 AND actor = $2",
            c.org,
            f"user:{c.user('manager')}",
        )
    )
    resources = {r["resource"] for r in audit}
    assert {"GET /ui/outcomes", "GET /ui/outcomes/export?format=csv"} <= resources
    everyone = {p for ids in c.patients.values() for p in ids}
    assert any(set(r["patient_ids"]) == everyone for r in audit)
    page.context.close()


def stored_counts(c: Clinic) -> tuple[int, int]:
    """The organisation's published versions and events (no event: nothing for the worker
    to alert on or bill; the alerts themselves are not counted, the timer may add one)."""
    rows = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT (SELECT count(*) FROM pathway_versions WHERE org_id = $1) AS v,"
            " (SELECT count(*) FROM events WHERE org_id = $1) AS e",
            c.org,
        )
    )
    return rows[0]["v"], rows[0]["e"]


def draft_v2() -> str:
    v = builtin()["msk-default@1"].model_dump(mode="json")
    v["version"] = 2
    v["step_up"]["pain_at_least"] = 6
    return json.dumps(v, indent=1)


def test_the_manager_replays_a_draft_pathway_and_sees_the_changed_episodes(
    clinic: Clinic, browser: Any, tmp_path: Path
) -> None:
    c = clinic
    before = stored_counts(c)
    page = sign_in(browser, c.stack.url, c.user("manager"))
    page.set_viewport_size(DESKTOP)
    page.goto("/ui/outcomes")
    page.click("text=Try a draft pathway version on past episodes")
    page.wait_for_url("**/ui/outcomes/diff")

    # not a pathway: the reason, and the text kept
    page.fill("#draft", '{"id": "msk-default", "version": 2}')
    with page.expect_navigation():
        page.click("#diff-form button")
    assert "This draft is not a pathway version" in page.inner_text("#draft-problems")
    assert page.input_value("#draft") == '{"id": "msk-default", "version": 2}'

    # the draft loaded from a file goes into the form
    draft = tmp_path / "msk-default-v2.json"
    draft.write_text(draft_v2())
    page.set_input_files("#draft-file", str(draft))
    page.wait_for_function("document.getElementById('draft').value.includes('pain_at_least')")
    page.select_option("#source", "msk-default@1")
    with page.expect_navigation():
        page.click("#diff-form button")
    changed = {
        tr.get_attribute("data-episode")
        for tr in page.locator("#changed-episodes tbody tr[data-episode]").all()
    }
    expected = {f"{c.patients[k][1]}-ep1" for k in ("c2", "c3")}  # pain 6, no MCID
    assert changed == expected
    first = page.locator(f"#changed-episodes tr[data-episode='{sorted(expected)[0]}']")
    assert "step up on" in first.locator("td.only-to").inner_text()
    assert "no_mcid_pain_6" in first.locator("td.only-to").inner_text()
    assert "2 of 18 episodes would change" in page.inner_text("#diff-summary")
    step_up = page.locator("#decision-counts tr[data-decision=step_up]")
    assert (step_up.locator("td.from").inner_text(), step_up.locator("td.to").inner_text()) == (
        "2",
        "4",
    )
    page.screenshot(path=str(c.shots / "outcomes-diff-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    assert int(page.evaluate(SIDEWAYS)) == 0
    page.screenshot(path=str(c.shots / "outcomes-diff-phone.png"), full_page=True)
    page.context.close()

    # read-only: no version published, no event sent
    assert stored_counts(c) == before


def test_a_clinician_sees_the_prom_chart_with_the_mcid_band_and_the_step_up(
    clinic: Clinic, browser: Any
) -> None:
    c = clinic
    pid = c.patients["c2"][2]  # pain 7 in week 4, no MCID: stepped up under v1
    page = sign_in(browser, c.stack.url, c.user("c2"))
    page.set_viewport_size(DESKTOP)
    page.goto(f"/ui/patients/{pid}")
    panel = page.locator(f"#pathway-{pid}-ep1")
    assert "msk-default@1" in panel.locator(".pathway-version").inner_text()
    assert "stepped up on" in panel.locator(".pathway-stage").inner_text()
    assert "step up on" in panel.locator(".pathway-decisions").inner_text()
    assert "no mcid pain 7" in panel.locator(".pathway-decisions").inner_text()
    assert "Overdue: in person visit" in panel.locator(".pathway-tasks").inner_text()
    summary = panel.locator(".prom-summary").inner_text()
    assert "Baseline 3.0" in summary and "at or above 5.0 reaches the MCID" in summary
    # the chart: drawn by uPlot with the scores, the baseline and the MCID threshold
    page.wait_for_function("window.rtmPromChart !== undefined")
    series = page.evaluate("window.rtmPromChart.series.map(s => s.label)")
    assert series[1:] == ["Patient-Specific Functional Scale", "baseline", "MCID threshold"]
    data = page.evaluate("window.rtmPromChart.data")
    assert data[1] == [3.0, 4.0] and set(data[2]) == {3.0} and set(data[3]) == {5.0}
    table = panel.locator(".prom-table").inner_text()
    assert "baseline" in table and "week 4" in table
    # one pain report alone: its chart's time axis is a day either side, not years
    page.wait_for_function("window.rtmPainChart !== undefined")
    assert page.evaluate("window.rtmPainChart.data[0].length") == 1
    days = page.evaluate("(window.rtmPainChart.scales.x.max - window.rtmPainChart.scales.x.min)")
    assert days == 2 * 86400, days
    page.screenshot(path=str(c.shots / "patient-prom-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.reload()
    assert int(page.evaluate(SIDEWAYS)) == 0
    page.screenshot(path=str(c.shots / "patient-prom-phone.png"), full_page=True)
    # a clinician does not see the manager's report
    resp = page.context.request.get("/ui/outcomes")
    assert resp.status == 403
    page.context.close()


def test_another_organisations_manager_sees_none_of_it(clinic: Clinic, browser: Any) -> None:
    c = clinic
    page = sign_in(browser, c.stack.url, c.user("b-manager"))
    page.goto("/ui/outcomes")
    text = page.inner_text("main")
    assert all(c.clinician(k) not in text for k in CLINICIANS)
    assert list(report_rows(page, "clinician")) == ["b-c1"]
    assert report_rows(page, "pathway")["msk-default@1"]["episodes"] == 1
    csv_text = page.context.request.get("/ui/outcomes/export?format=csv").text()
    assert c.tag + "-cid" not in csv_text
    page.goto("/ui/outcomes/diff")
    page.fill("#draft", draft_v2())
    with page.expect_navigation():
        page.click("#diff-form button")
    assert "0 of 1 episodes would change" in page.inner_text("#diff-summary")
    # the form needs the session's CSRF token
    bare = page.context.request.post("/ui/outcomes/diff", form={"draft": draft_v2()})
    assert bare.status == 403
    # a manager opens no patient page, of their organisation or another
    pid = c.patients["good"][0]
    assert page.context.request.get(f"/ui/patients/{pid}").status == 403
    page.context.close()
    # signed out: to the sign-in page, nothing exported
    resp = httpx.get(f"{c.stack.url}/ui/outcomes/export?format=csv", timeout=30)
    assert resp.status_code == 303 and resp.headers["location"] == "/ui/sign-in"
