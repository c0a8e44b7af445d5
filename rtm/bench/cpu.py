"""Where the CPU goes: a process's and the machine's CPU time from /proc, and py-spy's
collapsed stacks grouped by project package and library."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def proc_cpu_seconds(stat: str, clk_tck: int, reaped: bool = False) -> float:
    """utime + stime of a /proc/<pid>/stat line (all the process's threads), in seconds;
    with ``reaped``, plus cutime + cstime (its children that have ended and been waited
    for: PostgreSQL's finished backends)."""
    rest = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and ")"
    ticks = int(rest[11]) + int(rest[12])
    if reaped:
        ticks += int(rest[13]) + int(rest[14])
    return ticks / clk_tck


def proc_parent(stat: str) -> int:
    """The parent pid of a /proc/<pid>/stat line."""
    return int(stat.rsplit(")", 1)[1].split()[1])


def tree_cpu_seconds(pid: int, clk_tck: int, proc: Path = Path("/proc")) -> float:
    """CPU seconds of a server and its children (PostgreSQL: the postmaster and its
    backends): the process with its ended children, plus each live child."""
    total = proc_cpu_seconds((proc / str(pid) / "stat").read_text(), clk_tck, reaped=True)
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == str(pid):
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile: its time is in the parent's reaped count
        if proc_parent(stat) == pid:
            total += proc_cpu_seconds(stat, clk_tck)
    return total


def reset_peak_rss(pid: int) -> bool:
    """Start a process's peak resident memory (VmHWM) afresh (Linux: clear_refs 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory since start or the last ``reset_peak_rss``, MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_cpu_ticks(stat: str) -> tuple[int, int]:
    """(busy, total) jiffies of all cores from /proc/stat's `cpu` line."""
    for line in stat.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:9]]  # user nice system idle iowait irq soft steal
            return sum(v) - v[3] - v[4], sum(v)
    raise ValueError("no cpu line in /proc/stat")


PROJECT_PACKAGES = ("agents", "streams", "alerts", "billing", "schemas", "rtm")
LIBRARY_GROUPS = {
    "faust": "faust",
    "mode": "faust",  # mode: faust's service/timer library
    "aiokafka": "aiokafka",
    "kafka": "aiokafka",
    "asyncpg": "asyncpg",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "asyncio": "asyncio",
}
# the root of every worker stack (`python -m rtm.cli worker`; rtm/cli.py before rtm/cli/):
# not an inclusive share
ENTRY_FILES = ("rtm/cli.py", "rtm/cli/__main__.py", "rtm/cli/services.py")
_FRAME_FILE = re.compile(r"\(([^()]*?)(?::\d+)?\)$")


def frame_file(frame: str) -> str | None:
    """'func (path/file.py:12)' -> 'path/file.py' (py-spy's collapsed frames)."""
    m = _FRAME_FILE.search(frame.strip())
    return m.group(1) if m else None


def module_of(path: str | None, project_root: str | None = None) -> str:
    """Group a frame's file: a project package ('alerts/'), a library group, or 'other'."""
    if not path:
        return "other"
    p = path.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/"):
        if marker in p:
            p = p.rsplit(marker, 1)[1]
            break
    else:
        if project_root and p.startswith(project_root.rstrip("/") + "/"):
            p = p[len(project_root.rstrip("/")) + 1 :]
        elif p.startswith("/"):
            m = re.search(r"/python3(?:\.\d+)?/(.*)$", p)
            p = m.group(1) if m else p.lstrip("/")
    head = p.split("/", 1)[0]
    if head in PROJECT_PACKAGES and "/" in p:
        return head + "/"
    head = head.removesuffix(".py")
    return LIBRARY_GROUPS.get(head, "other")


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy `--format raw` (collapsed stacks): [(frames root..leaf, samples)]."""
    out: list[tuple[list[str], int]] = []
    for line in text.splitlines():
        stack, _, n = line.strip().rpartition(" ")
        if stack and n.isdigit():
            out.append((stack.split(";"), int(n)))
    return out


def cpu_split(
    stacks: Iterable[tuple[list[str], int]], top: int = 10, project_root: str | None = None
) -> dict[str, Any] | None:
    """Where the samples go: `self` by the leaf frame's module (sums to 1), `inclusive` per
    project package (share of samples with a frame of it on the stack below the event
    loop; overlapping), and the `top` leaf functions."""
    selfs: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    funcs: Counter[str] = Counter()
    total = 0
    for frames, n in stacks:
        if not frames or n <= 0:
            continue
        total += n
        files = [frame_file(f) for f in frames]
        mods = [module_of(f, project_root) for f in files]
        selfs[mods[-1]] += n
        # frames before the event loop are the entry (rtm/cli.py, agents/worker.py's
        # run_worker, ...): every stack has them, they are not where the work is
        loop = next((i for i, m in enumerate(mods) if m == "asyncio"), 0)
        for mod in {
            m
            for m, f in zip(mods[loop:], files[loop:], strict=True)
            if m.endswith("/") and (f or "") not in ENTRY_FILES
        }:
            incl[mod] += n
        leaf = frames[-1].strip()
        funcs[re.sub(r":\d+\)$", ")", leaf)] += n
    if total == 0:
        return None

    def share(c: Counter[str]) -> dict[str, float]:
        return {k: round(v / total, 4) for k, v in c.most_common()}

    return {
        "samples": total,
        "self": share(selfs),
        "inclusive": share(incl),
        "top_functions": [
            {"function": f, "share": round(v / total, 4)} for f, v in funcs.most_common(top)
        ],
    }


def shares_line(shares: Mapping[str, float] | None, limit: int = 8) -> str:
    """'pydantic 21 %, faust 18 %, ...' (largest first)."""
    if not shares:
        return "n/a"
    items = sorted(shares.items(), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{k} {100 * v:.0f} %" for k, v in items)


@dataclass
class CpuSnapshot:
    at: float  # time.monotonic()
    procs: dict[str, float]  # role -> CPU seconds so far
    machine: tuple[int, int]  # (busy, total) jiffies


def cpu_snapshot(
    pids: Mapping[str, int], trees: Mapping[str, int] | None = None
) -> CpuSnapshot | None:
    """CPU seconds so far of each process of ``pids`` and of each server of ``trees`` with
    its children (``tree_cpu_seconds``), and the machine's."""
    try:
        clk = os.sysconf("SC_CLK_TCK")
        procs = {
            role: proc_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), clk)
            for role, pid in pids.items()
        }
        for role, pid in (trees or {}).items():
            procs[role] = tree_cpu_seconds(pid, clk)
        machine = machine_cpu_ticks(Path("/proc/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None  # not Linux, or a process gone
    return CpuSnapshot(time.monotonic(), procs, machine)


def cpu_usage(
    a: CpuSnapshot | None, b: CpuSnapshot | None, clk_tck: int | None = None
) -> dict[str, Any] | None:
    """Per role: CPU seconds and the share of one core over the wall time between two
    snapshots; `machine_busy_cores`: how many of the machine's cores were busy on average."""
    if a is None or b is None or b.at <= a.at:
        return None
    wall = b.at - a.at
    clk = clk_tck or os.sysconf("SC_CLK_TCK")
    out: dict[str, Any] = {"wall_s": round(wall, 3)}
    for role, cpu in b.procs.items():
        if role in a.procs:
            used = cpu - a.procs[role]
            out[role] = {"cpu_s": round(used, 2), "core_share": round(used / wall, 3)}
    out["machine_busy_cores"] = round((b.machine[0] - a.machine[0]) / clk / wall, 2)
    return out


def tick_costs(usage: Mapping[str, Any] | None, patients: int) -> dict[str, Any]:
    """A tick over ``patients`` patients: each process's CPU seconds over it (``cpu_usage``:
    the gateway, the database, the broker; "worker": every worker of the group together,
    each patient being one worker's) and its CPU microseconds per patient."""
    cpu: dict[str, float] = {}
    for role, v in (usage or {}).items():
        if isinstance(v, dict) and v.get("cpu_s") is not None:
            key = "worker" if role.startswith("worker") else role
            cpu[key] = round(cpu.get(key, 0.0) + v["cpu_s"], 2)
    return {
        "patients": patients,
        "cpu_s": cpu,
        "cpu_us_per_patient": {
            role: round(s / patients * 1e6, 1) for role, s in cpu.items() if patients
        },
    }


def worker_costs(
    usage: Mapping[str, Any] | None,
    stored: Mapping[str, int],
    rss: Mapping[str, float | None],
) -> dict[str, Any]:
    """The workers of one consumer group (by role: "worker", "worker2", ...), each and
    summed: events it stored, CPU seconds, CPU microseconds per event it stored, peak
    resident memory. A worker's own CPU per event is what scaling out costs per event
    whatever the box; the summed one is all their CPU over all their events."""
    per: dict[str, dict[str, Any]] = {}
    for role, n in stored.items():
        cpu_s = ((usage or {}).get(role) or {}).get("cpu_s")
        per[role] = {
            "events_stored": n,
            "cpu_s": cpu_s,
            "cpu_us_per_event": round(cpu_s / n * 1e6, 1) if cpu_s is not None and n else None,
            "peak_rss_mb": rss.get(role),
        }
    cpus = [v["cpu_s"] for v in per.values()]
    total_cpu = round(sum(cpus), 2) if cpus and None not in cpus else None
    total_n = sum(stored.values())
    peaks = [r for r in (v["peak_rss_mb"] for v in per.values()) if r is not None]
    return {
        "count": len(per),
        "per_worker": per,
        "events_stored": total_n,
        "cpu_s": total_cpu,
        "cpu_us_per_event": (
            round(total_cpu / total_n * 1e6, 1) if total_cpu is not None and total_n else None
        ),
        "peak_rss_mb_max": max(peaks) if peaks else None,
    }


def py_spy_path() -> str | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return spy if Path(spy).exists() else None


def read_split(path: Path | None) -> tuple[dict[str, Any] | None, str | None]:
    if path is None:
        return None, (
            "py-spy not found (e.g. .venv/bin/pip install py-spy): worker CPU "
            "utilisation from /proc only"
        )
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return None, f"py-spy wrote no profile: {exc}"
    root = str(Path(__file__).resolve().parents[2])  # the checkout: rtm/bench/cpu.py
    split = cpu_split(parse_collapsed(text), project_root=root)
    if split is None:
        return None, "py-spy recorded no samples"
    split["source"] = f"py-spy record --format raw, worker, {path.name}"
    return split, None
