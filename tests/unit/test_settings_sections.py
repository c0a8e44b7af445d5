"""Settings in sections (kafka, db, gateway, worker, webhooks, provision) read the same
RTM_* variables as the flat settings before them; a flat name builds or changes one field;
an error names the variable or the flat field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.clock import FixedClock, SystemClock, clock_for
from streams.settings import Settings

# Every variable the flat Settings read before the sections (operators' deployments set
# these names; none may be lost or renamed).
BEFORE = [
    "RTM_ALERT_PUBLISH_RETRY_S",
    "RTM_API_HOST",
    "RTM_API_KEY",
    "RTM_API_PORT",
    "RTM_API_TLS_CERTFILE",
    "RTM_API_TLS_KEYFILE",
    "RTM_APP_ID",
    "RTM_AUDIT_DENIED_WINDOW_S",
    "RTM_CACHE_DIR",
    "RTM_CLOCK_NOW",
    "RTM_DATABASE_OWNER_URL",
    "RTM_DATABASE_URL",
    "RTM_DEAD_LETTER_MAX_CONSECUTIVE",
    "RTM_DEAD_LETTER_MAX_RATIO",
    "RTM_DEAD_LETTER_MIN_RECORDS",
    "RTM_DEAD_LETTER_WINDOW_S",
    "RTM_ENV",
    "RTM_KAFKA_BOOTSTRAP",
    "RTM_KAFKA_CONTROLLER_PORT",
    "RTM_KAFKA_HOST",
    "RTM_KAFKA_PORT",
    "RTM_KAFKA_SASL_MECHANISM",
    "RTM_KAFKA_SASL_PASSWORD",
    "RTM_KAFKA_SASL_USERNAME",
    "RTM_KAFKA_SECURITY_PROTOCOL",
    "RTM_KAFKA_SSL_CAFILE",
    "RTM_KAFKA_SSL_CERTFILE",
    "RTM_KAFKA_SSL_KEYFILE",
    "RTM_KAFKA_SSL_KEY_PASSWORD",
    "RTM_KAFKA_VERSION",
    "RTM_MAX_BATCH_EVENTS",
    "RTM_MAX_BODY_BYTES",
    "RTM_MAX_FUTURE_SKEW_S",
    "RTM_PG_DATABASE",
    "RTM_PG_DATA_DIR",
    "RTM_PG_HOST",
    "RTM_PG_OWNER_PASSWORD",
    "RTM_PG_OWNER_USER",
    "RTM_PG_PASSWORD",
    "RTM_PG_PORT",
    "RTM_PG_SSLCERT",
    "RTM_PG_SSLKEY",
    "RTM_PG_SSLMODE",
    "RTM_PG_SSLROOTCERT",
    "RTM_PG_USER",
    "RTM_PRODUCE_TIMEOUT_S",
    "RTM_SESSION_IDLE_S",
    "RTM_SESSION_MAX_PER_USER",
    "RTM_SESSION_TTL_S",
    "RTM_SIGNIN_CLIENT_MAX_FAILURES",
    "RTM_SIGNIN_HASH_WORKERS",
    "RTM_SIGNIN_LOCK_MAX_S",
    "RTM_SIGNIN_LOCK_S",
    "RTM_SIGNIN_MAX_FAILURES",
    "RTM_SIGNIN_WINDOW_S",
    "RTM_STATE_DIR",
    "RTM_TICK_INTERVAL_S",
    "RTM_TIMESCALEDB_VERSION",
    "RTM_TOPIC_ALERTS",
    "RTM_TOPIC_DEAD",
    "RTM_TOPIC_EVENTS",
    "RTM_TOPIC_PARTITIONS",
    "RTM_WEBHOOK_ALLOW_NETWORKS",
    "RTM_WEBHOOK_BACKLOG_INTERVAL_S",
    "RTM_WEBHOOK_BACKOFF_S",
    "RTM_WEBHOOK_MAX_ATTEMPTS",
    "RTM_WEBHOOK_MAX_DELAY_CRITICAL_S",
    "RTM_WEBHOOK_MAX_DELAY_HIGH_S",
    "RTM_WEBHOOK_MAX_DELAY_LOW_S",
    "RTM_WEBHOOK_MAX_DELAY_MEDIUM_S",
    "RTM_WEBHOOK_MAX_IN_FLIGHT",
    "RTM_WEBHOOK_POLL_S",
    "RTM_WEBHOOK_RETRY_INTERVAL_S",
    "RTM_WEBHOOK_SECRET_KEY",
    "RTM_WEBHOOK_TIMEOUT_S",
    "RTM_WORKER_BATCH_SIZE",
    "RTM_WORKER_BATCH_WITHIN_S",
    "RTM_WORKER_LAG_INTERVAL_S",
    "RTM_WORKER_LOGLEVEL",
    "RTM_WORKER_RESTARTS",
    "RTM_WORKER_WEB_HOST",
    "RTM_WORKER_WEB_PORT",
]


# variables added after the house, each on purpose
ADDED = [
    "RTM_INTAKE_RULES_FILE",  # issue 18: the worker's intake rule set
    "RTM_SNOOZE_DURATIONS",  # issue 17: the snooze durations offered
    "RTM_ESCALATE_CARE_TEAM_AFTER_S",  # issue 17: the escalation ladder's offsets
    "RTM_ESCALATE_ORG_AFTER_S",
    "RTM_WORKER_LANES",  # issue 21: transactions in flight per fetch
    "RTM_WORKER_LANE_MIN_ITEMS",  # ... from this many items on
    "RTM_WEBHOOK_RUN",  # issue 21: deliveries one claim takes from an endpoint's queue
    # issues 19 and 20: readiness and outcome rows refreshed off the ingest path
    "RTM_WORKER_REFRESH_INTERVAL_S",
    "RTM_WORKER_REFRESH_SETTLE_S",
    "RTM_WORKER_REFRESH_MAX_WAIT_S",
    "RTM_WORKER_REFRESH_IDLE_S",
    "RTM_WORKER_STATE_CACHE",  # issue 21: decoded rule states kept in memory, in patients
]


def test_every_variable_of_before_is_read() -> None:
    names = Settings.env_names()
    assert sorted(set(BEFORE) - set(names)) == []
    # and nothing new appeared by accident: pg_data_path was a property, not a variable
    assert sorted(set(names) - set(BEFORE)) == sorted(ADDED)


@pytest.mark.parametrize(
    ("variable", "value", "path", "expected"),
    [
        ("RTM_API_PORT", "18181", ("gateway", "port"), 18181),
        ("RTM_KAFKA_PORT", "29999", ("kafka", "port"), 29999),
        ("RTM_TOPIC_EVENTS", "x.events", ("kafka", "topic_events"), "x.events"),
        ("RTM_PG_PORT", "25555", ("db", "port"), 25555),
        ("RTM_SESSION_IDLE_S", "60", ("gateway", "session_idle_s"), 60.0),
        ("RTM_APP_ID", "w2", ("worker", "app_id"), "w2"),
        ("RTM_WORKER_BATCH_SIZE", "17", ("worker", "batch_size"), 17),
        ("RTM_DEAD_LETTER_WINDOW_S", "9", ("worker", "dead_letter_window_s"), 9.0),
        ("RTM_TICK_INTERVAL_S", "0", ("worker", "tick_interval_s"), 0.0),
        ("RTM_WEBHOOK_TIMEOUT_S", "2.5", ("webhooks", "timeout_s"), 2.5),
        ("RTM_KAFKA_CONTROLLER_PORT", "29998", ("provision", "kafka_controller_port"), 29998),
        ("RTM_KAFKA_VERSION", "3.9.0", ("provision", "kafka_version"), "3.9.0"),
    ],
)
def test_a_variable_sets_its_sections_field(
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    path: tuple[str, str],
    expected: object,
) -> None:
    monkeypatch.setenv(variable, value)
    section, name = path
    assert getattr(getattr(Settings(), section), name) == expected
    assert Settings.env_names()[variable] == path


def test_database_url_wins_over_the_pg_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTM_DATABASE_URL", "postgresql://u:p@db.example:5432/x")
    dsn = Settings().db.dsn
    assert dsn.startswith("postgresql://u:p@db.example:5432/x?") and "sslmode=prefer" in dsn


def test_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTM_WEBHOOK_MAX_ATTEMPTS", "many")
    with pytest.raises(ValidationError, match="RTM_WEBHOOK_MAX_ATTEMPTS"):
        Settings()


def test_flat_names_build_and_change_one_field() -> None:
    s = Settings(api_port=9001, pg_port=9002, webhook_poll_s=0.5)
    assert (s.gateway.port, s.db.port, s.webhooks.poll_s) == (9001, 9002, 0.5)
    t = s.but(api_port=9003, worker_web_port=9004)
    assert (t.gateway.port, t.worker.web_port, t.db.port) == (9003, 9004, 9002)
    assert s.gateway.port == 9001  # frozen: the copy is new
    with pytest.raises(ValueError, match="api_port"):
        s.but(api_port="not a port")
    with pytest.raises(KeyError, match="api_prot"):
        s.but(api_prot=1)
    with pytest.raises(TypeError, match="but"):
        s.model_copy(update={"api_port": 1})


def test_a_copy_does_not_read_the_environment_again(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(api_port=9001)
    monkeypatch.setenv("RTM_PG_PORT", "25556")
    assert s.but(api_port=9002).db.port == s.db.port != 25556


def test_env_values_give_a_child_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    at = dt.datetime(2027, 3, 1, 12, tzinfo=dt.UTC)
    s = Settings(api_port=9005, topic_events="y.events", state_dir=Path("/tmp/x"), clock_now=at)
    for variable, value in s.env_values().items():
        monkeypatch.setenv(variable, value)
    child = Settings()
    assert child == s


def test_the_clock_of_a_process_follows_rtm_clock_now(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(clock_for(Settings()), SystemClock)
    monkeypatch.setenv("RTM_CLOCK_NOW", "2027-03-01T12:00:00Z")
    clock = clock_for(Settings())
    assert isinstance(clock, FixedClock)
    assert clock.now() == dt.datetime(2027, 3, 1, 12, tzinfo=dt.UTC)
    clock.advance(dt.timedelta(minutes=5))
    assert clock.now() == dt.datetime(2027, 3, 1, 12, 5, tzinfo=dt.UTC)
