"""The one settings object, read from ``RTM_*`` environment variables at the entry point."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Written by `rtm up` into the state folder; refused outside RTM_ENV=dev.


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Frozen configuration; build once with ``Settings()`` and pass it down."""

    model_config = SettingsConfigDict(env_prefix="RTM_", frozen=True, extra="ignore")

    env: str = Field("dev", description="dev | prod; prod refuses the dev API key")

    # Local services (rtm up)
    state_dir: Path = Field(default_factory=lambda: _project_root() / ".rtm")
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "rtm-stream")
    kafka_version: str = "3.9.1"
    kafka_host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_bootstrap: str | None = None  # overrides host:port, e.g. for docker-compose
    pg_host: str = "127.0.0.1"
    pg_port: int = 15432
    # The application's role (gateway, worker, CLI at run time): no DDL, and on audit_log
    # only INSERT and SELECT. The owner role owns the schema and runs the migrations.
    pg_user: str = "rtm_app"
    pg_password: SecretStr = SecretStr("rtm_app")
    pg_owner_user: str = "rtm"
    pg_owner_password: SecretStr = SecretStr("rtm")
    pg_database: str = "rtm"
    pg_data_dir: Path | None = None  # default: outside the clone, readable by user postgres
    database_url: str | None = None  # the app's DSN; overrides the pg_* fields
    # the owner's DSN for migrations; default: the pg_owner_* fields, or database_url when
    # that is set (one role for both: the audit log is then not protected from the app)
    database_owner_url: SecretStr | None = None
    timescaledb_version: str = "2.19.3"

    # Topics
    topic_events: str = "rtm.events"
    topic_dead: str = "rtm.events.dead"
    topic_alerts: str = "rtm.alerts"
    topic_partitions: int = 8

    # Gateway
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # TLS for the gateway: with both set it serves HTTPS only (PEM files).
    api_tls_certfile: Path | None = None
    api_tls_keyfile: Path | None = None
    # Machine keys live in the database (`rtm keys add`), stored salted and hashed.
    api_key: SecretStr | None = Field(None, description="key used by rtm produce / demo")
    session_ttl_s: float = Field(
        8 * 3600.0, gt=0, description="how long a signed-in session lasts (a clinic shift)"
    )
    session_idle_s: float = Field(
        1800.0, gt=0, description="a session unused this long is over (sliding expiry)"
    )
    session_max_per_user: int = Field(
        3, ge=1, description="sessions a user may hold; a new sign-in ends the oldest beyond"
    )
    # Sign-in throttle (streams/signin.py): attempts per account name and per client address
    # within the window; past the limit the key is locked, the lock doubling each time.
    signin_max_failures: int = Field(5, ge=1, description="attempts per account per window")
    signin_client_max_failures: int = Field(
        30, ge=1, description="attempts per client address per window (a clinic's NAT)"
    )
    signin_window_s: float = Field(900.0, gt=0)
    signin_lock_s: float = Field(60.0, gt=0, description="the first lock; doubles after")
    signin_lock_max_s: float = Field(3600.0, gt=0, description="longest lock")
    signin_hash_workers: int = Field(
        2, ge=1, description="threads that verify passwords (off the event loop)"
    )
    audit_denied_window_s: float = Field(
        60.0, ge=0, description="at most one 'denied' audit row per actor, route and patient"
    )
    max_batch_events: int = 1000
    max_body_bytes: int = 1024 * 1024
    produce_timeout_s: float = Field(
        15.0,
        gt=0,
        description="how long the gateway waits for Kafka's acks (acks=all) before it "
        "answers 503 with Retry-After (the client re-posts; the worker stores each id once)",
    )
    max_future_skew_s: float = Field(
        600.0,
        ge=0,
        description="an occurred_at more than this ahead of received_at is rejected",
    )

    # Worker
    app_id: str = "rtm-worker"
    worker_web_host: str = "127.0.0.1"
    worker_web_port: int = 6066
    worker_loglevel: str = "warning"
    worker_batch_size: int = 5000
    worker_batch_within_s: float = 0.05
    # A bad deploy halts instead of dead-lettering everything: consumption stops, offsets
    # stay before the records, an operator looks (rtm_worker_ingest_halted, a log line).
    dead_letter_max_consecutive: int = Field(
        1000, ge=0, description="dead letters in a row that halt ingestion (0: no limit)"
    )
    dead_letter_max_ratio: float = Field(
        0.5, gt=0, le=1, description="dead-letter share over the window that halts (1: no limit)"
    )
    dead_letter_window_s: float = Field(60.0, gt=0)
    dead_letter_min_records: int = Field(
        2000, ge=1, description="records the window needs before the ratio is judged"
    )
    worker_lag_interval_s: float = Field(
        2.0, description="how often rtm_worker_consumer_lag is refreshed; 0 disables"
    )

    # Alerts: the timer that drives time-based rules, and webhook delivery
    tick_interval_s: float = Field(60.0, description="0 disables the wall-clock timer")
    clock_now: dt.datetime | None = Field(
        None, description="fixed 'now' for the timer (replays, tests); default wall clock"
    )
    alert_publish_retry_s: float = Field(
        5.0, description="how often alert changes left in the rtm.alerts outbox are re-sent"
    )
    # Delivery is per endpoint (agents/delivery.py): one attempt in flight per webhook, a
    # single POST each; after a failure the endpoint waits backoff * 2^(failures - 1),
    # capped by the severity of the most urgent delivery waiting for it.
    webhook_backlog_interval_s: float = Field(
        15.0, gt=0, description="how often the undelivered-webhook gauges are measured"
    )
    webhook_secret_key: SecretStr | None = Field(
        None, description="Fernet key that encrypts webhook secrets at rest (dev: generated)"
    )
    webhook_max_attempts: int = Field(
        5, ge=1, description="attempts before a delivery shows 'failed' (it is still retried)"
    )
    webhook_backoff_s: float = Field(0.5, gt=0, description="delay after the first failure")
    webhook_timeout_s: float = Field(5.0, gt=0, description="one attempt, connect to answer")
    webhook_retry_interval_s: float = Field(
        60.0,
        ge=0,
        description="least delay between retries of a 'failed' delivery (then growing), at"
        " most the severity's cap",
    )
    webhook_poll_s: float = Field(0.1, gt=0, description="how often due deliveries are claimed")
    # The bound on the delay between two attempts, by alert severity: a critical alert
    # (red flag, fall, high pain) is retried at least every minute while its receiver is
    # down, and reaches it at most that long after it recovers; a low one (billing at risk)
    # can wait an hour rather than hammer a receiver that is down for the day.
    webhook_max_delay_critical_s: float = Field(60.0, gt=0)
    webhook_max_delay_high_s: float = Field(300.0, gt=0)
    webhook_max_delay_medium_s: float = Field(900.0, gt=0)
    webhook_max_delay_low_s: float = Field(3600.0, gt=0)
    webhook_max_in_flight: int = Field(
        32, ge=1, description="endpoints one worker posts to at the same time"
    )

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def dsn(self) -> str:
        if self.database_url:
            return self.database_url
        pw = self.pg_password.get_secret_value()
        return f"postgresql://{self.pg_user}:{pw}@{self.pg_host}:{self.pg_port}/{self.pg_database}"

    @property
    def owner_dsn(self) -> str:
        """The schema owner's DSN: migrations, and nothing the app runs."""
        owner = self.database_owner_url
        if owner is not None:  # a str too when set by model_copy (tests)
            return owner.get_secret_value() if isinstance(owner, SecretStr) else str(owner)
        if self.database_url:
            return self.database_url
        pw = self.pg_owner_password.get_secret_value()
        return (
            f"postgresql://{self.pg_owner_user}:{pw}@{self.pg_host}:{self.pg_port}/"
            f"{self.pg_database}"
        )

    @property
    def app_role(self) -> str | None:
        """The role the app connects as (granted its privileges by each migration run);
        None when it is the owner itself."""
        from urllib.parse import unquote, urlsplit

        app = unquote(urlsplit(self.dsn).username or "")
        owner = unquote(urlsplit(self.owner_dsn).username or "")
        return app if app and app != owner else None

    @property
    def pg_data_path(self) -> Path:
        if self.pg_data_dir is not None:
            return self.pg_data_dir
        # The postgres user must reach the folder; /root (and CI's clone) may not be traversable.
        tag = hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:10]
        return Path("/var/tmp/rtm-stream") / tag / "pgdata"
