"""`rtm bench --pages`: how fast the dashboard answers over a clinic-sized history.

Seeds a cohort (default 5,000 patients x 90 days, ``rtm.simulate.simulate`` under run
prefixes via ``namespaced``, clinician ids included) straight to the phase's Kafka topic,
as the history phase does (the worker, not the gateway, takes the backlog), waits until the
worker has stored every event, ticks once at the newest event (so the time-driven alerts
and the rollups they feed are there) and waits until the tick is committed. Then, signed in
as a bench clinician whose care team is every clinician of the cohort (the scope covers all
seeded patients) and as a bench admin of the same organisation (scope: the whole
organisation, i.e. everything else stored in ``default`` too), it times, one request at a
time: the worklist's first page (``GET /ui/worklist``), and a patient page
(``GET /ui/patients/{id}``) for ``requests`` distinct patients of the cohort; once the
worker's refresh has folded every marked patient (how long that took after the tick is
reported), the outcome report (``GET /ui/outcomes``) as the admin.

A request's time is the client's, from sending it to the last byte of the body, over the
loopback: the server's time plus a local HTTP round trip (well under a millisecond on
this box). The bench's users are disabled and its care team removed at the end; the
events stay under the run's prefix, as every phase's do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from rtm.bench.cohorts import cohort_start
from rtm.bench.harness import Bench, Phase
from rtm.bench.phases import produce_and_wait, refresh_drained
from rtm.bench.stats import summarize_ms
from rtm.simulate import namespaced, simulate
from streams.access import SESSION_COOKIE, hash_password
from streams.db.access import add_team_member, add_user, disable_user, remove_team_member

WARM_UP_REQUESTS = 3
OUTCOME_REQUESTS = 20  # the report is one page: fewer timings than the patient pages
ORG = "default"  # events written straight to Kafka carry no org stamp: the default org


@dataclass
class PagesCohort:
    path: Path
    events: int = 0
    distinct: int = 0
    patients: list[str] = field(default_factory=list)  # with an episode (in a clinician's scope)
    clinicians: set[str] = field(default_factory=set)
    newest: dt.datetime | None = None


def write_pages_cohort(
    path: Path, patients: int, days: int, seed: int, start: dt.date, prefix: str
) -> PagesCohort:
    """The cohort as JSONL (arrival order), with what the timing needs to know of it."""
    c = PagesCohort(path)
    ids: set[str] = set()
    with_episode: dict[str, None] = {}
    opt = orjson.OPT_APPEND_NEWLINE
    with path.open("wb", buffering=1 << 20) as fh:
        for ev in namespaced(simulate(patients, days, seed, start=start), prefix):
            fh.write(orjson.dumps(ev, option=opt))
            c.events += 1
            ids.add(ev["event_id"])
            at = dt.datetime.fromisoformat(ev["occurred_at"])
            c.newest = at if c.newest is None or at > c.newest else c.newest
            if ev["type"] == "episode.started":
                with_episode.setdefault(ev["patient_id"], None)
                if isinstance(ev.get("clinician_id"), str):
                    c.clinicians.add(ev["clinician_id"])
    c.distinct = len(ids)
    c.patients = list(with_episode)
    return c


def spread(items: list[str], n: int) -> list[str]:
    """``n`` items evenly spread over ``items`` (all of them when there are fewer)."""
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


@dataclass
class BenchUsers:
    clinician: str
    admin: str
    password: str
    clinician_id: str
    team: str
    team_members: list[str]


async def add_users(dsn: str, tag: str, clinicians: set[str]) -> BenchUsers:
    """A clinician on a care team with every clinician of the cohort, and an admin."""
    u = BenchUsers(
        clinician=f"bench-{tag}-clinician",
        admin=f"bench-{tag}-admin",
        password=secrets.token_urlsafe(18),
        clinician_id=f"bench-{tag}-c",
        team=f"bench-{tag}",
        team_members=sorted({f"bench-{tag}-c", *clinicians}),
    )
    digest = hash_password(u.password)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await add_user(conn, ORG, u.clinician, "clinician", digest, u.clinician_id)
            await add_user(conn, ORG, u.admin, "admin", digest, None)
            for clinician_id in u.team_members:
                await add_team_member(conn, ORG, u.team, clinician_id)
    finally:
        await conn.close()
    return u


async def remove_users(dsn: str, u: BenchUsers) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for name in (u.clinician, u.admin):
            await disable_user(conn, name)
        for clinician_id in u.team_members:
            await remove_team_member(conn, ORG, u.team, clinician_id)
    finally:
        await conn.close()


async def sign_in(client: Any, url: str, username: str, password: str) -> dict[str, str]:
    """The session cookie, sent by hand (it is Secure; httpx keeps those for https only)."""
    resp = await client.post(f"{url}/v1/session", json={"username": username, "password": password})
    resp.raise_for_status()
    return {"Cookie": f"{SESSION_COOKIE}={resp.cookies[SESSION_COOKIE]}"}


async def time_gets(
    client: Any, urls: list[str], headers: dict[str, str], warm_up: int = WARM_UP_REQUESTS
) -> dict[str, Any]:
    """GET each URL once, in order, one at a time (after ``warm_up`` untimed GETs of the
    first); milliseconds to the whole body, summarised."""
    for _ in range(warm_up):
        (await client.get(urls[0], headers=headers)).raise_for_status()
    times: list[float] = []
    sizes: list[int] = []
    for u in urls:
        t0 = time.perf_counter()
        resp = await client.get(u, headers=headers)
        body = resp.content
        times.append(time.perf_counter() - t0)
        resp.raise_for_status()
        sizes.append(len(body))
    out = summarize_ms(times)
    out["mean_bytes"] = round(sum(sizes) / len(sizes)) if sizes else None
    return out


async def _measure(
    b: Bench, ph: Phase, c: PagesCohort, users: BenchUsers, requests: int
) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=120.0) as client:
        seed = await produce_and_wait(b, ph, client, c.path, c.distinct, timeout=3600.0, poll=0.5)
        b.log(
            f"pages: seeded {seed['events_stored']:,} events in {seed['seconds']:.0f} s "
            f"({seed['events_per_s']} ev/s); ticking at the newest event ..."
        )
        tick = await b.tick(ph, (c.newest or b.clock.now()) + dt.timedelta(seconds=1))
        refresh_s, _ = await refresh_drained(b, timeout=3600.0)
        b.log(f"pages: the worker's refresh folded every marked patient {refresh_s:.0f} s later")
        worklist = f"{ph.url}/ui/worklist"
        chosen = spread(c.patients, requests)
        patient_urls = [f"{ph.url}/ui/patients/{p}" for p in chosen]
        out: dict[str, Any] = {
            "seed": seed,
            "tick": tick,
            "refresh_after_tick_s": round(refresh_s, 1),
            "patients_timed": len(chosen),
        }
        for role, username in (("clinician", users.clinician), ("admin", users.admin)):
            headers = await sign_in(client, ph.url, username, users.password)
            b.log(f"pages: timing as the {role} ...")
            out[role] = {
                "worklist": await time_gets(client, [worklist] * requests, headers),
                "patient": await time_gets(client, patient_urls, headers),
            }
        # the outcome report (issue 19: under 2 s over this cohort), as the admin: the
        # organisation's every episode row, grouped three ways
        outcomes = [f"{ph.url}/ui/outcomes"] * min(requests, OUTCOME_REQUESTS)
        out["admin"]["outcomes"] = await time_gets(client, outcomes, headers)
    return out


def run_pages(
    b: Bench, prefix: str, patients: int, days: int, seed: int, requests: int
) -> dict[str, Any]:
    """The pages phase (see the module's docstring); its own stack, no wall-clock timer."""
    start = cohort_start(days, b.today())
    path = b.workdir / "pages.jsonl"
    t0 = time.monotonic()
    c = write_pages_cohort(path, patients, days, seed, start, f"{prefix}.pg.")
    b.log(
        f"pages: {c.events:,} events ({patients:,} patients x {days} days, {len(c.clinicians)} "
        f"clinicians) written in {time.monotonic() - t0:.0f} s; seeding through the worker ..."
    )
    users = asyncio.run(add_users(b.base.db.dsn, b.tag, c.clinicians))
    ph = b.start_stack("pages", tick_interval_s=0)
    try:
        out = asyncio.run(_measure(b, ph, c, users, requests))
    finally:
        b.stop_stack(ph)
        asyncio.run(remove_users(b.base.db.dsn, users))
        path.unlink(missing_ok=True)
    out.update(
        {
            "patients": patients,
            "days": days,
            "requests": requests,
            "start": start.isoformat(),
            "file_events": c.events,
            "clinicians": len(c.clinicians),
            "patients_with_episode": len(c.patients),
            "signed_in_as": {
                "clinician": "a clinician whose care team holds every clinician of the cohort",
                "admin": f"an admin of the organisation {ORG!r} (every patient stored in it)",
            },
        }
    )
    return out


def pages_keys(pages: dict[str, Any]) -> dict[str, Any]:
    """The phase's top-level JSON keys (as the clinician: the issue's question)."""
    cl = pages["clinician"]
    outcomes = pages["admin"].get("outcomes") or {}
    return {
        "outcome_report_p95_ms": outcomes.get("p95_ms"),
        "worklist_p50_ms": cl["worklist"]["p50_ms"],
        "worklist_p95_ms": cl["worklist"]["p95_ms"],
        "patient_page_p50_ms": cl["patient"]["p50_ms"],
        "patient_page_p95_ms": cl["patient"]["p95_ms"],
    }
