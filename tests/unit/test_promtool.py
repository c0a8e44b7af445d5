"""`promtool check metrics` on the gateway's and the worker's metric families (issue 12
part 9), with every labelled family given a sample so that all of them are exposed. The
integration test (tests/integration/test_metrics.py) runs the same lint on the /metrics of
the real processes. Skipped, with the reason, where promtool is absent (CI installs it)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from streams.metrics import GatewayMetrics, WorkerMetrics

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (Debian: apt-get install prometheus)"
)


def promtool_problems(text: str) -> str:
    """What `promtool check metrics` says about an exposition (empty: it passes)."""
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    return "" if proc.returncode == 0 else (proc.stdout + proc.stderr).strip() or "failed"


def exposition(cls: type[GatewayMetrics] | type[WorkerMetrics]) -> str:
    registry = CollectorRegistry()
    metrics = cls(registry)
    for collector in vars(metrics).values():
        names = getattr(collector, "_labelnames", ())
        if names:  # one sample per labelled family, so that promtool sees it
            collector.labels(*("x" for _ in names))
    return generate_latest(registry).decode()


@needs_promtool
@pytest.mark.parametrize("cls", [GatewayMetrics, WorkerMetrics], ids=["gateway", "worker"])
def test_promtool_check_metrics_passes(cls: type[GatewayMetrics] | type[WorkerMetrics]) -> None:
    text = exposition(cls)
    assert text.count("# TYPE") >= 5
    assert promtool_problems(text) == ""


@needs_promtool
def test_promtool_check_metrics_flags_a_non_base_unit() -> None:
    # negative control: the old billing metric name is what promtool refused
    registry = CollectorRegistry()
    Counter("rtm_worker_billing_data_days_recorded_total", "x", registry=registry).inc()
    assert 'base unit "seconds" instead of "days"' in promtool_problems(
        generate_latest(registry).decode()
    )
