"""``POST /v1/events``: the ingest gateway.

Each event is validated on its own; the valid ones are produced to Kafka (acks=all)
before the response, the invalid ones go to the dead-letter topic with their reason.
The body is read raw on purpose (size limits before parsing, NDJSON), so its OpenAPI
operation is written by hand (``streams.http.openapi.ingest_operation``): ``router``
takes the settings for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from schemas.events import (
    EVENT_TYPES,
    ClinicianTimeLogged,
    Event,
    FieldError,
    future_skew_error,
    key_text,
    validate_event,
)
from streams.access import Principal
from streams.db.events import EventStore
from streams.http.auth import UNAUTHENTICATED
from streams.http.deps import Gateway, GatewayDep, Producer
from streams.http.openapi import ingest_operation
from streams.kafka.producer import dead_letter_payload
from streams.metrics import GatewayMetrics
from streams.settings import Settings

RETRY_AFTER_S = 5  # a 503 while Kafka cannot take the events


def router(settings: Settings) -> APIRouter:
    """The route, its OpenAPI operation stating this gateway's limits."""
    events = APIRouter()
    events.add_api_route(
        "/v1/events",
        post_events,
        methods=["POST"],
        openapi_extra=ingest_operation(
            settings.gateway.max_batch_events, settings.gateway.max_body_bytes
        ),
    )
    return events


async def post_events(request: Request, gateway: GatewayDep) -> JSONResponse:
    # the gateway whole, not six dependencies: the ingest path solves one (each costs)
    settings = gateway.settings
    who = await gateway.authenticate(request)
    if who is None:
        return JSONResponse(
            UNAUTHENTICATED, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    allowed = who.postable_types()
    if not allowed:
        return JSONResponse({"error": f"{who.role_text} may not post events"}, status_code=403)
    body = await _read_body(request, settings.gateway.max_body_bytes)
    if body is None:
        return _too_large(settings)
    try:
        items = _decode_body(body, request.headers.get("content-type", ""))
    except (ValueError, orjson.JSONDecodeError) as exc:
        return JSONResponse({"error": f"unreadable body: {exc}"}, status_code=400)
    if len(items) > settings.gateway.max_batch_events:
        return JSONResponse(
            {"error": f"batch of {len(items)} events exceeds {settings.gateway.max_batch_events}"},
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
    answer = await ingest(gateway, who, items)
    if isinstance(answer, JSONResponse):
        return answer
    return JSONResponse(answer)


async def ingest(
    gateway: Gateway, who: Principal, items: list[Any]
) -> dict[str, Any] | JSONResponse:
    """The event path after authentication and scope, shared by ``POST /v1/events`` and
    the pages that post an event in a signed-in clinician's name (the patient page's
    pause and resume): each item judged by the contract, stamped with ``received_at`` (the
    injected clock) and the principal's ``org_id``, duplicates split off, the rest
    produced to Kafka (acks=all). The answer's body, or the 503 to answer."""
    settings, metrics = gateway.settings, gateway.metrics
    received_at = gateway.clock.now()
    judged = _judge(items, who, received_at, settings.gateway.max_future_skew_s, metrics)
    await _check_corrections(gateway.store, items, judged, who.org_id, metrics)
    duplicates, to_send = await _split_duplicates(gateway.store, judged.valid, who.org_id)
    unavailable = await _produce(gateway.producer, to_send, judged.dead, settings, metrics)
    if unavailable is not None:
        return unavailable
    for e in to_send:
        metrics.events_accepted.labels(e.type).inc()
    metrics.events_duplicate.inc(len(duplicates))
    return {
        "accepted": len(to_send),
        "duplicates": duplicates,
        "rejected": judged.rejected,
        "received_at": received_at.isoformat(),
    }


async def _read_body(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None when it is (or says it is) larger than ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return None
    return body


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


@dataclass
class _Judged:
    """A body's items, judged one by one: the valid events (with their index), the
    rejections answered, the dead-letter records to produce."""

    valid: list[tuple[int, Event]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    dead: list[tuple[bytes | None, bytes]] = field(default_factory=list)


def _judge(
    items: list[Any],
    who: Principal,
    received_at: dt.datetime,
    max_future_skew_s: float,
    metrics: GatewayMetrics,
) -> _Judged:
    """Validate each item on its own. A patient is (organisation, patient_id): the key's
    organisation is stamped on each event, and nothing here depends on what another
    organisation has sent."""
    judged = _Judged()
    stamps = {"received_at": received_at, "org_id": who.org_id}
    for index, item in enumerate(items):
        if isinstance(item, _Undecodable):
            errors = [FieldError(field="", message=item.message)]
            raw: Any = item.raw
        else:
            # The stamps go in before validation when the producer sent neither (the usual
            # case): one validation and no copy of the model (model_copy was a tenth of the
            # gateway's CPU). A producer's own values are validated as sent, so an error
            # names them, and then replaced.
            stamped = isinstance(item, dict) and not stamps.keys() & item.keys()
            result = validate_event({**item, **stamps} if stamped else item)
            if not isinstance(result, list):
                skew = future_skew_error(result, received_at, max_future_skew_s)
                if skew is None:
                    event = result if stamped else result.model_copy(update=stamps)
                    judged.valid.append((index, event))
                    continue
                else:
                    result = [skew]  # valid on its own, but from the future: refused
            errors, raw = result, item
        _reject(judged, index, raw, errors, who.org_id, metrics)
    return judged


def _reject(
    judged: _Judged,
    index: int,
    raw: Any,
    errors: list[FieldError],
    org_id: str,
    metrics: GatewayMetrics,
) -> None:
    """Answer the item as rejected, with its per-field errors, and dead-letter it."""
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    etype = raw.get("type") if isinstance(raw, dict) else None
    err_dicts = [e.model_dump() for e in errors]
    judged.rejected.append({"index": index, "event_id": event_id, "errors": err_dicts})
    key = raw.get("patient_id") if isinstance(raw, dict) else None
    judged.dead.append(
        (
            key_text((org_id, key)).encode() if isinstance(key, str) else None,
            dead_letter_payload(raw, err_dicts, "gateway", index),
        )
    )
    metrics.events_rejected.labels(etype if etype in EVENT_TYPES else "unknown").inc()


async def _check_corrections(
    store: EventStore,
    items: list[Any],
    judged: _Judged,
    org_id: str,
    metrics: GatewayMetrics,
) -> None:
    """A correction (``clinician.time_logged`` with ``supersedes``) must name a time log of
    the same patient: one the organisation's ledger holds, or one earlier in this batch.
    Otherwise it is refused, naming ``supersedes``. Best effort while the database is
    away (billing then counts the correction alone: it replaces nothing it does not find)."""
    asks = [
        (index, e)
        for index, e in judged.valid
        if isinstance(e, ClinicianTimeLogged) and e.supersedes is not None
    ]
    if not asks:
        return
    try:
        owners = await store.time_log_patients(org_id, [e.supersedes or "" for _, e in asks])
    except Exception:  # the database being down must not block ingest
        return
    batch: dict[str, str] = {}
    refused: set[int] = set()
    for index, e in judged.valid:
        if isinstance(e, ClinicianTimeLogged) and e.supersedes is not None:
            owner = batch.get(e.supersedes, owners.get(e.supersedes))
            message = None
            if owner is None or e.supersedes == e.event_id:
                message = f"no time log {e.supersedes} of this patient is stored (yet)"
            elif owner != e.patient_id:
                message = f"time log {e.supersedes} is another patient's"
            if message is not None:
                refused.add(index)
                _reject(
                    judged,
                    index,
                    items[index],
                    [FieldError(field="supersedes", message=message)],
                    org_id,
                    metrics,
                )
                continue
        if isinstance(e, ClinicianTimeLogged):
            batch.setdefault(e.event_id, e.patient_id)
    judged.valid = [(i, e) for i, e in judged.valid if i not in refused]


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


async def _produce(
    producer: Producer,
    to_send: list[Event],
    dead: list[tuple[bytes | None, bytes]],
    settings: Settings,
    metrics: GatewayMetrics,
) -> JSONResponse | None:
    """Produce the events and the dead letters, or the 503 to answer.

    Never a 200 for an event Kafka has not acked (acks=all): while the broker is away the
    client hears 503 and re-posts; the worker stores each id once."""
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(settings.gateway.produce_timeout_s):
            if to_send:
                await producer.send_events(to_send)
            if dead:
                await producer.send_dead(dead)
    except (TimeoutError, KafkaError) as exc:
        metrics.produce_failures.inc()
        return JSONResponse(
            {"error": f"events not accepted: Kafka unavailable ({type(exc).__name__})"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    metrics.produce_latency.observe(time.perf_counter() - t0)
    return None


def _too_large(settings: Settings) -> JSONResponse:
    return JSONResponse(
        {"error": f"body exceeds {settings.gateway.max_body_bytes} bytes"}, status_code=413
    )
