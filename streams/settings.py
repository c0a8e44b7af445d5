"""The one settings object, read from ``RTM_*`` environment variables at the entry point,
in sections: ``kafka``, ``db``, ``gateway``, ``worker``, ``webhooks``, ``alerting`` (and
``provision``, what ``rtm up`` needs: ``infra/provision.py``). The variables' names are the
same as before the sections (``RTM_KAFKA_PORT``, ``RTM_PG_PORT``, ``RTM_API_PORT``,
``RTM_WEBHOOK_TIMEOUT_S``, ``RTM_TOPIC_EVENTS`` …): each section declares its prefix, and
the few fields whose variable does not share it name it (``validation_alias``).

``Settings.env_names()`` maps every variable to its field; ``Settings(**flat)`` and
``settings.but(**flat)`` take the variables' flat names (``api_port=…``, lower case
without ``RTM_``), which is how tests and the CLI override one field."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pydantic import (
    AliasGenerator,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.provision import ProvisionSettings


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _section(prefix: str) -> SettingsConfigDict:
    """A section's config: its fields read ``<prefix><FIELD>`` (the alias, so an error
    names the variable) unless a field names its own; built by field name in code."""
    # hide_input_in_errors: a configuration error must not print the environment's
    # passwords (pydantic shows the input beside the message otherwise)
    return SettingsConfigDict(
        env_prefix=prefix,
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        hide_input_in_errors=True,
        alias_generator=AliasGenerator(validation_alias=lambda name: f"{prefix}{name.upper()}"),
    )


class KafkaSettings(BaseSettings):
    """The broker and its topics (``RTM_KAFKA_*``, ``RTM_TOPIC_*``)."""

    model_config = _section("RTM_KAFKA_")

    host: str = "127.0.0.1"
    port: int = 19092
    bootstrap: str | None = None  # overrides host:port, e.g. for docker-compose
    # Encrypted transport (README "Encrypted transport"): every client (gateway producer,
    # ingest consumer, Faust, admin and CLI clients) takes its security arguments from
    # streams.kafka.transport; the defaults suit the local stack (plaintext on 127.0.0.1).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None  # PEM CA bundle; unset: the system's trust store
    ssl_certfile: Path | None = None  # PEM client certificate (mutual TLS), optional
    ssl_keyfile: Path | None = None  # its private key (unset: in the certfile)
    ssl_key_password: SecretStr | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    topic_events: str = Field("rtm.events", validation_alias="RTM_TOPIC_EVENTS")
    topic_dead: str = Field("rtm.events.dead", validation_alias="RTM_TOPIC_DEAD")
    topic_alerts: str = Field("rtm.alerts", validation_alias="RTM_TOPIC_ALERTS")
    topic_partitions: int = Field(8, validation_alias="RTM_TOPIC_PARTITIONS")

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or f"{self.host}:{self.port}"


class DbSettings(BaseSettings):
    """PostgreSQL/TimescaleDB (``RTM_PG_*``, ``RTM_DATABASE_URL``, ``RTM_DATABASE_OWNER_URL``)."""

    model_config = _section("RTM_PG_")

    host: str = "127.0.0.1"
    port: int = 15432
    # The application's role (gateway, worker, CLI at run time): no DDL, and on audit_log
    # only INSERT and SELECT. The owner role owns the schema and runs the migrations.
    user: str = "rtm_app"
    password: SecretStr = SecretStr("rtm_app")
    owner_user: str = "rtm"
    owner_password: SecretStr = SecretStr("rtm")
    database: str = "rtm"
    url: str | None = Field(None, validation_alias="RTM_DATABASE_URL")  # overrides the above
    # the owner's DSN for migrations; default: the owner_* fields, or the url when that is
    # set (one role for both: the audit log is then not protected from the app)
    owner_url: SecretStr | None = Field(None, validation_alias="RTM_DATABASE_OWNER_URL")
    # libpq's sslmode and files, carried in the DSN (``dsn``), so every asyncpg connection
    # and pool gets them; verify-full checks the chain and the host name.
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: Path | None = None  # PEM CA that signed the server's certificate
    sslcert: Path | None = None  # PEM client certificate, optional
    sslkey: Path | None = None  # its private key

    @field_validator("sslmode", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def ssl_params(self) -> dict[str, str]:
        """libpq's TLS parameters (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``) as
        ``dsn`` carries them; asyncpg builds the connection's SSLContext from them."""
        params: dict[str, str] = {"sslmode": self.sslmode}
        for key, path in (
            ("sslrootcert", self.sslrootcert),
            ("sslcert", self.sslcert),
            ("sslkey", self.sslkey),
        ):
            if path is not None:
                params[key] = str(path)
        return params

    @property
    def dsn(self) -> str:
        """The DSN of every database connection, with the TLS parameters (ssl_params)."""
        if self.url:
            base = self.url
        else:
            pw = self.password.get_secret_value()
            base = f"postgresql://{self.user}:{pw}@{self.host}:{self.port}/{self.database}"
        return with_query(base, self.ssl_params)

    @property
    def owner_dsn(self) -> str:
        """The schema owner's DSN: migrations, and nothing the app runs (with the same TLS
        parameters as ``dsn``)."""
        owner = self.owner_url
        if owner is not None:
            base = owner.get_secret_value()
        elif self.url:
            base = self.url
        else:
            pw = self.owner_password.get_secret_value()
            base = f"postgresql://{self.owner_user}:{pw}@{self.host}:{self.port}/{self.database}"
        return with_query(base, self.ssl_params)

    @property
    def app_role(self) -> str | None:
        """The role the app connects as (granted its privileges by each migration run);
        None when it is the owner itself."""
        app = unquote(urlsplit(self.dsn).username or "")
        owner = unquote(urlsplit(self.owner_dsn).username or "")
        return app if app and app != owner else None


class GatewaySettings(BaseSettings):
    """The HTTP gateway: listener, sessions, sign-in throttle, request bounds
    (``RTM_API_*``, ``RTM_SESSION_*``, ``RTM_SIGNIN_*`` …)."""

    model_config = _section("RTM_API_")

    host: str = "127.0.0.1"
    port: int = 8080
    # TLS for the gateway: with both set it serves HTTPS only (PEM files).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # Machine keys live in the database (`rtm keys add`), stored salted and hashed.
    key: SecretStr | None = Field(None, description="key used by rtm produce / demo")
    session_ttl_s: float = Field(
        8 * 3600.0,
        gt=0,
        description="how long a signed-in session lasts (a clinic shift)",
        validation_alias="RTM_SESSION_TTL_S",
    )
    session_idle_s: float = Field(
        1800.0,
        gt=0,
        description="a session unused this long is over (sliding expiry)",
        validation_alias="RTM_SESSION_IDLE_S",
    )
    session_max_per_user: int = Field(
        3,
        ge=1,
        description="sessions a user may hold; a new sign-in ends the oldest beyond",
        validation_alias="RTM_SESSION_MAX_PER_USER",
    )
    # Sign-in throttle (streams/throttle.py): attempts per account name and per client
    # address within the window; past the limit the key is locked, the lock doubling each time.
    signin_max_failures: int = Field(
        5,
        ge=1,
        description="attempts per account per window",
        validation_alias="RTM_SIGNIN_MAX_FAILURES",
    )
    signin_client_max_failures: int = Field(
        30,
        ge=1,
        description="attempts per client address per window (a clinic's NAT)",
        validation_alias="RTM_SIGNIN_CLIENT_MAX_FAILURES",
    )
    signin_window_s: float = Field(900.0, gt=0, validation_alias="RTM_SIGNIN_WINDOW_S")
    signin_lock_s: float = Field(
        60.0,
        gt=0,
        description="the first lock; doubles after",
        validation_alias="RTM_SIGNIN_LOCK_S",
    )
    signin_lock_max_s: float = Field(
        3600.0, gt=0, description="longest lock", validation_alias="RTM_SIGNIN_LOCK_MAX_S"
    )
    signin_hash_workers: int = Field(
        2,
        ge=1,
        description="threads that verify passwords (off the event loop)",
        validation_alias="RTM_SIGNIN_HASH_WORKERS",
    )
    audit_denied_window_s: float = Field(
        60.0,
        ge=0,
        description="at most one 'denied' audit row per actor, route and patient",
        validation_alias="RTM_AUDIT_DENIED_WINDOW_S",
    )
    max_batch_events: int = Field(1000, validation_alias="RTM_MAX_BATCH_EVENTS")
    max_body_bytes: int = Field(1024 * 1024, validation_alias="RTM_MAX_BODY_BYTES")
    produce_timeout_s: float = Field(
        15.0,
        gt=0,
        description="how long the gateway waits for Kafka's acks (acks=all) before it "
        "answers 503 with Retry-After (the client re-posts; the worker stores each id once)",
        validation_alias="RTM_PRODUCE_TIMEOUT_S",
    )
    max_future_skew_s: float = Field(
        600.0,
        ge=0,
        description="an occurred_at more than this ahead of received_at is rejected",
        validation_alias="RTM_MAX_FUTURE_SKEW_S",
    )


class WorkerSettings(BaseSettings):
    """The stream worker: batching, its web port, the dead-letter halt, the tick timer and
    the outbox publisher (``RTM_WORKER_*``, ``RTM_DEAD_LETTER_*`` …)."""

    model_config = _section("RTM_WORKER_")

    app_id: str = Field("rtm-worker", validation_alias="RTM_APP_ID")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    loglevel: str = "warning"
    batch_size: int = Field(
        20000,
        ge=1,
        description="records per fetch and database batch at most: a backlog (a replay, a "
        "catch-up) goes in batches of this many; at a steady rate RTM_WORKER_BATCH_WITHIN_S "
        "keeps them small",
    )
    batch_within_s: float = 0.05
    state_cache: int = Field(
        0,
        ge=0,
        description="decoded rule states kept in memory, in patients (the least recently "
        "used are dropped beyond it and read from the table at their next batch or tick; 0: "
        "every patient the worker has seen). Every tick reads every state of its partitions: "
        "a limit below the worker's patients decodes the rest at each tick",
    )
    lanes: int = Field(
        2,
        ge=1,
        description="transactions in flight per fetch of at least RTM_WORKER_LANE_MIN_ITEMS "
        "items, on disjoint partitions: one lane's decision runs while another's "
        "transaction is in the database (1: one at a time)",
    )
    lane_min_items: int = Field(
        1000,
        ge=1,
        description="a fetch goes in lanes only from this many items on (a backlog, a "
        "replay); the few hundred of a steady rate go in one transaction, with half the "
        "statements",
    )
    refresh_interval_s: float = Field(
        1.0,
        ge=0,
        description="how often the worker refreshes, off the ingest path, the claim-line "
        "readiness and outcome rows of the patients batches marked (0: never; then `rtm "
        "billing readiness-backfill` fills the lines)",
    )
    refresh_settle_s: float = Field(
        5.0,
        ge=0,
        description="a marked patient is refreshed once no batch marked it for this long "
        "(a replay's patients are folded once, when it pauses) ...",
    )
    refresh_idle_s: float = Field(
        2.0,
        ge=0,
        description="the refresh takes settled marks only once ingestion has been idle this "
        "long; while it is busy, only marks older than RTM_WORKER_REFRESH_MAX_WAIT_S",
    )
    refresh_max_wait_s: float = Field(
        300.0, gt=0, description="... or once its first mark is this old, whichever is first"
    )
    # A bad deploy halts instead of dead-lettering everything: consumption stops, offsets
    # stay before the records, an operator looks (rtm_worker_ingest_halted, a log line).
    dead_letter_max_consecutive: int = Field(
        1000,
        ge=0,
        description="dead letters in a row that halt ingestion (0: no limit)",
        validation_alias="RTM_DEAD_LETTER_MAX_CONSECUTIVE",
    )
    dead_letter_max_ratio: float = Field(
        0.5,
        gt=0,
        le=1,
        description="dead-letter share over the window that halts (1: no limit)",
        validation_alias="RTM_DEAD_LETTER_MAX_RATIO",
    )
    dead_letter_window_s: float = Field(60.0, gt=0, validation_alias="RTM_DEAD_LETTER_WINDOW_S")
    dead_letter_min_records: int = Field(
        2000,
        ge=1,
        description="records the window needs before the ratio is judged",
        validation_alias="RTM_DEAD_LETTER_MIN_RECORDS",
    )
    restarts: int = Field(
        0,
        ge=0,
        description="set by the process restarter (rtm worker --restart) for its child:"
        " how many times it started the worker again (rtm_worker_restarts_total)",
    )
    lag_interval_s: float = Field(
        2.0, description="how often rtm_worker_consumer_lag is refreshed; 0 disables"
    )
    # The timer that drives the time-based rules, and the outbox publisher
    tick_interval_s: float = Field(
        60.0,
        description="0 disables the wall-clock timer",
        validation_alias="RTM_TICK_INTERVAL_S",
    )
    alert_publish_retry_s: float = Field(
        5.0,
        description="how often alert changes left in the rtm.alerts outbox are re-sent",
        validation_alias="RTM_ALERT_PUBLISH_RETRY_S",
    )
    intake_rules_file: Path | None = Field(
        None,
        description="the intake rule set (JSON, as rtm intake evaluate --rules) whose routes"
        " and service levels the worker uses (default: the built-in intake-v1)",
        validation_alias="RTM_INTAKE_RULES_FILE",
    )
    # The escalation ladder of unacknowledged critical alerts (issue 17)
    escalate_care_team_after_s: float = Field(
        900.0,
        gt=0,
        description="an unacknowledged critical alert goes to the rest of the patient's care"
        " team this long after it fired",
        validation_alias="RTM_ESCALATE_CARE_TEAM_AFTER_S",
    )
    escalate_org_after_s: float = Field(
        3600.0,
        gt=0,
        description="an unacknowledged critical alert goes to the organisation-wide recipient"
        " this long after it fired",
        validation_alias="RTM_ESCALATE_ORG_AFTER_S",
    )


class WebhookSettings(BaseSettings):
    """Webhook delivery (``RTM_WEBHOOK_*``). Delivery is per endpoint (agents/delivery.py):
    one attempt in flight per webhook, a single POST each; after a failure the endpoint
    waits backoff * 2^(failures - 1), capped by the severity of the most urgent delivery
    waiting for it."""

    model_config = _section("RTM_WEBHOOK_")

    backlog_interval_s: float = Field(
        15.0, gt=0, description="how often the undelivered-webhook gauges are measured"
    )
    secret_key: SecretStr | None = Field(
        None, description="Fernet key that encrypts webhook secrets at rest (dev: generated)"
    )
    max_attempts: int = Field(
        5, ge=1, description="attempts before a delivery shows 'failed' (it is still retried)"
    )
    backoff_s: float = Field(0.5, gt=0, description="delay after the first failure")
    timeout_s: float = Field(5.0, gt=0, description="one attempt, connect to answer")
    retry_interval_s: float = Field(
        60.0,
        ge=0,
        description="least delay between retries of a 'failed' delivery (then growing), at"
        " most the severity's cap",
    )
    poll_s: float = Field(0.1, gt=0, description="how often due deliveries are claimed")
    # The bound on the delay between two attempts, by alert severity: a critical alert
    # (red flag, fall, high pain) is retried at least every minute while its receiver is
    # down, and reaches it at most that long after it recovers; a low one (billing at risk)
    # can wait an hour rather than hammer a receiver that is down for the day.
    max_delay_critical_s: float = Field(60.0, gt=0)
    max_delay_high_s: float = Field(300.0, gt=0)
    max_delay_medium_s: float = Field(900.0, gt=0)
    max_delay_low_s: float = Field(3600.0, gt=0)
    allow_networks: str = Field(
        "",
        description="comma-separated networks (CIDR) webhooks may reach although they are"
        " loopback, private or link-local, e.g. '10.20.0.0/16' for a receiver inside the"
        " clinic's network; empty: public addresses only",
    )
    max_in_flight: int = Field(
        32, ge=1, description="endpoints one worker posts to at the same time"
    )
    run: int = Field(
        20,
        ge=1,
        description="deliveries one claim takes from a healthy endpoint's queue, posted one"
        " after another and recorded together (a failing endpoint gets one at a time)",
    )


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SNOOZE_MAX_S = 7 * 86400  # a snooze lasts at most 7 days (issue 17), whatever is configured


def parse_duration(text: str) -> dt.timedelta:
    """``"4h"``, ``"24h"``, ``"3d"``, ``"90m"``, ``"5s"``: a whole number and a unit."""
    text = text.strip().lower()
    number, unit = text[:-1], text[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit() or int(number) == 0:
        raise ValueError(f"{text!r} is not a duration like 4h, 24h or 3d")
    return dt.timedelta(seconds=int(number) * _DURATION_UNITS[unit])


class AlertActionSettings(BaseSettings):
    """What a clinician may do about an alert (``RTM_SNOOZE_*``): the snooze durations the
    API accepts and the pages offer."""

    model_config = _section("RTM_SNOOZE_")

    durations: str = Field(
        "4h,24h,3d",
        description="the snooze durations offered (comma-separated, units s/m/h/d), each at"
        " most 7 days",
    )

    @field_validator("durations")
    @classmethod
    def _bounded(cls, value: str) -> str:
        choices = [parse_duration(p) for p in value.split(",") if p.strip()]
        if not choices:
            raise ValueError("at least one snooze duration")
        if any(c.total_seconds() > SNOOZE_MAX_S for c in choices):
            raise ValueError("a snooze lasts at most 7 days")
        return ",".join(p.strip().lower() for p in value.split(",") if p.strip())

    @property
    def snooze_choices(self) -> dict[str, dt.timedelta]:
        """The configured durations by their text, in the configured order."""
        return {p: parse_duration(p) for p in self.durations.split(",")}


SECTIONS: dict[str, type[BaseSettings]] = {
    "kafka": KafkaSettings,
    "db": DbSettings,
    "gateway": GatewaySettings,
    "worker": WorkerSettings,
    "webhooks": WebhookSettings,
    "alerting": AlertActionSettings,
    "provision": ProvisionSettings,
}


def _env_name(section: type[BaseSettings], name: str) -> str:
    alias = section.model_fields[name].validation_alias
    if isinstance(alias, str):
        return alias.upper()
    return f"{section.model_config.get('env_prefix', '')}{name}".upper()


# flat name (the variable without RTM_, lower case) -> (section, field)
FLAT: dict[str, tuple[str, str]] = {
    _env_name(cls, name).removeprefix("RTM_").lower(): (section, name)
    for section, cls in SECTIONS.items()
    for name in cls.model_fields
}


class Settings(BaseSettings):
    """Frozen configuration; build once with ``Settings()`` and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="RTM_", frozen=True, extra="ignore", hide_input_in_errors=True
    )
    TOP: ClassVar[tuple[str, ...]] = ("env", "state_dir", "clock_now")

    env: str = Field("dev", description="dev | prod; prod refuses the dev API key")
    state_dir: Path = Field(default_factory=lambda: _project_root() / ".rtm")
    clock_now: dt.datetime | None = Field(
        None,
        description="a fixed 'now' for every process (gateway, worker, CLI): replays, demos,"
        " tests; default the wall clock (streams/clock.py)",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    db: DbSettings = Field(default_factory=DbSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    alerting: AlertActionSettings = Field(default_factory=AlertActionSettings)
    provision: ProvisionSettings = Field(default_factory=ProvisionSettings)

    @model_validator(mode="before")
    @classmethod
    def _route_flat_names(cls, data: Any) -> Any:
        """``Settings(api_port=…)``: a flat name goes to its section, whose other fields
        are read from the environment as usual."""
        if not isinstance(data, Mapping):
            return data
        out: dict[str, Any] = {}
        grouped: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            if key in FLAT:
                section, name = FLAT[key]
                grouped.setdefault(section, {})[name] = value
            else:
                out[key] = value
        for section, values in grouped.items():
            given = out.get(section)
            try:
                if isinstance(given, BaseModel):
                    out[section] = _replace(given, values)
                else:
                    out[section] = SECTIONS[section](**{**(given or {}), **values})
            except ValidationError as e:  # name the flat field, as the caller did
                raise ValueError(_flat_errors(section, e)) from None
        return out

    @model_validator(mode="after")
    def _check_transport(self) -> Settings:
        """Refuse TLS/SASL combinations that would connect differently than configured."""
        errors = transport_errors(self)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def but(self, update: Mapping[str, Any] | None = None, **flat: Any) -> Settings:
        """A copy with these fields changed, by flat name (``api_port=…``) or top-level
        name; validated, and nothing re-read from the environment."""
        changes = {**(update or {}), **flat}
        unknown = [k for k in changes if k not in FLAT and k not in self.TOP and k not in SECTIONS]
        if unknown:
            raise KeyError(f"Settings has no field {unknown[0]!r}")
        # the current sections, given whole, take the flat names (_route_flat_names)
        values: dict[str, Any] = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self).model_validate({**values, **changes})

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """Refused with changes (they would skip the sections and validation): use ``but``."""
        if update:
            raise TypeError("Settings.model_copy(update=…) is not supported; use Settings.but")
        return super().model_copy(deep=deep)

    def env_values(self) -> dict[str, str]:
        """The ``RTM_*`` variables that give a child process these same settings (unset
        fields left out)."""
        out: dict[str, str] = {}
        for variable, (section, name) in self.env_names().items():
            value = getattr(getattr(self, section) if section else self, name)
            if value is not None:
                out[variable] = _variable_value(value)
        return out

    @classmethod
    def env_names(cls) -> dict[str, tuple[str, str]]:
        """Every ``RTM_*`` variable the settings read -> (section, field); a top-level
        field's section is ``""``."""
        names = {f"RTM_{flat.upper()}": where for flat, where in FLAT.items()}
        names.update({f"RTM_{name.upper()}": ("", name) for name in cls.TOP})
        return names


def _variable_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _flat_errors(section: str, error: ValidationError) -> str:
    flat = {where: name for name, where in FLAT.items()}
    parts = []
    for e in error.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        parts.append(f"{flat.get((section, field), field or section)}: {e['msg']}")
    return "; ".join(parts)


def _replace(section: BaseModel, changes: Mapping[str, Any]) -> Any:
    """The section with these fields changed, validated; every field given explicitly, so
    the environment is not read again."""
    values = {name: getattr(section, name) for name in type(section).model_fields}
    unknown = set(changes) - set(values)
    if unknown:
        raise KeyError(f"{type(section).__name__} has no field {sorted(unknown)}")
    return type(section)(**{**values, **changes})


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
    protocol = s.kafka.security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol in ("SSL", "SASL_SSL")
    if sasl:
        missing = [
            f"RTM_KAFKA_SASL_{name.upper()}"
            for name, value in (
                ("mechanism", s.kafka.sasl_mechanism),
                ("username", s.kafka.sasl_username),
                ("password", s.kafka.sasl_password),
            )
            if not value
        ]
        if missing:
            errors.append(f"RTM_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
    else:
        stray = [
            f"RTM_KAFKA_SASL_{name.upper()}"
            for name, value in (
                ("mechanism", s.kafka.sasl_mechanism),
                ("username", s.kafka.sasl_username),
                ("password", s.kafka.sasl_password),
            )
            if value is not None
        ]
        if stray:
            errors.append(
                f"{', '.join(stray)} set but RTM_KAFKA_SECURITY_PROTOCOL={protocol} sends no "
                "credentials (use SASL_SSL)"
            )
    kafka_files = {
        "RTM_KAFKA_SSL_CAFILE": s.kafka.ssl_cafile,
        "RTM_KAFKA_SSL_CERTFILE": s.kafka.ssl_certfile,
        "RTM_KAFKA_SSL_KEYFILE": s.kafka.ssl_keyfile,
    }
    if not tls:
        stray = [name for name, value in kafka_files.items() if value is not None]
        if s.kafka.ssl_key_password is not None:
            stray.append("RTM_KAFKA_SSL_KEY_PASSWORD")
        if stray:
            errors.append(
                f"{', '.join(stray)} set but RTM_KAFKA_SECURITY_PROTOCOL={protocol} uses no "
                "TLS (use SSL or SASL_SSL)"
            )
    elif s.kafka.ssl_certfile is None and (
        s.kafka.ssl_keyfile is not None or s.kafka.ssl_key_password is not None
    ):
        errors.append("RTM_KAFKA_SSL_KEYFILE / _KEY_PASSWORD need RTM_KAFKA_SSL_CERTFILE")

    mode = s.db.sslmode
    if mode in ("verify-ca", "verify-full") and s.db.sslrootcert is None:
        errors.append(f"RTM_PG_SSLMODE={mode} needs RTM_PG_SSLROOTCERT (the CA's PEM file)")
    if mode in ("disable", "allow", "prefer") and s.db.sslrootcert is not None:
        errors.append(
            f"RTM_PG_SSLROOTCERT set but RTM_PG_SSLMODE={mode} checks no certificate "
            "(use verify-full)"
        )
    if mode == "disable" and (s.db.sslcert is not None or s.db.sslkey is not None):
        errors.append("RTM_PG_SSLCERT / RTM_PG_SSLKEY set but RTM_PG_SSLMODE=disable")
    if s.db.sslkey is not None and s.db.sslcert is None:
        errors.append("RTM_PG_SSLKEY needs RTM_PG_SSLCERT")
    if s.db.url:
        query = {k for k, _ in parse_qsl(urlsplit(s.db.url).query)}
        inline = sorted(query & set(PG_SSL_DSN_KEYS))
        if inline:
            errors.append(
                f"RTM_DATABASE_URL carries {', '.join(inline)}: set TLS with RTM_PG_SSLMODE / "
                "RTM_PG_SSLROOTCERT / RTM_PG_SSLCERT / RTM_PG_SSLKEY instead (one place)"
            )

    files = {
        **kafka_files,
        "RTM_PG_SSLROOTCERT": s.db.sslrootcert,
        "RTM_PG_SSLCERT": s.db.sslcert,
        "RTM_PG_SSLKEY": s.db.sslkey,
    }
    for name, path in files.items():
        if path is not None and not path.is_file():
            errors.append(f"{name}: no such file {path}")
    return errors
