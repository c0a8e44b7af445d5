"""Webhook delivery that one bad endpoint cannot stall: through the real worker, Kafka and
PostgreSQL with local HTTP receivers, plus the queue's routing and claiming against the real
database."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from click.testing import CliRunner

from alerts.models import SEVERITY, Alert, AlertChange, AlertKind
from rtm.bench.receiver import Receiver
from rtm.cli import main
from streams.db.deliveries import (
    claim_deliveries,
    mark_attempt_failed,
    mark_delivered,
    queue_deliveries,
    release_deliveries,
    remove_webhook,
    set_webhook,
)
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import free_port, running_stack, wait_for

pytestmark = pytest.mark.integration


def _now(hours: float = 0) -> str:
    t = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)
    return t.replace(microsecond=0).isoformat()


async def _statuses(db: asyncpg.Connection, clinician_id: str) -> list[tuple[str, str, str]]:
    rows = await db.fetch(
        "SELECT payload->'alert'->>'kind' AS kind, change, status FROM alert_deliveries"
        " WHERE clinician_id = $1 ORDER BY seq",
        clinician_id,
    )
    return [(r["kind"], r["change"], r["status"]) for r in rows]


# --- through the worker -------------------------------------------------------------------


async def test_a_failing_receiver_does_not_delay_another_receivers_critical_alert(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory
) -> None:
    hanging, failing, good = Receiver("hang"), Receiver("fail"), Receiver("ok")
    c_hang, c_fail, c_good = (f"{factory.prefix}-{x}" for x in ("hang", "fail", "good"))
    await set_webhook(db, c_hang, hanging.url, "s-hang")
    await set_webhook(db, c_fail, failing.url, "s-fail")
    await set_webhook(db, c_good, good.url, "s-good")
    p_hang, p_fail, p_good = factory.patient(1), factory.patient(2), factory.patient(3)
    try:
        with running_stack(base_settings, tick_interval_s=0, webhook_timeout_s=5.0) as stack:
            assert (
                stack.post(
                    [
                        factory.episode_started(p_hang, at=_now(-48), clinician_id=c_hang),
                        factory.episode_started(p_fail, at=_now(-48), clinician_id=c_fail),
                        factory.episode_started(p_good, at=_now(-48), clinician_id=c_good),
                    ]
                ).json()["accepted"]
                == 3
            )
            # A backlog of red flags for the two bad receivers (every report fires).
            backlog = [
                factory.symptom(p, _now(-2 + i / 60), red_flags=["fever"])
                for i in range(15)
                for p in (p_hang, p_fail)
            ]
            assert stack.post(backlog).json()["accepted"] == len(backlog)

            async def both_bad_ones_busy() -> bool:
                return len(hanging.requests) >= 1 and len(failing.requests) >= 3

            await wait_for(both_bad_ones_busy, what="the bad receivers being tried")
            flag = factory.symptom(p_good, _now(-1), fall=True)
            t0 = time.monotonic()
            assert stack.post([flag]).json()["accepted"] == 1

            async def arrived() -> bool:
                return bool(good.delivered())

            await wait_for(arrived, timeout=10, what="the good receiver's alert")
            took = good.delivered()[0][0] - t0
            [(_, change)] = good.delivered()
            assert change["alert"]["event_ids"] == [flag["event_id"]]
            assert change["alert"]["severity"] == "critical"
            print(
                f"critical alert at the good receiver {took * 1000:.0f} ms after it was"
                f" posted (hanging receiver: {len(hanging.requests)} requests, failing:"
                f" {len(failing.requests)})"
            )
            assert took < 1.0, f"{took:.2f}s"
            # The hanging one was still in its attempt: one in flight, not one per alert.
            assert len(hanging.requests) == 1
            # and the failing one was being backed off, not hammered with its backlog
            assert len(failing.requests) < 10
    finally:
        for c in (c_hang, c_fail, c_good):  # leave no queue for later tests' workers
            await remove_webhook(db, c)
        for r in (hanging, failing, good):
            r.close()


async def test_a_recovered_receiver_gets_its_backlog_critical_first_within_the_bound(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory
) -> None:
    cap = 3.0  # the bounded delay for critical alerts (default 60 s), short for the test
    receiver = Receiver("fail")
    clinician = f"{factory.prefix}-rec"
    await set_webhook(db, clinician, receiver.url, "s-rec")
    p1, p2 = factory.patient(1), factory.patient(2)
    try:
        with running_stack(
            base_settings,
            tick_interval_s=0,
            webhook_max_attempts=3,
            webhook_max_delay_critical_s=cap,
            webhook_max_delay_high_s=30.0,
            webhook_retry_interval_s=60.0,
        ) as stack:
            history = []
            for p in (p1, p2):
                history += [
                    factory.episode_started(p, at=_now(-120), clinician_id=clinician),
                    factory.pain(p, 2, _now(-72)),
                    factory.pain(p, 2, _now(-50)),
                ]
            assert stack.post(history).json()["accepted"] == 6
            # Two 'high' alerts (pain up by 3 over the baseline, below the critical 7)
            # queued first, then two critical ones: the queue must not be first come.
            assert (
                stack.post([factory.pain(p1, 5, _now(-3)), factory.pain(p2, 5, _now(-3))]).json()[
                    "accepted"
                ]
                == 2
            )

            async def highs_tried() -> bool:
                return len(receiver.requests) >= 2

            await wait_for(highs_tried, what="the high alerts tried (and refused)")
            crit = [
                factory.symptom(p1, _now(-1), red_flags=["saddle_anesthesia"]),
                factory.symptom(p2, _now(-1), fall=True),
            ]
            assert stack.post(crit).json()["accepted"] == 2

            async def queued() -> bool:
                return len(await _statuses(db, clinician)) == 4

            await wait_for(queued, what="4 deliveries queued")
            await asyncio.sleep(4 * cap)  # a long outage: quick attempts used up
            outage = await _statuses(db, clinician)
            assert {s for _, _, s in outage} <= {"failed", "pending", "sending"}, outage
            assert any(s == "failed" for _, _, s in outage), outage

            # While it was down, a critical alert was never left waiting more than the cap:
            # the gaps between attempts (to this endpoint) once one was queued.
            with receiver.lock:
                times = [
                    r.at
                    for r in receiver.requests
                    if json.loads(r.body)["alert"]["severity"] == "critical"
                ]
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert len(times) >= 3 and max(gaps) <= cap + 1.0, gaps

            receiver.mode = "ok"
            t_up = time.monotonic()

            async def all_in() -> bool:
                return len(receiver.delivered()) >= 4

            await wait_for(all_in, timeout=4 * cap + 10, what="the backlog after recovery")
            got = receiver.delivered()
            severities = [c["alert"]["severity"] for _, c in got]
            first = got[0][0] - t_up
            last = got[-1][0] - t_up
            print(
                f"recovered receiver: first delivery {first:.2f}s, backlog of {len(got)}"
                f" done {last:.2f}s after recovery (critical cap {cap:.0f}s); order"
                f" {severities}"
            )
            assert severities == ["critical", "critical", "high", "high"]
            assert first <= cap + 1.0
            # the rest follows at once, not each after its own backoff
            assert last - first < 1.0
            assert sorted(h for _, c in got for h in [c["alert"]["kind"]]) == [
                "fall",
                "pain_increase",
                "pain_increase",
                "red_flag",
            ]
            assert {s for _, _, s in await _statuses(db, clinician)} == {"delivered"}
            metrics = httpx.get(f"http://127.0.0.1:{stack.settings.worker.web_port}/metrics").text
            assert 'rtm_worker_webhook_deliveries_total{outcome="delivered"} 4.0' in metrics
            assert 'rtm_worker_webhook_deliveries_total{outcome="failed"}' in metrics
    finally:
        await remove_webhook(db, clinician)
        receiver.close()


async def test_a_new_webhook_gets_no_history_only_what_changes_after_it_was_added(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory
) -> None:
    receiver = Receiver("ok")
    clinician = f"{factory.prefix}-new"
    p = factory.patient(1)
    try:
        with running_stack(base_settings, tick_interval_s=0) as stack:
            old = [
                factory.episode_started(p, at=_now(-72), clinician_id=clinician),
                factory.pain(p, 8, _now(-3)),  # pain_high
                factory.symptom(p, _now(-2), fall=True),
            ]
            assert stack.post(old).json()["accepted"] == 3

            async def history_made() -> bool:
                return [s for *_, s in await _statuses(db, clinician)] == ["no_webhook"] * 2

            await wait_for(history_made, what="two alerts with no webhook")
            await set_webhook(db, clinician, receiver.url, "s-new")
            await asyncio.sleep(2.0)  # many delivery ticks
            assert receiver.requests == [], "history sent to a new webhook"

            # After it was added: an old alert changes (pain back down: resolved) and a new
            # one fires.
            new = factory.symptom(p, _now(-1), red_flags=["saddle_anesthesia"])
            assert stack.post([factory.pain(p, 3, _now(-1.5)), new]).json()["accepted"] == 2

            async def two_arrived() -> bool:
                return len(receiver.requests) >= 2

            await wait_for(two_arrived, what="the changes after the webhook was added")
            await asyncio.sleep(1.0)  # and nothing else comes
            got = sorted((c["change"], c["alert"]["event_ids"][0]) for _, c in receiver.delivered())
            assert got == sorted([("resolved", old[1]["event_id"]), ("fired", new["event_id"])])
            assert len(receiver.requests) == 2
    finally:
        await remove_webhook(db, clinician)
        receiver.close()


# --- the queue against the real database (no worker) ---------------------------------------


def _change(
    patient: str, clinician: str, kind: AlertKind, change: str = "fired", org: str = "default"
) -> AlertChange:
    alert = Alert(
        id=str(uuid.uuid4()),
        patient_id=patient,
        org_id=org,
        episode_id=f"{patient}-ep",
        clinician_id=clinician,
        kind=kind,
        severity=SEVERITY[kind],
        fired_at=dt.datetime.now(dt.UTC),
    )
    return AlertChange.model_validate({"change": change, "alert": alert.model_dump()})


async def _org(db: asyncpg.Connection, org_id: str) -> None:
    await db.execute("INSERT INTO orgs (org_id, name) VALUES ($1, $1)", org_id)


async def _wid(db: asyncpg.Connection, org_id: str, clinician_id: str) -> int:
    return int(
        await db.fetchval(
            "SELECT webhook_id FROM clinician_webhooks WHERE org_id = $1 AND clinician_id = $2",
            org_id,
            clinician_id,
        )
    )


async def test_routing_is_per_organisation_and_fixed_when_queued(
    db: asyncpg.Connection, factory: EventFactory
) -> None:
    org_a, org_b = f"{factory.prefix}-a", f"{factory.prefix}-b"
    await _org(db, org_a)
    await _org(db, org_b)
    # the same patient_id in org_a and org_b: two patients, routed each by its own alert's
    # organisation
    pa = pb = factory.patient(1)
    p_none = factory.patient(3)
    own = f"{factory.prefix}-own"
    await set_webhook(db, "*", "http://127.0.0.1:9/a", "sa", org_a)
    await set_webhook(db, own, "http://127.0.0.1:9/own", "so", org_a)
    # org_b has no webhook at all; the same clinician id there is a different recipient
    changes = [
        _change(pa, own, "red_flag", org=org_a),
        _change(pa, "other", "fall", org=org_a),
        _change(pb, own, "red_flag", org=org_b),
        _change(pb, "*", "fall", org=org_b),
        _change(p_none, own, "pain_high"),
    ]
    async with db.transaction():
        await queue_deliveries(db, changes)
    rows = {
        r["alert_id"]: r
        for r in await db.fetch(
            "SELECT alert_id, org_id, webhook_id, status, severity_rank FROM alert_deliveries"
            " WHERE alert_id = ANY($1::text[])",
            [c.alert.id for c in changes],
        )
    }
    star_a, own_a = await _wid(db, org_a, "*"), await _wid(db, org_a, own)

    def of(i: int) -> tuple[Any, ...]:
        r = rows[changes[i].alert.id]
        return (r["org_id"], r["webhook_id"], r["status"])

    assert of(0) == (org_a, own_a, "pending")  # the clinician's own webhook
    assert of(1) == (org_a, star_a, "pending")  # no own one: the organisation's '*'
    assert of(2) == (org_b, None, "no_webhook")  # org_a's webhooks are not org_b's
    assert of(3) == (org_b, None, "no_webhook")  # nor its clinic-wide one
    assert of(4) == ("default", None, "no_webhook")  # the default organisation's alert
    assert rows[changes[4].alert.id]["severity_rank"] == 0

    # A '*' webhook added to org_b now does not take what was queued before.
    await set_webhook(db, "*", "http://127.0.0.1:9/b", "sb", org_b)
    star_b = await _wid(db, org_b, "*")
    assert await claim_deliveries(db, [], 10, 30.0, only=star_b) == []
    later = _change(pb, own, "pain_increase", org=org_b)
    await queue_deliveries(db, [later])
    [claimed] = await claim_deliveries(db, [], 10, 30.0, only=star_b)
    assert (claimed.alert_id, claimed.url, claimed.secret) == (
        later.alert.id,
        "http://127.0.0.1:9/b",
        "sb",
    )

    # Removing a webhook settles its queue as no_webhook; adding it again starts empty.
    assert await remove_webhook(db, own, org_a) == 1
    assert (
        await db.fetchval(
            "SELECT status FROM alert_deliveries WHERE alert_id = $1", changes[0].alert.id
        )
        == "no_webhook"
    )
    assert await remove_webhook(db, own, org_a) is None
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await set_webhook(db, "c", "http://127.0.0.1:9/x", "s", f"{factory.prefix}-nope")
    with pytest.raises(asyncpg.CheckViolationError):
        await set_webhook(db, "c", "not-a-url", "s", org_a)
    for org in (org_a, org_b):
        await remove_webhook(db, "*", org)


async def test_claim_takes_critical_first_one_per_endpoint_and_backs_off_after_failure(
    db: asyncpg.Connection, factory: EventFactory
) -> None:
    org = f"{factory.prefix}-q"
    await _org(db, org)
    p = factory.patient(1)
    await set_webhook(db, "*", "http://127.0.0.1:9/q", "sq", org)
    wid = await _wid(db, org, "*")
    kinds: list[AlertKind] = [
        "billing_at_risk",
        "inactivity",
        "pain_increase",
        "red_flag",
        "fall",
        "pain_increase",
    ]
    changes = [_change(p, "*", k, org=org) for k in kinds]
    await queue_deliveries(db, changes)

    # the head: most severe, then first queued; one per endpoint (the next is held back
    # while the first is in flight, by this worker or another)
    [head] = await claim_deliveries(db, [], 10, 30.0, only=wid)
    assert head.alert_id == changes[3].alert.id and head.severity_rank == 0
    assert await claim_deliveries(db, [], 10, 30.0, only=wid) == []
    await mark_delivered(db, [head], pull_forward=False)
    order = []
    while batch := await claim_deliveries(db, [], 10, 30.0, only=wid):
        order.append(batch[0].alert_id)
        await mark_delivered(db, batch[:1], pull_forward=False)
        if len(order) == 2:
            break
    assert order == [changes[4].alert.id, changes[2].alert.id]

    # A failure: the endpoint backs off (per the head's severity), the delivery keeps its
    # place; a busy endpoint (in flight in this worker) is skipped.
    [c] = await claim_deliveries(db, [], 10, 30.0, only=wid)
    assert c.alert_id == changes[5].alert.id
    await mark_attempt_failed(
        db,
        c,
        "HTTP 500",
        exhausted=False,
        retry_in_s=0.0,
        endpoint_retry_in_s=[0.0, 1.5, 100.0, 100.0],
    )
    assert await claim_deliveries(db, [], 10, 30.0, only=wid) == []  # backing off
    await asyncio.sleep(1.7)
    assert await claim_deliveries(db, [wid], 10, 30.0, only=wid) == []  # busy here
    [again] = await claim_deliveries(db, [], 10, 30.0, only=wid)
    assert (again.alert_id, again.attempts, again.failures) == (c.alert_id, 1, 1)
    # a lapsed claim (a worker that died mid-attempt) is taken again
    await db.execute(
        "UPDATE alert_deliveries SET next_attempt_at = now() - interval '1 s' WHERE alert_id = $1",
        again.alert_id,
    )
    [retaken] = await claim_deliveries(db, [], 10, 30.0, only=wid)
    assert retaken.alert_id == again.alert_id
    # Back after an outage: the delivery (one that had used up its quick attempts: 'failed')
    # is done, and another 'failed' one of the endpoint, waiting out its longer delay, is
    # pulled forward; the one statement changes each row once.
    waiting = changes[1].alert.id
    await db.execute(
        "UPDATE alert_deliveries SET status = 'failed',"
        " next_attempt_at = CASE WHEN alert_id = $2 THEN now() + interval '1 hour'"
        " ELSE next_attempt_at END WHERE alert_id = ANY($1::text[])",
        [retaken.alert_id, waiting],
        waiting,
    )
    await mark_delivered(db, [retaken], pull_forward=True)
    assert (
        await db.fetchval("SELECT failures FROM clinician_webhooks WHERE webhook_id = $1", wid) == 0
    )
    rows = {
        r["alert_id"]: r
        for r in await db.fetch(
            "SELECT alert_id, status, next_attempt_at <= now() AS due FROM alert_deliveries"
            " WHERE alert_id = ANY($1::text[])",
            [retaken.alert_id, waiting],
        )
    }
    assert rows[retaken.alert_id]["status"] == "delivered"
    assert rows[waiting]["status"] == "failed" and rows[waiting]["due"]
    await remove_webhook(db, "*", org)


async def test_a_healthy_endpoint_is_claimed_a_run_in_queue_order_and_a_failing_one_a_probe(
    db: asyncpg.Connection, factory: EventFactory
) -> None:
    """A run: the head and the deliveries that follow it in the queue (severity, then age),
    up to ``run``; recorded delivered in one statement; the unattempted rest released back
    to their place ('failed' stays 'failed', due). A failing endpoint gets one delivery."""
    org = f"{factory.prefix}-run"
    await _org(db, org)
    p = factory.patient(1)
    await set_webhook(db, "*", "http://127.0.0.1:9/run", "sr", org)
    wid = await _wid(db, org, "*")
    kinds: list[AlertKind] = ["inactivity", "red_flag", "pain_increase", "fall", "inactivity"]
    changes = [_change(p, "*", k, org=org) for k in kinds]
    await queue_deliveries(db, changes)
    ids = [c.alert.id for c in changes]
    in_order = [ids[1], ids[3], ids[2], ids[0], ids[4]]  # critical first, then by age

    run = await claim_deliveries(db, [], 10, 30.0, only=wid, run=3)
    assert [c.alert_id for c in run] == in_order[:3]
    assert {c.was for c in run} == {"pending"}
    # the endpoint has a claim in flight: nothing more of it is claimed meanwhile
    assert await claim_deliveries(db, [], 10, 30.0, only=wid, run=3) == []
    # the first two delivered (one statement), the third not attempted: released
    await mark_delivered(db, run[:2], pull_forward=False)
    await release_deliveries(db, run[2:])
    rows = {
        r["alert_id"]: (r["status"], r["attempts"], r["due"])
        for r in await db.fetch(
            "SELECT alert_id, status, attempts, next_attempt_at <= now() AS due"
            " FROM alert_deliveries WHERE alert_id = ANY($1::text[])",
            ids,
        )
    }
    assert rows[in_order[0]][:2] == ("delivered", 1)
    assert rows[in_order[1]][:2] == ("delivered", 1)
    assert rows[in_order[2]] == ("pending", 0, True)

    # a 'failed' delivery (quick attempts used up) that is due is claimed and, released,
    # stays 'failed'
    await db.execute(
        "UPDATE alert_deliveries SET status = 'failed', attempts = 5 WHERE alert_id = $1",
        in_order[2],
    )
    again = await claim_deliveries(db, [], 10, 30.0, only=wid, run=10)
    assert [c.alert_id for c in again] == in_order[2:]
    assert [c.was for c in again] == ["failed", "pending", "pending"]
    await release_deliveries(db, again)
    assert (
        await db.fetchval("SELECT status FROM alert_deliveries WHERE alert_id = $1", in_order[2])
        == "failed"
    )

    # a failing endpoint: one delivery at a time, whatever the run
    [probe, *rest] = await claim_deliveries(db, [], 10, 30.0, only=wid, run=10)
    await release_deliveries(db, rest)
    await mark_attempt_failed(
        db, probe, "HTTP 500", exhausted=False, retry_in_s=0.0, endpoint_retry_in_s=[0.0] * 4
    )
    assert [c.alert_id for c in await claim_deliveries(db, [], 10, 30.0, only=wid, run=10)] == [
        in_order[2]
    ]
    await remove_webhook(db, "*", org)


async def test_a_run_stops_at_a_refused_delivery_and_the_rest_wait_unattempted(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory
) -> None:
    """The deliverer posts a claimed run in queue order; a refusal (HTTP 500) records the
    delivered ones, that one's failed attempt, and releases the rest unattempted: the
    endpoint backs off, and nothing after the refusal was posted."""
    from prometheus_client import CollectorRegistry

    from agents.delivery import Deliverer
    from streams.db.events import EventStore
    from streams.metrics import WorkerMetrics
    from streams.secrets import secret_box

    settings = base_settings.but({"webhook_allow_networks": "127.0.0.0/8", "webhook_run": 10})
    org = f"{factory.prefix}-rr"
    await _org(db, org)
    p = factory.patient(1)
    changes = [_change(p, "*", "pain_increase", org=org) for _ in range(5)]
    receiver = Receiver("ok", refuse={f"{changes[2].alert.id}:fired"})
    await set_webhook(db, "*", receiver.url, secret_box(settings).seal("s-rr"), org)
    await queue_deliveries(db, changes)
    metrics = WorkerMetrics(CollectorRegistry())
    deliverer = Deliverer(EventStore(settings.db.dsn), settings, metrics)
    try:
        wid = await _wid(db, org, "*")
        async with deliverer.store.acquire() as conn:
            run = await claim_deliveries(conn, [], 1, deliverer.lease_s, only=wid, run=10)
        assert len(run) == 5
        assert await deliverer.attempt_run(run) is False
        assert receiver.keys() == [f"{c.alert.id}:fired" for c in changes[:3]]
        rows = await db.fetch(
            "SELECT alert_id, status, attempts, last_error FROM alert_deliveries"
            " WHERE org_id = $1 ORDER BY seq",
            org,
        )
        assert [(r["status"], r["attempts"]) for r in rows] == [
            ("delivered", 1),
            ("delivered", 1),
            ("pending", 1),
            ("pending", 0),
            ("pending", 0),
        ]
        assert rows[2]["last_error"] == "HTTP 500"
        assert (
            await db.fetchval("SELECT failures FROM clinician_webhooks WHERE webhook_id = $1", wid)
            == 1
        )
        sample = metrics.registry.get_sample_value
        assert sample("rtm_worker_webhook_deliveries_total", {"outcome": "delivered"}) == 2.0
        assert sample("rtm_worker_webhook_deliveries_total", {"outcome": "retry"}) == 1.0
    finally:
        await remove_webhook(db, "*", org)
        await deliverer.store.close()
        await deliverer.close()
        receiver.close()


async def test_a_run_stops_before_a_post_could_outlast_its_claim(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory
) -> None:
    """A run's claim holds for a lease; a POST that could still be going when it lapses is
    not started (another worker may take the delivery then): the rest of the run goes back
    to the queue unattempted, and the endpoint is not backed off."""
    from prometheus_client import CollectorRegistry

    from agents.delivery import Deliverer
    from streams.db.events import EventStore
    from streams.metrics import WorkerMetrics
    from streams.secrets import secret_box

    settings = base_settings.but({"webhook_allow_networks": "127.0.0.0/8", "webhook_run": 10})
    org = f"{factory.prefix}-lease"
    await _org(db, org)
    p = factory.patient(1)
    changes = [_change(p, "*", "pain_increase", org=org) for _ in range(3)]
    receiver = Receiver("ok")
    await set_webhook(db, "*", receiver.url, secret_box(settings).seal("s-lease"), org)
    await queue_deliveries(db, changes)
    deliverer = Deliverer(EventStore(settings.db.dsn), settings, WorkerMetrics(CollectorRegistry()))
    # a lease that leaves no room after the first POST
    deliverer.lease_s = settings.webhooks.timeout_s + 1.0
    try:
        wid = await _wid(db, org, "*")
        async with deliverer.store.acquire() as conn:
            run = await claim_deliveries(conn, [], 1, deliverer.lease_s, only=wid, run=10)
        assert len(run) == 3
        assert await deliverer.attempt_run(run) is True  # no failure: its queue goes on
        assert receiver.keys() == [f"{changes[0].alert.id}:fired"]
        rows = await db.fetch(
            "SELECT status, attempts, next_attempt_at <= now() AS due FROM alert_deliveries"
            " WHERE org_id = $1 ORDER BY seq",
            org,
        )
        assert (rows[0]["status"], rows[0]["attempts"]) == ("delivered", 1)
        assert [tuple(r) for r in rows[1:]] == [("pending", 0, True)] * 2
        assert (
            await db.fetchval("SELECT failures FROM clinician_webhooks WHERE webhook_id = $1", wid)
            == 0
        )
    finally:
        await remove_webhook(db, "*", org)
        await deliverer.store.close()
        await deliverer.close()
        receiver.close()


def test_cli_lists_tests_and_removes_webhooks_never_printing_secrets(
    base_settings: Settings, factory: EventFactory
) -> None:
    receiver = Receiver("ok")
    # the receiver is on loopback: allowed by the setting, as a clinic allows its own network
    runner = CliRunner(env={"RTM_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32"})
    clinician = f"{factory.prefix}-cli"
    try:
        r = runner.invoke(
            main,
            [
                "alerts",
                "webhook",
                "--clinician-id",
                clinician,
                "--url",
                receiver.url + "?token=t0p",
                "--secret-stdin",
            ],
            input="hush-123\n",
        )
        assert r.exit_code == 0 and "added" in r.output, r.output

        async def stored_secret() -> str:
            conn = await asyncpg.connect(base_settings.db.dsn)
            try:
                return str(
                    await conn.fetchval(
                        "SELECT secret FROM clinician_webhooks WHERE clinician_id = $1", clinician
                    )
                )
            finally:
                await conn.close()

        at_rest = asyncio.run(stored_secret())  # encrypted at rest, opened to sign
        assert at_rest.startswith("fernet:") and "hush-123" not in at_rest
        r = runner.invoke(main, ["alerts", "webhook", "--clinician-id", clinician, "--test"])
        assert r.exit_code == 0 and r.output.rstrip().endswith(": delivered"), r.output
        [request] = receiver.requests
        headers, body = request.headers, request.body
        mac = hmac.new(
            b"hush-123", headers["X-RTM-Timestamp"].encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        assert headers["X-RTM-Signature"] == "sha256=" + mac
        assert json.loads(body)["change"] == "ping"
        for args in (["alerts", "webhooks"], ["alerts", "webhook", "--list"]):
            r = runner.invoke(main, args)
            assert r.exit_code == 0 and clinician in r.output, r.output
            assert "hush-123" not in r.output and "t0p" not in r.output
        receiver.mode = "fail"
        r = runner.invoke(main, ["alerts", "webhook", "--clinician-id", clinician, "--test"])
        # "not delivered" and nothing else: no status, error or time to scan ports with
        assert r.exit_code == 1 and r.output.rstrip().endswith(": not delivered"), r.output
        assert "500" not in r.output and " ms" not in r.output
        r = runner.invoke(main, ["alerts", "webhook", "--clinician-id", clinician, "--remove"])
        assert r.exit_code == 0 and "removed" in r.output, r.output
        r = runner.invoke(main, ["alerts", "webhook", "--clinician-id", clinician, "--test"])
        assert r.exit_code == 1 and "no webhook" in r.output, r.output
        r = runner.invoke(
            main,
            [
                "alerts",
                "webhook",
                "--clinician-id",
                clinician,
                "--url",
                "not-a-url",
                "--secret",
                "s",
            ],
        )
        assert r.exit_code == 2 and "http:// or https://" in r.output, r.output
        r = runner.invoke(
            main,
            [
                "alerts",
                "webhook",
                "--clinician-id",
                clinician,
                "--org",
                f"{factory.prefix}-nope",
                "--url",
                receiver.url,
                "--secret",
                "s",
            ],
        )
        assert r.exit_code == 1 and "unknown organisation" in r.output, r.output
    finally:
        receiver.close()


async def test_delivery_timer_survives_the_database_going_away(
    base_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's delivery timer body, run by the worker's supervisor, against a database
    that is not there: logged and counted, no exception (which would stop the worker), and
    it works again once the database is."""
    from prometheus_client import CollectorRegistry

    from agents.delivery import Deliverer
    from streams.db.events import EventStore
    from streams.kafka.supervise import Supervisor
    from streams.metrics import WorkerMetrics

    metrics = WorkerMetrics(CollectorRegistry())
    now = [0.0]
    supervisor = Supervisor(metrics.task_failures, monotonic=lambda: now[0])
    dead = base_settings.but({"pg_port": free_port(), "database_url": None})
    deliverer = Deliverer(EventStore(dead.db.dsn), dead, metrics, supervisor)

    async def deliver_due() -> None:
        await deliverer.dispatch()

    with caplog.at_level("WARNING", logger="streams.kafka.supervise"):
        assert await supervisor.run_once("deliver_due", deliver_due) is False
        now[0] += 60.0  # past the backoff
        assert await supervisor.run_once("deliver_due", deliver_due) is False
    assert "deliver_due failed" in caplog.text
    assert list(supervisor.failing()) == ["deliver_due"]
    assert (
        metrics.registry.get_sample_value("rtm_worker_task_failures_total", {"task": "deliver_due"})
        == 2.0
    )
    # the same object recovers when the database is reachable (a pool opened lazily)
    deliverer.store = EventStore(base_settings.db.dsn)
    try:
        now[0] += 60.0
        assert await supervisor.run_once("deliver_due", deliver_due) is True
        assert supervisor.failing() == {}
    finally:
        await deliverer.store.close()
        await deliverer.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6066/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/hook",
        "http://10.1.2.3/hook",
        "http://[::1]:9000/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://100.100.100.200/",
    ],
)
def test_webhooks_to_loopback_private_and_metadata_addresses_are_refused(
    base_settings: Settings, factory: EventFactory, url: str
) -> None:
    """Without the allow-list setting nothing is stored; with it naming the network, the
    same URL is accepted (a clinic's own receiver)."""
    clinician = f"{factory.prefix}-ssrf"
    runner = CliRunner(env={"RTM_WEBHOOK_ALLOW_NETWORKS": ""})
    args = ["alerts", "webhook", "--clinician-id", clinician, "--url", url, "--secret", "s"]
    r = runner.invoke(main, args)
    assert r.exit_code == 2 and "non-public" in r.output, r.output

    async def count() -> int:
        conn = await asyncpg.connect(base_settings.db.dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM clinician_webhooks WHERE clinician_id = $1", clinician
                )
            )
        finally:
            await conn.close()

    assert asyncio.run(count()) == 0


async def test_delivery_rechecks_the_resolved_address(base_settings: Settings) -> None:
    """A stored URL whose name resolves to a refused address is not posted to at delivery
    (a webhook set before the policy, or a name that changed its address since)."""
    from agents.delivery import Destinations, post_signed

    receiver = Receiver("ok")
    try:
        port = httpx.URL(receiver.url).port
        url = f"http://localhost:{port}/hook"
        async with httpx.AsyncClient(timeout=5) as client:
            refused = await post_signed(client, url, "s", b"{}", "k", Destinations())
            allowed = await post_signed(
                client,
                url,
                "s",
                b"{}",
                "k",
                Destinations.from_settings(
                    base_settings.but({"webhook_allow_networks": "127.0.0.0/8"})
                ),
            )
        assert refused == "destination refused"
        assert allowed is None
        assert len(receiver.requests) == 1  # only the allowed one reached it
        [request] = receiver.requests
        assert request.headers["Host"] == f"localhost:{port}"  # pinned to the checked address
    finally:
        receiver.close()


async def test_a_red_flag_at_intake_reaches_the_organisations_webhook_at_once(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory
) -> None:
    """intake-rules.md, Safety (issue 18): an intake with a red flag fires a critical
    red_flag at once, unrouted, to the organisation-wide recipient ('*'), through the real
    gateway, Kafka, worker and outbox; it arrives as fast as a fall routed to a clinician's
    own webhook posted with it."""
    clinic, own = Receiver("ok"), Receiver("ok")
    clinician = f"{factory.prefix}-own"
    p_intake, p_episode = factory.patient(1), factory.patient(2)
    try:
        with running_stack(base_settings, tick_interval_s=0) as stack:
            assert (
                stack.post(
                    [factory.episode_started(p_episode, at=_now(-48), clinician_id=clinician)]
                ).json()["accepted"]
                == 1
            )
            await set_webhook(db, "*", clinic.url, "s-clinic")
            await set_webhook(db, clinician, own.url, "s-own")
            screened = factory.intake(
                p_intake, _now(-0.01), red_flags=["saddle_anesthesia", "bladder_dysfunction"]
            )
            fall = factory.symptom(p_episode, _now(-0.01), fall=True)
            t0 = time.monotonic()
            assert stack.post([screened, fall]).json()["accepted"] == 2

            def ours(r: Receiver, event_id: str) -> list[tuple[float, dict[str, Any]]]:
                return [(t, c) for t, c in r.delivered() if c["alert"]["event_ids"] == [event_id]]

            async def both() -> bool:
                return bool(ours(clinic, screened["event_id"]) and ours(own, fall["event_id"]))

            await wait_for(both, timeout=10, what="the intake's red flag and the fall")
            [(t_intake, change)] = ours(clinic, screened["event_id"])
            [(t_fall, _)] = ours(own, fall["event_id"])
            alert = change["alert"]
            assert (change["change"], alert["kind"], alert["severity"]) == (
                "fired",
                "red_flag",
                "critical",
            )
            assert alert["unrouted"] is True and alert["clinician_id"] == "*"
            assert alert["details"] == ["saddle_anesthesia", "bladder_dysfunction"]
            assert (alert["intake_id"], alert["patient_id"]) == (screened["intake_id"], p_intake)
            print(
                f"intake red flag at the clinic-wide webhook {(t_intake - t0) * 1000:.0f} ms,"
                f" the fall at the clinician's {(t_fall - t0) * 1000:.0f} ms after the post"
            )
            assert t_intake - t0 < 1.0, f"{t_intake - t0:.2f}s"
    finally:
        await remove_webhook(db, "*")
        await remove_webhook(db, clinician)
        clinic.close()
        own.close()
