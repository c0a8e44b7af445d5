"""`rtm demo`: the main job end to end, on the real local services."""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import click
import orjson

from alerts.adherence import adherence_on, sessions_by_day
from alerts.evaluate import fold
from billing.demographics import parse_demographics_csv
from intake.engine import IntakeResult
from intake.evaluate import evaluate as evaluate_intakes
from intake.evaluate import read_events
from intake.rules import ROUTES
from pathways.model import builtin
from pathways.offline import views
from pathways.outcomes import GroupBy, outcome_row, report
from rtm.cli.billing import billing_summary
from rtm.devstack import (
    DEV_ORG,
    DEV_USERS_FILE,
    keep_running,
    prepare,
    start_gateway,
    start_worker,
    stop_kept,
)
from rtm.files import write_private
from rtm.produce import produce_file
from rtm.simulate import (
    TIMEZONES,
    demographics_csv,
    namespaced,
    simulate,
    synthetic_demographics,
    write_jsonl,
)
from rtm.simulate_readiness import add_readiness_facts
from schemas.events import DEFAULT_ORG, parse_event_json, validate_event
from streams.clock import Clock, clock_for
from streams.db.access import add_team_member
from streams.db.alerts import alert_counts, alert_progress
from streams.db.claims import load_demographics
from streams.db.events import count_by_type, count_stored, patients_events
from streams.db.intakes import list_intakes
from streams.db.refresh import pending as refresh_pending
from streams.kafka.producer import EventProducer
from streams.services.readiness import summary as readiness_summary
from streams.settings import Settings

# The share of the patients whose first episode starts a week or more into the window who
# came through the front door (rtm/simulate_intakes.py): about a third of the cohort.
DEMO_INTAKES = 0.5


def _cohort_ids(path: Path) -> tuple[list[str], list[str], int]:
    """Distinct valid event ids and patient ids in the file, and the invalid count."""
    ids: dict[str, None] = {}
    patients: set[str] = set()
    invalid = 0
    with path.open("rb") as f:
        for line in f:
            obj = orjson.loads(line)
            if isinstance(validate_event(obj), list):
                invalid += 1
            elif obj["event_id"] in ids:
                continue
            else:
                ids[obj["event_id"]] = None
                patients.add(obj["patient_id"])
    return list(ids), sorted(patients), invalid


async def _wait_stored(dsn: str, ids: list[str], timeout: float) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while True:
            n = await count_stored(conn, ids)
            if n >= len(ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        return await count_by_type(conn, ids)
    finally:
        await conn.close()


def run_demo(settings: Settings, patients: int, days: int, seed: int) -> int:
    def say(m: str) -> None:
        click.echo(m, err=True)

    t_start = time.perf_counter()
    stop_kept(settings, log=say)  # a previous demo's gateway and worker hold the ports
    prepare(settings, log=say)
    clock = clock_for(settings)  # RTM_CLOCK_NOW, when set, dates the cohort and the tick
    now = clock.now()
    # Each run is a new cohort under its own ids: simulate() repeats ids across runs.
    run = now.strftime("d%Y%m%dT%H%M%S-")
    cohort = settings.state_dir / f"demo-cohort-{run}{patients}x{days}-s{seed}.jsonl"
    # The cohort ends yesterday in every patient's zone, so the timer's "now" (the wall clock)
    # meets live data and no event is dated ahead of its arrival (the gateway refuses those).
    today = min(now.astimezone(ZoneInfo(tz)).date() for tz, _ in TIMEZONES)
    start = today - dt.timedelta(days=days)
    n = write_jsonl(
        namespaced(
            add_readiness_facts(
                simulate(
                    patients,
                    days,
                    seed,
                    start=start,
                    invalid_ratio=0.002,
                    intakes=DEMO_INTAKES,
                    outcomes=True,  # PROMs, visits, pauses and exits (rtm/simulate_outcomes.py)
                ),
                seed,
                today - dt.timedelta(days=1),
            ),
            run,
        ),
        cohort,
    )
    ids, patient_ids, _invalid = _cohort_ids(cohort)
    say(f"simulated {n} events for {patients} patients x {days} days -> {cohort}")
    demo_csv = cohort.with_name(cohort.stem + ".demographics.csv")
    loaded = asyncio.run(_load_synthetic_demographics(settings, patient_ids, seed, demo_csv))
    say(
        f"synthetic demographics (all named SYNTHETIC) of {loaded} patients -> {demo_csv},"
        " loaded for the default organisation's 837P"
    )
    worker = start_worker(settings, restart=True)
    gateway = start_gateway(settings)
    try:
        if settings.env == "dev":
            asyncio.run(_demo_care_team(settings, cohort))
        t0 = time.perf_counter()
        result = asyncio.run(produce_file(settings, cohort, progress=True))
        stored = asyncio.run(_wait_stored(settings.db.dsn, ids, timeout=600))
        elapsed = time.perf_counter() - t0
        asyncio.run(_tick_and_settle(settings, clock))
        asyncio.run(_wait_refreshed(settings.db.dsn, timeout=600))
        extra = _extra_sections(settings, patient_ids)
        extra.update(intake_summary(cohort, clock.now()))
        extra.update(outcome_summary(cohort, clock.now()))
        extra["intakes"]["queue_waiting"] = asyncio.run(
            _queue_waiting(settings.db.dsn, patient_ids)
        )
    except BaseException:
        gateway.stop()
        worker.stop()
        raise
    # The dashboard stays up to be looked at; `rtm down` (make down) stops both.
    keep_running(settings, [gateway, worker])
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
        "events_per_s": round(total_stored / elapsed, 1) if elapsed else None,
        "total_elapsed_s": round(time.perf_counter() - t_start, 2),
        **extra,
    }
    click.echo(_render(summary))
    intakes = summary["intakes"]
    if intakes["queue_waiting"] != intakes["not_contacted_yet"]:
        say("WARNING: the worker's intake queue differs from the intake engine over the file")
    click.echo(_dashboard_text(settings))
    if total_stored != len(ids):
        say(f"ERROR: stored {total_stored} of {len(ids)} distinct valid events")
        return 1
    return 0


def intake_summary(cohort: Path, as_of: dt.datetime) -> dict[str, Any]:
    """The front door of the posted file (the intake engine, as `rtm intake evaluate`):
    intakes by route with their breaches, the median time to first contact, the breaches
    (contacted late, or never contacted by ``as_of``)."""
    with cohort.open("rb") as f:
        found, _errors = evaluate_intakes(f, as_of)  # invalid lines: the gateway refuses them
    by_route: dict[str, str] = {}
    for route in ROUTES:
        of_route = [r for r in found if r.route == route]
        late = sum(r.breached for r in of_route)
        by_route[route] = f"{len(of_route)} ({late} breached)"
    waits = sorted(_hours_to_contact(r) for r in found if r.first_contact_at is not None)
    late = sum(r.breached and r.first_contact_at is not None for r in found)
    never = sum(r.first_contact_at is None for r in found)
    overdue = sum(r.breached and r.first_contact_at is None for r in found)
    median = f"{statistics.median(waits):.1f} h" if waits else "n/a"
    return {
        "intakes_by_route": by_route,
        "intakes": {
            "screened": len(found),
            "contacted": len(waits),
            "median_to_first_contact": median,
            "breaches": f"{late + overdue} ({late} contacted late, {overdue} never contacted)",
            "not_contacted_yet": never,
        },
    }


def outcome_summary(cohort: Path, as_of: dt.datetime) -> dict[str, Any]:
    """The outcome report by clinician and by pathway version over the posted file, as of
    ``as_of``: the pure engine, as `rtm outcomes report --by clinician|pathway` (invalid
    lines: the gateway refuses them). Each group: its episodes, those with scores (a
    baseline and a later score), the MCID rate over those with its counts, and the drop-out
    rate over the episodes with its counts."""
    with cohort.open("rb") as f:
        eps, missing = views(read_events(f, []), as_of, builtin())
    out: dict[str, Any] = {}
    by: GroupBy
    for by in ("clinician", "pathway"):
        rows = report([outcome_row(v) for v in eps], by)
        out[f"outcomes_by_{by}"] = {str(r["group"]): _outcome_line(r) for r in rows} or {
            "no episodes": 0
        }
    if missing:
        out["outcomes_left_out"] = missing
    return out


def _percent(rate: object, numerator: object, denominator: object) -> str:
    shown = "n/a" if rate is None else f"{rate}%"
    return f"{shown} ({numerator}/{denominator})"


def _outcome_line(row: dict[str, object]) -> str:
    scored, episodes = row["with_scores"], row["episodes"]
    mcid = _percent(row["mcid_rate"], row["mcid_reached_n"], scored)
    dropout = _percent(row["dropout_rate"], row["dropped_out_n"], episodes)
    noun = "episode" if episodes == 1 else "episodes"
    return f"{episodes} {noun}, {scored} with scores, MCID {mcid}, drop-out {dropout}"


def _hours_to_contact(r: IntakeResult) -> float:
    assert r.first_contact_at is not None
    return (r.first_contact_at - r.submitted_at).total_seconds() / 3600


async def _queue_waiting(dsn: str, patient_ids: list[str]) -> int:
    """This run's intakes the worker holds as waiting for a first contact: what the queue
    (`GET /v1/intakes?status=waiting`) lists, read as it reads them."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await list_intakes(conn, DEV_ORG, "waiting", None, 1_000_000)
    finally:
        await conn.close()
    ours = set(patient_ids)
    return sum(r.patient_id in ours for r in rows)


async def _tick_and_settle(settings: Settings, clock: Clock) -> None:
    """Evaluate the time-driven rules now, and wait until the alerts table is quiet."""
    producer = EventProducer(settings)
    await producer.start()
    try:
        await producer.send_ticks(clock.now())
    finally:
        await producer.stop()
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 3.0:
            n = await alert_progress(conn)
            if n != last:
                last, quiet_since = n, time.monotonic()
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def _load_synthetic_demographics(
    settings: Settings, patient_ids: list[str], seed: int, path: Path
) -> int:
    """Clearly fake demographics for the cohort, as billing staff would load theirs."""
    write_private(path, demographics_csv(synthetic_demographics(patient_ids, seed)))
    rows, errors = parse_demographics_csv(path.read_text(encoding="utf-8"))
    assert not errors, errors[:3]
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        return await load_demographics(conn, "default", rows, "rtm demo")
    finally:
        await conn.close()


def _extra_sections(settings: Settings, patient_ids: list[str]) -> dict[str, Any]:
    out = asyncio.run(_alert_sections(settings.db.dsn, patient_ids))
    out.update(billing_summary(settings, patient_ids))
    out.update(asyncio.run(_readiness_section(settings.db.dsn, patient_ids)))
    return out


async def _wait_refreshed(dsn: str, timeout: float) -> None:
    """Until the worker's refresh has folded every patient the batches marked (the claim
    lines' readiness and the outcome rows the summary and the dashboard read)."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while await refresh_pending(conn) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def _readiness_section(dsn: str, patient_ids: list[str]) -> dict[str, Any]:
    """The claim lines' readiness as the worker stored it (the cohort carries readiness
    facts with planted problems: rtm/simulate_readiness.py)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await readiness_summary(conn, DEFAULT_ORG, patient_ids)
    finally:
        await conn.close()


async def _alert_sections(dsn: str, patient_ids: list[str]) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await alert_counts(conn, patient_ids)
        events = await patients_events(conn, patient_ids)
    finally:
        await conn.close()
    by_kind = {f"{r['kind']} ({r['severity']})": f"{r['n']} ({r['o']} open)" for r in rows}
    lowest = sorted(_latest_adherence(events).items(), key=lambda kv: kv[1])[:5]
    return {
        "alerts_by_kind_and_severity": by_kind or {"none": 0},
        "lowest_7day_adherence": [f"{pid}  {ratio:.0%}" for pid, ratio in lowest],
    }


def _latest_adherence(rows: list[Any]) -> dict[str, float]:
    """Trailing 7-day adherence on each patient's newest data day (same pure engine)."""
    states, _ = fold(parse_event_json(r["payload"]) for r in rows)
    out: dict[str, float] = {}
    for (_, pid), state in states.items():
        if not state.data:
            continue
        last = max(rec.local_date for rec in state.data.values())
        ratio = adherence_on(sessions_by_day(state.completions, state.book), state.book, last)
        if ratio is not None:
            out[pid] = float(ratio)
    return out


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


DEMO_TEAM = "demo"


async def _demo_care_team(settings: Settings, cohort: Path) -> None:
    """Let the demo's clinician user see this run's patients: the cohort's (namespaced)
    clinician ids and the user's own (c-01) form the care team "demo" of the default
    organisation (clinicians see their own and their care teams' patients)."""
    clinicians = {"c-01"}
    with cohort.open("rb") as f:
        for line in f:
            if b'"episode.started"' in line:
                obj = orjson.loads(line)
                if isinstance(obj.get("clinician_id"), str):
                    clinicians.add(obj["clinician_id"])
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        for clinician_id in sorted(clinicians):
            await add_team_member(conn, DEV_ORG, DEMO_TEAM, clinician_id)
    finally:
        await conn.close()


def _dashboard_text(settings: Settings) -> str:
    lines = [
        "",
        "Dashboard (the gateway and the worker keep running; `make down` stops them)",
        f"  http://{settings.gateway.host}:{settings.gateway.port}/ui/",
    ]
    path = settings.state_dir / DEV_USERS_FILE
    if path.exists():
        users = orjson.loads(path.read_bytes())
        lines.append("  sign in as (RTM_ENV=dev demo users):")
        lines.extend(
            f"    {name:<10} {users[name]['password']:<20} {users[name]['role']}"
            for name in sorted(users)
        )
    return "\n".join(lines)
