"""`rtm worker --restart`: start the worker again whenever it exits, and count it.

Inside the worker every timer and task runs under ``streams.kafka.supervise.Supervisor``, so an
exception does not end it; this is the layer below that: a process that exits for any
other reason (a crash in a library, an out-of-memory kill, ``os._exit`` after a write it
could not finish) is started again after a backoff, and the child is told how many times
(``RTM_WORKER_RESTARTS`` -> ``rtm_worker_restarts_total`` on its /metrics). Exit status 78
(``EX_CONFIG``, a configuration error) is not restarted: the same settings would fail again.
SIGTERM and SIGINT are passed on to the child and end the restarter with it.

The same policy for other supervisors: the compose file runs this command under
``restart: unless-stopped``; ``infra/systemd/rtm-worker.service`` uses ``Restart=on-failure``
with ``RestartPreventExitStatus=78``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from streams.kafka.supervise import EX_CONFIG

Log = Callable[[str], None]


@dataclass(frozen=True)
class RestartPolicy:
    base_s: float = 1.0
    cap_s: float = 30.0
    # a child that ran this long before it exited starts the backoff from the beginning
    healthy_after_s: float = 60.0

    def delay(self, quick_exits: int) -> float:
        return float(min(self.base_s * 2 ** max(quick_exits - 1, 0), self.cap_s))


def run_restarting(
    argv: Sequence[str],
    env: Mapping[str, str],
    log: Log,
    policy: RestartPolicy = RestartPolicy(),
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run ``argv`` until it exits by a signal we passed on or with EX_CONFIG; start it
    again otherwise. Returns the exit status to end with."""
    restarts = 0
    quick_exits = 0
    stopping: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            child_env = {**env, "RTM_WORKER_RESTARTS": str(restarts)}
            started = monotonic()
            child = subprocess.Popen(list(argv), env=child_env)
            rc = child.wait()
            if stopping:
                return rc if rc >= 0 else 128 - rc
            if rc == EX_CONFIG:
                log(f"worker exited with a configuration error ({rc}); not restarting")
                return rc
            ran = monotonic() - started
            quick_exits = 1 if ran >= policy.healthy_after_s else quick_exits + 1
            delay = policy.delay(quick_exits)
            restarts += 1
            log(f"worker exited ({rc}) after {ran:.0f} s; restart {restarts} in {delay:.0f} s")
            waited = 0.0
            while waited < delay and not stopping:  # a signal ends the wait at once
                sleep(min(0.2, delay - waited))
                waited += 0.2
            if stopping:
                return 0
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def worker_argv(loglevel: str) -> list[str]:
    return [sys.executable, "-m", "rtm.cli", "worker", "--loglevel", loglevel]
