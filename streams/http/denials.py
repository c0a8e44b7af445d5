"""Refused attempts on patient data leave an audit row (issue 16, item 5).

An ASGI middleware on the gateway: when a route that names a patient (``{patient_id}``,
FHIR's ``patient=``) or an alert (``{alert_id}``: acknowledgements) answers 403 or 404 to
a known principal, it writes one ``denied`` row before the answer leaves, in the
principal's organisation:
- ``resource`` is the route's template (``GET /v1/patients/{patient_id}/pain``);
- ``patient_ids`` names the patient only when the patient belongs to the principal's own
  organisation (its admins may see that id; another organisation's patient, or an unknown
  id, is not written into this organisation's log, so the log is no oracle either);
- ``detail``: the status, and ``suppressed``, the attempts the rate limit swallowed
  since the previous row.
A 404 for a target the principal may see (e.g. a patient in scope without billing data)
is not a denial and leaves no row. At most one row per actor, route and target per
``RTM_AUDIT_DENIED_WINDOW_S`` (a script probing ids writes one row per id and window,
with the count of the rest), kept in ``audit_denials`` so several gateway processes share
it. If the row cannot be written the answer still goes out (logged without ids).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streams.access import Scope as AccessScope
from streams.db.access import (
    audit_principal,
    denial_due,
    in_scope,
    patient_known,
    prune_denials,
)
from streams.db.alerts import alert_in_scope
from streams.http.auth import remembered
from streams.http.deps import Gateway

log = logging.getLogger(__name__)
DENIED_STATUSES = frozenset({403, 404})


def denial_target(scope: Scope) -> tuple[str, str] | None:
    """("patient" | "alert", id) that a request names, or None for other routes."""
    params: dict[str, Any] = scope.get("path_params") or {}
    if isinstance(params.get("patient_id"), str):
        return "patient", params["patient_id"]
    if isinstance(params.get("alert_id"), str):
        return "alert", params["alert_id"]
    if getattr(scope.get("route"), "path", None) == "/fhir/Observation":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        patient = (query.get("patient") or [""])[0].removeprefix("Patient/")
        return "patient", patient
    return None


class DenialAudit:
    """The middleware; ``gateway`` gives it the settings, the clock and the store."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self._written = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_and_audit(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in DENIED_STATUSES:
                try:
                    await self._audit(scope, int(message["status"]))
                except Exception as exc:  # the answer still goes out
                    log.warning("denied attempt not audited: %s", type(exc).__name__)
            await send(message)

        await self.app(scope, receive, send_and_audit)

    async def _audit(self, scope: Scope, status: int) -> None:
        who = remembered(scope)
        target = denial_target(scope)
        if who is None or target is None:
            return
        settings, clock = self.gateway.settings, self.gateway.clock
        route = getattr(scope.get("route"), "path", scope.get("path", ""))
        resource = f"{scope['method']} {route}"
        kind, ident = target
        async with self.gateway.store.acquire() as conn:
            patients: list[str] = []
            detail: dict[str, Any] = {"status": status}
            if kind == "patient" and ident:
                if status == 404 and await in_scope(conn, who.scope(), ident):
                    return  # the principal may see this patient: not found, not denied
                if await patient_known(conn, who.org_id, ident):
                    patients = [ident]  # a patient of the caller's organisation
            elif kind == "alert":
                if status == 404 and await alert_in_scope(conn, who.scope(), ident):
                    return
                alert = await alert_in_scope(conn, AccessScope(who.org_id, None), ident)
                if alert is not None:
                    patients = [alert.patient_id]
                    detail["alert_id"] = ident
            now = clock.now()
            window = dt.timedelta(seconds=settings.gateway.audit_denied_window_s)
            key = hashlib.sha256(f"{who.actor}\n{resource}\n{kind}:{ident}".encode()).digest()
            async with conn.transaction():
                suppressed = await denial_due(conn, key, now, window)
                if suppressed is None:
                    return
                if suppressed:
                    detail["suppressed"] = suppressed
                await audit_principal(conn, who, "denied", resource, patients, detail)
            self._written += 1
            if self._written % 200 == 0:
                await prune_denials(conn, now - max(window, dt.timedelta(minutes=10)))
