"""Encrypted transport: the one place Kafka clients get their security arguments.

Every aiokafka client of the project (the gateway's producer, the worker's ingest consumer,
admin clients, the CLI's benchmark and test clients) is built with
``**kafka_client_kwargs(settings)``, and Faust gets the same through
``faust_credentials(settings)``. PostgreSQL's TLS travels in ``Settings.db.dsn`` instead
(``sslmode``, ``sslrootcert``, ...), so every asyncpg connection and pool, which all take
that DSN, gets it; asyncpg builds the SSLContext from it (``verify-full``: the chain is
checked against ``sslrootcert`` and the host name against the certificate).
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any
from urllib.parse import urlsplit

from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from streams.settings import Settings


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS for the brokers: their chain checked against RTM_KAFKA_SSL_CAFILE (else the
    system's trust store) and their host name (aiokafka's helper always checks it); the
    client certificate when one is configured (mutual TLS)."""
    s = settings
    password = s.kafka.ssl_key_password
    context: ssl.SSLContext = create_ssl_context(
        cafile=s.kafka.ssl_cafile,
        certfile=s.kafka.ssl_certfile,
        keyfile=s.kafka.ssl_keyfile,
        password=password.get_secret_value() if password is not None else None,
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """``bootstrap_servers`` and the security arguments of an aiokafka producer, consumer,
    admin client or client: ``security_protocol``, ``ssl_context`` (SSL, SASL_SSL) and
    ``sasl_mechanism`` / ``sasl_plain_username`` / ``sasl_plain_password`` (SASL_*)."""
    s = settings
    kwargs: dict[str, Any] = {
        "bootstrap_servers": s.kafka.bootstrap_servers,
        "security_protocol": s.kafka.security_protocol,
    }
    if s.kafka.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = kafka_ssl_context(s)
    if s.kafka.security_protocol.startswith("SASL_"):
        assert s.kafka.sasl_password is not None  # Settings refuses SASL without one
        kwargs["sasl_mechanism"] = s.kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = s.kafka.sasl_username
        kwargs["sasl_plain_password"] = s.kafka.sasl_password.get_secret_value()
    return kwargs


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the same protocol (its producer, consumer and
    topic creation turn them into the aiokafka arguments above)."""
    s = settings
    protocol = s.kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(kafka_ssl_context(s))
    assert s.kafka.sasl_password is not None  # Settings refuses SASL without one
    credentials: CredentialsT = SASLCredentials(
        username=s.kafka.sasl_username,
        password=s.kafka.sasl_password.get_secret_value(),
        mechanism=s.kafka.sasl_mechanism,
        ssl_context=kafka_ssl_context(s) if protocol == "SASL_SSL" else None,
    )
    return credentials


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cleartext_warnings(settings: Settings) -> list[str]:
    """Where patient data would cross a network unencrypted or unauthenticated (outside
    RTM_ENV=dev, to a host other than loopback): one line each, for the startup log."""
    s = settings
    if s.env == "dev":
        return []
    out: list[str] = []
    brokers = [b.rsplit(":", 1)[0].strip("[]") for b in s.kafka.bootstrap_servers.split(",")]
    if s.kafka.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and not all(
        _loopback(b) for b in brokers
    ):
        out.append(
            f"warning: RTM_KAFKA_SECURITY_PROTOCOL={s.kafka.security_protocol} to "
            f"{s.kafka.bootstrap_servers}: events cross the network unencrypted"
            " (use SSL or SASL_SSL)"
        )
    host = (urlsplit(s.db.url).hostname or "") if s.db.url else s.db.host
    risk = {
        "disable": "unencrypted",
        "allow": "unencrypted unless the server insists, and the server is not authenticated",
        "prefer": "unencrypted if the server offers no TLS, and the server is not authenticated",
        "require": "encrypted, but the server is not authenticated",
        "verify-ca": "encrypted, but the certificate's host name is not checked",
    }.get(s.db.sslmode)
    if risk is not None and not _loopback(host):
        out.append(
            f"warning: RTM_PG_SSLMODE={s.db.sslmode} to {host}: database traffic is {risk} "
            "(use verify-full with RTM_PG_SSLROOTCERT)"
        )
    return out
