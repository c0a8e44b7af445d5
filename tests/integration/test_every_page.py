"""Every page of the dashboard, in a real browser (Playwright driving Debian's chromium)
against the real gateway, worker, Kafka and PostgreSQL (issue 17 items 2, 3, 5 and 6).

One US clinic (America/Chicago) with a clinician, a biller, an admin, an operator and a
scheduler; a patient with an episode, sessions, pain, a red flag and time logged; an
intake waiting; a program template. Each page (sign-in, worklist, patient, the patient
page with the timer running, summary, templates, billing, billing confirmation, audit,
intake queue, operator, a 404 and a 422 error page):

- axe-core (the ``axe-playwright-python`` package's pinned copy) finds no violation, at
  1440x900 and at 390x844;
- a screenshot at both sizes goes to <state dir>/artifacts/browser/<page>-<size>.png, and
  at 390x844 the page does not scroll sideways (``scrollWidth == clientWidth``).

Every refusal under /ui is an HTML page with the signed-in user's navigation, those of the
request-hardening layer included (a NUL in the address, a form too large), while /v1 and
/fhir keep JSON; the patient page's "Print summary" opens the summary, whose Print button
prints it.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import orjson
import pytest

from streams.access import CSRF_HEADER, SESSION_COOKIE
from streams.services.program_templates import add_template
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.browser import PASSWORD, chromium, fetch, provision
from tests.integration.browser import sign_in as browser_sign_in
from tests.integration.conftest import Stack, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration
playwright_sync = pytest.importorskip("playwright.sync_api")
axe_sync = pytest.importorskip("axe_playwright_python.sync_playwright")

ZONE = ZoneInfo("America/Chicago")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
SIZES = (("phone", PHONE), ("desktop", DESKTOP))
SIDEWAYS = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
ROLES = {
    "c1": ("clinician", "cid1"),
    "billing": ("billing", None),
    "admin": ("admin", None),
    "op": ("operator", None),
    "desk": ("scheduler", None),
}


@dataclass
class Clinic:
    stack: Stack
    tag: str
    org: str
    key: str
    patient: str

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"


def local(days_ago: int, hour: int) -> str:
    day = dt.datetime.now(ZONE).date() - dt.timedelta(days=days_ago)
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=ZONE).isoformat()


async def _template(settings: Settings, org: str) -> None:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        exercises = [{"exercise_id": "bridge", "name": "Glute bridge", "sets": 3, "reps": 10}]
        await add_template(
            conn,
            org_id=org,
            template_id="lb",
            name="Low back 1",
            sessions_per_week=3,
            exercises=orjson.dumps(exercises),
            actor="cli:test",
            role="cli",
            resource="rtm programs templates add",
        )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def clinic(base_settings: Settings) -> Iterator[Clinic]:
    with running_stack(base_settings) as stack:
        tag = "ev" + uuid.uuid4().hex[:8]
        org = f"{tag}-org"
        users = [
            (f"{tag}-{n}", role, f"{tag}-{c}" if c else None) for n, (role, c) in ROLES.items()
        ]
        key = run_in_thread(
            provision(stack.settings, org, "Every-page clinic", users, "ev", ZONE.key)
        )
        f = EventFactory()
        pid = f.patient(1)
        c = Clinic(stack, tag, org, key, pid)
        events = [f.episode_started(pid, at=local(12, 8), clinician_id=f"{tag}-cid1")]
        events += [f.exercise(pid, local(d, 18)) for d in range(10, 0, -1)]
        events += [f.pain(pid, s, local(d, 9)) for d, s in ((6, 3), (4, 4), (2, 8))]
        events += [f.symptom(pid, local(1, 11), red_flags=["saddle_anesthesia"])]
        events += [f.intake(f.patient(2), local(0, 0), red_flags=["fever"])]
        resp = stack.post(events, key=key)
        assert resp.status_code == 200 and resp.json()["accepted"] == len(events), resp.text
        run_in_thread(_template(stack.settings, org))
        headers = api_headers(c, "c1")

        async def listed() -> bool:
            rows = httpx.get(f"{stack.url}/v1/worklist", headers=headers, timeout=30).json()
            return pid in {r["patient_id"] for r in rows["patients"]}

        run_in_thread(wait_for(listed, 90, "the patient on the worklist"))
        yield c


@pytest.fixture(scope="module")
def browser(clinic: Clinic) -> Iterator[Any]:
    with chromium() as b:  # after the clinic's set-up
        yield b


def api_headers(c: Clinic, name: str) -> dict[str, str]:
    resp = httpx.post(
        f"{c.stack.url}/v1/session",
        timeout=30,
        json={"username": c.user(name), "password": PASSWORD},
    )
    resp.raise_for_status()
    return {
        "Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}",
        CSRF_HEADER: resp.json()["csrf_token"],
    }


def pages(c: Clinic) -> dict[str | None, dict[str, str]]:
    """Every page, by who opens it (None: signed out)."""
    month = dt.datetime.now(ZONE).strftime("%Y-%m")
    started = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)).isoformat()
    pid = c.patient
    return {
        None: {"sign-in": "/ui/sign-in"},
        "c1": {
            "worklist": "/ui/worklist",
            "patient": f"/ui/patients/{pid}",
            "time-entry": f"/ui/patients/{pid}?{httpx.QueryParams(timer=started)}",
            "summary": f"/ui/patients/{pid}/summary",
            "templates": "/ui/programs/templates",
            "error-404": "/ui/patients/nobody-here",
            "error-422": "/ui/worklist?sort=name",
        },
        "billing": {
            "billing": f"/ui/billing?month={month}",
            "billing-confirm": f"/ui/billing/submit?month={month}",
        },
        "admin": {"audit": "/ui/audit"},
        "desk": {"intakes": "/ui/intakes"},
        "op": {"operator": "/ui/operator"},
    }


def visit(browser: Any, c: Clinic, check: Any) -> None:
    """Open every page at both sizes, as its user, and ``check(page, name, size)``."""
    for user, urls in pages(c).items():
        if user is None:
            context = browser.new_context(base_url=c.stack.url)
            page = context.new_page()
        else:
            page = browser_sign_in(browser, c.stack.url, c.user(user), 20_000)
        for name, url in urls.items():
            for size, viewport in SIZES:
                page.set_viewport_size(viewport)
                page.goto(url)
                page.wait_for_load_state("networkidle")
                assert page.locator("main h1").count() == 1, (name, page.url)
                check(page, name, size)
        page.context.close()


def test_axe_core_finds_no_violation_on_any_page(clinic: Clinic, browser: Any) -> None:
    axe = axe_sync.Axe()
    found: dict[str, list[str]] = {}

    def check(page: Any, name: str, size: str) -> None:
        result = axe.run(page)
        for v in result.response["violations"]:
            where = [n["target"] for n in v["nodes"]][:3]
            found.setdefault(f"{name}-{size}", []).append(f"{v['id']} ({v['impact']}): {where}")

    visit(browser, clinic, check)
    assert found == {}, found


def test_every_page_at_both_sizes_is_screenshotted_and_none_scrolls_sideways_on_a_phone(
    clinic: Clinic, browser: Any
) -> None:
    shots = clinic.stack.settings.state_dir / "artifacts" / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    wide: dict[str, int] = {}

    def check(page: Any, name: str, size: str) -> None:
        page.screenshot(path=str(shots / f"{name}-{size}.png"), full_page=True)
        if size == "phone":
            wide[name] = int(page.evaluate(SIDEWAYS))

    visit(browser, clinic, check)
    expected = {name for urls in pages(clinic).values() for name in urls}
    assert set(wide) == expected
    assert wide == dict.fromkeys(wide, 0), wide
    for name in expected:
        for size, _ in SIZES:
            assert (shots / f"{name}-{size}.png").stat().st_size > 0


# --- error pages: every refusal under /ui is a page with the navigation (item 3) ------------


def _session(c: Clinic, name: str) -> tuple[dict[str, str], str]:
    headers = api_headers(c, name)
    return {"Cookie": headers["Cookie"]}, headers[CSRF_HEADER]


@pytest.mark.parametrize(
    ("case", "method", "path", "kwargs", "status", "says"),
    [
        ("unknown query", "GET", "/ui/worklist", {"params": {"sort": "name"}}, 422, "sort"),
        ("bad query", "GET", "/ui/worklist", {"params": {"page": "first"}}, 422, "page"),
        ("NUL in query (hardening)", "GET", "/ui/worklist", {"params": {"q": "p\x00"}}, 422, "NUL"),
        ("no such page", "GET", "/ui/nowhere", {}, 404, "no page at this address"),
        ("no such patient", "GET", "/ui/patients/nobody", {}, 404, "nobody"),
        ("not permitted", "GET", "/ui/billing", {}, 403, "may not see this page"),
        ("form without CSRF", "POST", "/ui/programs/templates", {"data": {"x": "1"}}, 403, ""),
        (
            "form too large (hardening)",
            "POST",
            "/ui/programs/templates",
            {"big": 70_000},
            413,
            "bytes",
        ),
        ("too many form fields", "POST", "/ui/programs/templates", {"fields": 200}, 413, "fields"),
        (
            "a refused template",
            "POST",
            "/ui/programs/templates",
            {"csrf": True},
            422,
            "template id",
        ),
    ],
)
def test_every_refusal_under_ui_is_a_page_with_the_navigation(
    clinic: Clinic,
    case: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    says: str,
) -> None:
    cookie, token = _session(clinic, "c1")
    request: dict[str, Any] = {"headers": cookie, "timeout": 30, "follow_redirects": False}
    if "params" in kwargs:
        request["params"] = kwargs["params"]
    if "data" in kwargs:
        request["data"] = kwargs["data"]
    if "big" in kwargs:
        request["data"] = {"csrf_token": token, "name": "x" * kwargs["big"]}
    if "fields" in kwargs:
        request["data"] = {"csrf_token": token} | {f"f{i}": "x" for i in range(kwargs["fields"])}
    if kwargs.get("csrf"):
        request["data"] = {"csrf_token": token, "template_id": "bad id", "sessions_per_week": "3"}
    resp = httpx.request(method, f"{clinic.stack.url}{path}", **request)
    assert resp.status_code == status, (case, resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("text/html"), (case, resp.headers)
    assert 'nav aria-label="Main"' in resp.text and "My patients" in resp.text, case
    assert says in resp.text, (case, resp.text[:2000])


@pytest.mark.parametrize(
    "path",
    [
        "/v1/worklist?sort=name",  # unknown query parameter
        "/v1/worklist?q=p%00",  # NUL (the hardening layer)
        "/v1/nowhere",
        "/fhir/Observation?patient=p%00",
    ],
)
def test_the_json_api_keeps_json_errors(clinic: Clinic, path: str) -> None:
    cookie, _ = _session(clinic, "c1")
    resp = httpx.get(f"{clinic.stack.url}{path}", headers=cookie, timeout=30)
    assert 400 <= resp.status_code < 500, (path, resp.status_code)
    assert "json" in resp.headers["content-type"], (path, resp.text[:200])  # FHIR: fhir+json


# --- the print button (item 5) ----------------------------------------------------------------


def test_print_summary_opens_the_summary_and_its_print_button_prints(
    clinic: Clinic, browser: Any
) -> None:
    page = browser_sign_in(browser, clinic.stack.url, clinic.user("c1"), 20_000)
    # count the browser's print calls instead of opening chromium's print dialog
    page.context.add_init_script("window.__printed = 0; window.print = () => window.__printed++;")
    page.goto(f"/ui/patients/{clinic.patient}")
    with page.expect_navigation():
        page.get_by_role("link", name="Print summary").click()
    assert page.url.endswith(f"/ui/patients/{clinic.patient}/summary")
    page.get_by_role("button", name="Print").click()
    assert page.evaluate("window.__printed") == 1
    page.context.close()


# --- the clinic's zone, set with the CLI (item 1) ----------------------------------------------


def rtm(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as a process (Playwright's sync API keeps an event loop in this one)."""
    return subprocess.run(
        [sys.executable, "-m", "rtm.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_the_clinics_zone_is_set_with_rtm_orgs_and_audited(clinic: Clinic) -> None:
    """`rtm orgs add --timezone` and `rtm orgs timezone` set the zone every page shows
    times in; `rtm orgs list` shows it; the change is audited."""
    org = f"{clinic.tag}-tz"
    added = rtm("orgs", "add", org, "--name", "TZ", "--timezone", "America/Denver")
    assert added.returncode == 0, added.stderr
    moved = rtm("orgs", "timezone", org, "America/New_York")
    assert moved.returncode == 0 and "America/New_York" in moved.stdout, moved.stderr
    listed = rtm("orgs", "list").stdout
    assert any(org in line and "America/New_York" in line for line in listed.splitlines())
    audit = run_in_thread(
        fetch(
            clinic.stack.settings,
            "SELECT detail->>'timezone' AS zone FROM audit_log WHERE org_id = $1"
            " AND action = 'access.org_timezone'",
            org,
        )
    )
    assert [r["zone"] for r in audit] == ["America/New_York"]
