"""OpenAPI of the gateway (issue 12 part 8): POST /v1/events documents its request body
(the contract's JSON Schema), its answers and the bearer key; the document validates."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.events import validate_event
from streams.http.app import create_app
from streams.settings import Settings
from tests.unit.test_schemas import base, episode


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def test_the_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    validate(doc)  # raises on an invalid document
    broken = {**doc, "paths": {"/v1/events": {"post": {"responses": "nope"}}}}
    with pytest.raises(OpenAPIValidationError):
        validate(broken)  # negative control


def test_ingest_documents_body_answers_and_bearer_security(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/v1/events"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["type"] == "array" and body["maxItems"] == Settings().gateway.max_batch_events
    assert body["items"] == {"$ref": "#/components/schemas/RtmEvent"}
    assert "application/x-ndjson" in op["requestBody"]["content"]
    assert set(op["responses"]) == {"200", "400", "401", "403", "413"}
    assert op["security"] == [{"bearerKey": []}]
    assert doc["components"]["securitySchemes"]["bearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a machine key: rtm_<key id>_<secret>",
    }
    # every other /v1 route says how to authenticate, sign-in excepted
    for path, ops in doc["paths"].items():
        for method, o in ops.items():
            if path.startswith("/v1/") and (method, path) != ("post", "/v1/session"):
                assert o.get("security"), (method, path)


def _validator(doc: dict[str, Any]) -> Any:
    import jsonschema

    root = {**doc, "$ref": "#/components/schemas/RtmEvent"}
    return jsonschema.Draft202012Validator(root)


@pytest.mark.parametrize(
    "event",
    [
        base(),
        episode(),
        base(type="exercise.completed", score=None, exercise_id="bridge"),
    ],
)
def test_documented_schema_accepts_what_the_gateway_accepts(
    doc: dict[str, Any], event: dict[str, Any]
) -> None:
    event = {k: v for k, v in event.items() if v is not None}
    assert not isinstance(validate_event(event), list)
    assert list(_validator(doc).iter_errors(event)) == []


@pytest.mark.parametrize(
    "over",
    [
        {"type": "pain.unknown"},
        {"score": 11},
        {"occurred_at": "1735689600"},
        {"patient_id": "bad id"},
        {"extra": 1},
    ],
)
def test_documented_schema_refuses_what_the_gateway_refuses(
    doc: dict[str, Any], over: dict[str, Any]
) -> None:
    event = {**base(), **over}
    assert isinstance(validate_event(event), list)
    assert list(_validator(doc).iter_errors(event)) != []


def test_acting_on_an_alert_documents_the_disposition_and_the_snooze(doc: dict[str, Any]) -> None:
    """The acknowledgement's body requires a disposition from the fixed list (issue 17);
    the snooze takes a duration and a reason."""
    schemas = doc["components"]["schemas"]
    ack = doc["paths"]["/v1/alerts/{alert_id}/ack"]["post"]
    assert ack["requestBody"]["required"] is True
    body = schemas["AckBody"]
    assert body["required"] == ["disposition"]
    assert body["properties"]["disposition"]["enum"] == [
        "contacted_patient",
        "left_message",
        "referred_physician",
        "sent_to_ed",
        "program_changed",
        "no_action_needed",
    ]
    snooze = doc["paths"]["/v1/alerts/{alert_id}/snooze"]["post"]
    assert {"200", "409", "422"} <= set(snooze["responses"])
    assert sorted(schemas["SnoozeBody"]["required"]) == ["duration", "reason"]
