"""Home exercise programs from templates on the patient page (issue 17 item 3).

Real gateway, worker, Kafka and PostgreSQL; Debian's chromium through Playwright. The
organisation's template ``lb`` is stored with the real CLI (``rtm programs templates add``).
The clinician assigns it to three patients from their pages, then changes one patient's
copy (reps and sessions per week): that patient's page shows "patient's own copy" with the
new dosage and the history of both programs; the other two stay on the template's version
1, also after the template is edited (version 2: versions are immutable, an assignment pins
its version). Every change is a ``program.updated`` through the gateway (stamped with the
organisation) and the worker, carrying the exercises, the dosage and the template id and
version (none for the patient's copy). A post without the CSRF token and another
clinician's post add nothing; the assignments are audited."""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from rtm.cli.root import main
from streams.access import SESSION_COOKIE
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.browser import CHROMIUM, PASSWORD, fetch, provision
from tests.integration.browser import sign_in as browser_sign_in
from tests.integration.conftest import Stack, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")

EXERCISES = [
    {"exercise_id": "bridge", "name": "Glute bridge", "sets": 3, "reps": 10, "hold_s": 5},
    {"exercise_id": "bird-dog", "sets": 2, "reps": 8},
]


@dataclass
class Clinic:
    stack: Stack
    tag: str
    org: str
    patients: list[str]

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"


async def _provision(settings: Settings, tag: str, org: str) -> str:
    users = [(f"{tag}-{n}", "clinician", f"{tag}-cid-{n}") for n in ("c1", "c2")]
    return await provision(settings, org, "Template clinic", users, "hep")


def _programs(c: Clinic, pid: str) -> list[dict[str, Any]]:
    """The patient's program.updated events as stored by the worker, oldest first."""
    rows = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT payload FROM events WHERE org_id = $1 AND patient_id = $2"
            " AND type = 'program.updated' ORDER BY stored_at",
            c.org,
            pid,
        )
    )
    return [orjson.loads(r["payload"]) for r in rows]


def _add_template(tmp: Path, org: str, name: str, exercises: list[dict[str, Any]]) -> str:
    path = tmp / "exercises.json"
    path.write_text(json.dumps(exercises))
    args = ["programs", "templates", "add", "--org", org, "--id", "lb", "--name", name]
    args += ["--sessions-per-week", "3", "--file", str(path)]
    # in a thread of its own: Playwright's sync API keeps an event loop running here
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result = pool.submit(CliRunner().invoke, main, args).result()
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def clinic(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    with running_stack(base_settings) as stack:
        tag = "hp" + uuid.uuid4().hex[:8]
        org = f"{tag}-org"
        key = run_in_thread(_provision(stack.settings, tag, org))
        f = EventFactory()
        patients = [f.patient(i) for i in (1, 2, 3)]
        events = [f.episode_started(pid, clinician_id=f"{tag}-cid-c1") for pid in patients]
        resp = stack.post(events, key=key)
        assert resp.status_code == 200 and resp.json()["accepted"] == 3, resp.text

        async def stored() -> bool:
            rows = await fetch(
                stack.settings,
                "SELECT 1 FROM events WHERE org_id = $1 AND type = 'episode.started'",
                org,
            )
            return len(rows) == 3

        run_in_thread(wait_for(stored, 90, "the three episodes"))
        out = _add_template(tmp_path_factory.mktemp("hep"), org, "Low back 1", EXERCISES)
        assert "template lb version 1 stored" in out
        yield Clinic(stack, tag, org, patients)


def sign_in(browser: Any, c: Clinic, name: str) -> Any:
    return browser_sign_in(browser, c.stack.url, c.user(name), 20_000)


def form_post(c: Clinic, name: str, pid: str, csrf: bool = True) -> httpx.Response:
    resp = httpx.post(
        f"{c.stack.url}/v1/session",
        timeout=30,
        json={"username": c.user(name), "password": PASSWORD},
    )
    resp.raise_for_status()
    headers = {"Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}"}
    body = {"episode_id": f"{pid}-ep1", "template": "lb@1"}
    body |= {"csrf_token": resp.json()["csrf_token"]} if csrf else {}
    return httpx.post(
        f"{c.stack.url}/ui/patients/{pid}/exercises/assign",
        data=body,
        headers=headers,
        timeout=30,
        follow_redirects=False,
    )


def _source_is(page: Any, pid: str, text: str) -> str:
    """The program in force as the page shows it, once it says ``text`` (the form waits
    for the worker; a slow one: reload)."""
    current = page.locator(f"#hep-{pid}-ep1 .hep-current")
    for _ in range(30):
        if text in current.inner_text():
            break
        time.sleep(1)
        page.reload()
    shown: str = current.inner_text()
    assert text in shown, shown
    return shown


def _dosage(page: Any, pid: str, exercise: str) -> tuple[str, str, str]:
    row = page.locator(f"#hep-{pid}-ep1 tr[data-exercise='{exercise}']")
    return tuple(row.locator(f".hep-{f}").input_value() for f in ("sets", "reps", "hold_s"))  # type: ignore[return-value]


def test_one_patients_copy_changes_and_the_other_two_stay_on_the_templates_version(
    clinic: Clinic, tmp_path: Path
) -> None:
    c = clinic
    one, two, three = c.patients
    # neither a post without the CSRF token nor another clinician's gets through
    assert form_post(c, "c1", one, csrf=False).status_code == 403
    assert form_post(c, "c2", one).status_code == 404
    assert _programs(c, one) == []
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = sign_in(browser, c, "c1")
            for pid in c.patients:
                page.goto(f"/ui/patients/{pid}")
                _source_is(page, pid, "the episode's initial program")
                page.select_option(f"#tpl-{pid}-ep1", "lb@1")
                with page.expect_navigation():
                    page.locator(f"#hep-{pid}-ep1").get_by_role(
                        "button", name="Assign template"
                    ).click()
                _source_is(page, pid, "template lb version 1, 3 sessions / week")
                assert _dosage(page, pid, "bridge") == ("3", "10", "5")

            # the template is edited meanwhile: version 2 (reps 20); assignments keep 1
            edited = [EXERCISES[0] | {"reps": 20}, EXERCISES[1]]
            assert "version 2 stored" in _add_template(tmp_path, c.org, "Low back 1", edited)

            # one patient's copy: 15 reps of the bridge, 4 sessions a week
            page.goto(f"/ui/patients/{one}")
            page.get_by_label("bridge reps").fill("15")
            page.get_by_label("sessions per week").fill("4")
            with page.expect_navigation():
                page.get_by_role("button", name="Change this patient's copy").click()
            _source_is(page, one, "patient's own copy, 4 sessions / week")
            assert _dosage(page, one, "bridge") == ("3", "15", "5")
            history = page.locator(f"#hep-{one}-ep1 .hep-history li").all_inner_texts()
            assert len(history) == 3, history
            assert "patient's own copy, 4 / week" in history[0]
            assert "bridge 3×15, hold 5 s" in history[0]
            assert "template lb version 1, 3 / week" in history[1]

            # the other two: still the template's version 1, its dosage
            for pid in (two, three):
                page.goto(f"/ui/patients/{pid}")
                _source_is(page, pid, "template lb version 1, 3 sessions / week")
                assert _dosage(page, pid, "bridge") == ("3", "10", "5")
        finally:
            browser.close()

    # through the gateway (stamped) and the worker: the exercises, dosage and template
    for pid in (two, three):
        (assigned,) = _programs(c, pid)
        assert assigned["org_id"] == c.org and assigned["received_at"]
        assert assigned["program"]["template"] == {"id": "lb", "version": 1}
        assert assigned["program"]["exercises"][0] == EXERCISES[0]
        assert assigned["program"]["sessions_per_week"] == 3
    assigned, copy = _programs(c, one)
    assert assigned["program"]["template"] == {"id": "lb", "version": 1}
    assert "template" not in copy["program"]
    assert copy["program"]["exercises"][0] == EXERCISES[0] | {"reps": 15}
    assert copy["program"]["sessions_per_week"] == 4
    # version 1 as stored is unchanged by the edit
    listed = CliRunner().invoke(
        main, ["programs", "templates", "list", "--org", c.org, "--all-versions"]
    )
    versions = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(v["version"], v["exercises"][0]["reps"]) for v in versions] == [(1, 10), (2, 20)]
    audit = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT patient_ids, actor FROM audit_log WHERE org_id = $1"
            " AND action IN ('assign_program', 'change_program')",
            c.org,
        )
    )
    assert sorted(r["patient_ids"][0] for r in audit) == sorted([*c.patients, one])
    assert {r["actor"] for r in audit} == {f"user:{c.user('c1')}"}


def test_the_templates_page_lists_versions_and_stores_a_new_one_without_editing_old_ones(
    clinic: Clinic,
) -> None:
    """/ui/programs/templates (the service of `rtm programs templates add|list`): every
    version of ``lb`` listed, newest first; a clinician stores the next version from the
    form (the bridge at 12 reps, a new exercise) and a new template; the stored versions
    before it are unchanged, the patients keep their version, each store is audited in the
    clinician's name, and a post without the CSRF token stores nothing."""
    c = clinic
    before = _versions(c)
    assert before and before[0][0] == 1  # version 1 from the CLI (the test above adds 2)
    resp = httpx.post(
        f"{c.stack.url}/ui/programs/templates",
        data={"template_id": "lb", "name": "x", "sessions_per_week": "3", "exercise_id-0": "a"},
        headers=_cookie(c, "c1"),
        timeout=30,
    )
    assert resp.status_code == 403 and _versions(c) == before  # no CSRF token: nothing
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = sign_in(browser, c, "c1")
            page.click("nav >> text=Templates")
            page.wait_for_url("**/ui/programs/templates")
            shown = page.locator("#tpl-lb .versions > li").evaluate_all(
                "li => li.map(x => Number(x.dataset.version))"
            )
            assert shown == [v for v, _ in reversed(before)]  # every version, newest first
            newest = before[-1][0]
            page.click("#tpl-lb summary")
            page.fill("#e-lb-reps-0", "12")
            page.fill("#e-lb-id-2", "clamshell")
            page.fill("#e-lb-sets-2", "2")
            page.fill("#e-lb-reps-2", "15")
            with page.expect_navigation():
                page.click(f"#tpl-lb button:has-text('Store version {newest + 1}')")
            item = page.locator(f"#tpl-lb-v{newest + 1}")
            assert "bridge (Glute bridge): 3×12, hold 5 s" in item.inner_text()
            assert "clamshell: 2×15" in item.inner_text()
            assert f"stored by user:{c.user('c1')}" in item.inner_text()
            # a bad row: named, nothing stored
            page.fill("#new-id", "neck")
            page.fill("#new-name", "Neck 1")
            page.fill("#new-id-0", "chin-tuck")
            page.fill("#new-sets-0", "0")
            page.fill("#new-reps-0", "10")
            with page.expect_navigation():
                page.click("#new-template button")
            assert "0.sets" in page.inner_text("main")
            page.goto("/ui/programs/templates")
            assert page.locator("#tpl-neck").count() == 0
            page.fill("#new-id", "neck")
            page.fill("#new-name", "Neck 1")
            page.fill("#new-id-0", "chin-tuck")
            page.fill("#new-sets-0", "3")
            page.fill("#new-reps-0", "10")
            page.fill("#new-hold_s-0", "5")
            with page.expect_navigation():
                page.click("#new-template button")
            assert "chin-tuck: 3×10, hold 5 s" in page.inner_text("#tpl-neck-v1")
            page.screenshot(
                path=str(c.stack.settings.state_dir / "artifacts" / "templates.png"),
                full_page=True,
            )
        finally:
            browser.close()
    after = _versions(c)
    assert after[: len(before)] == before  # the stored versions are never changed
    assert after[len(before)][0] == newest + 1
    for pid in c.patients[1:]:  # still on the version they were assigned
        assert _programs(c, pid)[-1]["program"]["template"] == {"id": "lb", "version": 1}
    audit = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT actor, detail::text AS detail FROM audit_log WHERE org_id = $1"
            " AND action = 'programs.template_added' AND resource = 'POST /ui/programs/templates'",
            c.org,
        )
    )
    assert {r["actor"] for r in audit} == {f"user:{c.user('c1')}"} and len(audit) == 2


def _versions(c: Clinic) -> list[tuple[int, str]]:
    """The stored versions of template ``lb`` (number, exercises as stored), oldest first."""
    rows = run_in_thread(
        fetch(
            c.stack.settings,
            "SELECT version, exercises::text AS ex FROM program_templates"
            " WHERE org_id = $1 AND template_id = 'lb' ORDER BY version",
            c.org,
        )
    )
    return [(r["version"], r["ex"]) for r in rows]


def _cookie(c: Clinic, name: str) -> dict[str, str]:
    resp = httpx.post(
        f"{c.stack.url}/v1/session",
        timeout=30,
        json={"username": c.user(name), "password": PASSWORD},
    )
    resp.raise_for_status()
    return {"Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}"}
