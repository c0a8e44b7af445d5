"""The rules of the house (issue 15), over every package: no function over 120 lines; at
most 60 function-level imports, each saying why it is deferred (a cycle it breaks or a
heavy import kept out of the command line's start); no import cycle between files
(function-level imports counted); no wall-clock read outside streams/clock.py (the bench
times itself with perf_counter/monotonic); the gateway's create_app only composes (at most
80 lines); and the command line starts without the Faust/Kafka/FastAPI stack the
deferrals are for. ``python -m tests.unit.test_house`` prints the figures."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rtm", "agents", "streams", "alerts", "intake", "billing", "schemas", "infra")
CLOCK_MODULE = "streams.clock"  # the one place the wall clock is read
MAX_FUNCTION_LINES = 120
MAX_FUNCTION_IMPORTS = 60
HEAVY = ("faust", "mode", "aiokafka", "fastapi", "uvicorn", "playwright")
REASON = re.compile(r"# deferred: \S")
IMPORTS = ("import ", "from ")
WALL_CLOCK = re.compile(r"\b(datetime\.now|datetime\.utcnow|date\.today|time\.time)\(")


def _sources() -> dict[str, str]:
    """The project's modules by dotted name, from the files under its packages."""
    out: dict[str, str] = {}
    for path in sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path.read_text()
    return out


# --- the checks (also run on made-up sources below, so each can fail) -------------------------


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


def _function_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    seen: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom) and sub.lineno not in seen:
                    seen.add(sub.lineno)
                    yield sub


def unexplained_imports(source: str) -> list[int]:
    """Lines of function-level imports without a ``# deferred: <why>`` comment on the
    line or above their group of imports."""
    lines = source.splitlines()
    out = []
    for node in _function_imports(ast.parse(source)):
        k = node.lineno - 2
        while k >= 0 and (not lines[k].strip() or lines[k].lstrip().startswith(IMPORTS)):
            k -= 1
        above = lines[k].strip() if k >= 0 else ""
        if not (REASON.search(lines[node.lineno - 1]) or REASON.match(above)):
            out.append(node.lineno)
    return out


def module_imports(
    name: str, source: str, modules: Mapping[str, str], in_functions: bool = True
) -> set[str]:
    """The modules of ``modules`` that ``name`` imports (``from pkg import sub`` imports
    the module pkg.sub); with ``in_functions=False`` only those imported when it is loaded.
    A function-level import hides a cycle from the loader, not from the reader: the
    checks below count them, as import-linter does."""
    found: set[str] = set()
    stack: list[ast.AST] = [ast.parse(source)]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if not in_functions and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names)
            stack.append(child)
    return {m for m in found if m in modules and m != name}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import cycles of a graph: each a path that comes back to its start."""
    out: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                out.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return out


def _graph(modules: Mapping[str, str], in_functions: bool = True) -> dict[str, set[str]]:
    graph = {
        name: module_imports(name, src, modules, in_functions) for name, src in modules.items()
    }
    for name in graph:  # importing pkg.sub loads pkg first: not a dependency of pkg on sub
        graph[name] -= {m for m in graph[name] if name.startswith(m + ".")}
    return graph


def function_import_count(source: str) -> int:
    return sum(1 for _ in _function_imports(ast.parse(source)))


def function_lines(source: str, name: str) -> int:
    (fn,) = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
    ]
    return (fn.end_lineno or fn.lineno) - fn.lineno + 1


def wall_clock_reads(modules: Mapping[str, str]) -> dict[str, list[str]]:
    found = {
        name: [m.group(0) for m in WALL_CLOCK.finditer(src)]
        for name, src in modules.items()
        if name != CLOCK_MODULE
    }
    return {k: v for k, v in found.items() if v}


# --- the code keeps the rules ------------------------------------------------------------------


def test_no_function_is_over_120_lines() -> None:
    found = {name: long_functions(src) for name, src in _sources().items()}
    assert {k: v for k, v in found.items() if v} == {}


def test_function_level_imports_are_few_and_each_says_why() -> None:
    modules = _sources()
    assert sum(function_import_count(src) for src in modules.values()) <= MAX_FUNCTION_IMPORTS
    found = {name: unexplained_imports(src) for name, src in modules.items()}
    assert {k: v for k, v in found.items() if v} == {}


def test_modules_import_each_other_without_cycles() -> None:
    modules = _sources()
    graph = _graph(modules)
    assert graph["rtm.cli.root"] >= {"rtm.cli.services", "rtm.cli.bench"}  # the graph is read
    assert "streams.services.ingest" in graph["agents.pipeline"]
    assert cycles(graph) == []


def test_the_wall_clock_is_read_in_the_clock_module_only() -> None:
    modules = _sources()
    assert WALL_CLOCK.search(modules[CLOCK_MODULE])  # the pattern sees the one read
    assert wall_clock_reads(modules) == {}


def test_create_app_only_composes() -> None:
    assert function_lines(_sources()["streams.http.app"], "create_app") <= 80


def test_the_command_line_starts_without_the_stream_stack() -> None:
    """`rtm --help` (and every command that does not need them) loads no Faust, Kafka
    client, FastAPI or uvicorn: what the deferred imports are for."""
    code = (
        "import sys, rtm.cli\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(sorted(rtm.cli.main.commands))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert "bench" in out[1] and "worker" in out[1]  # every family was registered


# --- the checks catch what they are for --------------------------------------------------------


def test_the_checks_find_a_long_function_an_unexplained_import_and_a_cycle() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}\n") == [("f", MAX_FUNCTION_LINES + 1)]
    assert long_functions(f"def f():\n{body[: body.rindex(chr(10))]}\n") == []
    source = (
        "import os\n\n"
        "def f():\n"
        "    # deferred: aiokafka costs 0.2 s at start\n"
        "    import aiokafka\n"
        "    from x import y\n\n"
        "    import json\n"
        "    return aiokafka, y, json\n\n"
        "def g():\n"
        "    import csv  # deferred: a cycle with rtm.x\n"
        "    import io\n"
        "    return csv, io\n"
    )
    assert unexplained_imports(source) == [13]  # csv's reason is its own line's
    modules = {
        "p": "",
        "p.a": "from p import b\n\ndef f():\n    from p import c\n",
        "p.b": "import p.c\n",
        "p.c": "from p.a import thing\n",
        "p.d": "from p import a\n",
    }
    loaded = _graph(modules, in_functions=False)
    assert loaded == {"p": set(), "p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert cycles(loaded) == [["p.a", "p.b", "p.c", "p.a"]]
    modules["p.c"] = "def f():\n    from p.a import thing\n"  # hidden in a function
    assert cycles(_graph(modules, in_functions=False)) == []
    assert cycles(_graph(modules)) == [["p.a", "p.b", "p.c", "p.a"]]
    assert cycles({"p.a": {"p.b"}, "p.b": set()}) == []


@pytest.mark.parametrize(
    "line", ["now = dt.datetime.now(dt.UTC)", "t = time.time()", "d = date.today()"]
)
def test_the_wall_clock_pattern_finds_the_reads(line: str) -> None:
    assert WALL_CLOCK.search(line)
    assert not WALL_CLOCK.search("t0 = time.perf_counter(); t1 = time.monotonic()")


if __name__ == "__main__":
    sources = _sources()
    lines = {n: long_functions(s) for n, s in sources.items()}
    print("functions over 120 lines:", sum(len(v) for v in lines.values()))
    print("function-level imports:", sum(function_import_count(s) for s in sources.values()))
    print("  without a reason:", sum(len(unexplained_imports(s)) for s in sources.values()))
    print("import cycles between files:", cycles(_graph(sources)))
    print("wall-clock reads outside streams/clock.py:", wall_clock_reads(sources))
    print("create_app lines:", function_lines(sources["streams.http.app"], "create_app"))
