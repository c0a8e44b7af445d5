"""`rtm demo`: the main job end to end, on the real local services."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import click
import orjson

from rtm.local import prepare, start_gateway, start_worker
from rtm.produce import produce_file
from rtm.settings import Settings
from rtm.simulate import simulate, write_jsonl
from schemas.events import validate_event


def _cohort_ids(path: Path) -> tuple[list[str], int, int]:
    """Distinct valid event ids in the file, the invalid count and the repeated count."""
    ids: dict[str, None] = {}
    invalid = repeated = 0
    with path.open("rb") as f:
        for line in f:
            obj = orjson.loads(line)
            if isinstance(validate_event(obj), list):
                invalid += 1
            elif obj["event_id"] in ids:
                repeated += 1
            else:
                ids[obj["event_id"]] = None
    return list(ids), invalid, repeated


async def _wait_stored(dsn: str, ids: list[str], timeout: float) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while True:
            n = await conn.fetchval(
                "SELECT count(*) FROM event_ids WHERE event_id = ANY($1::text[])", ids
            )
            if n >= len(ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        rows = await conn.fetch(
            "SELECT type, count(*) AS n FROM events WHERE event_id = ANY($1::text[]) GROUP BY type",
            ids,
        )
        return {r["type"]: int(r["n"]) for r in rows}
    finally:
        await conn.close()


def run_demo(settings: Settings, patients: int, days: int, seed: int) -> int:
    say = lambda m: click.echo(m, err=True)  # noqa: E731
    t_start = time.perf_counter()
    prepare(settings, log=say)
    cohort = settings.state_dir / f"demo-cohort-{patients}x{days}-s{seed}.jsonl"
    n = write_jsonl(simulate(patients, days, seed, invalid_ratio=0.002), cohort)
    ids, invalid, repeated = _cohort_ids(cohort)
    say(f"simulated {n} events for {patients} patients x {days} days -> {cohort}")
    worker = start_worker(settings)
    gateway = start_gateway(settings)
    try:
        t0 = time.perf_counter()
        result = asyncio.run(produce_file(settings, cohort, progress=True))
        stored = asyncio.run(_wait_stored(settings.dsn, ids, timeout=600))
        elapsed = time.perf_counter() - t0
        extra = _extra_sections(settings)
    finally:
        gateway.stop()
        worker.stop()
    total_stored = sum(stored.values())
    summary: dict[str, Any] = {
        "patients": patients,
        "days": days,
        "events_posted": result.posted,
        "events_stored_by_type": dict(sorted(stored.items())),
        "events_stored": total_stored,
        "rejected": result.rejected,
        "duplicates_ignored": result.posted - result.rejected - total_stored,
        "ingest_elapsed_s": round(elapsed, 2),
        "events_per_s": round(result.posted / elapsed, 1) if elapsed else None,
        "total_elapsed_s": round(time.perf_counter() - t_start, 2),
        **extra,
    }
    click.echo(_render(summary))
    if total_stored != len(ids):
        say(f"ERROR: stored {total_stored} of {len(ids)} distinct valid events")
        return 1
    return 0


def _extra_sections(settings: Settings) -> dict[str, Any]:
    """Alerts and billing summaries, added by their modules once they exist."""
    return {}


def _render(summary: dict[str, Any]) -> str:
    lines = ["", "RTM demo summary", "================"]
    for key, value in summary.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {k:<28} {v}" for k, v in value.items())
        elif isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"  {item}" for item in value)
        else:
            lines.append(f"{key:<30} {value}")
    return "\n".join(lines)
