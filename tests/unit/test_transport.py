"""Encrypted transport settings (issue 16 item 9): what each Kafka client and the database
connections get, the combinations refused at startup, and that every client in the
repository takes its arguments from the one place (streams.kafka.transport, Settings.db.dsn)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import SecretStr, ValidationError

from rtm.devstack import settings_env
from streams.kafka.transport import cleartext_warnings, faust_credentials, kafka_client_kwargs
from streams.settings import Settings
from tests.certs import ThrowawayCA

ROOT = Path(__file__).resolve().parents[2]
# the environment does not leak into these settings (the test run exports RTM_* ports)
CLEAN: dict[str, Any] = {"kafka_bootstrap": None, "database_url": None, "env": "dev"}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return ThrowawayCA(tmp_path_factory.mktemp("pki"))


def make(**over: Any) -> Settings:
    return Settings(**{**CLEAN, **over})


def asyncpg_ssl(dsn: str) -> Any:
    """What asyncpg makes of a DSN's TLS parameters (its own parser, as connect uses it)."""
    from asyncpg import connect_utils

    _addrs, params = connect_utils._parse_connect_dsn_and_args(
        dsn=dsn,
        host=None,
        port=None,
        user=None,
        password=None,
        passfile=None,
        database=None,
        ssl=None,
        service=None,
        servicefile=None,
        direct_tls=None,
        server_settings=None,
        target_session_attrs=None,
        krbsrvname=None,
        gsslib=None,
    )
    return params.ssl


def test_the_defaults_are_the_local_stacks_plaintext() -> None:
    s = make()
    assert kafka_client_kwargs(s) == {
        "bootstrap_servers": s.kafka.bootstrap_servers,
        "security_protocol": "PLAINTEXT",
    }
    assert faust_credentials(s) is None
    assert s.db.dsn.endswith("?sslmode=prefer")  # libpq's default, as before: TLS if offered
    assert asyncpg_ssl(s.db.dsn).verify_mode == ssl.CERT_NONE
    assert cleartext_warnings(s) == []


def test_ssl_with_a_client_certificate(ca: ThrowawayCA) -> None:
    client = ca.issue("client")
    s = make(
        kafka_security_protocol="ssl",  # any case
        kafka_ssl_cafile=ca.cert,
        kafka_ssl_certfile=client.cert,
        kafka_ssl_keyfile=client.key,
    )
    kwargs = kafka_client_kwargs(s)
    assert kwargs["security_protocol"] == "SSL"
    context = kwargs["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(context.get_ca_certs()) == 1  # the configured CA, not the system's store
    assert not any(k.startswith("sasl") for k in kwargs)
    credentials = faust_credentials(s)
    assert credentials is not None and credentials.protocol == AuthProtocol.SSL
    faust_context = credentials.context  # type: ignore[attr-defined]
    assert faust_context.check_hostname and faust_context.verify_mode == ssl.CERT_REQUIRED


def test_sasl_ssl_scram(ca: ThrowawayCA) -> None:
    s = make(
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=ca.cert,
        kafka_sasl_mechanism="scram-sha-512",
        kafka_sasl_username="rtm",
        kafka_sasl_password=SecretStr("pw-1"),
    )
    kwargs = kafka_client_kwargs(s)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["ssl_context"].check_hostname
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("rtm", "pw-1")
    credentials = faust_credentials(s)
    assert credentials is not None and credentials.protocol == AuthProtocol.SASL_SSL
    assert credentials.mechanism == SASLMechanism.SCRAM_SHA_512  # type: ignore[attr-defined]
    assert credentials.ssl_context.check_hostname  # type: ignore[attr-defined]
    assert "pw-1" not in repr(credentials) and "pw-1" not in repr(s)


def test_sasl_plaintext_has_no_tls() -> None:
    s = make(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="rtm",
        kafka_sasl_password=SecretStr("pw"),
    )
    assert "ssl_context" not in kafka_client_kwargs(s)
    credentials = faust_credentials(s)
    assert credentials is not None and credentials.protocol == AuthProtocol.SASL_PLAINTEXT


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs RTM_KAFKA_SASL_MECHANISM"),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "SCRAM-SHA-256",
                "kafka_sasl_username": "rtm",
            },
            "needs RTM_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_username": "rtm"}, "sends no credentials"),
        ({"kafka_ssl_cafile": "CA"}, "uses no TLS"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "CA"},
            "need RTM_KAFKA_SSL_CERTFILE",
        ),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nope.pem"}, "no such file"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "mechanism"),
        ({"pg_sslmode": "verify-full"}, "needs RTM_PG_SSLROOTCERT"),
        ({"pg_sslmode": "verify-ca"}, "needs RTM_PG_SSLROOTCERT"),
        ({"pg_sslrootcert": "CA"}, "checks no certificate"),
        ({"pg_sslmode": "disable", "pg_sslcert": "CA"}, "RTM_PG_SSLMODE=disable"),
        ({"pg_sslmode": "require", "pg_sslkey": "CA"}, "RTM_PG_SSLKEY needs RTM_PG_SSLCERT"),
        ({"pg_sslmode": "on"}, "pg_sslmode"),
        (
            {"database_url": "postgresql://u@db/rtm?sslmode=require"},
            "RTM_DATABASE_URL carries sslmode",
        ),
    ],
)
def test_combinations_refused_at_startup(
    ca: ThrowawayCA, over: dict[str, Any], message: str
) -> None:
    over = {k: (ca.cert if v == "CA" else v) for k, v in over.items()}
    with pytest.raises(ValidationError, match=message):
        make(**over)


def test_a_configuration_error_shows_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RTM_KAFKA_SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("RTM_PG_PASSWORD", "pg-secret-pw")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "needs RTM_KAFKA_SASL_MECHANISM" in str(info.value)
    assert "hunter2-secret" not in str(info.value) and "pg-secret-pw" not in str(info.value)


def test_verify_full_travels_in_the_dsn_and_asyncpg_checks_the_host_name(
    ca: ThrowawayCA,
) -> None:
    client = ca.issue("pg-client")
    s = make(
        pg_sslmode="VERIFY-FULL",
        pg_sslrootcert=ca.cert,
        pg_sslcert=client.cert,
        pg_sslkey=client.key,
    )
    assert s.db.ssl_params == {
        "sslmode": "verify-full",
        "sslrootcert": str(ca.cert),
        "sslcert": str(client.cert),
        "sslkey": str(client.key),
    }
    assert f"sslrootcert={ca.cert}" in s.db.dsn  # readable in `rtm status`
    context = asyncpg_ssl(s.db.dsn)
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1
    verify_ca = asyncpg_ssl(make(pg_sslmode="verify-ca", pg_sslrootcert=ca.cert).db.dsn)
    assert not verify_ca.check_hostname and verify_ca.verify_mode == ssl.CERT_REQUIRED
    assert asyncpg_ssl(make(pg_sslmode="disable").db.dsn) is False


def test_an_external_dsn_keeps_its_parameters_and_gets_the_tls_ones(ca: ThrowawayCA) -> None:
    s = make(
        database_url="postgresql://u:p@db.example:5432/rtm?search_path=x%2Cpublic",
        pg_sslmode="verify-full",
        pg_sslrootcert=ca.cert,
    )
    assert s.db.dsn.startswith("postgresql://u:p@db.example:5432/rtm?search_path=x%2Cpublic&")
    assert "sslmode=verify-full" in s.db.dsn


def test_child_processes_get_the_same_transport_settings(ca: ThrowawayCA) -> None:
    """The gateway and worker children read their settings from the environment that
    rtm.devstack builds (secrets included, as values)."""
    s = make(
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=ca.cert,
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="rtm",
        kafka_sasl_password=SecretStr("pw-2"),
        pg_sslmode="verify-full",
        pg_sslrootcert=ca.cert,
    )
    env = settings_env(s)
    assert env["RTM_KAFKA_SASL_PASSWORD"] == "pw-2"
    assert env["RTM_PG_SSLMODE"] == "verify-full"
    assert env["RTM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256"


def test_cleartext_is_warned_about_outside_dev_beyond_loopback(ca: ThrowawayCA) -> None:
    assert cleartext_warnings(make(env="prod")) == []  # the local stack: loopback
    remote = make(env="prod", kafka_bootstrap="kafka.internal:9092", pg_host="db.internal")
    lines = cleartext_warnings(remote)
    assert len(lines) == 2
    assert "RTM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in lines[0]
    assert "RTM_PG_SSLMODE=prefer" in lines[1]
    assert cleartext_warnings(make(env="dev", kafka_bootstrap="kafka.internal:9092")) == []
    safe = make(
        env="prod",
        kafka_bootstrap="kafka.internal:9093",
        kafka_security_protocol="SSL",
        database_url="postgresql://u@db.internal/rtm",
        pg_sslmode="verify-full",
        pg_sslrootcert=ca.cert,
    )
    assert cleartext_warnings(safe) == []


CLIENT = re.compile(r"\bAIOKafka(?:Producer|Consumer|AdminClient|Client)\(")
# files that build clients without the project's arguments on purpose
EXEMPT = {
    "tests/unit/test_transport.py",
    "tests/integration/test_transport_tls.py",  # negative controls: clients to be refused
}


def _call_text(source: str, start: int) -> str:
    """The text of the call whose opening parenthesis ends the match at ``start``."""
    depth, i = 1, start
    while depth and i < len(source):
        depth += {"(": 1, ")": -1}.get(source[i], 0)
        i += 1
    return source[start:i]


def test_every_kafka_client_takes_the_security_arguments() -> None:
    """Each aiokafka client built in the repository gets ``**kafka_client_kwargs(...)``
    (infra, which imports no project package, gets them as ``**client`` from its caller);
    the Faust app gets ``broker_credentials``."""
    missing = []
    for folder in ("rtm", "agents", "streams", "infra", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if str(path.relative_to(ROOT)) in EXEMPT:
                continue
            source = path.read_text()
            for match in CLIENT.finditer(source):
                call = _call_text(source, match.end())
                wanted = "**client" if folder == "infra" else "**kafka_client_kwargs("
                if wanted not in call:
                    line = source.count("\n", 0, match.start()) + 1
                    missing.append(f"{path.relative_to(ROOT)}:{line}")
    assert missing == []
    app = (ROOT / "streams" / "kafka" / "app.py").read_text()
    assert "broker_credentials=faust_credentials(settings)" in app


TRANSPORT_FIELDS = [
    name.removeprefix("RTM_").lower()
    for name in Settings.env_names()
    if name.startswith(("RTM_KAFKA_S", "RTM_PG_SSL"))
]


def test_the_transport_settings_are_documented() -> None:
    """Each field is a row of the README's configuration table and a (commented) entry of
    docker-compose.yml's application environment."""
    assert len(TRANSPORT_FIELDS) == 12
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("## Encrypted transport")]
    compose = (ROOT / "docker-compose.yml").read_text()
    for name in TRANSPORT_FIELDS:
        variable = f"RTM_{name.upper()}"
        assert f"`{variable}`" in table, variable
        assert f"# {variable}: " in compose, variable


def test_rtm_up_refuses_to_ask_the_plaintext_local_stack_for_tls(ca: ThrowawayCA) -> None:
    from rtm.devstack import _refuse_tls_to_the_local_stack

    _refuse_tls_to_the_local_stack(make(), RuntimeError)  # the defaults: fine
    _refuse_tls_to_the_local_stack(make(pg_sslmode="disable"), RuntimeError)
    for over in (
        {"kafka_security_protocol": "SSL"},
        {"pg_sslmode": "verify-full", "pg_sslrootcert": ca.cert},
    ):
        with pytest.raises(RuntimeError, match="plaintext"):
            _refuse_tls_to_the_local_stack(make(**over), RuntimeError)
    external = make(kafka_bootstrap="kafka.internal:9093", kafka_security_protocol="SSL")
    _refuse_tls_to_the_local_stack(external, RuntimeError)
