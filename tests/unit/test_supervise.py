"""The worker's supervisor (every timer and task) and the process restarter."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from rtm.restarter import RestartPolicy, run_restarting
from streams.kafka.supervise import EX_CONFIG, ConfigurationError, Supervisor
from streams.metrics import WorkerMetrics


def _supervisor() -> tuple[Supervisor, WorkerMetrics, list[float]]:
    metrics = WorkerMetrics(CollectorRegistry())
    now = [100.0]
    return Supervisor(metrics.task_failures, monotonic=lambda: now[0]), metrics, now


def _failures(metrics: WorkerMetrics, task: str) -> float | None:
    return metrics.registry.get_sample_value("rtm_worker_task_failures_total", {"task": task})


async def test_a_timer_body_that_raises_what_postgres_raised_mid_restart_does_not_escape() -> None:
    """The error that killed the worker (asyncpg's InternalClientError while PostgreSQL
    went down) is logged, counted and retried after a backoff; success clears it."""
    sup, metrics, now = _supervisor()
    calls: list[int] = []
    fail = [True]

    async def deliver_due() -> None:
        calls.append(1)
        if fail[0]:
            raise asyncpg.InternalClientError(
                "cannot switch to state 12; another operation is in progress"
            )

    assert await sup.run_once("deliver_due", deliver_due) is False
    assert _failures(metrics, "deliver_due") == 1.0
    assert sup.failing() == {"deliver_due": "InternalClientError (1 in a row)"}
    # within the backoff the timer's ticks are skipped (no hammering a database that is away)
    assert await sup.run_once("deliver_due", deliver_due) is False
    assert len(calls) == 1
    now[0] += sup.backoff(1)
    assert await sup.run_once("deliver_due", deliver_due) is False
    assert len(calls) == 2 and _failures(metrics, "deliver_due") == 2.0
    assert sup.failing() == {"deliver_due": "InternalClientError (2 in a row)"}
    fail[0] = False
    now[0] += sup.backoff(2)
    assert await sup.run_once("deliver_due", deliver_due) is True
    assert sup.failing() == {}
    assert _failures(metrics, "deliver_due") == 2.0  # a total, not reset


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("boom"),
        KeyError("x"),
        OSError("connection refused"),
        asyncpg.InterfaceError("pool is closing"),
        TimeoutError(),
        ValueError("bad"),
    ],
)
async def test_any_exception_is_supervised_not_a_list_of_types(exc: Exception) -> None:
    sup, metrics, _ = _supervisor()

    async def body() -> None:
        raise exc

    assert await sup.run_once("t", body) is False
    assert _failures(metrics, "t") == 1.0


def test_backoff_grows_and_is_capped() -> None:
    sup = Supervisor(base_s=0.5, cap_s=5.0)
    assert [sup.backoff(n) for n in (1, 2, 3, 4, 5, 9)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


async def test_a_task_that_raises_is_started_again() -> None:
    sup = Supervisor(base_s=0.001, cap_s=0.001)
    runs: list[int] = []

    async def ingest() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ConnectionResetError("broker went away")

    await asyncio.wait_for(sup.run_forever("ingest", ingest), timeout=5)
    assert len(runs) == 3
    assert sup.tasks["ingest"].total == 2 and sup.failing() == {}


async def test_only_a_configuration_error_ends_it() -> None:
    ended: list[str] = []
    sup = Supervisor(on_configuration_error=lambda name, exc: ended.append(name))

    async def body() -> None:
        raise ConfigurationError("RTM_WEBHOOK_SECRET_KEY is not a Fernet key")

    with pytest.raises(ConfigurationError):
        await sup.run_once("deliver_due", body)
    with pytest.raises(ConfigurationError):
        await sup.run_forever("ingest", body)
    assert ended == ["deliver_due", "ingest"]


async def test_cancellation_passes_through() -> None:
    sup = Supervisor()

    async def body() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await sup.run_once("t", body)
    assert sup.failing() == {}


async def test_a_spawned_task_failure_is_counted_not_lost() -> None:
    sup, metrics, _ = _supervisor()

    async def endpoint() -> None:
        raise asyncpg.InternalClientError("cannot switch to state 12")

    await sup.spawn("webhook_endpoint", endpoint())
    assert _failures(metrics, "webhook_endpoint") == 1.0


def test_worker_topology_runs_every_timer_under_the_supervisor(tmp_path: Path) -> None:
    """Every timer and task the worker registers with Faust runs the supervised body
    (Faust would crash the worker on an exception escaping one)."""
    from agents.worker import build_worker_topology
    from streams.settings import Settings

    settings = Settings(state_dir=tmp_path, database_url="postgresql://x:y@127.0.0.1:1/none")
    topology, _store = build_worker_topology(settings)
    registered = list(topology.app._app_tasks)  # Faust's timers and tasks, as it runs them
    names = set()
    for fn in registered:
        chain = []
        while fn is not None:
            chain.append(fn)
            fn = getattr(fn, "__wrapped__", None)
        supervised = [f for f in chain if f in topology.supervisor.bodies]
        assert supervised, [f.__qualname__ for f in chain]
        names.add(chain[-1].__name__)
    assert {"ingest", "deliver_due", "measure_backlog", "publish_left_behind", "clock"} <= names


# --- the process restarter ------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_restarter_starts_the_worker_again_and_tells_it_how_often(tmp_path: Path) -> None:
    """Exits 3 twice, then 78: started three times, told 0, 1, 2 restarts, then stopped
    with the configuration error's status (not restarted)."""
    seen = tmp_path / "seen"
    argv = _script(
        tmp_path,
        f"""
        import os, sys
        with open({str(seen)!r}, "a") as f:
            f.write(os.environ["RTM_WORKER_RESTARTS"] + "\\n")
        n = sum(1 for _ in open({str(seen)!r}))
        sys.exit(3 if n < 3 else {EX_CONFIG})
        """,
    )
    logs: list[str] = []
    slept: list[float] = []
    rc = run_restarting(
        argv, dict(os.environ), logs.append, RestartPolicy(base_s=1.0), sleep=slept.append
    )
    assert rc == EX_CONFIG
    assert seen.read_text().split() == ["0", "1", "2"]
    assert "restart 1" in logs[0] and "restart 2" in logs[1]
    assert "configuration error" in logs[-1]
    assert sum(slept) >= 1.0 + 2.0  # backoff grows between quick exits


def test_restarter_passes_sigterm_on_and_ends_with_the_child(tmp_path: Path) -> None:
    started = tmp_path / "started"
    child = _script(
        tmp_path,
        f"""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        open({str(started)!r}, "w").close()
        time.sleep(60)
        """,
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "from rtm.restarter import run_restarting\n"
            f"sys.exit(run_restarting({child!r}, dict(os.environ), print))",
        ]
    )
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=20) == 0  # the child's own status: it stopped cleanly
