"""The gateway's OpenAPI document: what FastAPI cannot infer.

``POST /v1/events`` reads its raw body on purpose (size limits before parsing, NDJSON, each
event validated on its own), so FastAPI sees no body parameter. ``ingest_operation`` is its
``openapi_extra``: the request body is a JSON array (or NDJSON lines) of the contract's
events, whose JSON Schema (``schemas.events.json_schema``) goes into
``components.schemas`` with its ``$defs`` there too; the 200/400/401/403/413 answers; the
bearer key. ``install`` adds the components and security schemes to the document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from schemas.events import json_schema

EVENT_SCHEMA = "RtmEvent"
_PREFIX = "RtmEvent"  # the contract's $defs in components: RtmEventEpisodeStarted, ...


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite(v) for k, v in node.items() if k not in ("$defs", "$schema")}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = "#/components/schemas/" + _PREFIX + ref.removeprefix("#/$defs/")
        if "discriminator" in out and isinstance(out["discriminator"].get("mapping"), dict):
            out["discriminator"] = {
                **out["discriminator"],
                "mapping": {
                    k: _rewrite({"$ref": v})["$ref"]
                    for k, v in out["discriminator"]["mapping"].items()
                },
            }
        return out
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def event_components() -> dict[str, Any]:
    """The contract's JSON Schema as OpenAPI components (refs pointing into components)."""
    schema = json_schema()
    comps = {_PREFIX + name: _rewrite(sub) for name, sub in schema.get("$defs", {}).items()}
    comps[EVENT_SCHEMA] = _rewrite(schema)
    return comps


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
            }
        },
    }


def ingest_operation(max_events: int, max_bytes: int) -> dict[str, Any]:
    events = {
        "type": "array",
        "maxItems": max_events,
        "items": {"$ref": f"#/components/schemas/{EVENT_SCHEMA}"},
    }
    field_error = {
        "type": "object",
        "required": ["field", "message"],
        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
    }
    return {
        "summary": "Post events",
        "description": (
            f"A JSON array or NDJSON (one event per line) of at most {max_events} events and"
            f" {max_bytes} bytes. Each event is validated on its own against the contract"
            " (`rtm schema`): valid ones are produced to Kafka, invalid ones listed in"
            " `rejected` (naming the field) and dead-lettered. An event type outside the"
            " key's scope anywhere in the body refuses the whole request (403)."
        ),
        "security": [{"bearerKey": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": events},
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": "one event (RtmEvent) per line"}
                },
            },
        },
        "responses": {
            "200": {
                "description": "Per-event result",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["accepted", "duplicates", "rejected", "received_at"],
                            "properties": {
                                "accepted": {"type": "integer", "minimum": 0},
                                "duplicates": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "description": "event ids already stored",
                                },
                                "rejected": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["index", "errors"],
                                        "properties": {
                                            "index": {"type": "integer"},
                                            "event_id": {"type": ["string", "null"]},
                                            "errors": {"type": "array", "items": field_error},
                                        },
                                    },
                                },
                                "received_at": {"type": "string", "format": "date-time"},
                            },
                        }
                    }
                },
            },
            "400": _error("The body is not a JSON array or NDJSON of objects"),
            "401": _error("No key or a wrong key: nothing is produced"),
            "403": _error("An event type outside the key's scope: nothing is produced"),
            "413": _error(f"More than {max_events} events or {max_bytes} bytes"),
        },
    }


def install(app: FastAPI) -> None:
    """Wrap ``app.openapi`` to add the event components and the security schemes; routes
    under /v1 (other than sign-in) and /fhir accept a bearer key or a session cookie."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = base()
        comps = doc.setdefault("components", {})
        schemas = comps.setdefault("schemas", {})
        for name, schema in event_components().items():
            if name in schemas:
                raise RuntimeError(f"OpenAPI component {name} defined twice")
            schemas[name] = schema
        comps["securitySchemes"] = {
            "bearerKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "a machine key: rtm_<key id>_<secret>",
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "rtm_session",
                "description": "a signed-in user (POST /v1/session); state-changing"
                " requests also send X-CSRF-Token",
            },
        }
        for path, ops in doc.get("paths", {}).items():
            for method, op in ops.items():
                if path.startswith(("/v1/", "/fhir/")) and (method, path) != (
                    "post",
                    "/v1/session",
                ):
                    op.setdefault("security", [{"bearerKey": []}, {"session": []}])
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
