"""Operator config: Prometheus scrape + rules, Grafana dashboard, docker-compose.

Every metric a rule or panel queries must be one streams/metrics.py defines, so a renamed metric
breaks this test instead of silently emptying a dashboard or muting an alert.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from infra.services import _cluster_id
from streams.metrics import GatewayMetrics, WorkerMetrics
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "infra" / "prometheus"
GRAFANA = ROOT / "infra" / "grafana"
COMPOSE = ROOT / "docker-compose.yml"

# Series Prometheus itself attaches to every scrape target.
PROMETHEUS_BUILTINS = {"up"}
# Identifiers that look like metric names but are PromQL (functions, keywords, grouping).
METRIC_TOKEN = re.compile(r"\b(rtm_[a-z0-9_]+|up)\b(?!\s*\()")


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def exported_series() -> set[str]:
    """Every series name the gateway and worker can expose, from the real metric objects."""
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    WorkerMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        # Labelled metrics have no samples until used, so derive names from the family type.
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def metrics_in(expr: str) -> set[str]:
    # Label matchers ({status=~"5.."}) and templates ({{topic}}) never hold metric names.
    stripped = re.sub(r"\{[^{}]*\}", "", re.sub(r"\{\{[^}]*\}\}", "", expr))
    stripped = re.sub(r'"[^"]*"', "", stripped)
    return set(METRIC_TOKEN.findall(stripped))


def alert_rules() -> list[dict[str, Any]]:
    doc = _load_yaml(PROM / "alerts.yml")
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "dashboards" / "rtm.json").read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_exported_series_include_the_known_names() -> None:
    names = exported_series()
    assert "rtm_gateway_requests_total" in names
    assert "rtm_worker_accept_to_persisted_seconds_bucket" in names
    assert "rtm_worker_consumer_lag" in names


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.get("alert", "?"))
def test_alert_rule_uses_existing_metrics(rule: dict[str, Any]) -> None:
    used = metrics_in(rule["expr"])
    assert used, f"no metric found in {rule['expr']!r}"
    unknown = used - exported_series() - PROMETHEUS_BUILTINS
    assert not unknown, f"{rule['alert']}: metrics not in streams/metrics.py: {sorted(unknown)}"
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"]


def test_alerts_cover_the_operator_cases() -> None:
    exprs = " ".join(r["expr"] for r in alert_rules())
    for needle in (
        "rtm_worker_consumer_lag",
        "rtm_worker_dead_letters_total",
        "rtm_worker_webhook_deliveries_total",
        'up{job="rtm-worker"} == 0',
        'rtm_gateway_requests_total{status=~"5.."}',
    ):
        assert needle in exprs, needle


def test_scrape_config_targets_the_gateway_and_worker() -> None:
    doc = _load_yaml(PROM / "prometheus.yml")
    assert doc["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    defaults = Settings()
    assert jobs["rtm-gateway"]["static_configs"][0]["targets"] == [
        f"gateway:{defaults.gateway.port}"
    ]
    assert jobs["rtm-worker"]["static_configs"][0]["targets"] == [
        f"worker:{defaults.worker.web_port}"
    ]
    # Jobs the rules select on must be scraped.
    for rule in alert_rules():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, f"{rule['alert']} selects unknown job {job}"


def test_dashboard_queries_use_existing_metrics() -> None:
    names = exported_series()
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        used = metrics_in(expr)
        assert used, f"no metric found in {expr!r}"
        assert not used - names, f"{expr!r}: unknown {sorted(used - names)}"


def test_dashboard_covers_every_worker_and_gateway_metric() -> None:
    """Each metric family appears on the dashboard (billing days excepted: a business count)."""
    used = set().union(*(metrics_in(e) for e in dashboard_exprs()))
    bases = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    missing = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exported_series()} - bases
    assert missing <= {"rtm_worker_billing_data_dates_total"}, sorted(missing)


def test_grafana_provisioning_matches_the_dashboard() -> None:
    ds = _load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    uid = ds["datasources"][0]["uid"]
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
    provider = _load_yaml(GRAFANA / "provisioning" / "dashboards" / "rtm.yml")["providers"][0]
    compose = _load_yaml(COMPOSE)
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./infra/grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_compose_topology_matches_the_local_path() -> None:
    compose = _load_yaml(COMPOSE)
    services = compose["services"]
    defaults = Settings()
    assert services["kafka"]["image"] == f"apache/kafka:{defaults.provision.kafka_version}"
    assert services["timescaledb"]["image"] == (
        f"timescale/timescaledb:{defaults.provision.timescaledb_version}-pg15"
    )
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert int(kafka_env["KAFKA_NUM_PARTITIONS"]) == defaults.kafka.topic_partitions
    ports = {s: services[s].get("ports", []) for s in services}
    assert f"127.0.0.1:{defaults.kafka.port}:{defaults.kafka.port}" in ports["kafka"]
    assert f"127.0.0.1:{defaults.db.port}:5432" in ports["timescaledb"]
    assert f"127.0.0.1:{defaults.gateway.port}:8080" in ports["gateway"]
    assert f"127.0.0.1:{defaults.worker.web_port}:6066" in ports["worker"]
    pg = services["timescaledb"]["environment"]
    assert (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]) == (
        defaults.db.owner_user,
        defaults.db.owner_password.get_secret_value(),
        defaults.db.database,
    )
    # the application role is made on a new volume, and only the migrations run as the owner
    app_role_sql = ROOT / "infra" / "docker" / "10-app-role.sql"
    assert (
        "./infra/docker/10-app-role.sql:/docker-entrypoint-initdb.d/10-app-role.sql:ro"
        in (services["timescaledb"]["volumes"])
    )
    assert f"CREATE ROLE {defaults.db.user} LOGIN PASSWORD" in app_role_sql.read_text()
    owner_url = (
        f"postgresql://{defaults.db.owner_user}:{defaults.db.owner_password.get_secret_value()}@"
    )
    assert services["migrate"]["environment"]["RTM_DATABASE_OWNER_URL"].startswith(owner_url)
    for name in ("topics", "gateway", "worker"):
        assert "RTM_DATABASE_OWNER_URL" not in services[name]["environment"], name
    # Every RTM_* variable the app services set is a real Settings field.
    fields = set(Settings.env_names())
    for name in ("topics", "migrate", "gateway", "worker"):
        env = services[name]["environment"]
        assert not {k for k in env if k.startswith("RTM_")} - fields, name
        assert env["RTM_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["RTM_DATABASE_URL"].startswith("postgresql://rtm_app:rtm_app@timescaledb:5432/")
    assert services["migrate"]["command"] == ["rtm", "db", "migrate"]
    assert services["gateway"]["environment"]["RTM_API_HOST"] == "0.0.0.0"
    assert services["worker"]["environment"]["RTM_WORKER_WEB_HOST"] == "0.0.0.0"


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (Debian: apt-get install prometheus)"
)
@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", str(PROM / "alerts.yml")],
        ["check", "config", str(PROM / "prometheus.yml")],
        ["test", "rules", str(PROM / "alerts.test.yml")],
    ],
    ids=["check-rules", "check-config", "test-rules"],
)
def test_promtool_accepts(args: list[str]) -> None:
    assert PROMTOOL is not None
    proc = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_kafka_cluster_id_never_starts_with_a_dash() -> None:
    """The storage tool reads "-t -abc…" as an option: 1 fresh state in 64 failed `rtm up`
    (URL-safe base64 starts with "-" that often)."""
    ids = [_cluster_id() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids) and {len(i) for i in ids} == {22}
