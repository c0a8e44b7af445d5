"""Ingest gateway (FastAPI): POST /v1/events, health checks, /metrics.

Each event is validated on its own; the valid ones are produced to Kafka (acks=all)
before the response, the invalid ones go to the dead-letter topic with their reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Protocol

import orjson
from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from schemas.events import (
    EVENT_TYPES,
    Event,
    FieldError,
    future_skew_error,
    key_text,
    validate_event,
)
from streams.access import (
    PERMISSIONS,
    SESSION_COOKIE,
    Principal,
    session_digest,
)
from streams.db.access import delete_session
from streams.db.events import EventStore
from streams.http.auth import (
    UNAUTHENTICATED,
    Authenticator,
    principal,
    reject_unknown_query,
    start_session,
)
from streams.http.hardening import Hardening, NoNul, refuse_cross_site
from streams.kafka.producer import EventProducer, dead_letter_payload
from streams.metrics import GatewayMetrics
from streams.services.signin import Refused
from streams.settings import Settings

RETRY_AFTER_S = 5  # a 503 while Kafka cannot take the events


class Producer(Protocol):
    async def send_events(self, events: list[Event]) -> None: ...
    async def send_dead(self, records: list[tuple[bytes | None, bytes]]) -> None: ...
    async def ping(self) -> bool: ...


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
    authenticate: Callable[[Request], Awaitable[Principal | None]] | None = None,
) -> FastAPI:
    """Build the gateway. Producer and store are created on startup unless injected (and
    the authenticator: in-process tests of the per-event judgement inject a principal)."""
    registry = registry or CollectorRegistry()
    metrics = GatewayMetrics(registry)
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

    # The docs UIs are FastAPI's CDN pages: off; in dev streams.http.pages.clinic serves Swagger UI
    # from the vendored, pinned assets (no third-party script on the patient pages' origin).
    app = FastAPI(
        title="RTM ingest gateway and clinician API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.authenticate = authenticate or Authenticator(state)
    # requests counted by route and status (500s included), NUL refused, security headers
    app.add_middleware(
        Hardening, requests=metrics.requests, tls=settings.api_tls_certfile is not None
    )

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

    @app.post(
        "/v1/session",
        dependencies=[Depends(reject_unknown_query), Depends(refuse_cross_site)],
        responses={
            401: {"description": "unknown user or wrong password"},
            403: {"description": "a cross-site sign-in (login CSRF)"},
            429: {"description": "too many attempts: locked for Retry-After seconds"},
        },
    )
    async def sign_in(request: Request, body: SignIn, response: Response) -> dict[str, Any]:
        """Sign in with a local account: sets the session cookie (HTTP-only, Secure,
        SameSite=Lax) and returns the CSRF token for state-changing requests. Too many
        attempts: 429 with Retry-After (streams/services/signin.py)."""
        started = await start_session(request, body.username, body.password, "POST /v1/session")
        if isinstance(started, Refused):
            raise HTTPException(started.status, started.message, headers=started.headers)
        row, token, csrf = started.user, started.cookie, started.csrf
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(settings.session_ttl_s),
            httponly=True,
            secure=True,
            samesite="lax",
            path="/",
        )
        return {
            "username": row["username"],
            "role": row["role"],
            "org_id": row["org_id"],
            "clinician_id": row["clinician_id"],
            "csrf_token": csrf,
        }

    @app.delete("/v1/session", dependencies=[Depends(reject_unknown_query)])
    async def sign_out(
        request: Request, response: Response, who: Principal = Depends(principal)
    ) -> dict[str, str]:
        cookie = request.cookies.get(SESSION_COOKIE)
        if who.kind == "user" and cookie:
            async with state["store"].acquire() as conn:
                await delete_session(conn, session_digest(cookie))
        response.delete_cookie(SESSION_COOKIE, path="/")
        return {"signed_out": who.actor}

    @app.get("/v1/me", dependencies=[Depends(reject_unknown_query)])
    async def me(who: Principal = Depends(principal)) -> dict[str, Any]:
        return {
            "actor": who.actor,
            "org_id": who.org_id,
            "roles": sorted(who.roles),
            "clinician_id": who.clinician_id,
            "csrf_token": who.csrf_token,
            "may": sorted(p for p in PERMISSIONS if who.may(p)),
        }

    from streams.http.openapi import ingest_operation, install

    install(app)

    @app.post(
        "/v1/events",
        openapi_extra=ingest_operation(settings.max_batch_events, settings.max_body_bytes),
    )
    async def post_events(request: Request) -> JSONResponse:
        who = await request.app.state.authenticate(request)
        if who is None:
            return JSONResponse(
                UNAUTHENTICATED, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        allowed = who.postable_types()
        if not allowed:
            return JSONResponse({"error": f"{who.role_text} may not post events"}, status_code=403)
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
        # Scope before anything is produced: one event of a type the key may not send and
        # the whole request is refused (a patient app cannot post clinician time).
        refused_types = sorted(
            {
                t
                for item in items
                if isinstance(item, dict)
                and (t := item.get("type")) in EVENT_TYPES
                and t not in allowed
            }
        )
        if refused_types:
            return JSONResponse(
                {
                    "error": f"this key may not post {', '.join(refused_types)}"
                    f" (scopes: {who.role_text})"
                },
                status_code=403,
            )
        received_at = dt.datetime.now(dt.UTC)
        # A patient is (organisation, patient_id): the key's organisation is stamped on
        # each event, and nothing here depends on what another organisation has sent.
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
                        event = result.model_copy(
                            update={"received_at": received_at, "org_id": who.org_id}
                        )
                        valid.append((index, event))
                        continue
                    else:
                        result = [skew]  # valid on its own, but from the future: refused
                errors, raw = result, item
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            etype = raw.get("type") if isinstance(raw, dict) else None
            err_dicts = [e.model_dump() for e in errors]
            rejected.append({"index": index, "event_id": event_id, "errors": err_dicts})
            key = raw.get("patient_id") if isinstance(raw, dict) else None
            dead.append(
                (
                    key_text((who.org_id, key)).encode() if isinstance(key, str) else None,
                    dead_letter_payload(raw, err_dicts, "gateway", index),
                )
            )
            metrics.events_rejected.labels(etype if etype in EVENT_TYPES else "unknown").inc()

        duplicates, to_send = await _split_duplicates(state["store"], valid, who.org_id)
        t0 = time.perf_counter()
        try:
            # Never a 200 for an event Kafka has not acked (acks=all): while the broker is
            # away the client hears 503 and re-posts; the worker stores each id once.
            async with asyncio.timeout(settings.produce_timeout_s):
                if to_send:
                    await state["producer"].send_events(to_send)
                if dead:
                    await state["producer"].send_dead(dead)
        except (TimeoutError, KafkaError) as exc:
            metrics.produce_failures.inc()
            return JSONResponse(
                {"error": f"events not accepted: Kafka unavailable ({type(exc).__name__})"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        metrics.produce_latency.observe(time.perf_counter() - t0)
        for e in to_send:
            metrics.events_accepted.labels(e.type).inc()
        metrics.events_duplicate.inc(len(duplicates))
        return JSONResponse(
            {
                "accepted": len(to_send),
                "duplicates": duplicates,
                "rejected": rejected,
                "received_at": received_at.isoformat(),
            }
        )

    from streams.http.routes import alerts as api_alerts
    from streams.http.routes import billing as api_billing
    from streams.http.routes import fhir as api_fhir

    for router in (api_alerts.router, api_billing.router, api_fhir.router):
        app.include_router(router, dependencies=[Depends(principal), Depends(reject_unknown_query)])
    from streams.http.pages import clinic as pages

    pages.mount(app, settings)  # the dashboard (HTML pages, the live stream, static files)
    from streams.http.denials import DenialAudit

    app.add_middleware(DenialAudit)  # refused patient reads and acks leave an audit row
    return app


class SignIn(BaseModel):
    username: Annotated[NoNul, Field(min_length=1, max_length=64)]
    password: Annotated[NoNul, Field(min_length=1, max_length=256)]


async def _split_duplicates(
    store: EventStore | None, valid: list[tuple[int, Event]], org_id: str
) -> tuple[list[dict[str, Any]], list[Event]]:
    """Acknowledge event_ids the organisation already stored (or repeated in the batch) as
    duplicates. Event ids are unique per organisation: another organisation's event with
    the same id is neither a duplicate nor told.

    Best effort: an event still in flight is not yet in the ledger, so the worker's own
    idempotent write remains the guarantee.
    """
    known: set[str] = set()
    if store is not None and valid:
        try:
            known = await store.known_event_ids(org_id, [e.event_id for _, e in valid])
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
    return JSONResponse({"error": f"body exceeds {settings.max_body_bytes} bytes"}, status_code=413)
