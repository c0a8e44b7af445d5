"""Sign-in hardening and the audit log the app cannot erase (issue 16, items 3 and 5),
through a real gateway process and PostgreSQL.

Each test signs in from its own client address (X-Forwarded-For, which uvicorn takes from
a loopback peer): the throttle is shared through the database, so 127.0.0.1's count,
which the other integration tests use, is left alone. Usernames are per test too.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from rtm.devstack import settings_env, start_gateway
from streams.access import CSRF_HEADER, SESSION_COOKIE, hash_password
from streams.db import access as db
from streams.db.roles import table_privileges
from streams.settings import Settings
from tests.integration.conftest import isolated_settings, run_in_thread

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
WRONG = "not the password at all"
LOCK_S = 3.0


@dataclass
class Gateway:
    settings: Settings
    tag: str
    org: str

    @property
    def url(self) -> str:
        return f"http://{self.settings.gateway.host}:{self.settings.gateway.port}"

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"


@contextlib.contextmanager
def gateway(base: Settings, **over: Any) -> Iterator[Gateway]:
    """A gateway alone (sign-in needs no worker) with these settings, its own org and users
    c1 (clinician cid1, treats p1), c2 (clinician cid2), billing, and off (disabled)."""
    settings = isolated_settings(base).but(over)
    tag = "sig" + uuid.uuid4().hex[:8]
    gw = Gateway(settings, tag, f"{tag}-org")
    run_in_thread(_provision(gw))
    child = start_gateway(settings)
    try:
        yield gw
    finally:
        child.stop()


async def _provision(gw: Gateway) -> None:
    conn = await asyncpg.connect(gw.settings.db.dsn)  # the application role, as the CLI
    try:
        await db.add_org(conn, gw.org, "Sign-in clinic")
        pw = hash_password(PASSWORD)
        for name, role, clin in (
            ("c1", "clinician", "cid1"),
            ("c2", "clinician", "cid2"),
            ("billing", "billing", None),
            ("off", "clinician", "cid3"),
        ):
            await db.add_user(
                conn, gw.org, gw.user(name), role, pw, f"{gw.tag}-{clin}" if clin else None
            )
        await db.disable_user(conn, gw.user("off"))
        await db.record_patients(conn, [(gw.org, f"{gw.tag}-p1")])
        await db.record_patient_clinicians(conn, [(gw.org, f"{gw.tag}-p1", f"{gw.tag}-cid1")])
    finally:
        await conn.close()


def new_client() -> str:
    """A client address of our own (the IPv6 documentation range: only a header value)."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def sign_in(
    gw: Gateway, username: str, password: str, client: str, http: httpx.Client | None = None
) -> httpx.Response:
    return (http or httpx).post(  # type: ignore[no-any-return]
        f"{gw.url}/v1/session",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": client},
        timeout=30,
    )


def session_headers(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 200, resp.text
    return {
        "Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}",
        CSRF_HEADER: resp.json()["csrf_token"],
    }


def audit_rows(settings: Settings, where: str, *args: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(settings.db.dsn)
        try:
            rows = await conn.fetch(
                "SELECT org_id, actor, role, action, resource, patient_ids, detail::text AS detail"
                f" FROM audit_log WHERE {where} ORDER BY audit_id",
                *args,
            )
        finally:
            await conn.close()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    out: list[dict[str, Any]] = run_in_thread(go())
    return out


@pytest.fixture(scope="module")
def gw(base_settings: Settings) -> Iterator[Gateway]:
    """Short locks and idle timeout, a short denial window, otherwise the defaults."""
    with gateway(
        base_settings,
        signin_lock_s=LOCK_S,
        signin_client_max_failures=8,
        session_idle_s=3.0,
        audit_denied_window_s=3.0,
    ) as g:
        yield g


@pytest.fixture(scope="module")
def open_gw(base_settings: Settings) -> Iterator[Gateway]:
    """No practical throttle: what is measured is the sign-in itself."""
    with gateway(
        base_settings, signin_max_failures=100_000, signin_client_max_failures=100_000
    ) as g:
        yield g


# --- item 3: sign-in -------------------------------------------------------------------------------


def test_twenty_wrong_passwords_lock_the_account_and_the_lock_ends(gw: Gateway) -> None:
    client, name = new_client(), gw.user("c1")
    t0 = time.monotonic()
    answers = [sign_in(gw, name, WRONG, client) for _ in range(20)]
    assert time.monotonic() - t0 < 10  # 20 attempts within 10 s
    codes = [r.status_code for r in answers]
    assert codes == [401] * 5 + [429] * 15, codes
    retry = [int(r.headers["Retry-After"]) for r in answers[5:]]
    assert all(1 <= s <= LOCK_S for s in retry), retry
    # the right password during the lock is refused too, and no cookie is set
    during = sign_in(gw, name, PASSWORD, client)
    assert during.status_code == 429 and SESSION_COOKIE not in during.cookies
    assert 1 <= int(during.headers["Retry-After"]) <= LOCK_S
    # from another address as well: the account is what is locked; the sign-in page too
    assert sign_in(gw, name, PASSWORD, new_client()).status_code == 429
    page = httpx.post(
        f"{gw.url}/ui/sign-in",
        data={"username": name, "password": PASSWORD},
        headers={"X-Forwarded-For": client},
        timeout=30,
    )
    assert page.status_code == 429 and "Too many sign-in attempts" in page.text
    assert 1 <= int(page.headers["Retry-After"]) <= LOCK_S
    rows = audit_rows(gw.settings, "actor = $1", f"user:{name}")
    actions = [r["action"] for r in rows]
    assert actions.count("access.sign_in_failed") == 5
    locked = [r for r in rows if r["action"] == "access.sign_in_locked"]
    assert len(locked) == 1 and locked[0]["org_id"] == gw.org
    assert locked[0]["detail"]["scope"] == "account" and locked[0]["detail"]["lock_s"] == LOCK_S
    assert all(PASSWORD not in json.dumps(r) and WRONG not in json.dumps(r) for r in rows)
    time.sleep(int(during.headers["Retry-After"]) + 0.2)
    after = sign_in(gw, name, PASSWORD, client)
    assert after.status_code == 200, after.text
    assert httpx.get(f"{gw.url}/v1/me", headers=session_headers(after)).status_code == 200


def test_guessing_many_names_from_one_address_locks_the_address(gw: Gateway) -> None:
    client = new_client()
    codes = [sign_in(gw, gw.user(f"nobody{i}"), WRONG, client).status_code for i in range(9)]
    assert codes == [401] * 8 + [429], codes
    # a real account's right password from that address waits too; elsewhere it works
    assert sign_in(gw, gw.user("c2"), PASSWORD, client).status_code == 429
    assert sign_in(gw, gw.user("c2"), PASSWORD, new_client()).status_code == 200
    rows = audit_rows(
        gw.settings, "action = 'access.sign_in_locked' AND actor = $1", f"client:{client}"
    )
    assert len(rows) == 1 and rows[0]["org_id"] == "-" and rows[0]["detail"]["scope"] == "client"


def test_unknown_and_disabled_users_sign_ins_are_audited(gw: Gateway) -> None:
    client = new_client()
    unknown = f"{gw.tag}-Summer2026!"  # e.g. a password typed into the name field
    assert sign_in(gw, unknown, WRONG, client).status_code == 401
    assert sign_in(gw, gw.user("off"), PASSWORD, client).status_code == 401  # disabled
    rows = audit_rows(
        gw.settings, "action = 'access.sign_in_failed' AND detail->>'client' = $1", client
    )
    assert len(rows) == 2, rows
    by_reason = {r["detail"]["reason"]: r for r in rows}
    anon = by_reason["unknown_user"]
    assert (anon["org_id"], anon["actor"]) == ("-", "anonymous")
    assert len(anon["detail"]["username_digest"]) == 16
    assert unknown not in json.dumps(anon) and "Summer" not in json.dumps(anon)
    off = by_reason["disabled"]
    assert (off["org_id"], off["actor"]) == (gw.org, f"user:{gw.user('off')}")
    assert PASSWORD not in json.dumps(rows) and WRONG not in json.dumps(rows)


def test_unknown_known_and_disabled_names_take_the_same_time(open_gw: Gateway) -> None:
    """40 sequential wrong-password attempts each; the throttle is out of the way
    (open_gw), so what differs is only whether a real hash or the dummy is checked."""
    client = new_client()
    names = {
        "known": open_gw.user("c1"),
        "disabled": open_gw.user("off"),
        "unknown": open_gw.user("no-such-user"),
    }
    times: dict[str, list[float]] = {k: [] for k in names}
    with httpx.Client(timeout=30) as http:
        for name in names.values():  # warm-up: connections, the dummy hash
            for _ in range(3):
                sign_in(open_gw, name, WRONG, client, http)
        for _ in range(40):
            for kind, name in names.items():  # interleaved: drift hits all alike
                t0 = time.perf_counter()
                resp = sign_in(open_gw, name, WRONG, client, http)
                times[kind].append(time.perf_counter() - t0)
                assert resp.status_code == 401
    med = {k: statistics.median(v) for k, v in times.items()}
    print("sign-in medians (ms):", {k: round(v * 1000, 1) for k, v in med.items()})
    assert med["known"] > 0.01  # a real argon2 check happened
    for kind in ("unknown", "disabled"):
        assert abs(med[kind] - med["known"]) <= 0.2 * max(med[kind], med["known"]), med


def test_healthz_stays_fast_while_eight_sign_ins_run(open_gw: Gateway) -> None:
    stop = threading.Event()
    done = [0] * 8
    client = new_client()

    def hammer(i: int) -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                sign_in(open_gw, open_gw.user("c2"), WRONG, client, http)
                done[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)  # the pool is busy
        before = sum(done)
        lat = []
        with httpx.Client(timeout=30) as http:
            for _ in range(40):
                t0 = time.perf_counter()
                assert http.get(f"{open_gw.url}/healthz").status_code == 200
                lat.append(time.perf_counter() - t0)
                time.sleep(0.05)
        during = sum(done) - before
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    median_ms = statistics.median(lat) * 1000
    print(f"/healthz median {median_ms:.1f} ms while {during} sign-ins ran")
    assert during >= 4  # sign-ins really ran meanwhile (8 in flight all along)
    assert median_ms < 50, sorted(round(x * 1000) for x in lat)


def test_an_idle_session_ends_and_use_keeps_it_alive(gw: Gateway) -> None:
    client = new_client()
    headers = session_headers(sign_in(gw, gw.user("billing"), PASSWORD, client))
    for _ in range(4):  # 4.8 s in all, more than the 3 s idle timeout: used, it lives
        time.sleep(1.2)
        assert httpx.get(f"{gw.url}/v1/me", headers=headers).status_code == 200
    time.sleep(3.3)
    assert httpx.get(f"{gw.url}/v1/me", headers=headers).status_code == 401


def test_a_user_keeps_at_most_three_sessions(gw: Gateway) -> None:
    client = new_client()
    sessions = [session_headers(sign_in(gw, gw.user("c2"), PASSWORD, client)) for _ in range(4)]
    codes = [httpx.get(f"{gw.url}/v1/me", headers=h).status_code for h in sessions]
    assert codes == [401, 200, 200, 200]  # the least recently used one was ended
    rows = audit_rows(
        gw.settings,
        "action = 'access.sign_in' AND actor = $1 AND detail->>'client' = $2",
        f"user:{gw.user('c2')}",
        client,
    )
    assert [r["detail"].get("sessions_ended", 0) for r in rows] == [0, 0, 0, 1]


def test_rtm_users_sign_out_ends_every_session_of_the_user(gw: Gateway) -> None:
    client = new_client()
    name = gw.user("c1")
    a = session_headers(sign_in(gw, name, PASSWORD, client))
    b = session_headers(sign_in(gw, name, PASSWORD, client))
    other = session_headers(sign_in(gw, gw.user("billing"), PASSWORD, client))
    out = subprocess.run(
        [sys.executable, "-m", "rtm.cli", "users", "sign-out", name],
        env=settings_env(gw.settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "session(s) ended" in out.stdout
    for h in (a, b):
        assert httpx.get(f"{gw.url}/v1/me", headers=h).status_code == 401
    assert httpx.get(f"{gw.url}/v1/me", headers=other).status_code == 200
    rows = audit_rows(
        gw.settings,
        "action = 'access.user_sign_out' AND detail->>'username' = $1",
        name,
    )
    assert len(rows) == 1 and rows[0]["org_id"] == gw.org and rows[0]["detail"]["sessions"] >= 2
    # the account still works
    assert sign_in(gw, name, PASSWORD, client).status_code == 200


# --- item 5: the audit log --------------------------------------------------------------------------


def test_the_application_role_cannot_erase_or_change_the_audit_log(
    base_settings: Settings,
) -> None:
    assert base_settings.db.app_role == "rtm_app"

    async def go() -> dict[str, str]:
        app = await asyncpg.connect(base_settings.db.dsn)
        owner = await asyncpg.connect(base_settings.db.owner_dsn)
        out: dict[str, str] = {}
        try:
            assert await app.fetchval("SELECT current_user") == "rtm_app"
            assert await table_privileges(owner, "rtm_app", "audit_log") == {"SELECT", "INSERT"}
            for sql in (
                "TRUNCATE audit_log",
                "DELETE FROM audit_log",
                "UPDATE audit_log SET actor = 'x'",
                "ALTER TABLE audit_log DISABLE TRIGGER ALL",
                "DROP TABLE audit_log",
            ):
                try:
                    await app.execute(sql)
                    out[sql] = "done"
                except asyncpg.InsufficientPrivilegeError as exc:
                    out[sql] = str(exc)
            # it still appends and reads
            await db.audit(
                app, org_id="-", actor="test", role="-", action="test.append", resource="test"
            )
            assert await app.fetchval("SELECT count(*) FROM audit_log WHERE action = 'test.append'")
            # a hypertable chunk that the application's own insert creates is its to use
            tr = app.transaction()
            await tr.start()
            try:
                await app.execute(
                    "INSERT INTO events (org_id, event_id, type, patient_id, occurred_at,"
                    " local_date, utc_offset_s, received_at, payload) VALUES ('-', $1,"
                    " 'pain.reported', $1, '2099-06-01T00:00:00Z', '2099-06-01', 0, now(), '{}')",
                    f"chunk-probe-{uuid.uuid4().hex}",
                )
                assert await app.fetchval(
                    "SELECT count(*) FROM events WHERE occurred_at >= '2099-06-01'"
                    " AND occurred_at < '2099-06-02'"
                )
            finally:
                await tr.rollback()
            # the owner's accidental TRUNCATE hits the append-only trigger too
            try:
                await owner.execute("TRUNCATE audit_log")
                out["owner TRUNCATE"] = "done"
            except asyncpg.PostgresError as exc:
                out["owner TRUNCATE"] = str(exc)
        finally:
            await app.close()
            await owner.close()
        return out

    out = run_in_thread(go())
    assert out["TRUNCATE audit_log"] == "permission denied for table audit_log"
    assert out["DELETE FROM audit_log"] == "permission denied for table audit_log"
    assert out["UPDATE audit_log SET actor = 'x'"] == "permission denied for table audit_log"
    assert out["ALTER TABLE audit_log DISABLE TRIGGER ALL"] == "must be owner of table audit_log"
    assert out["DROP TABLE audit_log"] == "must be owner of table audit_log"
    assert "append-only" in out["owner TRUNCATE"]


def test_an_out_of_scope_read_leaves_one_denied_row_per_window(gw: Gateway) -> None:
    client = new_client()
    p1 = f"{gw.tag}-p1"
    c1 = session_headers(sign_in(gw, gw.user("c1"), PASSWORD, client))
    c2 = session_headers(sign_in(gw, gw.user("c2"), PASSWORD, client))
    billing = session_headers(sign_in(gw, gw.user("billing"), PASSWORD, client))
    pain = f"{gw.url}/v1/patients/{p1}/pain"
    assert httpx.get(pain, headers=c1).status_code == 200  # in scope
    for _ in range(5):  # within the window: one row
        assert httpx.get(pain, headers=c2).status_code == 404
    route = "GET /v1/patients/{patient_id}/pain"
    denied = audit_rows(gw.settings, "action = 'denied' AND actor = $1", f"user:{gw.user('c2')}")
    assert len(denied) == 1, denied
    assert denied[0]["org_id"] == gw.org and denied[0]["resource"] == route
    assert denied[0]["patient_ids"] == [p1] and denied[0]["detail"] == {"status": 404}
    # a role without the permission: 403, a row too
    assert httpx.get(pain, headers=billing).status_code == 403
    assert (
        len(
            audit_rows(
                gw.settings, "action = 'denied' AND actor = $1", f"user:{gw.user('billing')}"
            )
        )
        == 1
    )
    # an in-scope 404 is no denial (c1 may see p1; there is no billing data)
    assert httpx.get(f"{gw.url}/v1/patients/{p1}/billing", headers=c1).status_code == 404
    assert not audit_rows(gw.settings, "action = 'denied' AND actor = $1", f"user:{gw.user('c1')}")
    # an acknowledgement of an alert the clinician cannot see
    ack = httpx.post(
        f"{gw.url}/v1/alerts/{gw.tag}-no-alert/ack",
        headers=c2,
        json={"disposition": "contacted_patient"},
    )
    assert ack.status_code == 404
    rows = audit_rows(
        gw.settings,
        "action = 'denied' AND resource = $1 AND actor = $2",
        "POST /v1/alerts/{alert_id}/ack",
        f"user:{gw.user('c2')}",
    )
    assert len(rows) == 1 and rows[0]["patient_ids"] == []
    # after the window the next attempt writes a row with the count it swallowed
    for _ in range(2):  # 3.2 s, the session kept alive (idle timeout 3 s)
        time.sleep(1.6)
        assert httpx.get(f"{gw.url}/v1/me", headers=c2).status_code == 200
    assert httpx.get(pain, headers=c2).status_code == 404
    denied = audit_rows(
        gw.settings,
        "action = 'denied' AND actor = $1 AND resource = $2",
        f"user:{gw.user('c2')}",
        route,
    )
    assert [r["detail"].get("suppressed", 0) for r in denied] == [0, 4]
