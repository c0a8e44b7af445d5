"""The gateway's composition: ``create_app(settings, deps)`` builds the FastAPI application
from the parts in ``streams.http.deps`` (a ``Gateway``), the middleware, the routers of
``streams.http.routes`` (the JSON API, one module per resource) and of
``streams.http.pages`` (the dashboard, one module per page). Nothing is decided here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from streams.http import openapi
from streams.http.auth import reject_unknown_query
from streams.http.denials import DenialAudit
from streams.http.deps import Deps, Gateway, principal
from streams.http.hardening import Hardening
from streams.http.pages import (
    assets,
    audit,
    home,
    patient,
    programs,
    sign_in,
    stream,
    templates,
    timelog,
    worklist,
)
from streams.http.pages import billing as billing_pages
from streams.http.pages import intakes as intake_pages
from streams.http.pages import operator as operator_page
from streams.http.pages import outcomes as outcomes_pages
from streams.http.pages import summary as summary_page
from streams.http.pages.common import PageError, hardening_page, http_error, page_error
from streams.http.routes import alerts, billing, events, fhir, health, intakes, session
from streams.settings import Settings

API_ROUTERS = (
    alerts.router,
    billing.router,
    fhir.router,
    intakes.router,
)  # each: the caller, or 401
PAGE_ROUTERS = (
    home.router,
    sign_in.router,
    worklist.router,
    patient.router,
    programs.router,
    templates.router,
    timelog.router,
    stream.router,
    audit.router,
    billing_pages.router,
    intake_pages.router,
    summary_page.router,
    operator_page.router,
    outcomes_pages.router,
)


def create_app(settings: Settings, deps: Deps | None = None) -> FastAPI:
    """The gateway. Its producer and store are opened on startup unless ``deps`` gives
    them (and the authenticator, the registry and the clock: in-process tests inject a
    principal, fakes of Kafka and the database, a ``FixedClock``)."""
    gateway = Gateway(settings, deps or Deps())
    # The docs UIs are FastAPI's CDN pages: off; in dev streams.http.pages.assets serves
    # Swagger UI from the vendored, pinned assets.
    app = FastAPI(
        title="RTM ingest gateway and clinician API",
        lifespan=partial(_lifespan, gateway),
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway  # read back by streams.http.deps only
    # requests counted by route and status (500s included), NUL refused, security headers
    tls = settings.gateway.tls_certfile is not None
    app.add_middleware(
        Hardening, requests=gateway.metrics.requests, tls=tls, page_answer=hardening_page
    )
    app.include_router(health.router)
    app.include_router(session.router)
    openapi.install(app)
    app.include_router(events.router(settings))
    for router in API_ROUTERS:
        app.include_router(router, dependencies=[Depends(principal), Depends(reject_unknown_query)])
    # the dashboard: HTML pages, the live stream, its error pages, docs and static files
    for router in PAGE_ROUTERS:
        app.include_router(router)
    app.add_exception_handler(PageError, page_error)
    # under /ui: HTML error pages with the navigation; the JSON API keeps FastAPI's JSON
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, http_error)
    app.include_router(assets.router(settings))
    app.mount(assets.STATIC_PATH, assets.static_files(), name="ui-static")
    app.add_middleware(DenialAudit, gateway=gateway)  # refused patient reads leave an audit row
    return app


@asynccontextmanager
async def _lifespan(gateway: Gateway, app: FastAPI) -> AsyncIterator[None]:
    """Open the producer and the store (those not injected) for the app's lifetime."""
    await gateway.start()
    try:
        yield
    finally:
        await gateway.stop()
