"""``/ui/operator``: the operator's page (operators and admins; no patient data): the
readiness of the worker (its ``/readyz``) and of the gateway, and the figures operators
are paged on, each labelled with the metric it comes from: the worker's own ``/metrics``
(read from its web port in settings), the gateway's own registry, and the database
(the webhook outbox by status, when the newest event was stored)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse
from prometheus_client import Metric
from prometheus_client.parser import text_string_to_metric_families

from streams.db.operations import RECENT_DAYS, last_event_stored, webhook_outbox
from streams.http.deps import (
    AuthenticateDep,
    ClockDep,
    MetricsDep,
    ProducerDep,
    SettingsDep,
    StoreDep,
)
from streams.http.pages.common import (
    clinic_time,
    clinic_zone,
    elapsed,
    need,
    page_router,
    page_user,
    render,
)
from streams.http.routes.health import readiness
from streams.settings import Settings

router = page_router()

WORKER_TIMEOUT_S = 2.0
Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples_of(families: Iterable[Metric]) -> Samples:
    """sample name (``…_total`` for counters) -> [(labels, value)]."""
    out: Samples = defaultdict(list)
    for family in families:
        # a labelled metric no child of which was used yet: present, and 0
        out.setdefault(family.name + ("_total" if family.type == "counter" else ""), [])
        for s in family.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    return out


async def worker_state(settings: Settings) -> tuple[dict[str, Any] | None, Samples, str]:
    """The worker's /readyz body and /metrics samples, or None and why not."""
    base = f"http://{settings.worker.web_host}:{settings.worker.web_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=WORKER_TIMEOUT_S) as client:
            ready = await client.get("/readyz")
            metrics = await client.get("/metrics")
        body: dict[str, Any] = ready.json()
        return body, samples_of(text_string_to_metric_families(metrics.text)), ""
    except (httpx.HTTPError, ValueError) as exc:  # the page reports; it does not fail
        return None, {}, f"unreachable at {base}: {type(exc).__name__}"


def total(samples: Samples, name: str) -> float | None:
    values = samples.get(name)
    return None if values is None else sum(v for _, v in values)


def by_label(samples: Samples, name: str, label: str) -> str:
    """'a 1, b 2' over the sample's label (nonzero only)."""
    parts = [(labels.get(label, ""), v) for labels, v in samples.get(name, [])]
    return ", ".join(f"{k} {_num(v)}" for k, v in sorted(parts) if v) or "none"


def _num(v: float | None) -> str:
    if v is None:
        return "not reported"
    return str(int(v)) if v == int(v) else f"{v:.1f}"


def figure(fid: str, label: str, metric: str, value: Any, detail: str = "") -> dict[str, Any]:
    return {"id": fid, "label": label, "metric": metric, "value": value, "detail": detail}


# (id, label, metric, the label it is broken down by): summed over their labels
WORKER_COUNTS = (
    ("lag", "Consumer lag (messages)", "rtm_worker_consumer_lag", "partition"),
    ("worker-dead", "Dead letters (worker)", "rtm_worker_dead_letters_total", "reason"),
    ("backlog", "Webhook backlog", "rtm_worker_webhook_backlog", "severity"),
    ("deliveries", "Webhook delivery attempts", "rtm_worker_webhook_deliveries_total", "outcome"),
    ("task-failures", "Task failures", "rtm_worker_task_failures_total", "task"),
    ("stored", "Events stored", "rtm_worker_events_stored_total", ""),
    ("restarts", "Restarts", "rtm_worker_restarts_total", ""),
)
GATEWAY_COUNTS = (
    ("gateway-dead", "Dead letters (gateway: invalid events)",
     "rtm_gateway_events_rejected_total", "type"),
    ("accepted", "Events accepted", "rtm_gateway_events_accepted_total", "type"),
    ("produce-failures", "Produce failures (503)", "rtm_gateway_produce_failures_total", ""),
)  # fmt: skip


def counts(samples: Samples, rows: Iterable[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    out = []
    for fid, label, name, key in rows:
        detail = by_label(samples, name, key) if key else ""
        out.append(figure(fid, label, name, _num(total(samples, name)), detail))
    return out


def worker_figures(w: Samples, now: dt.datetime, zone: ZoneInfo) -> list[dict[str, Any]]:
    tick = total(w, "rtm_worker_clock_last_tick_timestamp_seconds")
    tick_at = dt.datetime.fromtimestamp(tick, dt.UTC) if tick else None
    oldest_name = "rtm_worker_webhook_oldest_undelivered_seconds"
    oldest = max((v for _, v in w.get(oldest_name, [])), default=None)
    halted = total(w, "rtm_worker_ingest_halted")
    never = "never (not the leader, or not yet)"
    return [
        *counts(w, WORKER_COUNTS),
        figure("halted", "Ingest halted", "rtm_worker_ingest_halted", "yes" if halted else "no"),
        figure("oldest", "Oldest undelivered (s)", oldest_name, _num(oldest)),
        figure(
            "tick",
            "Last clock tick",
            "rtm_worker_clock_last_tick_timestamp_seconds",
            elapsed(tick_at, now, absent=never, suffix=" ago"),
            clinic_time(tick_at, now, zone, absent=""),
        ),
    ]


def database_figures(
    outbox: dict[str, int], last: dt.datetime | None, now: dt.datetime, zone: ZoneInfo
) -> list[dict[str, Any]]:
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(outbox.items())) or "none"
    return [
        figure("outbox", "Webhook outbox, not delivered", "alert_deliveries.status",
               sum(outbox.values()), statuses),
        figure("outbox-failed", "Webhook deliveries failed",
               "alert_deliveries.status = 'failed'", outbox.get("failed", 0)),
        figure("last-event", "Last event stored",
               f"max(events.stored_at) of events that occurred in the last {RECENT_DAYS} days",
               elapsed(last, now, absent="none", suffix=" ago"),
               clinic_time(last, now, zone, absent="")),
    ]  # fmt: skip


@router.get("/operator", response_class=HTMLResponse)
async def operator_page(
    request: Request,
    authenticate: AuthenticateDep,
    store: StoreDep,
    producer: ProducerDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> HTMLResponse:
    """The figures of the worker, the gateway and the database, as a page."""
    who = await page_user(request, authenticate)
    need(who, "operate")
    now = clock.now()
    worker_ready, w, worker_error = await worker_state(settings)
    gateway_ready = await readiness(producer, store)
    async with store.acquire() as conn:
        outbox = await webhook_outbox(conn)
        last = await last_event_stored(conn)
        zone = await clinic_zone(conn, who)
    return render(
        "operator.html",
        who=who,
        nav="operator",
        worker_ready=worker_ready,
        worker_error=worker_error,
        gateway_ready=gateway_ready,
        worker=worker_figures(w, now, zone) if worker_ready is not None else [],
        gateway=counts(samples_of(metrics.registry.collect()), GATEWAY_COUNTS),
        database=database_figures(outbox, last, now, zone),
    )
