"""What a gateway route or page may ask for: typed ``Annotated`` dependencies.

The shape of FastAPI's full-stack template (``api/deps.py``): a handler declares
``store: StoreDep``, ``clock: ClockDep``, ``who: PrincipalDep`` ... and FastAPI hands them
over. They all come from one ``Gateway``, the running gateway's shared parts (settings,
clock, metrics, authenticator, Kafka producer, database store), made by
``streams.http.app.create_app`` and kept on the application; this module is the only
place that reads it back (``get_gateway``).

``Deps`` is what a caller may give ``create_app`` instead of what the gateway makes
itself: tests inject a fake producer and store, a principal, a ``FixedClock``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Request
from prometheus_client import CollectorRegistry

from schemas.events import Event
from streams.access import CSRF_HEADER, Permission, Principal
from streams.clock import Clock, clock_for
from streams.db.events import EventStore
from streams.http.auth import UNAUTHENTICATED, Authenticator, client_host, csrf_sent
from streams.kafka.control import Ack, Snooze
from streams.kafka.producer import EventProducer
from streams.metrics import GatewayMetrics
from streams.services.signin import Refused, SignInService, Started
from streams.settings import Settings

Authenticate = Callable[[Request], Awaitable[Principal | None]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Producer(Protocol):
    """What the gateway sends to Kafka (``streams.kafka.producer.EventProducer``)."""

    async def send_events(self, events: list[Event]) -> None: ...
    async def send_dead(self, records: list[tuple[bytes | None, bytes]]) -> None: ...
    async def send_control(self, record: Ack | Snooze) -> None: ...
    async def ping(self) -> bool: ...


@dataclass(frozen=True)
class Deps:
    """The parts a caller gives ``create_app`` (each one optional): a producer and a store
    are otherwise opened by the lifespan, the registry made new, the authenticator the
    database's (``streams.http.auth.Authenticator``), the clock ``clock_for(settings)``."""

    producer: Producer | None = None
    store: EventStore | None = None
    registry: CollectorRegistry | None = None
    authenticate: Authenticate | None = None
    clock: Clock | None = None


class Gateway:
    """The running gateway's shared parts, one per application."""

    def __init__(self, settings: Settings, deps: Deps) -> None:
        self.settings = settings
        self.clock: Clock = deps.clock or clock_for(settings)
        self.registry = deps.registry or CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.authenticate: Authenticate = deps.authenticate or Authenticator(
            settings, self.clock, lambda: self.store
        )
        self._producer = deps.producer
        self._store = deps.store
        self._owned: list[EventProducer | EventStore] = []
        self._sign_in: SignInService | None = None

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("the gateway's producer is not started (its lifespan has not run)")
        return self._producer

    @property
    def store(self) -> EventStore:
        if self._store is None:
            raise RuntimeError("the gateway's store is not open (its lifespan has not run)")
        return self._store

    def sign_in_service(self) -> SignInService:
        """The process's sign-in service (made on first use: a thread pool and a hash)."""
        if self._sign_in is None:
            self._sign_in = SignInService(self.settings)
        return self._sign_in

    async def start(self) -> None:
        """Open what was not injected: the Kafka producer, the database pool."""
        if self._producer is None:
            producer = EventProducer(self.settings)
            await producer.start()
            self._producer = producer
            self._owned.append(producer)
        if self._store is None:
            self._store = await EventStore.connect(self.settings.db.dsn, max_size=10)
            self._owned.append(self._store)

    async def stop(self) -> None:
        """Close what ``start`` opened (not what was injected)."""
        for part in self._owned:
            await (part.stop() if isinstance(part, EventProducer) else part.close())
        self._owned.clear()


# The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in its thread
# pool, a thread hop per dependency and request (measured: about 1 ms per ingest request).


async def get_gateway(request: Request) -> Gateway:
    gateway = request.app.state.gateway
    if not isinstance(gateway, Gateway):
        raise RuntimeError("not an application made by streams.http.app.create_app")
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def get_settings(gateway: GatewayDep) -> Settings:
    return gateway.settings


async def get_clock(gateway: GatewayDep) -> Clock:
    return gateway.clock


async def get_metrics(gateway: GatewayDep) -> GatewayMetrics:
    return gateway.metrics


async def get_store(gateway: GatewayDep) -> EventStore:
    return gateway.store


async def get_producer(gateway: GatewayDep) -> Producer:
    return gateway.producer


async def get_authenticate(gateway: GatewayDep) -> Authenticate:
    return gateway.authenticate


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]
StoreDep = Annotated[EventStore, Depends(get_store)]
ProducerDep = Annotated[Producer, Depends(get_producer)]
AuthenticateDep = Annotated[Authenticate, Depends(get_authenticate)]


@dataclass(frozen=True)
class StartSession:
    """Check a local account's password and open a session (``streams/services/signin.py``:
    throttled, equal work for unknown and disabled names, argon2 off the event loop,
    audited). Shared by the JSON sign-in and the sign-in page."""

    gateway: Gateway
    client: str

    async def __call__(self, username: str, password: str, resource: str) -> Started | Refused:
        gateway = self.gateway
        return await gateway.sign_in_service().sign_in(
            gateway.store, gateway.clock, username, password, self.client, resource
        )


async def get_start_session(request: Request, gateway: GatewayDep) -> StartSession:
    return StartSession(gateway, client_host(request))


StartSessionDep = Annotated[StartSession, Depends(get_start_session)]


async def principal(request: Request, gateway: GatewayDep) -> Principal:
    """The caller, or 401. A signed-in user's state-changing request must carry the
    session's CSRF token in X-CSRF-Token (a cross-site form cannot read it)."""
    who = await gateway.authenticate(request)
    if who is None:
        raise HTTPException(401, UNAUTHENTICATED["error"], headers={"WWW-Authenticate": "Bearer"})
    if (
        who.kind == "user"
        and request.method not in SAFE_METHODS
        and not hmac.compare_digest(await csrf_sent(request), who.csrf_token or "")
    ):
        raise HTTPException(403, f"missing or wrong {CSRF_HEADER}")
    return who


PrincipalDep = Annotated[Principal, Depends(principal)]


def require(*permissions: Permission) -> Any:
    """A dependency: the caller, if it holds any of ``permissions``; else 403."""

    async def dependency(who: PrincipalDep) -> Principal:
        if not any(who.may(p) for p in permissions):
            raise HTTPException(403, f"{who.role_text or 'this principal'} may not do this")
        return who

    return Depends(dependency)
