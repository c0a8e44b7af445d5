"""The /metrics pages of the gateway and the worker after a real run: the numbers a user
relies on move, and no label carries a patient or clinician id."""

from __future__ import annotations

import datetime as dt

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.events import validate_event
from streams.kafka.producer import EventProducer
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import running_stack, wait_for

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def labelled(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def test_metrics_move_and_carry_no_ids(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory
) -> None:
    prefix = factory.prefix
    clinician = f"{prefix}-clin"
    p1, p2 = factory.patient(1), factory.patient(2)
    good = [
        factory.episode_started(p1, clinician_id=clinician),
        factory.episode_started(p2, clinician_id=clinician),
        *factory.daily_exercises(p1, dt.date(2026, 11, 3), 3),
        factory.pain(p1, 4, "2026-11-03T20:00:00-06:00"),
        factory.symptom(p2, "2026-11-03T10:00:00-06:00", red_flags=["saddle_anesthesia"]),
    ]
    bad = [
        factory.pain(p1, 11, "2026-11-04T10:00:00-06:00"),  # out of range
        factory.pain(p1, 3, "2026-11-04T10:00:00"),  # naive timestamp
        {
            "event_id": f"{prefix}-x",
            "schema_version": 1,
            "type": "nope",
            "patient_id": p1,
            "occurred_at": "2026-11-04T10:00:00Z",
        },
    ]
    types: dict[str, int] = {}
    for e in good:
        types[e["type"]] = types.get(e["type"], 0) + 1

    # No wall-clock ticks: only what this test sends may fire. A state cache of one patient:
    # the second patient's state drops the first.
    with running_stack(
        base_settings, tick_interval_s=0, worker_lag_interval_s=0.5, worker_state_cache=1
    ) as stack:
        gateway_url = f"{stack.url}/metrics"
        worker_url = f"http://127.0.0.1:{stack.settings.worker.web_port}/metrics"
        body = stack.post(good[:4] + bad + good[4:]).json()
        assert body["accepted"] == len(good) and len(body["rejected"]) == len(bad)

        async def stored_and_fired() -> bool:
            n = await db.fetchval(
                "SELECT count(*) FROM event_ids WHERE event_id LIKE $1", prefix + "-%"
            )
            fired = await db.fetchval("SELECT count(*) FROM alerts WHERE patient_id = $1", p2)
            return bool(n >= len(good) and fired >= 1)

        await wait_for(stored_and_fired, what="events stored and the red flag fired")

        # Duplicates only the worker can see: the same events straight to Kafka.
        producer = EventProducer(stack.settings)
        await producer.start()
        try:
            events = [validate_event(e) for e in good]
            await producer.send_events([e for e in events if not isinstance(e, list)])
        finally:
            await producer.stop()

        async def settled() -> bool:
            w = scrape(worker_url)
            lag = labelled(w, "rtm_worker_consumer_lag")
            return (
                value(w, "rtm_worker_duplicates_ignored_total") >= len(good)
                and len(lag) == stack.settings.kafka.topic_partitions
                and all(v == 0 for v in lag.values())
            )

        await wait_for(settled, timeout=30, what="duplicates ignored and lag back to 0")
        g, w = scrape(gateway_url), scrape(worker_url)
        raw = {url: httpx.get(url, timeout=5).text for url in (gateway_url, worker_url)}

    # Gateway: requests by route and status, events by type, produce latency.
    assert value(g, "rtm_gateway_requests_total", route="/v1/events", status="200") == 1
    for etype, n in types.items():
        assert value(g, "rtm_gateway_events_accepted_total", type=etype) == n, etype
    assert value(g, "rtm_gateway_events_rejected_total", type="pain.reported") == 2
    assert value(g, "rtm_gateway_events_rejected_total", type="unknown") == 1
    assert value(g, "rtm_gateway_produce_seconds_count") == 1

    # Worker: every event taken twice (posted, then re-sent), stored once.
    for etype, n in types.items():
        assert value(w, "rtm_worker_events_processed_total", type=etype) == 2 * n, etype
    assert value(w, "rtm_worker_events_stored_total") == len(good)
    assert value(w, "rtm_worker_duplicates_ignored_total") == len(good)
    assert value(w, "rtm_worker_db_batch_size_count") >= 2
    assert value(w, "rtm_worker_db_batch_size_sum") == 2 * len(good)
    assert value(w, "rtm_worker_db_write_seconds_count") >= 2
    # Gateway-accepted events carry received_at; the re-sent ones do not.
    assert value(w, "rtm_worker_accept_to_persisted_seconds_count") == len(good)
    assert value(w, "rtm_worker_accept_to_alert_seconds_count") == 1
    # The state cache: never over its limit, the states beyond it dropped (two patients;
    # a batch refused for its re-sent events forgets the states it read)
    assert value(w, "rtm_worker_state_cache_patients") <= 1
    assert value(w, "rtm_worker_state_cache_dropped") >= 1
    assert value(w, "rtm_worker_alerts_fired_total", kind="red_flag", severity="critical") == 1
    assert sum(labelled(w, "rtm_worker_alerts_fired_total").values()) == 1
    lag = labelled(w, "rtm_worker_consumer_lag")
    assert {dict(k)["topic"] for k in lag} == {stack.settings.kafka.topic_events}
    assert sorted(int(dict(k)["partition"]) for k in lag) == list(
        range(stack.settings.kafka.topic_partitions)
    )
    assert set(lag.values()) == {0.0}
    days = await db.fetchval(
        "SELECT count(*) FROM billing_data_days WHERE patient_id LIKE $1", prefix + "-%"
    )
    assert days >= 3  # p1's three exercise days at least
    assert value(w, "rtm_worker_billing_data_dates_total") == days

    # promtool's metrics lint passes on what both processes expose (issue 12 part 9)
    from tests.unit.test_promtool import PROMTOOL, promtool_problems

    if PROMTOOL is not None:
        for url, text in raw.items():
            assert promtool_problems(text) == "", url

    # No PHI in labels: no patient, clinician, episode or event id anywhere.
    ids = {p1, p2, clinician, prefix}
    for samples in (g, w):
        for _name, labels in samples:
            for _key, label_value in labels:
                assert not any(i in label_value for i in ids), (_name, dict(labels))
