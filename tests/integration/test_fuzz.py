"""Fuzzing the real gateway and worker (issue 11 part 2).

- schemathesis generates requests for every operation of the gateway's OpenAPI document
  (``POST /v1/events`` documents its body: streams/http/openapi.py), valid and invalid ones,
  with the development key: no answer may be a 5xx;
- hypothesis posts batches of two valid events around bad items (deeply nested, huge
  strings, NUL characters, broken UTF-8 and NDJSON lines, timestamps as numbers, epoch
  strings, years 1 and 9999) through the real gateway, Kafka and worker: every valid
  neighbour is stored, nothing the contract rejects is stored, and neither the gateway nor
  the worker crashes or halts.

CI runs a bounded sample (RTM_FUZZ_EXAMPLES, default 100 cases per test and mode); the on-demand
run is ``RTM_FUZZ_EXAMPLES=10000``.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from schemas.events import validate_event
from streams.settings import Settings
from tests.integration.conftest import Stack, run_in_thread, wait_for
from tests.unit.test_fuzz_contract import APP_BASE, BROKEN_LINES, NASTY, _deep_item, mutated

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("RTM_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _alive(stack: Stack) -> None:
    assert stack.gateway is not None and stack.gateway.proc.poll() is None, "gateway exited"
    for w in stack.workers:
        assert w.proc.poll() is None, f"worker exited; see {w.log_path}"


def test_schemathesis_finds_no_server_error(stack: Stack) -> None:
    """POST /v1/events gets RTM_FUZZ_EXAMPLES cases per generation mode, every other
    operation a twentieth of that (at least 5)."""
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    # the live stream never ends: not a request/answer operation to fuzz
    schema = schema.exclude(path="/ui/stream")
    auth = {"Authorization": f"Bearer {stack.key}"}
    seen: dict[tuple[str, int], int] = {}
    failures: list[str] = []

    def call(case: Any) -> None:
        headers = dict(auth)  # over whatever key schemathesis made up: reach the handlers
        try:
            resp = case.call(base_url=stack.url, headers=headers, timeout=30)
        except Exception as exc:  # a dropped connection is a crash too
            failures.append(f"{case.method} {case.path}: {type(exc).__name__}: {exc}")
            return
        key = (f"{case.method} {case.operation.path}", resp.status_code)
        seen[key] = seen.get(key, 0) + 1
        if resp.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} {case.query} -> {resp.status_code}:"
                f" {resp.text[:200]}"
            )

    for result in schema.get_all_operations():
        op = result.ok()
        n = EXAMPLES if op.path == "/v1/events" else max(5, EXAMPLES // 20)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = op.as_strategy(mode)

            @settings(FUZZ, max_examples=n)
            @given(case=strategy)
            def run(case: Any) -> None:
                call(case)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, op.path
    total = sum(seen.values())
    print(f"schemathesis: {total} requests, answers {sorted(seen.items())}")
    assert not failures, failures[:10]
    assert seen.get(("POST /v1/events", 200), 0) > 0, seen
    _alive(stack)


def _good(prefix: str, n: int) -> dict[str, Any]:
    base = APP_BASE[n % len(APP_BASE)]
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return dict(
        base,
        event_id=f"{prefix}-g{n}",
        patient_id=f"{prefix}-p{n % 7}",
        occurred_at=now.isoformat(),
    )


def _encode(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    try:
        return orjson.dumps(item)
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(str(item)[:2000])


async def _stored_since(settings: Settings, since: dt.datetime) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        rows = await conn.fetch("SELECT event_id, payload FROM events WHERE stored_at >= $1", since)
    finally:
        await conn.close()
    return [{"event_id": r["event_id"], "payload": orjson.loads(r["payload"])} for r in rows]


async def test_bad_items_never_cost_a_valid_neighbour_or_a_process(
    stack: Stack, base_settings: Settings
) -> None:
    prefix = "fz" + uuid.uuid4().hex[:8]
    since = dt.datetime.now(dt.UTC)
    expected: set[str] = set()
    counter = [0]
    statuses: dict[int, int] = {}

    @FUZZ
    @given(
        bad=st.lists(
            mutated(APP_BASE)
            | NASTY.map(lambda v: {"raw": v})
            | BROKEN_LINES
            | st.integers(256, 1000).map(_deep_item),
            min_size=1,
            max_size=3,
        ),
        ndjson=st.booleans(),
    )
    def run(bad: list[Any], ndjson: bool) -> None:
        counter[0] += 2
        good = [_good(prefix, counter[0]), _good(prefix, counter[0] + 1)]
        items = [
            _encode(good[0]),
            *(_encode(b["raw"] if isinstance(b, dict) and b.keys() == {"raw"} else b) for b in bad),
            _encode(good[1]),
        ]
        if ndjson:
            body = b"\n".join(i.replace(b"\n", b" ") for i in items)
            ctype = "application/x-ndjson"
        else:
            body, ctype = b"[" + b",".join(items) + b"]", "application/json"
        resp = httpx.post(
            f"{stack.url}/v1/events",
            content=body,
            headers={"Authorization": f"Bearer {stack.key}", "Content-Type": ctype},
            timeout=30,
        )
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        assert resp.status_code < 500, resp.text[:500]
        if ndjson and len(body) <= stack.settings.gateway.max_body_bytes:
            assert resp.status_code == 200, resp.text[:500]
        if resp.status_code == 200:
            expected.update(g["event_id"] for g in good)

    run()
    print(f"fuzzed batches: {sum(statuses.values())}, answers {statuses}")
    assert expected, statuses

    async def all_stored() -> bool:
        got = {r["event_id"] for r in await _stored_since(base_settings, since)}
        return expected <= got

    await wait_for(all_stored, timeout=120, what="every valid neighbour stored")
    time.sleep(2)  # anything else the worker would store has arrived by now
    stored = await _stored_since(base_settings, since)
    wrong = [r["event_id"] for r in stored if isinstance(validate_event(r["payload"]), list)]
    assert not wrong, wrong[:5]
    _alive(stack)
    health = f"http://{stack.settings.worker.web_host}:{stack.settings.worker.web_port}"
    ready = run_in_thread(_get(f"{health}/readyz"))
    assert ready.status_code == 200, ready.text  # consuming, not halted by dead letters


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)
