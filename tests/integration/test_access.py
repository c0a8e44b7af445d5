"""Access over every route, through the real gateway, worker, Kafka and PostgreSQL.

Two organisations, A and B. In A: clinicians A1 (treats pA1), A2 (treats pA2) and A3 (on
a care team with A1), billing, admin and operator users; producer, integration and reader
keys. In B: an admin, a billing user, a reader and a producer key. Every route of the
gateway is in ROUTES; a route added without an entry fails the first test. Each principal
gets exactly the answer its role, scope and organisation allow: 401 without credentials,
403 outside its permissions (nothing read, nothing written), 404 for a patient outside
its scope (as for an unknown one), and only its organisation's data otherwise. Every read
of patient data and every export leaves an audit row that `rtm audit` shows.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from rtm.devstack import settings_env
from streams.access import CSRF_HEADER, SESSION_COOKIE, hash_password, new_key
from streams.db import access as db
from streams.http.app import create_app
from streams.kafka.transport import kafka_client_kwargs
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import (
    Stack,
    end_offsets,
    refreshed,
    run_in_thread,
    running_stack,
    wait_for,
)

pytestmark = pytest.mark.integration

AS_OF = "2026-11-30T00:00:00Z"


@dataclass
class World:
    stack: Stack
    tag: str
    org_a: str
    org_b: str
    keys: dict[str, str] = field(default_factory=dict)  # name -> full key
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> cookie, csrf
    patients: dict[str, str] = field(default_factory=dict)
    alert_id: str = ""
    export_id: str = ""
    submission_id: int = 0

    def headers(self, who: str, write: bool = False) -> dict[str, str]:
        if who == "anonymous":
            return {}
        if who in self.keys:
            return {"Authorization": f"Bearer {self.keys[who]}"}
        cookie, csrf = self.sessions[who]
        # The cookie is Secure (httpx keeps such cookies for https only): sent by hand.
        out = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
        if write:
            out[CSRF_HEADER] = csrf
        return out

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method,
            self.stack.url + path,
            headers=self.headers(who, method not in ("GET", "HEAD")),
            timeout=30,
            **kw,
        )


USERS = {  # name -> (org letter, role, clinician id)
    "a-clin1": ("a", "clinician", "cA1"),
    "a-clin2": ("a", "clinician", "cA2"),
    "a-clin3": ("a", "clinician", "cA3"),
    "a-billing": ("a", "billing", None),
    "a-admin": ("a", "admin", None),
    "a-operator": ("a", "operator", None),
    "a-scheduler": ("a", "scheduler", None),
    "a-manager": ("a", "manager", None),
    "b-admin": ("b", "admin", None),
    "b-billing": ("b", "billing", None),
}
KEYS = {
    "a-producer": ("a", ["producer"]),
    "a-integration": ("a", ["integration"]),
    "a-reader": ("a", ["reader"]),
    "b-reader": ("b", ["reader"]),
    "b-producer": ("b", ["producer"]),
}
PASSWORD = "correct horse battery staple"
EVERYONE = ["anonymous", *USERS, *KEYS]


async def _provision(settings: Settings, w: World) -> None:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        for org in (w.org_a, w.org_b):
            await db.add_org(conn, org, f"Clinic {org}")
        pw_hash = hash_password(PASSWORD)
        for name, (org, role, clin) in USERS.items():
            await db.add_user(
                conn,
                w.org_a if org == "a" else w.org_b,
                f"{w.tag}-{name}",
                role,
                pw_hash,
                f"{w.tag}-{clin}" if clin else None,
            )
        for name, (org, scopes) in KEYS.items():
            key, key_id, salt, digest = new_key()
            await db.add_key(
                conn, key_id, w.org_a if org == "a" else w.org_b, scopes, name, salt, digest
            )
            w.keys[name] = key
        await db.add_team_member(conn, w.org_a, "knee", f"{w.tag}-cA1")
        await db.add_team_member(conn, w.org_a, "knee", f"{w.tag}-cA3")
    finally:
        await conn.close()


def _sign_in(w: World, name: str) -> None:
    resp = httpx.post(
        f"{w.stack.url}/v1/session",
        timeout=30,
        json={"username": f"{w.tag}-{name}", "password": PASSWORD},
    )
    assert resp.status_code == 200, resp.text
    cookie = resp.cookies[SESSION_COOKIE]
    set_cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "secure" in set_cookie and "samesite=lax" in set_cookie
    w.sessions[name] = (cookie, resp.json()["csrf_token"])


@pytest.fixture(scope="module")
def world(base_settings: Settings) -> Iterator[World]:
    with running_stack(base_settings) as stack:
        tag = "acc" + uuid.uuid4().hex[:8]
        w = World(stack, tag, f"{tag}-a", f"{tag}-b")
        run_in_thread(_provision(stack.settings, w))
        for name in USERS:
            _sign_in(w, name)
        f = EventFactory()
        p1, p2 = f.patient(1), f.patient(2)
        w.patients = {"pA1": p1, "pA2": p2}
        episodes = [
            f.episode_started(
                p1,
                at="2026-10-01T09:00:00-05:00",
                clinician_id=f"{tag}-cA1",
                episode_id=f"{p1}-ep1",
            ),
            f.episode_started(
                p2,
                at="2026-10-01T09:00:00-05:00",
                clinician_id=f"{tag}-cA2",
                episode_id=f"{p2}-ep1",
            ),
        ]
        assert w.call("a-integration", "POST", "/v1/events", json=episodes).json()["accepted"] == 2
        data = [
            *f.daily_exercises(p1, dt.date(2026, 10, 1), 20),
            *f.daily_exercises(p2, dt.date(2026, 10, 1), 20),
            f.pain(p1, 9, "2026-10-21T10:00:00-05:00", episode_id=f"{p1}-ep1"),
        ]
        body = w.call("a-producer", "POST", "/v1/events", json=data).json()
        assert body["accepted"] == len(data), body

        async def alert_stored() -> bool:
            conn = await asyncpg.connect(stack.settings.db.dsn)
            try:
                w.alert_id = (
                    await conn.fetchval(
                        "SELECT id FROM alerts WHERE patient_id = $1 AND kind = 'pain_high'", p1
                    )
                    or ""
                )
                n = await conn.fetchval(
                    "SELECT count(*) FROM events WHERE patient_id = ANY($1::text[])", [p1, p2]
                )
            finally:
                await conn.close()
            return bool(w.alert_id) and n == len(data) + 2

        run_in_thread(wait_for(alert_stored, 90, "events stored and the pain alert"))
        # the readiness route reads the lines the worker's refresh stores
        settings = stack.settings
        run_in_thread(wait_for(lambda: refreshed(settings, w.org_a), 90, "lines refreshed"))
        # a recorded export of A (a month without lines: the export tests below bill October)
        resp = w.call(
            "a-billing",
            "POST",
            "/v1/billing/exports",
            json={"from": "2026-01-01", "to": "2026-01-31", "as_of": AS_OF},
        )
        w.export_id = resp.headers["X-Billing-Export-Id"]
        yield w


# --- the matrix ---------------------------------------------------------------------------------

CLINICAL = {"a-clin1", "a-clin2", "a-clin3", "a-admin", "a-reader", "b-admin", "b-reader"}
BILLING = {"a-billing", "a-admin", "a-reader", "b-admin", "b-billing", "b-reader"}
SEES_PA1 = {"a-clin1", "a-clin3", "a-admin", "a-reader"}  # scope: pA1's data
SUBMITTERS = {"a-billing", "a-admin", "b-admin", "b-billing"}  # billing staff and admins


CLINICAL_USERS = {"a-clin1", "a-clin2", "a-clin3", "a-admin", "b-admin"}  # pages: users only
BILLING_USERS = {"a-billing", "a-admin", "b-admin", "b-billing"}
# the intake queue page: schedulers too (their organisation's intakes)
INTAKE_USERS = CLINICAL_USERS | {"a-scheduler"}
# the outcome report and the pathway diff (issue 19): managers and admins, no patient pages
MANAGER_USERS = {"a-manager", "a-admin", "b-admin"}


def _expected(who: str, permitted: set[str], in_scope: set[str] | None, path: str = "") -> int:
    if who == "anonymous":
        return 303 if path.startswith("/ui/") else 401  # a page sends you to sign in
    if who not in permitted:
        return 403
    if in_scope is not None and who not in in_scope:
        return 404
    return 200


# (method, path template) -> (who may, who of them sees pA1 (None: not a patient route))
ROUTES: dict[tuple[str, str], tuple[set[str], set[str] | None]] = {
    ("GET", "/v1/alerts"): (CLINICAL, None),
    ("GET", "/v1/worklist"): (CLINICAL, None),
    # the intake queue: the caller's organisation's intakes (test_intake_stream)
    ("GET", "/v1/intakes"): (CLINICAL | {"a-integration", "a-scheduler"}, None),
    ("GET", "/v1/patients/{patient_id}/adherence"): (CLINICAL, SEES_PA1),
    ("GET", "/v1/patients/{patient_id}/pain"): (CLINICAL, SEES_PA1),
    # FHIR R4 search (streams/http/routes/fhir.py): the patient is a query parameter; outside scope 404
    ("GET", "/fhir/Observation"): (CLINICAL, SEES_PA1),
    ("GET", "/fhir/QuestionnaireResponse"): (CLINICAL, SEES_PA1),
    ("GET", "/fhir/Encounter"): (CLINICAL, SEES_PA1),
    # the patient's episodes on their pathways and their tasks, as of now (pathways.fhir)
    ("GET", "/fhir/CarePlan"): (CLINICAL, SEES_PA1),
    ("GET", "/fhir/Task"): (CLINICAL, SEES_PA1),
    # the instrument registry: no patient data (read_clinical, not audited)
    ("GET", "/fhir/Questionnaire"): (CLINICAL, None),
    ("GET", "/fhir/Questionnaire/{instrument_id}"): (CLINICAL, None),
    # the organisation's pathway versions (built-in and published): no patient data
    ("GET", "/fhir/PlanDefinition"): (CLINICAL, None),
    ("GET", "/fhir/PlanDefinition/{plan_id}"): (CLINICAL, None),
    ("GET", "/v1/patients/{patient_id}/billing"): (CLINICAL | BILLING, SEES_PA1 | {"a-billing"}),
    ("GET", "/v1/billing/claims"): (BILLING, None),
    ("GET", "/v1/billing/conventions"): (BILLING, None),
    # the month's stored line readiness: integrations too (test_readiness_stream)
    ("GET", "/v1/billing/readiness"): (BILLING | {"a-integration"}, None),
    ("POST", "/v1/billing/submissions"): (SUBMITTERS, None),  # tested below
    ("POST", "/v1/billing/exports"): (SUBMITTERS, None),  # tested below
    ("GET", "/v1/billing/submissions"): (SUBMITTERS, None),
    # A's submission: B's billing staff get 404, as for an unknown one
    ("GET", "/v1/billing/submissions/{submission_id}/file"): (SUBMITTERS, {"a-billing", "a-admin"}),
    ("POST", "/v1/alerts/{alert_id}/ack"): (
        {"a-clin1", "a-clin2", "a-clin3", "a-admin", "b-admin"},
        {"a-clin1", "a-clin3", "a-admin"},
    ),
    # the same rule as the acknowledgement: tested below and in test_alert_actions
    ("POST", "/v1/alerts/{alert_id}/snooze"): (
        {"a-clin1", "a-clin2", "a-clin3", "a-admin", "b-admin"},
        {"a-clin1", "a-clin3", "a-admin"},
    ),
    ("POST", "/v1/events"): ({"a-producer", "a-integration", "b-producer"}, None),
    ("GET", "/v1/me"): (set(EVERYONE) - {"anonymous"}, None),
    ("POST", "/v1/session"): (set(), None),  # sign-in: tested below
    ("DELETE", "/v1/session"): (set(), None),  # sign-out: tested below
    # the dashboard (streams/pages*.py): signed-in users only, keys 403
    ("GET", "/ui/worklist"): (CLINICAL_USERS, None),
    ("GET", "/ui/patients/{patient_id}"): (CLINICAL_USERS, {"a-clin1", "a-clin3", "a-admin"}),
    # the printable summary: the patient page's rules (test_summary_operator_pages)
    ("GET", "/ui/patients/{patient_id}/summary"): (
        CLINICAL_USERS,
        {"a-clin1", "a-clin3", "a-admin"},
    ),
    # the operator page: operators and admins of any organisation; no patient data
    ("GET", "/ui/operator"): ({"a-operator", "a-admin", "b-admin"}, None),
    ("GET", "/ui/stream"): (CLINICAL_USERS, None),  # ?feed=intakes: INTAKE_USERS, below
    ("GET", "/ui/intakes"): (INTAKE_USERS, None),
    ("GET", "/ui/billing"): (BILLING_USERS, None),
    ("GET", "/ui/billing/queue"): (BILLING_USERS, None),  # the month-end queue
    ("GET", "/ui/billing/exports/{export_id}"): (BILLING_USERS, {"a-billing", "a-admin"}),
    ("GET", "/ui/billing/preview"): (BILLING_USERS, None),  # a look: records nothing
    ("GET", "/ui/billing/submit"): (BILLING_USERS, None),  # the confirmation step
    ("GET", "/ui/billing/submissions/{submission_id}/file"): (
        BILLING_USERS,
        {"a-billing", "a-admin"},
    ),
    ("GET", "/ui/audit"): ({"a-admin", "b-admin"}, None),
    ("GET", "/ui/outcomes"): (MANAGER_USERS, None),
    ("GET", "/ui/outcomes/export"): (MANAGER_USERS, None),
    ("GET", "/ui/outcomes/diff"): (MANAGER_USERS, None),
    # CSRF, managers, read-only, audited: tests/integration/test_outcomes_pages.py
    ("POST", "/ui/outcomes/diff"): (set(), None),
    # the organisation's template library: no patient data
    ("GET", "/ui/programs/templates"): (CLINICAL_USERS, None),
    ("GET", "/ui/"): (set(), None),  # a redirect by role: tested below
    ("POST", "/ui/sign-in"): (set(), None),  # tested below and in test_pages
    ("POST", "/ui/sign-out"): (set(), None),  # test_pages
    ("POST", "/ui/alerts/{alert_id}/ack"): (set(), None),  # tested below and in test_pages
    ("POST", "/ui/billing/submit"): (set(), None),  # tested below and in test_billing_view
    ("POST", "/ui/billing/override"): (set(), None),  # CSRF, billing users: test_claims_readiness
    ("POST", "/ui/alerts/{alert_id}/snooze"): (set(), None),  # tested below, test_alert_actions
    # CSRF, clinicians only, in scope, audited: tests/integration/test_pause_page.py
    ("POST", "/ui/patients/{patient_id}/program/{action}"): (set(), None),
    # CSRF, clinicians only, in scope, audited: tests/integration/test_program_templates_page.py
    ("POST", "/ui/patients/{patient_id}/exercises/{action}"): (set(), None),
    # CSRF, clinicians and admins, audited: tests/integration/test_program_templates_page.py
    ("POST", "/ui/programs/templates"): (set(), None),
    # CSRF, clinicians only, in scope, audited: tests/integration/test_time_page.py
    ("POST", "/ui/patients/{patient_id}/time"): (set(), None),
    ("POST", "/ui/patients/{patient_id}/timer"): (set(), None),
    # CSRF, the organisation's intakes only, audited: tests/integration/test_intake_queue_page.py
    ("POST", "/ui/intakes/{patient_id}/{intake_id}/contacted"): (set(), None),
}
OPEN_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/ui/sign-in"),
}


def test_every_route_of_the_gateway_is_in_the_access_matrix(world: World) -> None:
    paths = create_app(world.stack.settings).openapi()["paths"]
    routes = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    assert routes - OPEN_ROUTES == set(ROUTES), "a route without an access rule in ROUTES"


SUBMISSION = {"from": "2026-10-01", "to": "2026-10-01", "format": "csv", "as_of": AS_OF}


def _a_submission(world: World) -> int:
    """A's submission of 2026-10-01 (98975 of pA1 and pA2); the later October lines stay
    for the recorded-export test."""
    if not world.submission_id:
        resp = world.call("a-billing", "POST", "/v1/billing/submissions", json=SUBMISSION)
        assert resp.status_code == 201, resp.text
        world.submission_id = resp.json()["submission_id"]
    return world.submission_id


def _url(world: World, path: str, patient: str = "pA1") -> str:
    if "{submission_id}" in path:
        path = path.replace("{submission_id}", str(_a_submission(world)))
    return (
        path.replace("{patient_id}", world.patients[patient])
        .replace("{alert_id}", world.alert_id)
        .replace("{export_id}", world.export_id)
        .replace("{instrument_id}", "nprs")
        .replace("{plan_id}", "msk-default-1")
    )


def _stream_status(world: World, who: str, path: str) -> int:
    """The live stream never ends: its status is all the matrix reads."""
    with httpx.stream(
        "GET", world.stack.url + path, headers=world.headers(who), timeout=30
    ) as resp:
        return resp.status_code


@pytest.mark.parametrize(
    "route", [r for r in ROUTES if r[0] == "GET" and ROUTES[r][0]], ids=lambda r: f"{r[0]} {r[1]}"
)
def test_reads_answer_by_role_scope_and_organisation(world: World, route: tuple[str, str]) -> None:
    method, path = route
    permitted, sees = ROUTES[route]
    params: dict[str, str] = {}
    if path == "/v1/billing/claims":
        params = {"from": "2026-10-01", "to": "2026-10-31", "as_of": AS_OF}
    if path in (
        "/fhir/Observation",
        "/fhir/QuestionnaireResponse",
        "/fhir/Encounter",
        "/fhir/CarePlan",
        "/fhir/Task",
    ):
        params = {"patient": world.patients["pA1"]}
    if path == "/ui/billing/preview":
        params = {"month": "2026-10", "format": "csv"}
    if path == "/v1/billing/readiness":
        params = {"month": "2026-10"}
    if path == "/ui/outcomes/export":
        params = {"format": "csv"}
    for who in EVERYONE:
        if path == "/ui/stream":
            status = _stream_status(world, who, path)
            assert status == _expected(who, permitted, sees, path), who
            status = _stream_status(world, who, path + "?feed=intakes")
            assert status == _expected(who, INTAKE_USERS, None, path), who
            continue
        resp = world.call(who, method, _url(world, path), params=params)
        assert resp.status_code == _expected(who, permitted, sees, path), (who, resp.text[:200])
        if resp.status_code == 200:
            text = resp.text
            sees_a1 = who in SEES_PA1 or (
                path.startswith(("/v1/billing", "/ui/billing"))
                and who in {"a-billing", "a-admin", "a-reader", "a-integration"}
            )
            own_only = ("/v1/alerts", "/v1/worklist", "/v1/billing/claims", "/ui/worklist")
            if path in (*own_only, "/v1/billing/readiness"):
                # only the organisation's (and for a clinician, the team's) patients
                assert (world.patients["pA1"] in text) == sees_a1, (who, text[:300])
            if who.startswith("b-"):
                assert world.patients["pA1"] not in text and world.patients["pA2"] not in text


def test_a_clinician_sees_their_own_and_their_teams_patients_only(world: World) -> None:
    pa1, pa2 = world.patients["pA1"], world.patients["pA2"]
    for who, sees in (("a-clin1", {pa1}), ("a-clin3", {pa1}), ("a-clin2", {pa2})):
        for patient in (pa1, pa2):
            resp = world.call(who, "GET", f"/v1/patients/{patient}/adherence")
            assert resp.status_code == (200 if patient in sees else 404), (who, patient)
    alerts = world.call("a-clin2", "GET", "/v1/alerts", params={"patient_id": pa1}).json()
    assert alerts["alerts"] == []


def test_unknown_query_parameters_are_refused_by_name(world: World) -> None:
    resp = world.call("a-clin1", "GET", "/v1/alerts", params={"clinician": "x"})
    assert resp.status_code == 422
    assert "clinician" in resp.text
    ok = world.call(
        "a-clin1",
        "GET",
        "/v1/alerts",
        params={"severity": "critical", "kind": "pain_high", "patient_id": world.patients["pA1"]},
    ).json()["alerts"]
    assert [a["id"] for a in ok] == [world.alert_id]
    none = world.call(
        "a-clin1", "GET", "/v1/alerts", params={"severity": "high", "kind": "pain_high"}
    ).json()
    assert none["alerts"] == []


def test_posting_outside_a_keys_scope_is_refused_and_nothing_is_produced(world: World) -> None:
    f = EventFactory()
    pid = world.patients["pA1"]
    time_log = {
        "event_id": f"{f.prefix}-t1",
        "schema_version": 1,
        "type": "clinician.time_logged",
        "patient_id": pid,
        "occurred_at": "2026-10-10T10:00:00-05:00",
        "clinician_id": "cX",
        "clinician_role": "PT",
        "minutes": 240,
        "activity": "call",
        "interactive": True,
    }
    episode = f.episode_started(f.patient(9), at="2026-10-01T09:00:00-05:00")
    settings = world.stack.settings
    before = run_in_thread(end_offsets(settings, settings.kafka.topic_events))
    for who, batch in (
        ("a-producer", [f.pain(pid, 3, "2026-10-10T10:00:00-05:00"), time_log]),
        ("a-producer", [episode]),
        ("a-integration", [f.pain(pid, 3, "2026-10-10T11:00:00-05:00")]),
        ("a-reader", [f.pain(pid, 3, "2026-10-10T12:00:00-05:00")]),
        ("a-clin1", [time_log]),
    ):
        resp = world.call(who, "POST", "/v1/events", json=batch)
        assert resp.status_code == 403, (who, resp.text)
    assert run_in_thread(end_offsets(settings, settings.kafka.topic_events)) == before
    # another organisation's producer cannot add to A's patient: the same patient_id from
    # B is B's own patient (accepted, no refusal that would tell B the id exists in A)
    foreign = f.pain(pid, 8, "2026-10-22T10:00:00-05:00")
    body = world.call("b-producer", "POST", "/v1/events", json=[foreign]).json()
    assert (body["accepted"], body["rejected"], body["duplicates"]) == (1, [], [])

    async def stored_in_b() -> bool:
        conn = await asyncpg.connect(settings.db.dsn)
        try:
            org = await conn.fetchval(
                "SELECT org_id FROM events WHERE event_id = $1", foreign["event_id"]
            )
        finally:
            await conn.close()
        return bool(org == world.org_b)

    run_in_thread(wait_for(stored_in_b, 60, "B's event stored as B's"))
    a_pain = world.call("a-clin1", "GET", f"/v1/patients/{pid}/pain").json()["reports"]
    assert foreign["event_id"] not in {r["event_id"] for r in a_pain}


def test_acknowledge_needs_scope_csrf_and_is_recorded_in_the_callers_name(world: World) -> None:
    path = f"/v1/alerts/{world.alert_id}/ack"
    x = {"disposition": "contacted_patient", "note": "x"}
    snooze = {"duration": "4h", "reason": "x"}
    for who in ("a-clin2", "b-admin"):
        assert world.call(who, "POST", path, json=x).status_code == 404
        assert world.call(who, "POST", path[:-3] + "snooze", json=snooze).status_code == 404
    for who in ("a-reader", "a-billing", "a-operator", "a-producer"):
        assert world.call(who, "POST", path, json=x).status_code == 403
        assert world.call(who, "POST", path[:-3] + "snooze", json=snooze).status_code == 403
    cookie, _ = world.sessions["a-clin1"]
    no_csrf = httpx.post(
        world.stack.url + path,
        json=x,
        timeout=30,
        headers={"Cookie": f"{SESSION_COOKIE}={cookie}"},
    )
    assert no_csrf.status_code == 403 and CSRF_HEADER in no_csrf.text
    resp = world.call(
        "a-clin1",
        "POST",
        path,
        json={"disposition": "contacted_patient", "note": "called the patient, resting"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["acknowledged_by"] == f"{world.tag}-a-clin1"
    shown = world.call(
        "a-clin3", "GET", "/v1/alerts", params={"patient_id": world.patients["pA1"]}
    ).json()["alerts"]
    assert [(a["status"], a["ack_note"]) for a in shown if a["id"] == world.alert_id] == [
        ("acknowledged", "called the patient, resting")
    ]


def test_submitting_needs_billing_staff_csrf_and_stays_in_the_organisation(world: World) -> None:
    # runs before the recorded-export test below, which bills the rest of October
    path = "/v1/billing/submissions"
    for who, code in (
        ("anonymous", 401),
        ("a-reader", 403),
        ("a-clin1", 403),
        ("a-producer", 403),
        ("a-operator", 403),
        ("b-reader", 403),
    ):
        assert world.call(who, "POST", path, json=SUBMISSION).status_code == code, who
    # a signed-in user without the CSRF token: refused, nothing recorded
    cookie, _ = world.sessions["a-billing"]
    no_csrf = httpx.post(
        world.stack.url + path,
        json=SUBMISSION,
        timeout=30,
        headers={"Cookie": f"{SESSION_COOKIE}={cookie}"},
    )
    assert no_csrf.status_code == 403
    sid = _a_submission(world)
    history = world.call("a-admin", "GET", path).json()["submissions"]
    mine = [h for h in history if h["submission_id"] == sid]
    assert mine and mine[0]["created_by"] == f"user:{world.tag}-a-billing"
    assert mine[0]["format"] == "csv" and mine[0]["line_count"] == 2 and mine[0]["has_file"]
    file = world.call("a-admin", "GET", f"{path}/{sid}/file")
    assert file.status_code == 200
    assert world.patients["pA1"] in file.text and world.patients["pA2"] in file.text
    assert "attachment" in file.headers["content-disposition"]
    # the same lines are not submitted twice; B submits only B's (none)
    again = world.call("a-billing", "POST", path, json=SUBMISSION)
    assert again.status_code == 200 and again.json()["submission_id"] is None
    b = world.call("b-billing", "POST", path, json=SUBMISSION)
    assert b.status_code == 200 and b.json()["claims"] == []
    assert all(
        h["submission_id"] != sid for h in world.call("b-admin", "GET", path).json()["submissions"]
    )
    assert world.call("b-admin", "GET", f"{path}/{sid}/file").status_code == 404
    # x12 without a billing profile: refused naming the field, nothing recorded
    x12 = world.call(
        "a-billing", "POST", path, json={**SUBMISSION, "to": "2026-10-31", "format": "x12"}
    )
    assert x12.status_code == 422 and any("profile" in d["msg"] for d in x12.json()["detail"]), (
        x12.text
    )
    assert len(world.call("a-admin", "GET", path).json()["submissions"]) == len(history)


def test_billing_export_is_scoped_to_the_organisation_and_recording_needs_billing(
    world: World,
) -> None:
    body = {"from": "2026-10-01", "to": "2026-10-31", "as_of": AS_OF}
    path = "/v1/billing/exports"
    for who, code in (("anonymous", 401), ("a-reader", 403), ("a-clin1", 403), ("b-reader", 403)):
        assert world.call(who, "POST", path, json=body).status_code == code, who
    # a signed-in user without the CSRF token: refused, nothing recorded
    cookie, _ = world.sessions["a-billing"]
    no_csrf = httpx.post(
        world.stack.url + path,
        json=body,
        timeout=30,
        headers={"Cookie": f"{SESSION_COOKIE}={cookie}"},
    )
    assert no_csrf.status_code == 403
    b = world.call("b-billing", "POST", path, json=body)
    assert b.status_code == 200 and b.headers["X-Billing-Lines"] == "0"
    a = world.call("a-billing", "POST", path, json=body)
    assert a.status_code == 200 and int(a.headers["X-Billing-Lines"]) > 0
    assert world.patients["pA1"] in a.text and world.patients["pA2"] in a.text
    assert "X-Billing-Export-Id" in a.headers
    # a GET never records: `record` is no parameter of the look
    params = {**body, "record": "true"}
    assert world.call("a-billing", "GET", "/v1/billing/claims", params=params).status_code == 422


def test_sign_out_ends_the_session_and_a_wrong_password_gets_nothing(world: World) -> None:
    bad = httpx.post(
        f"{world.stack.url}/v1/session",
        timeout=30,
        json={"username": f"{world.tag}-a-admin", "password": "wrong"},
    )
    assert bad.status_code == 401 and SESSION_COOKIE not in bad.cookies
    _sign_in(world, "a-operator")
    assert world.call("a-operator", "GET", "/v1/me").status_code == 200
    assert world.call("a-operator", "DELETE", "/v1/session").status_code == 200
    assert world.call("a-operator", "GET", "/v1/me").status_code == 401


def test_every_read_and_export_leaves_an_audit_row_that_rtm_audit_shows(world: World) -> None:
    pa1 = world.patients["pA1"]
    assert world.call("a-clin1", "GET", f"/v1/patients/{pa1}/pain").status_code == 200
    fhir = world.call("a-clin1", "GET", "/fhir/Observation", params={"patient": pa1})
    assert fhir.status_code == 200 and fhir.json()["total"] == 21  # 20 sessions, 1 pain
    assert (
        world.call(
            "a-billing",
            "GET",
            "/v1/billing/claims",
            params={"from": "2026-10-01", "to": "2026-10-31", "as_of": AS_OF},
        ).status_code
        == 200
    )
    env = settings_env(world.stack.settings)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtm.cli",
            "audit",
            "--org",
            world.org_a,
            "--patient",
            pa1,
            "--json",
            "--limit",
            "500",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    seen = {(r["actor"], r["action"], r["resource"]) for r in rows}
    tag = world.tag
    assert (f"user:{tag}-a-clin1", "read", f"GET /v1/patients/{pa1}/pain") in seen
    assert (f"user:{tag}-a-clin1", "read", "GET /fhir/Observation") in seen
    assert (f"user:{tag}-a-billing", "read", "GET /v1/billing/claims") in seen
    assert (f"user:{tag}-a-clin1", "acknowledge", f"POST /v1/alerts/{world.alert_id}/ack") in seen
    assert all(pa1 in r["patient_ids"] and r["org_id"] == world.org_a for r in rows)
    # B's audit shows none of A's patients
    b_rows = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtm.cli",
            "audit",
            "--org",
            world.org_b,
            "--json",
            "--limit",
            "500",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert pa1 not in b_rows

    # the log is append-only: the app's role may not delete, and the owner hits the trigger
    async def tamper(dsn: str) -> str:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DELETE FROM audit_log WHERE org_id = $1", world.org_a)
        except asyncpg.PostgresError as exc:
            return str(exc)
        finally:
            await conn.close()
        return "deleted"

    settings = world.stack.settings
    assert run_in_thread(tamper(settings.db.dsn)) == "permission denied for table audit_log"
    assert "append-only" in run_in_thread(tamper(settings.db.owner_dsn))


def test_a_record_written_straight_to_kafka_never_joins_another_organisations_patient(
    world: World,
) -> None:
    """The worker keys a record by its organisation stamp (DEFAULT_ORG without one) and its
    patient_id: one stamped with B, or not stamped, with A's patient id is another patient
    than A's, stored and evaluated as such; A's patient's data does not change."""
    from aiokafka import AIOKafkaProducer

    settings = world.stack.settings
    f = EventFactory()
    pa1 = world.patients["pA1"]
    foreign = {**f.pain(pa1, 9, "2026-10-23T10:00:00-05:00"), "org_id": world.org_b}
    unstamped = {**f.pain(pa1, 2, "2026-10-23T11:00:00-05:00")}

    async def send() -> None:
        producer = AIOKafkaProducer(**kafka_client_kwargs(settings))
        await producer.start()
        try:
            for ev in (foreign, unstamped):
                await producer.send_and_wait(
                    settings.kafka.topic_events, json.dumps(ev).encode(), key=pa1.encode()
                )
        finally:
            await producer.stop()

    run_in_thread(send())

    async def stored() -> dict[str, str]:
        conn = await asyncpg.connect(settings.db.dsn)
        try:
            rows = await conn.fetch(
                "SELECT event_id, org_id FROM events WHERE event_id = ANY($1)",
                [foreign["event_id"], unstamped["event_id"]],
            )
        finally:
            await conn.close()
        return {r["event_id"]: r["org_id"] for r in rows}

    async def both_stored() -> bool:
        return len(await stored()) == 2

    run_in_thread(wait_for(both_stored, 60, "both records stored"))
    assert run_in_thread(stored()) == {
        foreign["event_id"]: world.org_b,
        unstamped["event_id"]: "default",
    }
    a_pain = world.call("a-clin1", "GET", f"/v1/patients/{pa1}/pain").json()["reports"]
    assert not {foreign["event_id"], unstamped["event_id"]} & {r["event_id"] for r in a_pain}


def test_the_dashboards_start_and_forms_follow_role_scope_and_csrf(world: World) -> None:
    """GET /ui/ sends each role to its page; the page forms need the session's CSRF token
    (here as the form field) and the scope, like the JSON routes, and write nothing
    otherwise."""
    homes = {
        "a-clin1": "/ui/worklist",
        "a-admin": "/ui/worklist",
        "a-billing": "/ui/billing",
        "a-scheduler": "/ui/intakes",
        "a-manager": "/ui/outcomes",
    }
    for who, target in homes.items():
        resp = world.call(who, "GET", "/ui/")
        assert (resp.status_code, resp.headers.get("location")) == (303, target), who
    _sign_in(world, "a-operator")  # (signed out by the sign-out test)
    assert world.call("a-operator", "GET", "/ui/").status_code == 200
    assert world.call("a-reader", "GET", "/ui/").status_code == 403  # keys: no pages
    assert world.call("anonymous", "GET", "/ui/").headers["location"] == "/ui/sign-in"
    path = f"/ui/alerts/{world.alert_id}/ack"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cookie, csrf = world.sessions["a-clin2"]
    other = httpx.post(
        world.stack.url + path,
        timeout=30,
        content=f"disposition=left_message&note=x&csrf_token={csrf}",
        headers={**form, "Cookie": f"{SESSION_COOKIE}={cookie}"},
    )
    assert other.status_code == 404  # outside a-clin2's scope, as an unknown alert
    cookie, csrf = world.sessions["a-clin1"]
    for body in ("disposition=left_message&note=x", "note=x&csrf_token=wrong"):
        resp = httpx.post(
            world.stack.url + path,
            timeout=30,
            content=body,
            headers={**form, "Cookie": f"{SESSION_COOKIE}={cookie}"},
        )
        assert resp.status_code == 403, body
    cookie, csrf = world.sessions["a-clin1"]
    export = httpx.post(
        world.stack.url + "/ui/billing/submit",
        timeout=30,
        content=f"month=2026-02&confirm=x&csrf_token={csrf}",
        headers={**form, "Cookie": f"{SESSION_COOKIE}={cookie}"},
    )
    assert export.status_code == 403  # a clinician may not submit claims

    async def stored_note() -> str | None:
        conn = await asyncpg.connect(world.stack.settings.db.dsn)
        try:
            note: str | None = await conn.fetchval(
                "SELECT ack_note FROM alerts WHERE id = $1", world.alert_id
            )
            return note
        finally:
            await conn.close()

    assert run_in_thread(stored_note()) != "x"  # no refused form wrote its note
