"""A draft pathway version's replay on the manager's page folds the organisation's events in
the gateway: past ``MAX_FOLD_EVENTS`` it refuses before reading a single payload (a large
organisation cannot hold the gateway's memory and CPU). The report reads the worker's stored
outcome rows and folds nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from pathways.model import DEFAULT_PATHWAY, builtin
from streams.services import outcomes
from streams.services.outcomes import MAX_FOLD_EVENTS, TooManyEvents, draft_diff


class Conn:
    """Answers the count; any other query fails the test (nothing else may be read)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.fetched: list[str] = []

    async def fetchval(self, sql: str, *args: Any) -> int:
        assert sql.startswith("SELECT count(*) FROM events"), sql
        return self.count

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.fetched.append(sql)
        if "FROM events" in sql:
            raise AssertionError("payloads read past the bound")
        return []


async def test_past_the_bound_the_replay_refuses_before_reading_the_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_context(conn: Any, org_id: str, as_of: dt.datetime) -> Any:
        return outcomes.Context(builtin(), frozenset(), as_of)

    monkeypatch.setattr(outcomes, "context", no_context)
    conn = Conn(MAX_FOLD_EVENTS + 1)
    with pytest.raises(TooManyEvents) as exc:
        now = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
        draft = builtin()[DEFAULT_PATHWAY]
        await draft_diff(conn, "clinic-a", now, DEFAULT_PATHWAY, draft)  # type: ignore[arg-type]
    assert exc.value.count == MAX_FOLD_EVENTS + 1
    assert conn.fetched == []
