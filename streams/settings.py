"""The one settings object, read from ``RTM_*`` environment variables at the entry point."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Written by `rtm up` into the state folder; refused outside RTM_ENV=dev.


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Frozen configuration; build once with ``Settings()`` and pass it down."""

    # hide_input_in_errors: a configuration error must not print the environment's
    # passwords (pydantic shows the input beside the message otherwise)
    model_config = SettingsConfigDict(
        env_prefix="RTM_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

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

    # Encrypted transport (README "Encrypted transport"). Kafka: every client (gateway
    # producer, ingest consumer, Faust, admin and CLI clients) takes its security arguments
    # from streams.kafka.transport; the defaults suit the local stack (plaintext on 127.0.0.1).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_ssl_cafile: Path | None = None  # PEM CA bundle; unset: the system's trust store
    kafka_ssl_certfile: Path | None = None  # PEM client certificate (mutual TLS), optional
    kafka_ssl_keyfile: Path | None = None  # its private key (unset: in the certfile)
    kafka_ssl_key_password: SecretStr | None = None
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # PostgreSQL: libpq's sslmode and files, carried in the DSN (`dsn`), so every asyncpg
    # connection and pool gets them; verify-full checks the chain and the host name.
    pg_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = (
        "prefer"
    )
    pg_sslrootcert: Path | None = None  # PEM CA that signed the server's certificate
    pg_sslcert: Path | None = None  # PEM client certificate, optional
    pg_sslkey: Path | None = None  # its private key

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
    # Sign-in throttle (streams/throttle.py): attempts per account name and per client address
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
    worker_restarts: int = Field(
        0,
        ge=0,
        description="set by the process restarter (rtm worker --restart) for its child:"
        " how many times it started the worker again (rtm_worker_restarts_total)",
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
    webhook_allow_networks: str = Field(
        "",
        description="comma-separated networks (CIDR) webhooks may reach although they are"
        " loopback, private or link-local, e.g. '10.20.0.0/16' for a receiver inside the"
        " clinic's network; empty: public addresses only",
    )
    webhook_max_in_flight: int = Field(
        32, ge=1, description="endpoints one worker posts to at the same time"
    )

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("pg_sslmode", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_transport(self) -> Settings:
        """Refuse TLS/SASL combinations that would connect differently than configured."""
        errors = transport_errors(self)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def pg_ssl_params(self) -> dict[str, str]:
        """libpq's TLS parameters (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``) as
        ``dsn`` carries them; asyncpg builds the connection's SSLContext from them."""
        params: dict[str, str] = {"sslmode": self.pg_sslmode}
        for key, path in (
            ("sslrootcert", self.pg_sslrootcert),
            ("sslcert", self.pg_sslcert),
            ("sslkey", self.pg_sslkey),
        ):
            if path is not None:
                params[key] = str(path)
        return params

    @property
    def dsn(self) -> str:
        """The DSN of every database connection, with the TLS parameters (pg_ssl_params)."""
        if self.database_url:
            base = self.database_url
        else:
            pw = self.pg_password.get_secret_value()
            base = (
                f"postgresql://{self.pg_user}:{pw}@{self.pg_host}:{self.pg_port}/{self.pg_database}"
            )
        return with_query(base, self.pg_ssl_params)

    @property
    def owner_dsn(self) -> str:
        """The schema owner's DSN: migrations, and nothing the app runs (with the same TLS
        parameters as ``dsn``)."""
        owner = self.database_owner_url
        if owner is not None:  # a str too when set by model_copy (tests)
            base = owner.get_secret_value() if isinstance(owner, SecretStr) else str(owner)
        elif self.database_url:
            base = self.database_url
        else:
            pw = self.pg_owner_password.get_secret_value()
            base = (
                f"postgresql://{self.pg_owner_user}:{pw}@{self.pg_host}:{self.pg_port}/"
                f"{self.pg_database}"
            )
        return with_query(base, self.pg_ssl_params)

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


PG_SSL_DSN_KEYS = ("ssl", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword")


def with_query(dsn: str, params: dict[str, str]) -> str:
    """The DSN with these query parameters added after the ones it has (one it has
    already is kept as it is)."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    have = {k for k, _ in query}
    query += [(k, v) for k, v in params.items() if k not in have]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def transport_errors(s: Settings) -> list[str]:
    """What is wrong with the Kafka and PostgreSQL transport settings (empty: nothing)."""
    errors: list[str] = []
    protocol = s.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol in ("SSL", "SASL_SSL")
    if sasl:
        missing = [
            f"RTM_KAFKA_SASL_{name.upper()}"
            for name, value in (
                ("mechanism", s.kafka_sasl_mechanism),
                ("username", s.kafka_sasl_username),
                ("password", s.kafka_sasl_password),
            )
            if not value
        ]
        if missing:
            errors.append(f"RTM_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
    else:
        stray = [
            f"RTM_KAFKA_SASL_{name.upper()}"
            for name, value in (
                ("mechanism", s.kafka_sasl_mechanism),
                ("username", s.kafka_sasl_username),
                ("password", s.kafka_sasl_password),
            )
            if value is not None
        ]
        if stray:
            errors.append(
                f"{', '.join(stray)} set but RTM_KAFKA_SECURITY_PROTOCOL={protocol} sends no "
                "credentials (use SASL_SSL)"
            )
    kafka_files = {
        "RTM_KAFKA_SSL_CAFILE": s.kafka_ssl_cafile,
        "RTM_KAFKA_SSL_CERTFILE": s.kafka_ssl_certfile,
        "RTM_KAFKA_SSL_KEYFILE": s.kafka_ssl_keyfile,
    }
    if not tls:
        stray = [name for name, value in kafka_files.items() if value is not None]
        if s.kafka_ssl_key_password is not None:
            stray.append("RTM_KAFKA_SSL_KEY_PASSWORD")
        if stray:
            errors.append(
                f"{', '.join(stray)} set but RTM_KAFKA_SECURITY_PROTOCOL={protocol} uses no "
                "TLS (use SSL or SASL_SSL)"
            )
    elif s.kafka_ssl_certfile is None and (
        s.kafka_ssl_keyfile is not None or s.kafka_ssl_key_password is not None
    ):
        errors.append("RTM_KAFKA_SSL_KEYFILE / _KEY_PASSWORD need RTM_KAFKA_SSL_CERTFILE")

    mode = s.pg_sslmode
    if mode in ("verify-ca", "verify-full") and s.pg_sslrootcert is None:
        errors.append(f"RTM_PG_SSLMODE={mode} needs RTM_PG_SSLROOTCERT (the CA's PEM file)")
    if mode in ("disable", "allow", "prefer") and s.pg_sslrootcert is not None:
        errors.append(
            f"RTM_PG_SSLROOTCERT set but RTM_PG_SSLMODE={mode} checks no certificate "
            "(use verify-full)"
        )
    if mode == "disable" and (s.pg_sslcert is not None or s.pg_sslkey is not None):
        errors.append("RTM_PG_SSLCERT / RTM_PG_SSLKEY set but RTM_PG_SSLMODE=disable")
    if s.pg_sslkey is not None and s.pg_sslcert is None:
        errors.append("RTM_PG_SSLKEY needs RTM_PG_SSLCERT")
    if s.database_url:
        query = {k for k, _ in parse_qsl(urlsplit(s.database_url).query)}
        inline = sorted(query & set(PG_SSL_DSN_KEYS))
        if inline:
            errors.append(
                f"RTM_DATABASE_URL carries {', '.join(inline)}: set TLS with RTM_PG_SSLMODE / "
                "RTM_PG_SSLROOTCERT / RTM_PG_SSLCERT / RTM_PG_SSLKEY instead (one place)"
            )

    files = {
        **kafka_files,
        "RTM_PG_SSLROOTCERT": s.pg_sslrootcert,
        "RTM_PG_SSLCERT": s.pg_sslcert,
        "RTM_PG_SSLKEY": s.pg_sslkey,
    }
    for name, path in files.items():
        if path is not None and not path.is_file():
            errors.append(f"{name}: no such file {path}")
    return errors
