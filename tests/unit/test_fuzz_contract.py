"""Fuzzing the event contract and the gateway's per-event judgement (issue 11 part 2).

Hypothesis over ``validate_event`` / ``parse_event_json`` and over whole request bodies
posted to the gateway in-process (Kafka and the database faked: tests/unit/test_gateway.py;
the same bodies through the real services are in tests/integration/test_fuzz.py).

Properties: nothing raises; whatever the contract accepts re-encodes and re-parses to the
same event, without NUL and with timestamps the contract's pattern allows; the gateway
never answers 5xx, loses no valid neighbour of a bad item, produces nothing the contract
rejects, and dead-letters every refused item as a JSON record.

CI runs a bounded sample (RTM_FUZZ_EXAMPLES, default 150 per property, under a minute
in all); ``RTM_FUZZ_EXAMPLES=10000`` is the on-demand run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from rtm.simulate import simulate
from schemas.events import (
    READINESS_FACT_TYPES,
    TIMESTAMP_FIELDS,
    TIMESTAMP_PATTERN,
    Event,
    dump_event,
    parse_event_json,
    validate_event,
)
from streams.http.app import create_app
from streams.http.deps import Deps
from streams.settings import Settings
from tests.unit.test_gateway import KEY, FakeProducer, FakeStore, _as_app_key
from tests.unit.test_readiness_contract import fact


def _accepted(result: Event | list[Any]) -> bool:
    return not isinstance(result, list)


EXAMPLES = int(os.environ.get("RTM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_TS = re.compile(TIMESTAMP_PATTERN).fullmatch

# Valid events of every type the patient-app key posts (and the others, for the contract).
BASE = [e for e in simulate(8, 40, seed=5) if _accepted(validate_event(e))]
# and one of each claim-readiness fact (issue 20), which the simulator does not send
BASE += [fact(t) for t in sorted(READINESS_FACT_TYPES)]
APP_TYPES = {"exercise.completed", "pain.reported", "symptom.reported"}
APP_BASE = [e for e in BASE if e["type"] in APP_TYPES]
assert len({e["type"] for e in BASE}) >= 4 and len(APP_BASE) > 10

TIMESTAMPS = st.sampled_from(
    [
        1735689600,
        1735689600.5,
        "1735689600",
        " 1735689600 ",
        "1.7e9",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "1999-12-31T23:59:59Z",
        "2101-01-01T00:00:00Z",
        "2026-11-03T10:00:00",
        "2026-11-03 10:00Z",
        "2026-11-03T10:00:00+0000",
        "2026-02-30T10:00:00Z",
        "2026-11-03T25:00:00Z",
        "2026-11-03T10:00:00\x00Z",
        "2026-11-03",
        "",
        "2026-11-03T10:00:00Z",  # valid: the property must hold for these too
        "2100-12-31T23:59:59+14:00",
        "2000-01-01T00:00:00-12:00",
    ]
)


def _deep(depth: int, leaf: Any = "x") -> Any:
    v: Any = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


def _deep_item(depth: int) -> bytes:
    """An event-ish object nested ``depth`` levels, as JSON text (orjson writes 255 at most)."""
    return b'{"type":"pain.reported","x":' + b"[" * depth + b'"x"' + b"]" * depth + b"}"


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["\x00", "a\x00b", "\ufeff", "\u2028", "é" * 3, "x" * 70_000])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
NASTY = (
    JSON
    | TIMESTAMPS
    | st.integers(min_value=200, max_value=1500).map(_deep)
    | st.sampled_from([float("nan"), float("inf"), -float("inf"), 10**30, -(10**30)])
)


@st.composite
def mutated(draw: st.DrawFn, base: list[dict[str, Any]] = BASE) -> dict[str, Any]:
    """A valid event with one to three fields replaced, removed or added."""
    ev = dict(draw(st.sampled_from(base)))
    for _ in range(draw(st.integers(1, 3))):
        keys = sorted(ev)
        field = draw(st.sampled_from(keys) | st.text(min_size=1, max_size=12))
        action = draw(st.sampled_from(["set", "set", "timestamp", "drop"]))
        if action == "drop":
            ev.pop(field, None)
        elif action == "timestamp":
            ev[draw(st.sampled_from(sorted(TIMESTAMP_FIELDS)))] = draw(TIMESTAMPS)
        else:
            ev[field] = draw(NASTY)
    return ev


def _check_accepted(obj: dict[str, Any], event: Event) -> None:
    """What the contract accepts is what the worker can store and read back."""
    raw = dump_event(event)
    assert b"\\u0000" not in raw and b"\x00" not in raw
    again = parse_event_json(raw)
    assert again == event
    assert _accepted(validate_event(orjson.loads(raw)))
    for name in TIMESTAMP_FIELDS & obj.keys():
        value = obj[name]
        if value is None and name != "occurred_at":
            assert getattr(event, name) is None  # null for an optional stamp: absent
            continue
        assert isinstance(value, str) and _TS(value), (name, value)
        stamp = getattr(event, name)
        assert isinstance(stamp, dt.datetime)
        assert stamp.utcoffset() is not None
        assert 2000 <= stamp.year <= 2100


@FUZZ
@given(obj=mutated())
def test_the_contract_accepts_only_what_round_trips(obj: dict[str, Any]) -> None:
    result = validate_event(obj)
    if not isinstance(result, list):
        _check_accepted(obj, result)
    else:
        assert result and all(e.message for e in result)  # every refusal says why


@FUZZ
@given(value=NASTY)
def test_any_json_value_is_judged_never_raises(value: Any) -> None:
    result = validate_event(value)
    assert isinstance(result, list) or isinstance(value, dict)


@FUZZ
@given(raw=st.binary(max_size=300) | JSON.map(lambda v: orjson.dumps(v, default=str)))
def test_parse_event_json_raises_only_validation_errors(raw: bytes) -> None:
    from pydantic import ValidationError

    try:
        event = parse_event_json(raw)
    except ValidationError:
        return
    assert _accepted(validate_event(orjson.loads(raw)))
    assert parse_event_json(dump_event(event)) == event


# --- the gateway, in-process ----------------------------------------------------------------

BROKEN_LINES = st.sampled_from(
    [
        b'{"event_id": "x",',
        b"\xff\xfe\xfd",
        b'{"s": "\xc3\x28"}',
        b'{"s": "\\ud800"}',
        b"[" * 2000,
        b"{" * 300 + b"}" * 300,
        b"NaN",
        b'{"score": NaN}',
        b'{"score": Infinity}',
        b"\x00\x00",
        b'"just a string"',
        b"12345678901234567890123",
        b"null",
    ]
)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/x-ndjson",
        "application/jsonl; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "multipart/form-data; boundary=x",
        "\x7f/\x7f",
        "ndjson" + "a" * 2000,
    ]
)


def _app(tmp: Path) -> tuple[Any, FakeProducer]:
    producer = FakeProducer()
    app = create_app(
        Settings(state_dir=tmp, max_future_skew_s=600.0),
        Deps(
            producer=producer,
            store=FakeStore(),  # type: ignore[arg-type]
            registry=CollectorRegistry(),
            authenticate=_as_app_key,
        ),
    )
    return app, producer


async def _post(app: Any, content: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        return await client.post("/v1/events", content=content, headers=headers)


_TMP = Path(os.environ.get("TMPDIR", "/tmp")) / "rtm-fuzz-gateway"


@FUZZ
@given(
    bad=st.lists(
        mutated(APP_BASE)
        | NASTY.map(lambda v: {"raw": v})
        | BROKEN_LINES
        # decodable (orjson reads 1,024 levels) but too deep to re-encode (255)
        | st.integers(256, 1000).map(_deep_item),
        max_size=4,
    ),
    ndjson=st.booleans(),
    content_type=CONTENT_TYPES,
    extra_headers=st.dictionaries(
        st.sampled_from(["X-Request-Id", "Content-Encoding", "Transfer-Encoding", "Accept"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
        max_size=2,
    ),
)
def test_the_gateway_never_fails_a_batch_for_its_bad_items(
    bad: list[Any], ndjson: bool, content_type: str | None, extra_headers: dict[str, str]
) -> None:
    now = dt.datetime.now(dt.UTC)
    tag = os.urandom(4).hex()
    good = []
    for i, base in enumerate(APP_BASE[:2]):
        ev = dict(base, event_id=f"fz-{tag}-{i}", occurred_at=now.isoformat())
        good.append(ev)
    items: list[bytes] = [orjson.dumps(good[0])]
    for b in bad:
        if isinstance(b, bytes):
            items.append(b)
        else:
            obj = b.get("raw", b) if isinstance(b, dict) and b.keys() == {"raw"} else b
            try:
                items.append(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY))
            except (TypeError, orjson.JSONEncodeError):
                items.append(orjson.dumps(str(obj)[:1000]))
    items.append(orjson.dumps(good[1]))
    if ndjson:
        content = b"\n".join(i.replace(b"\n", b" ") for i in items)
        ctype = "application/x-ndjson"
    else:
        content = b"[" + b",".join(items) + b"]"
        ctype = content_type or "application/json"
        if "nd" in ctype or "jsonl" in ctype:
            ctype = "application/json"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": ctype, **extra_headers}
    headers.pop("Transfer-Encoding", None)  # httpx frames the body itself
    app, producer = _app(_TMP)
    resp = asyncio.run(_post(app, content, headers))
    assert resp.status_code < 500, resp.text
    if len(content) > 1024 * 1024:
        assert resp.status_code == 413
        return
    for e in producer.events:  # nothing produced that the contract rejects
        assert _accepted(validate_event(orjson.loads(dump_event(e))))
    for _, value in producer.dead:
        record = orjson.loads(value)
        assert record["errors"] and record["stage"] == "gateway"
    if ndjson:
        assert resp.status_code == 200, resp.text
    if resp.status_code == 200:
        body = resp.json()
        ids = {e.event_id for e in producer.events}
        assert {g["event_id"] for g in good} <= ids, body["rejected"][:3]
        lines = len(items) if ndjson else None
        if lines is not None:
            assert body["accepted"] + len(body["rejected"]) + len(body["duplicates"]) == lines
        assert len(producer.dead) == len(body["rejected"])
    else:  # an unreadable JSON array is refused whole: nothing produced, the client told
        assert resp.status_code == 400, resp.text
        assert not producer.events and not producer.dead
