"""Issue 16 (items 1, 2, 6) through the real gateway, worker, Kafka and PostgreSQL.

- a GET never records a billing export, whatever a cross-site link says; a sign-in posted
  from another site is refused (login CSRF);
- far dates answer 422 at once, and the widest adherence request leaves the event loop
  free (``/healthz`` stays fast meanwhile);
- inputs that used to answer 500 (NUL bytes, year 9999, ids beyond int64, 200 form
  fields, a month with CR/LF) answer 4xx, and no 500 is counted;
- every route answers with the security headers; the export's file name is the parsed
  month; CLI output files are 0600.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import stat
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from rtm.devstack import DEV_USERS_FILE, settings_env
from streams.access import CSRF_HEADER, SESSION_COOKIE
from tests.conftest import EventFactory
from tests.integration.conftest import Stack, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration

BIG = "9223372036854775808"  # int64 max + 1
FAR = "9999-12-31T23:59:59Z"
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


@dataclass
class World:
    stack: Stack
    patient: str
    alert_id: str = ""
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)  # user -> cookie, csrf

    @property
    def url(self) -> str:
        return self.stack.url

    def headers(self, who: str, write: bool = False) -> dict[str, str]:
        if who == "anonymous":
            return {}
        if who == "reader":
            return {"Authorization": f"Bearer {self.stack.key}"}
        cookie, csrf = self.sessions[who]
        out = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
        if write:
            out[CSRF_HEADER] = csrf
        return out

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers(who, method != "GET"), **kw.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def csrf(self, who: str) -> str:
        return self.sessions[who][1]


def _password(stack: Stack, user: str) -> str:
    users = json.loads((stack.settings.state_dir / DEV_USERS_FILE).read_text())
    return str(users[user]["password"])


def _sign_in(stack: Stack, user: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/session",
        json={"username": user, "password": _password(stack, user)},
        headers=headers,
        timeout=30,
    )


@pytest.fixture(scope="module")
def world(base_settings: Any) -> Iterator[World]:
    with running_stack(base_settings) as stack:
        f = EventFactory()
        p = f.patient(1)
        w = World(stack, p)
        for user in ("admin", "billing", "clinician"):
            resp = _sign_in(stack, user)
            assert resp.status_code == 200, resp.text
            w.sessions[user] = (resp.cookies[SESSION_COOKIE], resp.json()["csrf_token"])
        events = [
            f.episode_started(p, at="2026-09-01T09:00:00-05:00"),
            *f.daily_exercises(p, dt.date(2026, 9, 1), 45),
            f.pain(p, 4, "2026-09-10T10:00:00-05:00", episode_id=f"{p}-ep1"),
            f.pain(p, 9, "2026-10-10T10:00:00-05:00", episode_id=f"{p}-ep1"),  # an alert
        ]
        body = stack.post(events).json()
        assert body["accepted"] == len(events), body

        async def stored() -> bool:
            conn = await asyncpg.connect(stack.settings.db.dsn)
            try:
                n = await conn.fetchval("SELECT count(*) FROM events WHERE patient_id = $1", p)
                w.alert_id = (
                    await conn.fetchval("SELECT id FROM alerts WHERE patient_id = $1", p) or ""
                )
            finally:
                await conn.close()
            return bool(n == len(events)) and bool(w.alert_id)

        run_in_thread(wait_for(stored, 90, "the patient's events and alert stored"))
        yield w


def _exports(world: World) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(world.stack.settings.db.dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM billing_exports"))
        finally:
            await conn.close()

    return int(run_in_thread(count()))


def _errors_500(world: World) -> float:
    text = httpx.get(f"{world.url}/metrics", timeout=30).text
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^rtm_gateway_requests_total\{[^}]*status="500"[^}]*\} (\S+)$', text, re.M
        )
    )


# --- item 1: no state change on GET; login CSRF ------------------------------------------------


def test_a_cross_site_get_with_record_true_records_nothing(world: World) -> None:
    before = _exports(world)
    params = {"from": "2001-01-01", "to": "2001-01-31", "record": "true"}
    for extra in (
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},  # a link on any site
        {},
    ):
        resp = world.call("billing", "GET", "/v1/billing/claims", params=params, headers=extra)
        assert 400 <= resp.status_code < 500, resp.text
        assert "record" in resp.text
    assert _exports(world) == before
    # recording is a CSRF-checked POST: without the token nothing, with it one export
    cookie, _ = world.sessions["billing"]
    body = {"from": "2001-01-01", "to": "2001-01-31"}
    no_csrf = httpx.post(
        f"{world.url}/v1/billing/exports",
        json=body,
        headers={"Cookie": f"{SESSION_COOKIE}={cookie}"},
        timeout=30,
    )
    assert no_csrf.status_code == 403
    assert _exports(world) == before
    ok = world.call("billing", "POST", "/v1/billing/exports", json=body)
    assert ok.status_code == 200 and ok.headers["x-billing-export-id"], ok.text
    assert _exports(world) == before + 1


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 403),
        ({"Origin": "https://evil.example"}, 403),
        ({"Sec-Fetch-Site": "same-origin"}, 200),
        ({"Sec-Fetch-Site": "same-site"}, 200),
        ({"Sec-Fetch-Site": "none"}, 200),  # a typed URL
        ({}, 200),  # not a browser
    ],
)
def test_sign_in_refuses_a_cross_site_post_only(
    world: World, headers: dict[str, str], status: int
) -> None:
    # as the operator: the world's own users keep their sessions (a user keeps at most
    # RTM_SESSION_MAX_PER_USER; each sign-in here ends the least recently used one)
    api = _sign_in(world.stack, "operator", **headers)
    assert api.status_code == status, api.text
    assert (SESSION_COOKIE in api.cookies) == (status == 200)
    page = httpx.post(
        f"{world.url}/ui/sign-in",
        data={"username": "operator", "password": _password(world.stack, "operator")},
        headers=headers,
        timeout=30,
    )
    assert page.status_code == (303 if status == 200 else 403), page.text[:200]
    assert (SESSION_COOKIE in page.cookies) == (status == 200)


# --- item 2: bounded requests, nothing heavy on the event loop ---------------------------------


def _timed(world: World, path: str, **kw: Any) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    resp = world.call("reader", "GET", path, **kw)
    return time.perf_counter() - t0, resp


def test_far_dates_are_refused_at_once_and_the_widest_request_leaves_healthz_free(
    world: World,
) -> None:
    path = f"/v1/patients/{world.patient}/adherence"
    far = []
    for _ in range(5):
        elapsed, resp = _timed(world, path, params={"to": "9999-12-31"})
        assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["query", "to"]
        far.append(elapsed)
    assert statistics.median(far) < 0.1, far

    widest = {"from": "2099-11-26", "to": "2100-12-31"}  # MAX_SPAN_DAYS apart
    elapsed, resp = _timed(world, path, params=widest)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["days"]) == 401
    print(f"widest adherence request alone: {elapsed * 1000:.0f} ms")

    stop = threading.Event()
    answers: list[int] = []

    def hammer() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                r = c.get(world.url + path, params=widest, headers=world.headers("reader"))
                answers.append(r.status_code)

    signins: list[int] = []

    def sign_ins(i: int) -> None:
        """Wrong passwords for names nobody has, each from its own client address: every
        one is a full argon2 check (equal timing) and none is throttled away."""
        with httpx.Client(timeout=60) as c:
            n = 0
            while not stop.is_set():
                n += 1
                r = c.post(
                    f"{world.url}/v1/session",
                    json={"username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "wrong"},
                    headers={"X-Forwarded-For": f"10.{i}.{n // 250 % 250}.{n % 250 + 1}"},
                )
                signins.append(r.status_code)

    thread = threading.Thread(target=hammer)
    thread.start()
    # the load: the widest adherence request and 8 parallel sign-ins at once
    signers = [threading.Thread(target=sign_ins, args=(i,)) for i in range(8)]
    for t in signers:
        t.start()
    probes = []
    try:
        with httpx.Client(timeout=30) as c:
            while len(answers) < 1:  # the first widest request is in flight or done
                time.sleep(0.005)
            for _ in range(15):
                t0 = time.perf_counter()
                assert c.get(f"{world.url}/healthz").status_code == 200
                probes.append(time.perf_counter() - t0)
                time.sleep(0.02)
    finally:
        stop.set()
        thread.join(60)
        for t in signers:
            t.join(60)
    assert answers and set(answers) == {200}
    assert len(signins) >= 8 and set(signins) == {401}, set(signins)  # they really ran
    print(f"/healthz while the widest requests ran: {[round(p * 1000) for p in probes]} ms")
    assert statistics.median(probes) < 0.05, probes


def _cases() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(who, method, path, request keywords). 27 of them answered 500 before issue 16; the
    rest were refused by an earlier check (a query pattern, a 401 before the password
    reached the database, a 404 page) or the route did not exist, and must stay 4xx.
    ``{p}`` is the seeded patient, ``{a}`` its open alert."""
    nul = "%00"
    return [
        (
            "anonymous",
            "POST",
            "/v1/session",
            {"json": {"username": "bil\x00ling", "password": "x"}},
        ),
        (
            "anonymous",
            "POST",
            "/v1/session",
            {"json": {"username": "billing", "password": "x\x00"}},
        ),
        ("anonymous", "POST", "/ui/sign-in", {"data": {"username": "a\x00", "password": "x"}}),
        ("reader", "GET", f"/v1/patients/{{p}}{nul}/adherence", {}),
        ("reader", "GET", f"/v1/patients/{{p}}{nul}/pain", {}),
        ("admin", "GET", f"/ui/patients/{{p}}{nul}", {}),
        ("admin", "GET", "/ui/patients/not%20an%20id", {}),
        ("clinician", "POST", f"/v1/alerts/a{nul}b/ack", {"json": {"disposition": "sent_to_ed"}}),
        (
            "clinician",
            "POST",
            "/v1/alerts/{a}/ack",
            {"json": {"disposition": "sent_to_ed", "note": "called\x00"}},
        ),
        (
            "clinician",
            "POST",
            f"/ui/alerts/a{nul}b/ack",
            {"data": {"disposition": "sent_to_ed", "note": "x"}},
        ),
        (
            "clinician",
            "POST",
            "/ui/alerts/{a}/ack",
            {"data": {"disposition": "sent_to_ed", "note": "a\x00b"}},
        ),
        ("reader", "GET", "/v1/alerts", {"params": {"patient_id": "p\x00"}}),
        ("reader", "GET", "/v1/alerts", {"params": {"clinician_id": "c\x00"}}),
        ("reader", "GET", "/v1/alerts", {"params": {"before": "2026-01-01T00:00:00Z|a\x00"}}),
        ("reader", "GET", "/v1/alerts", {"params": {"before": "9999-12-31T00:00:00Z|a"}}),
        ("admin", "GET", "/ui/worklist", {"params": {"q": "p\x00"}}),
        ("admin", "GET", "/ui/audit", {"params": {"actor": "a\x00"}}),
        ("reader", "GET", "/fhir/Observation", {"params": {"patient": "{p}\x00"}}),
        (
            "reader",
            "GET",
            "/fhir/Observation",
            {"params": {"patient": "{p}", "date": "ge9999-12-31"}},
        ),
        ("reader", "GET", "/v1/patients/{p}/billing", {"params": {"as_of": FAR}}),
        (
            "reader",
            "GET",
            "/v1/billing/claims",
            {"params": {"from": "2026-01-01", "to": "2026-01-31", "as_of": FAR}},
        ),
        ("reader", "GET", "/v1/patients/{p}/adherence", {"params": {"to": "9999-12-31"}}),
        ("reader", "GET", "/v1/patients/{p}/pain", {"params": {"from": "1900-01-01"}}),
        (
            "reader",
            "GET",
            "/v1/billing/claims",
            {"params": {"from": "2000-01-01", "to": "2100-12-31"}},
        ),
        ("billing", "GET", f"/ui/billing/exports/{BIG}", {}),
        ("billing", "GET", f"/v1/billing/submissions/{BIG}/file", {}),
        ("billing", "GET", "/ui/billing", {"params": {"month": "9999-12"}}),
        ("billing", "POST", "/ui/billing/submit", {"data": {f"f{i}": "x" for i in range(200)}}),
        (
            "billing",
            "POST",
            "/ui/billing/submit",
            {"data": {"month": "2026-01\r\nX-Injected: yes", "confirm": "x"}},
        ),
        (
            "billing",
            "GET",
            "/ui/billing/preview",
            {"params": {"month": "2026-01\r\nX-Injected: yes", "format": "csv"}},
        ),
        (
            "billing",
            "POST",
            "/v1/billing/submissions",
            {"json": {"from": "1900-01-01", "to": "1900-01-31", "format": "csv"}},
        ),
        (
            "billing",
            "POST",
            "/v1/billing/exports",
            {"json": {"from": "2026-01-01", "to": "2026-01-31", "as_of": FAR}},
        ),
        ("admin", "GET", "/ui/stream", {"params": {"since": FAR}}),
    ]


@pytest.mark.parametrize(
    ("who", "method", "path", "kw"),
    _cases(),
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_inputs_that_answered_500_answer_4xx(
    world: World, who: str, method: str, path: str, kw: dict[str, Any]
) -> None:
    kw = json.loads(json.dumps(kw).replace("{p}", world.patient))
    path = path.replace("{p}", world.patient).replace("{a}", world.alert_id)
    if "data" in kw and who != "anonymous":
        kw["data"] = {**kw["data"], "csrf_token": world.csrf(who)}
    exports, errors = _exports(world), _errors_500(world)
    resp = world.call(who, method, path, **kw)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    assert "content-disposition" not in resp.headers
    assert _exports(world) == exports
    assert _errors_500(world) == errors


# --- item 6: headers and files -----------------------------------------------------------------


def test_every_route_answers_with_the_security_headers(world: World) -> None:
    doc = httpx.get(f"{world.url}/openapi.json", timeout=30).json()
    statuses: set[int] = set()
    for path, ops in doc["paths"].items():
        url = (
            path.replace("{patient_id}", world.patient)
            .replace("{alert_id}", "no-such-alert")
            .replace("{submission_id}", "1")
            .replace("{export_id}", "1")
        )
        for method in ops:
            callers = ("anonymous", "admin", "reader") if method == "get" else ("anonymous",)
            for who in callers:
                with httpx.stream(
                    method.upper(), world.url + url, headers=world.headers(who), timeout=30
                ) as resp:  # the live stream never ends: its headers are all we read
                    assert resp.status_code < 500, (method, path, who)
                    statuses.add(resp.status_code)
                    for name, value in SECURITY_HEADERS.items():
                        assert resp.headers.get(name) == value, (method, path, who)
                    assert resp.headers.get("cache-control") == "no-store", (method, path, who)
                    assert "strict-transport-security" not in resp.headers  # plain HTTP here
    assert {200, 303, 401, 403, 404, 422} <= statuses, statuses
    docs = httpx.get(f"{world.url}/docs", timeout=30)  # RTM_ENV=dev: served, no CDN
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    assert httpx.get(f"{world.url}/redoc", timeout=30).status_code == 404


def test_the_preview_file_name_is_the_parsed_month_and_no_preview_records_anything(
    world: World,
) -> None:
    before = _exports(world)
    bad = world.call(
        "billing", "GET", "/ui/billing/preview", params={"month": "2001-02\n", "format": "csv"}
    )
    assert bad.status_code == 422 and _exports(world) == before
    for fmt, ext, what in (
        ("csv", "csv", "preview-not-recorded"),
        ("fhir", "json", "preview-not-recorded"),
        ("x12", "x12", "test-draft-not-recorded"),
    ):
        ok = world.call(
            "billing", "GET", "/ui/billing/preview", params={"month": "2001-02", "format": fmt}
        )
        assert ok.status_code == 200, ok.text
        assert ok.headers["content-disposition"] == (
            f'attachment; filename="rtm-2001-02-{what}.{ext}"'
        )
        assert "x-billing-export-id" not in ok.headers
    assert _exports(world) == before


def test_cli_output_files_are_owner_only(world: World, tmp_path: Path) -> None:
    env = settings_env(world.stack.settings)
    claims, bundle = tmp_path / "claims.csv", tmp_path / "observations.json"
    claims.write_text("")
    claims.chmod(0o644)  # an existing readable file is narrowed before it is written
    for args in (
        ["billing", "export", "--from", "2026-09-01", "--to", "2026-09-30", "--out", str(claims)],
        ["fhir", "observations", "--patient", world.patient, "--out", str(bundle)],
    ):
        subprocess.run(
            [sys.executable, "-m", "rtm.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    assert stat.S_IMODE(claims.stat().st_mode) == 0o600
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert world.patient in bundle.read_text()
