"""The care pathway through the real gateway, Kafka, worker and PostgreSQL (issue 19, Done
when): a streamed cohort's tasks, decisions and outcome rows, as the worker's refresh keeps
them (``streams/services/refresh.py``), equal `rtm pathways evaluate` and `rtm outcomes
episodes` on the same file as of the same instant; a version published while episodes run
does not change theirs; an overdue task and a step-up reach the clinician's webhook (signed).
(The report over the rows: test_outcomes_pages.py.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner

from pathways.model import builtin
from rtm.bench.receiver import Receiver
from rtm.cli import main
from streams.access import Scope
from streams.db.deliveries import remove_webhook, set_webhook
from streams.db.outcome_rows import EpisodeOutcome, episode_outcomes, open_tasks
from streams.settings import Settings
from tests.conftest import EventFactory
from tests.integration.conftest import running_stack, wait_for
from tests.unit.pathway_events import generated_cohort

pytestmark = pytest.mark.integration

ID_FIELDS = ("event_id", "patient_id", "episode_id", "session_id", "clinician_id")


def shifted(events: list[dict[str, Any]], prefix: str, days: int) -> list[dict[str, Any]]:
    """The events ``days`` later, their ids (and the clinician) prefixed for this test."""
    out = []
    for e in events:
        e = dict(e)
        at = dt.datetime.fromisoformat(e["occurred_at"]) + dt.timedelta(days=days)
        e["occurred_at"] = at.isoformat()
        for f in ID_FIELDS:
            if f in e:
                e[f] = f"{prefix}-{e[f]}"
        out.append(e)
    return out


def day0_ago(n: int) -> int:
    """The shift that puts the cohort's day 0 (2026-01-05) ``n`` days before today."""
    return (dt.date.today() - dt.timedelta(days=n) - dt.date(2026, 1, 5)).days


async def mine(db: asyncpg.Connection, clinician_id: str) -> list[EpisodeOutcome]:
    return [o for o in await episode_outcomes(db, "default") if o.row.clinician_id == clinician_id]


async def rtm(*args: str) -> tuple[int, list[Any]]:
    """Exit code and JSON lines of an rtm command (other lines: as a string)."""
    res = await asyncio.to_thread(CliRunner().invoke, main, list(args))
    lines = res.stdout.splitlines()
    return res.exit_code, [json.loads(x) if x.startswith("{") else x for x in lines]


async def test_a_streamed_cohort_equals_the_offline_commands(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory, tmp_path: Path
) -> None:
    events = shifted(generated_cohort(19, 12), factory.prefix, day0_ago(60))
    with running_stack(base_settings, tick_interval_s=0) as stack:
        for k in range(0, len(events), 50):  # in batches, arrival order as the file's
            assert stack.post(events[k : k + 50]).json()["accepted"] == len(events[k : k + 50])

        async def all_refreshed() -> bool:
            newest = {e["event_id"] for e in events[-50:]}
            stored = await db.fetchval(
                "SELECT count(*) FROM events WHERE org_id = 'default' AND event_id = ANY($1)",
                list(newest),
            )
            waiting = await db.fetchval(  # this cohort's patients (others' may wait longer)
                "SELECT count(*) FROM refresh_queue WHERE org_id = 'default'"
                " AND patient_id LIKE $1",
                factory.prefix + "%",
            )
            return stored == len(newest) and waiting == 0

        await wait_for(all_refreshed, what="the events stored and their patients refreshed")

    stored = await mine(db, f"{factory.prefix}-c-1")
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({**e, "org_id": "default"}) + "\n" for e in events))
    by_instant: dict[dt.datetime, list[str]] = {}
    for o in stored:
        by_instant.setdefault(o.as_of, []).append(o.row.episode_id)
    offline_rows: dict[str, dict[str, Any]] = {}
    offline_paths: dict[str, dict[str, Any]] = {}
    for instant, ids in by_instant.items():
        code, rows = await rtm(
            "outcomes", "episodes", "--events", str(path), "--as-of", instant.isoformat()
        )
        assert code == 0
        offline_rows.update({r["episode_id"]: r for r in rows if r["episode_id"] in ids})
        code, rows = await rtm(
            "pathways", "evaluate", "--events", str(path), "--as-of", instant.isoformat()
        )
        offline_paths.update({r["episode_id"]: r for r in rows if r["episode_id"] in ids})
    assert len(stored) == 12
    for o in stored:
        assert o.row.output() == offline_rows[o.row.episode_id]
        want = offline_paths[o.row.episode_id]
        assert (list(o.tasks), list(o.decisions)) == (want["tasks"], want["decisions"])
        assert o.row.pathway_key == "msk-default@1"
    decisions = {d["decision"] for o in stored for d in o.decisions}
    assert {"step_up", "end"} <= decisions, decisions  # the cohort exercises the engine

    # "My tasks" (episode_open_tasks, kept with the rows): the open and overdue tasks of `rtm
    # pathways evaluate` for this clinician's episodes, overdue first, each with its
    # episode's step-up reason
    tasks = await open_tasks(db, Scope("default", frozenset({f"{factory.prefix}-c-1"})), 1000)
    want_tasks: list[tuple[Any, ...]] = []
    for eid, path_row in offline_paths.items():
        reason = next(
            (d["reason"] for d in path_row["decisions"] if d["decision"] == "step_up"), None
        )
        want_tasks += [
            (eid, t["kind"], t["due_on"], t["status"], reason)
            for t in path_row["tasks"]
            if t["status"] in ("open", "overdue")
        ]
    got_tasks = [
        (
            t["episode_id"],
            t["kind"],
            t["due_on"] and t["due_on"].isoformat(),
            t["status"],
            t["step_up_reason"],
        )
        for t in tasks
    ]
    assert want_tasks and sorted(got_tasks) == sorted(want_tasks)
    statuses = [t["status"] for t in tasks]
    assert statuses == sorted(statuses, key=lambda s: s != "overdue")


async def test_an_overdue_task_and_a_step_up_reach_the_clinicians_webhook(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory
) -> None:
    """Day 0 thirty days ago: baseline PSFS 3 (day 1), pain 8 (day 22), week-4 PSFS 3.3
    (day 26): a step-up on day 26; its in-person visit, due day 29, and the week-4 review,
    due day 28, are overdue today."""
    receiver = Receiver("ok")
    clinician = f"{factory.prefix}-pt"
    await set_webhook(db, clinician, receiver.url, "s-path")
    p = factory.patient(1)
    day0 = dt.date.today() - dt.timedelta(days=30)

    def at(day: int, hour: int = 10) -> str:
        return f"{day0 + dt.timedelta(days=day)}T{hour:02d}:00:00+00:00"

    def form(day: int, *values: int) -> dict[str, Any]:
        answers = {f"a{i}": v for i, v in enumerate(values, 1)}
        return {
            "event_id": f"{p}-f{day}",
            "schema_version": 1,
            "type": "assessment.completed",
            "patient_id": p,
            "occurred_at": at(day),
            "instrument": "psfs",
            "answers": answers,
        }

    try:
        # the worker's timer ticks every second: time moves for a pathway by events and ticks
        with running_stack(base_settings, tick_interval_s=1) as stack:
            history = [
                factory.episode_started(p, at=at(0, 9), clinician_id=clinician, timezone="UTC"),
                form(1, 3, 3, 3),
                factory.pain(p, 8, at(22)),
                form(26, 3, 3, 4),
            ]
            assert stack.post(history).json()["accepted"] == 4

            def kinds() -> dict[str, list[str]]:
                out: dict[str, list[str]] = {}
                for _, change in receiver.delivered():
                    a = change["alert"]
                    out.setdefault(a["kind"], []).append(a["details"][0] if a["details"] else "")
                return out

            async def arrived() -> bool:
                k = kinds()
                return "step_up" in k and len(k.get("task_overdue", [])) >= 2

            await wait_for(arrived, timeout=60, what="the pathway alerts at the webhook")
            got = kinds()
            assert got["step_up"] == ["no_mcid_pain_7"]
            assert sorted(got["task_overdue"]) == ["in_person_visit", "week4_review"]
            for _, change in receiver.delivered():
                if change["alert"]["kind"] in ("step_up", "task_overdue"):
                    assert change["alert"]["clinician_id"] == clinician
                    assert change["alert"]["severity"] == (
                        "high" if change["alert"]["kind"] == "step_up" else "medium"
                    )
            assert receiver.bad_signatures == 0
    finally:
        await remove_webhook(db, clinician)
        receiver.close()


async def test_a_version_published_later_does_not_change_running_episodes(
    base_settings: Settings, db: asyncpg.Connection, factory: EventFactory, tmp_path: Path
) -> None:
    pid = f"itest-{uuid.uuid4().hex[:8]}"
    v1 = builtin()["msk-default@1"].model_dump(mode="json")
    v1["id"] = pid
    first, second = tmp_path / "v1.json", tmp_path / "v2.json"
    first.write_text(json.dumps(v1))
    second.write_text(
        json.dumps({**v1, "version": 2, "step_up": {**v1["step_up"], "pain_at_least": 6}})
    )
    code, _ = await rtm("pathways", "publish", str(first), "--org", "default")
    assert code == 0
    a, b = factory.patient(1), factory.patient(2)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    with running_stack(base_settings, tick_interval_s=0) as stack:
        running = factory.episode_started(
            a, at=start.isoformat(), pathway={"id": pid, "version": 1}, episode_id=f"{a}-ep"
        )
        assert stack.post([running]).json()["accepted"] == 1

        async def row_of(episode_id: str) -> str | None:
            key: str | None = await db.fetchval(
                "SELECT pathway || '@' || version FROM episode_outcomes"
                " WHERE org_id = 'default' AND episode_id = $1",
                episode_id,
            )
            return key

        async def a_on_v1() -> bool:
            return await row_of(f"{a}-ep") == f"{pid}@1"

        await wait_for(a_on_v1, what="the running episode's row")
        code, _ = await rtm("pathways", "publish", str(second), "--org", "default")
        assert code == 0
        later = factory.episode_started(
            b, at=start.isoformat(), pathway={"id": pid, "version": 2}, episode_id=f"{b}-ep"
        )
        assert (
            stack.post([later, factory.pain(a, 3, dt.datetime.now(dt.UTC).isoformat())]).json()[
                "accepted"
            ]
            == 2
        )

        async def b_on_v2() -> bool:
            return await row_of(f"{b}-ep") == f"{pid}@2"

        await wait_for(b_on_v2, what="the new episode's row on v2")
        assert await row_of(f"{a}-ep") == f"{pid}@1"
