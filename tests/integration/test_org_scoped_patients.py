"""Patient ids scoped by organisation (issue 16 item 4), through the real gateway, Kafka,
worker and PostgreSQL.

Organisations A and B both post the same ``patient_id`` (episodes naming the same clinician
id, daily sessions, pain reports that fire alerts, even the same event ids): each gets its
own patient, alerts and billing lines and sees only its own through the API, its clinician
only its own; B posting a patient id first does not block A's later ``episode.started``;
and what the gateway and the worker answer an organisation about an event is the same
whether its patient id exists in another organisation or nowhere.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from streams.access import CSRF_HEADER, SESSION_COOKIE, hash_password, new_key
from streams.db import access as db
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import Stack, read_topic, run_in_thread, running_stack, wait_for

pytestmark = pytest.mark.integration

AS_OF = "2026-11-30T00:00:00Z"
PASSWORD = "correct horse battery staple"
USERS = {  # name -> (org letter, role, clinician id suffix)
    "a-admin": ("a", "admin", None),
    "b-admin": ("b", "admin", None),
    "a-billing": ("a", "billing", None),
    "b-billing": ("b", "billing", None),
    "a-clin": ("a", "clinician", "c1"),
    "b-clin": ("b", "clinician", "c1"),  # the same clinician id, in the other organisation
}
KEYS = {
    "a-producer": ("a", ["producer"]),
    "a-integration": ("a", ["integration"]),
    "b-producer": ("b", ["producer"]),
    "b-integration": ("b", ["integration"]),
}


@dataclass
class Two:
    stack: Stack
    tag: str
    org_a: str
    org_b: str
    keys: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)
    shared: str = ""  # the patient_id both organisations post
    events_a: list[dict[str, Any]] = field(default_factory=list)
    events_b: list[dict[str, Any]] = field(default_factory=list)

    def org(self, letter: str) -> str:
        return self.org_a if letter == "a" else self.org_b

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        if who in self.keys:
            headers = {"Authorization": f"Bearer {self.keys[who]}"}
        else:
            cookie, csrf = self.sessions[who]
            headers = {"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF_HEADER: csrf}
        return httpx.request(method, self.stack.url + path, headers=headers, timeout=30, **kw)

    def post(self, who: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        resp = self.call(who, "POST", "/v1/events", json=events)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def db(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.stack.settings.db.dsn)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()

        out: list[asyncpg.Record] = run_in_thread(go())
        return out

    def wait(self, sql: str, *args: Any, what: str, timeout: float = 90) -> None:
        """Until ``sql`` (one boolean) holds."""

        async def check() -> bool:
            conn = await asyncpg.connect(self.stack.settings.db.dsn)
            try:
                return bool(await conn.fetchval(sql, *args))
            finally:
                await conn.close()

        run_in_thread(wait_for(check, timeout, what))


async def _provision(settings: Settings, t: Two) -> None:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        for org in (t.org_a, t.org_b):
            await db.add_org(conn, org, f"Clinic {org}")
        pw = hash_password(PASSWORD)
        for name, (letter, role, clin) in USERS.items():
            await db.add_user(
                conn,
                t.org(letter),
                f"{t.tag}-{name}",
                role,
                pw,
                f"{t.tag}-{clin}" if clin else None,
            )
        for name, (letter, scopes) in KEYS.items():
            key, key_id, salt, digest = new_key()
            await db.add_key(conn, key_id, t.org(letter), scopes, name, salt, digest)
            t.keys[name] = key
    finally:
        await conn.close()


def _sign_in(t: Two, name: str) -> None:
    resp = httpx.post(
        f"{t.stack.url}/v1/session",
        json={"username": f"{t.tag}-{name}", "password": PASSWORD},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    t.sessions[name] = (resp.cookies[SESSION_COOKIE], resp.json()["csrf_token"])


def _history(
    f: EventFactory, pid: str, t: Two, member_id: str, days: int, score: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An episode (Oct 1) naming the clinician id both organisations use, ``days`` daily
    sessions from Oct 1 and a pain report of ``score`` on Oct 21."""
    start = f.episode_started(
        pid,
        at="2026-10-01T09:00:00-05:00",
        clinician_id=f"{t.tag}-c1",
        episode_id=f"{pid}-ep1",
    )
    start["billing"] = {**start["billing"], "member_id": member_id}
    data = [
        *f.daily_exercises(pid, dt.date(2026, 10, 1), days),
        f.pain(pid, score, "2026-10-21T10:00:00-05:00", episode_id=f"{pid}-ep1"),
    ]
    return start, data


@pytest.fixture(scope="module")
def two(base_settings: Settings) -> Iterator[Two]:
    with running_stack(base_settings) as stack:
        tag = "org" + uuid.uuid4().hex[:8]
        t = Two(stack, tag, f"{tag}-a", f"{tag}-b")
        run_in_thread(_provision(stack.settings, t))
        for name in USERS:
            _sign_in(t, name)
        f = EventFactory()
        t.shared = f.patient(1)
        start_a, data_a = _history(f, t.shared, t, "MBI-A", 20, 9)
        # B: the same patient_id and the very same event ids (a producer's ids are its own),
        # other content: 17 days, pain 8, another member id
        start_b, data_b = _history(f, t.shared, t, "MBI-B", 17, 8)
        start_b["event_id"] = start_a["event_id"]
        for mine, theirs in zip(data_b, data_a, strict=False):
            mine["event_id"] = theirs["event_id"]
        data_b[-1]["event_id"] = data_a[-1]["event_id"]  # the pain reports share an id too
        t.events_a, t.events_b = [start_a, *data_a], [start_b, *data_b]
        assert t.post("a-integration", [start_a])["accepted"] == 1
        assert t.post("a-producer", data_a)["accepted"] == len(data_a)
        # B is told nothing about A: every event accepted, none a duplicate or refused
        for who, batch in (("b-integration", [start_b]), ("b-producer", data_b)):
            body = t.post(who, batch)
            assert (body["accepted"], body["duplicates"], body["rejected"]) == (len(batch), [], [])
        t.wait(
            "SELECT count(*) FILTER (WHERE org_id = $1) = $3"
            " AND count(*) FILTER (WHERE org_id = $2) = $4"
            " AND (SELECT count(*) FROM alerts WHERE patient_id = $5 AND kind = 'pain_high') = 2"
            " FROM events WHERE patient_id = $5",
            t.org_a,
            t.org_b,
            len(t.events_a),
            len(t.events_b),
            t.shared,
            what="both organisations' events and pain alerts stored",
        )
        yield t


def _alerts(t: Two, who: str) -> list[dict[str, Any]]:
    resp = t.call(who, "GET", "/v1/alerts", params={"patient_id": t.shared})
    assert resp.status_code == 200, resp.text
    alerts: list[dict[str, Any]] = resp.json()["alerts"]
    return alerts


def test_one_patient_id_in_two_organisations_is_two_patients(two: Two) -> None:
    t = two
    rows = t.db(
        "SELECT org_id, count(*) AS n FROM events WHERE patient_id = $1 GROUP BY 1 ORDER BY 1",
        t.shared,
    )
    assert [(r["org_id"], r["n"]) for r in rows] == sorted(
        [(t.org_a, len(t.events_a)), (t.org_b, len(t.events_b))]
    )
    states = t.db(
        "SELECT org_id, part FROM alert_state WHERE patient_id = $1 ORDER BY org_id", t.shared
    )
    assert [r["org_id"] for r in states] == sorted([t.org_a, t.org_b])
    assert all(r["part"] >= 0 for r in states)
    known = t.db("SELECT org_id FROM patient_orgs WHERE patient_id = $1 ORDER BY 1", t.shared)
    assert [r["org_id"] for r in known] == sorted([t.org_a, t.org_b])


def test_each_organisation_gets_and_sees_only_its_own_alerts(two: Two) -> None:
    t = two
    mine: dict[str, dict[str, Any]] = {}
    for who, letter, score in (("a-admin", "a", 9), ("b-admin", "b", 8)):
        alerts = [a for a in _alerts(t, who) if a["kind"] == "pain_high"]
        assert len(alerts) == 1, (who, alerts)
        (alert,) = alerts
        assert (alert["org_id"], alert["patient_id"], alert["value"]) == (
            t.org(letter),
            t.shared,
            score,
        )
        mine[letter] = alert
    assert mine["a"]["id"] != mine["b"]["id"]
    # the same event id triggered both, each in its own organisation
    assert mine["a"]["event_ids"] == mine["b"]["event_ids"]
    # a clinician with the same clinician id in each organisation sees only their own
    for who, letter in (("a-clin", "a"), ("b-clin", "b")):
        seen = [a["id"] for a in _alerts(t, who) if a["kind"] == "pain_high"]
        assert seen == [mine[letter]["id"]], who
        worklist = t.call(who, "GET", "/v1/worklist").json()["patients"]
        assert [w["patient_id"] for w in worklist] == [t.shared]
        assert worklist[0]["open_critical"] == 1
    # pain, adherence, FHIR: each organisation reads its own patient's events
    for who, score, days in (("a-clin", 9, 20), ("b-clin", 8, 17)):
        pain = t.call(who, "GET", f"/v1/patients/{t.shared}/pain").json()["reports"]
        assert [r["score"] for r in pain] == [score], who
        days_done = t.call(who, "GET", f"/v1/patients/{t.shared}/adherence").json()["days"]
        assert sum(d["completed"] for d in days_done) == days, who
        fhir = t.call(who, "GET", "/fhir/Observation", params={"patient": t.shared}).json()
        assert fhir["total"] == days + 1, who
        page = t.call(who, "GET", f"/ui/patients/{t.shared}")
        assert page.status_code == 200 and f"{score}/10" in page.text, who
    # B acknowledges its alert: A's stays open; neither can acknowledge the other's
    seen = {"disposition": "no_action_needed"}
    assert (
        t.call("a-admin", "POST", f"/v1/alerts/{mine['b']['id']}/ack", json=seen).status_code == 404
    )
    assert (
        t.call("b-admin", "POST", f"/v1/alerts/{mine['a']['id']}/ack", json=seen).status_code == 404
    )
    acked = t.call(
        "b-admin", "POST", f"/v1/alerts/{mine['b']['id']}/ack", json={**seen, "note": "B"}
    )
    assert acked.status_code == 200 and acked.json()["org_id"] == t.org_b
    t.wait(
        "SELECT status = 'acknowledged' FROM alerts WHERE id = $1",
        mine["b"]["id"],
        what="B's acknowledgement",
    )
    t.wait(
        "SELECT open_critical = 0 FROM patient_rollups WHERE org_id = $1 AND patient_id = $2",
        t.org_b,
        t.shared,
        what="B's worklist row after the acknowledgement reached the worker",
    )
    (a_alert,) = [a for a in _alerts(t, "a-admin") if a["kind"] == "pain_high"]
    assert (a_alert["status"], a_alert["ack_note"]) == ("open", None)
    rollups = t.db(
        "SELECT org_id, open_critical FROM patient_rollups WHERE patient_id = $1 ORDER BY 1",
        t.shared,
    )
    assert {r["org_id"]: r["open_critical"] for r in rollups} == {t.org_a: 1, t.org_b: 0}


def test_each_organisation_gets_its_own_billing_lines(two: Two) -> None:
    t = two
    days = t.db(
        "SELECT org_id, count(*) AS n FROM billing_data_days WHERE patient_id = $1"
        " GROUP BY 1 ORDER BY 1",
        t.shared,
    )
    # the sessions' days and the pain report's (Oct 21)
    assert {r["org_id"]: r["n"] for r in days} == {t.org_a: 21, t.org_b: 18}
    params = {"from": "2026-10-01", "to": "2026-10-31", "as_of": AS_OF, "format": "csv"}
    lines: dict[str, list[str]] = {}
    for who, letter in (("a-billing", "a"), ("b-billing", "b")):
        resp = t.call(who, "GET", "/v1/billing/claims", params=params)
        assert resp.status_code == 200, resp.text
        rows = [r for r in resp.text.splitlines() if r and not r.startswith("#")][1:]
        assert rows and all(t.shared in r for r in rows), (who, resp.text)
        other = "MBI-B" if letter == "a" else "MBI-A"
        assert f"MBI-{letter.upper()}" in resp.text and other not in resp.text, who
        lines[letter] = rows
        progress = t.call(
            who, "GET", f"/v1/patients/{t.shared}/billing", params={"as_of": "2026-10-25T12:00:00Z"}
        ).json()
        assert progress["period"]["data_days"] == (21 if letter == "a" else 18), who
    for letter, n in (("a", 21), ("b", 18)):  # 98977 with the organisation's own data days
        assert [r.split(",")[8] for r in lines[letter] if ",98977," in r] == [str(n)], letter
    # both submit their October: two claims, one per organisation, with their own ids
    body = {"from": "2026-10-01", "to": "2026-10-31", "format": "csv", "as_of": AS_OF}
    claims: dict[str, set[str]] = {}
    for who, letter in (("a-billing", "a"), ("b-billing", "b")):
        resp = t.call(who, "POST", "/v1/billing/submissions", json=body)
        assert resp.status_code == 201, resp.text
        answer = resp.json()
        assert {c["patient_id"] for c in answer["claims"]} == {t.shared}
        claims[letter] = {c["claim_id"] for c in answer["claims"]}
        file = t.call(who, "GET", f"/v1/billing/submissions/{answer['submission_id']}/file")
        assert f"MBI-{letter.upper()}" in file.text
    assert claims["a"] and claims["b"] and not claims["a"] & claims["b"]
    stored = t.db(
        "SELECT org_id, claim_id FROM billing_claims WHERE patient_id = $1 ORDER BY 1", t.shared
    )
    assert {(r["org_id"], r["claim_id"]) for r in stored} == {
        *((t.org_a, c) for c in claims["a"]),
        *((t.org_b, c) for c in claims["b"]),
    }


def test_a_patient_id_posted_first_by_another_organisation_does_not_block_an_episode(
    two: Two,
) -> None:
    t = two
    f = EventFactory()
    pid = f.patient(7)
    # B posts first: sessions and a high pain report of a patient without an episode (in
    # B: the report waits for one; a pending pain report is let go after the grace period,
    # so no other test's tick turns it into an alert)
    first = [
        *f.daily_exercises(pid, dt.date(2026, 10, 2), 3),
        f.pain(pid, 9, "2026-10-03T11:00:00-05:00"),
    ]
    assert t.post("b-producer", first)["accepted"] == len(first)
    t.wait(
        "SELECT count(*) = $3 FROM events WHERE org_id = $1 AND patient_id = $2",
        t.org_b,
        pid,
        len(first),
        what="B's events stored",
    )
    # A enrols the patient id later: accepted, stored, an episode of A's
    start = f.episode_started(
        pid, at="2026-10-01T09:00:00-05:00", clinician_id=f"{t.tag}-c1", episode_id=f"{pid}-ep"
    )
    body = t.post("a-integration", [start])
    assert (body["accepted"], body["rejected"], body["duplicates"]) == (1, [], [])
    red_flag = f.symptom(pid, "2026-10-05T11:00:00-05:00", red_flags=["saddle_anesthesia"])
    assert t.post("a-producer", [red_flag])["accepted"] == 1
    t.wait(
        "SELECT EXISTS (SELECT 1 FROM alerts WHERE org_id = $1 AND patient_id = $2)",
        t.org_a,
        pid,
        what="A's red flag alert",
    )
    alerts = t.call("a-clin", "GET", "/v1/alerts", params={"patient_id": pid}).json()["alerts"]
    assert "pain_high" not in {a["kind"] for a in alerts}  # B's pending report is B's
    (alert,) = [a for a in alerts if a["kind"] == "red_flag"]
    # A's episode routes A's red flag to A's clinician
    assert (alert["kind"], alert["clinician_id"], alert["unrouted"]) == (
        "red_flag",
        f"{t.tag}-c1",
        False,
    )
    assert alert["event_ids"] == [red_flag["event_id"]]
    dead = run_in_thread(read_topic(t.stack.settings, t.stack.settings.kafka.topic_dead, 10**6, 5))
    assert not [d for d in dead if (d.get("event") or {}).get("event_id") == start["event_id"]]
    assert (
        t.db(
            "SELECT episode_id FROM billing_episode_events WHERE org_id = $1 AND patient_id = $2",
            t.org_a,
            pid,
        )[0]["episode_id"]
        == f"{pid}-ep"
    )
    # B's clinician with the same clinician id does not see A's patient
    assert t.call("b-clin", "GET", f"/v1/patients/{pid}/adherence").status_code == 404
    assert t.call("a-clin", "GET", f"/v1/patients/{pid}/adherence").status_code == 200


def _normalised(text: str, pid: str, prefix: str) -> str:
    """An answer or a refusal with what differs by construction made equal: the patient
    id, the event ids' prefix and the instants (received_at, seconds ahead)."""
    text = text.replace(pid, "<patient>").replace(prefix, "<prefix>")
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", "<instant>", text)
    return re.sub(r"is \d+ s after", "is <n> s after", text)


def test_every_refusal_is_the_same_whether_the_id_exists_elsewhere_or_not(two: Two) -> None:
    """A's producer and integration keys post the same batches for B's patient id (A has
    none by that id) and for an id no organisation has: the gateway's answers (accepted,
    duplicates, refusals and their texts) and the worker's refusals are identical."""
    t = two
    b_only = EventFactory()
    elsewhere = b_only.patient(1)  # exists in B only
    assert t.post("b-integration", [b_only.episode_started(elsewhere)])["accepted"] == 1
    # B's report carries the event id A's sixth event of this patient id will have
    b_pain = b_only.pain(elsewhere, 3, "2026-11-03T10:00:00-06:00", event_id=f"{b_only.prefix}x-e6")
    assert t.post("b-producer", [b_pain])["accepted"] == 1
    t.wait(
        "SELECT count(*) = 2 FROM events WHERE org_id = $1 AND patient_id = $2",
        t.org_b,
        elsewhere,
        what="B's patient stored",
    )
    nowhere = f"{b_only.prefix}-nowhere"
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def batches(pid: str, letter: str) -> tuple[str, list[Any], list[Any]]:
        f = EventFactory()
        f.prefix = f"{b_only.prefix}{letter}"  # the same event ids but for the prefix
        producer = [
            f.pain(pid, 4, "2026-11-04T10:00:00-06:00"),
            f.pain(pid, 11, "2026-11-04T11:00:00-06:00"),  # out of range
            f.pain(pid, 4, future),  # from the future
            {**f.exercise(pid, "2026-11-04T18:00:00-06:00"), "colour": "red"},  # unknown field
            f.pain(pid, 5, "2026-11-04T12:00:00-06:00"),
            # for B's patient id: B's event id, and A's own new event, not a duplicate
            f.exercise(pid, "2026-11-04T19:00:00-06:00"),
        ]
        producer.append(dict(producer[0]))  # repeated in the batch: a duplicate
        integration = [
            f.episode_started(pid, episode_id=f"{pid}-e1"),
            # a second active episode: refused by the worker (dead letter)
            f.episode_started(pid, at="2026-11-03T09:00:00-06:00", episode_id=f"{pid}-e2"),
        ]
        return f.prefix, producer, integration

    sent = {pid: batches(pid, letter) for pid, letter in ((elsewhere, "x"), (nowhere, "y"))}
    assert sent[elsewhere][1][5]["event_id"] == b_pain["event_id"]
    answers: dict[str, list[str]] = {}
    for pid, (prefix, producer, integration) in sent.items():
        answers[pid] = [
            _normalised(
                t.call("a-producer", "POST", "/v1/events", json=producer).text, pid, prefix
            ),
            _normalised(
                t.call("a-integration", "POST", "/v1/events", json=integration).text, pid, prefix
            ),
        ]
    for pid in sent:
        t.wait(
            "SELECT count(*) = 5 FROM events WHERE org_id = $1 AND patient_id = $2",
            t.org_a,
            pid,
            what="A's events of the patient id stored (3 valid, 2 episodes)",
        )
    # the same batch again: now each valid event is A's duplicate, for both ids alike
    for pid, (prefix, producer, _) in sent.items():
        again = t.call("a-producer", "POST", "/v1/events", json=producer).text
        answers[pid].append(_normalised(again, pid, prefix))
    assert answers[elsewhere] == answers[nowhere]
    first = json.loads(answers[nowhere][0])
    assert (first["accepted"], len(first["rejected"]), len(first["duplicates"])) == (3, 3, 1)
    assert len(json.loads(answers[nowhere][2])["duplicates"]) == 4

    # the worker: A's second active episode is refused with one text for both ids
    def refusals(pid: str) -> list[tuple[str, str]]:
        prefix = sent[pid][0]
        dead = run_in_thread(
            read_topic(t.stack.settings, t.stack.settings.kafka.topic_dead, 10**6, 5)
        )
        return sorted(
            (d["stage"], _normalised(json.dumps(d["errors"]), pid, prefix))
            for d in dead
            if (d.get("event") or {}).get("patient_id") == pid
            and (d.get("event") or {}).get("org_id", t.org_a) == t.org_a
        )

    async def worker_refused() -> bool:
        return all(any(s == "worker" for s, _ in refusals(p)) for p in sent)

    run_in_thread(wait_for(worker_refused, 60, "the worker's refusals"))
    assert refusals(elsewhere) == refusals(nowhere)
    assert [s for s, _ in refusals(nowhere)] == ["gateway"] * 6 + ["worker"]  # posted twice
    assert any("active episode" in m for _, m in refusals(nowhere))
    # B's own patient is untouched by A's events of the same id
    b_reports = t.call("b-admin", "GET", f"/v1/patients/{elsewhere}/pain").json()["reports"]
    assert [r["score"] for r in b_reports] == [3]
    a_reports = t.call("a-admin", "GET", f"/v1/patients/{elsewhere}/pain").json()["reports"]
    assert [r["score"] for r in a_reports] == [4, 5]
