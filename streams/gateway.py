"""Ingest gateway (FastAPI): POST /v1/events, health checks, /metrics.

Each event is validated on its own; the valid ones are produced to Kafka (acks=all)
before the response, the invalid ones go to the dead-letter topic with their reason.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Protocol

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams.metrics import GatewayMetrics
from streams.settings import Settings, hash_api_key
from schemas.events import EVENT_TYPES, Event, FieldError, future_skew_error, validate_event
from streams.producer import EventProducer, dead_letter_payload
from streams.db.events import EventStore

DEV_KEY_FILE = "dev-api-key"


def dev_key_path(settings: Settings) -> Path:
    return settings.state_dir / DEV_KEY_FILE


def ensure_dev_key(settings: Settings) -> str:
    """Provision (once) the local development key that `rtm produce` and the demo use."""
    path = dev_key_path(settings)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "rtm-dev-" + secrets.token_urlsafe(24)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def configured_key_hashes(settings: Settings) -> dict[str, str]:
    """sha256(key) -> source name. Keys are configured hashed; the dev key only in dev."""
    keys: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in settings.api_keys.split(","))):
        source, _, digest = pair.partition("=")
        if not digest:
            raise ValueError(f"RTM_API_KEYS entry {source!r} must be source=sha256hex")
        keys[digest.lower()] = source
    if settings.env == "dev" and dev_key_path(settings).exists():
        keys[hash_api_key(dev_key_path(settings).read_text().strip())] = "dev"
    return keys


class Producer(Protocol):
    async def send_events(self, events: list[Event]) -> None: ...
    async def send_dead(self, records: list[tuple[bytes | None, bytes]]) -> None: ...
    async def ping(self) -> bool: ...


def _authorized(request: Request, key_hashes: dict[str, str]) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    digest = hash_api_key(token.strip())
    for known, source in key_hashes.items():
        if hmac.compare_digest(known, digest):
            return source
    return None


def _decode_body(body: bytes, content_type: str) -> list[Any]:
    """A JSON array, or NDJSON (one event per line)."""
    stripped = body.lstrip()
    if "ndjson" in content_type or "jsonl" in content_type or not stripped.startswith(b"["):
        items: list[Any] = []
        for n, line in enumerate(body.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    items.append(_Undecodable(f"line {n}: invalid JSON ({exc})", line))
        return items
    value = orjson.loads(body)
    if not isinstance(value, list):
        raise ValueError("body must be a JSON array of events or NDJSON")
    return value


class _Undecodable:
    def __init__(self, message: str, raw: bytes) -> None:
        self.message = message
        self.raw = raw.decode("utf-8", "replace")


def create_app(
    settings: Settings,
    producer: Producer | None = None,
    store: EventStore | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build the gateway. Producer and store are created on startup unless injected."""
    registry = registry or CollectorRegistry()
    metrics = GatewayMetrics(registry)
    key_hashes = configured_key_hashes(settings)
    state: dict[str, Any] = {"producer": producer, "store": store}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned: list[Any] = []
        if state["producer"] is None:
            p = EventProducer(settings)
            await p.start()
            state["producer"] = p
            owned.append(p)
        if state["store"] is None:
            s = await EventStore.connect(settings.dsn, max_size=10)
            state["store"] = s
            owned.append(s)
        app.state.store = state["store"]
        app.state.producer = state["producer"]
        try:
            yield
        finally:
            for o in owned:
                await (o.stop() if isinstance(o, EventProducer) else o.close())

    app = FastAPI(title="RTM ingest gateway and clinician API", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        for name, probe in (("kafka", state["producer"].ping), ("database", state["store"].ping)):
            try:
                await probe()
                checks[name] = "ok"
            except Exception as exc:  # readiness reports, it does not crash
                checks[name] = f"unavailable: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/events")
    async def post_events(request: Request) -> JSONResponse:
        if _authorized(request, key_hashes) is None:
            return JSONResponse(
                {"error": "missing or invalid API key (Authorization: Bearer <key>)"},
                status_code=401, headers={"WWW-Authenticate": "Bearer"},
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            return _too_large(settings)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                return _too_large(settings)
        try:
            items = _decode_body(body, request.headers.get("content-type", ""))
        except (ValueError, orjson.JSONDecodeError) as exc:
            return JSONResponse({"error": f"unreadable body: {exc}"}, status_code=400)
        if len(items) > settings.max_batch_events:
            return JSONResponse(
                {"error": f"batch of {len(items)} events exceeds {settings.max_batch_events}"},
                status_code=413,
            )
        received_at = dt.datetime.now(dt.timezone.utc)
        valid: list[tuple[int, Event]] = []
        rejected: list[dict[str, Any]] = []
        dead: list[tuple[bytes | None, bytes]] = []
        for index, item in enumerate(items):
            if isinstance(item, _Undecodable):
                errors = [FieldError(field="", message=item.message)]
                raw: Any = item.raw
            else:
                result = validate_event(item)
                if not isinstance(result, list):
                    skew = future_skew_error(result, received_at, settings.max_future_skew_s)
                    if skew is None:
                        event = result.model_copy(update={"received_at": received_at})
                        valid.append((index, event))
                        continue
                    result = [skew]  # valid on its own, but from the future: refused alike
                errors, raw = result, item
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            etype = raw.get("type") if isinstance(raw, dict) else None
            err_dicts = [e.model_dump() for e in errors]
            rejected.append({"index": index, "event_id": event_id, "errors": err_dicts})
            key = raw.get("patient_id") if isinstance(raw, dict) else None
            dead.append((
                key.encode() if isinstance(key, str) else None,
                dead_letter_payload(raw, err_dicts, "gateway", index),
            ))
            metrics.events_rejected.labels(etype if etype in EVENT_TYPES else "unknown").inc()

        duplicates, to_send = await _split_duplicates(state["store"], valid)
        t0 = time.perf_counter()
        if to_send:
            await state["producer"].send_events(to_send)
        if dead:
            await state["producer"].send_dead(dead)
        metrics.produce_latency.observe(time.perf_counter() - t0)
        for e in to_send:
            metrics.events_accepted.labels(e.type).inc()
        metrics.events_duplicate.inc(len(duplicates))
        return JSONResponse({
            "accepted": len(to_send),
            "duplicates": duplicates,
            "rejected": rejected,
            "received_at": received_at.isoformat(),
        })

    from fastapi import Depends

    from streams import api_alerts, api_billing

    def require_key(request: Request) -> str:
        source = _authorized(request, key_hashes)
        if source is None:
            raise HTTPException(401, "missing or invalid API key (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})
        return source

    for router in (api_alerts.router, api_billing.router):
        app.include_router(router, dependencies=[Depends(require_key)])
    return app


async def _split_duplicates(
    store: EventStore | None, valid: list[tuple[int, Event]]
) -> tuple[list[dict[str, Any]], list[Event]]:
    """Acknowledge already-stored (or repeated-in-batch) event_ids as duplicates.

    Best effort: an event still in flight is not yet in the ledger, so the worker's own
    idempotent write remains the guarantee.
    """
    known: set[str] = set()
    if store is not None and valid:
        try:
            known = await store.known_event_ids([e.event_id for _, e in valid])
        except Exception:  # the database being down must not block ingest
            known = set()
    seen: set[str] = set()
    duplicates: list[dict[str, Any]] = []
    to_send: list[Event] = []
    for index, event in valid:
        if event.event_id in known or event.event_id in seen:
            duplicates.append({"index": index, "event_id": event.event_id})
            continue
        seen.add(event.event_id)
        to_send.append(event)
    return duplicates, to_send


def _too_large(settings: Settings) -> JSONResponse:
    return JSONResponse(
        {"error": f"body exceeds {settings.max_body_bytes} bytes"}, status_code=413
    )
