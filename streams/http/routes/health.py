"""Health of the gateway: ``/healthz`` (the process answers), ``/readyz`` (Kafka and the
database answer too; 503 otherwise) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.db.events import EventStore
from streams.http.deps import MetricsDep, Producer, ProducerDep, StoreDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(producer: ProducerDep, store: StoreDep) -> JSONResponse:
    checks = await readiness(producer, store)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)


async def readiness(producer: Producer, store: EventStore) -> dict[str, str]:
    """Kafka and the database: "ok" or why not (also shown on the operator page)."""
    checks: dict[str, str] = {}
    for name, probe in (("kafka", producer.ping), ("database", store.ping)):
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:  # readiness reports, it does not crash
            checks[name] = f"unavailable: {type(exc).__name__}"
    return checks


@router.get("/metrics")
async def metrics_endpoint(metrics: MetricsDep) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
