"""Encrypted transport (issue 16 item 9): events stream through a Kafka broker that listens
only on TLS and a PostgreSQL that takes TCP connections only over TLS, and plaintext
clients are refused by both.

The broker and the cluster are second instances made by the same machinery as `rtm up`
(infra.services: kafka_up / postgres_up with BrokerSecurity / PostgresTls), on free ports in
a temporary state dir, with a throwaway CA made here (tests/certs.py). The broker has two
client listeners: SSL requiring a client certificate (mutual TLS) and SASL_SSL with a
SCRAM-SHA-256 user made when its storage is formatted; the cluster has ssl = on, hostssl
lines only, and wants a client certificate besides the password. The gateway and the worker
run over SASL_SSL and ``sslmode=verify-full`` with a client certificate; the alert they
publish is read back over the mutual-TLS listener.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from infra import services
from rtm.devstack import (
    Child,
    ensure_dev_key,
    provision_dev,
    start_gateway,
    start_worker,
    wait_http,
)
from streams.db.pool import migrate
from streams.kafka.topics import ensure_topics
from streams.kafka.transport import kafka_client_kwargs
from streams.settings import Settings
from tests.certs import ThrowawayCA
from tests.conftest import EventFactory
from tests.integration.conftest import free_port, read_topic, run_in_thread, wait_for

pytestmark = pytest.mark.integration

SCRAM_USER = "rtm-worker"


@dataclass
class Encrypted:
    settings: Settings  # the gateway's and worker's: SASL_SSL, verify-full + client cert
    mtls: Settings  # the broker's SSL listener, with a client certificate
    ca: ThrowawayCA
    key: str  # the dev API key, registered in the TLS cluster


def variant(settings: Settings, **over: Any) -> Settings:
    """These settings with some fields changed, validated like the environment's."""
    return Settings(**{**settings.model_dump(), **over})


def _security(settings: Settings) -> dict[str, Any]:
    kwargs = kafka_client_kwargs(settings)
    del kwargs["bootstrap_servers"]
    return kwargs


@pytest.fixture(scope="module")
def encrypted() -> Iterator[Encrypted]:
    # its own folder, not pytest's tmp_path: other pytest sessions on the box prune those
    root = Path(tempfile.mkdtemp(prefix="rtm-transport-"))
    ca = ThrowawayCA(root / "pki")
    broker_cert = ca.issue("kafka-broker", ips=("127.0.0.1",))
    db_cert = ca.issue("postgres", ips=("127.0.0.1",))
    client = ca.issue("rtm-client")
    keystore_password = secrets.token_urlsafe(12)
    scram_password = secrets.token_urlsafe(16)
    ssl_port, sasl_port, controller_port = free_port(), free_port(), free_port()
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        state_dir=root / "state",
        pg_data_dir=None,  # outside the clone, readable by postgres (settings.provision.pg_data_path(settings.state_dir))
        kafka_bootstrap=None,
        database_url=None,
        kafka_port=sasl_port,
        kafka_controller_port=controller_port,
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=ca.cert,
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username=SCRAM_USER,
        kafka_sasl_password=SecretStr(scram_password),
        pg_port=free_port(),
        pg_password=SecretStr(secrets.token_urlsafe(12)),
        pg_sslmode="verify-full",
        pg_sslrootcert=ca.cert,
        pg_sslcert=client.cert,
        pg_sslkey=client.key,
        topic_events=f"tls.{tag}.events",
        topic_dead=f"tls.{tag}.dead",
        topic_alerts=f"tls.{tag}.alerts",
        topic_partitions=2,
        app_id=f"tls-{tag}",
        api_port=free_port(),
        worker_web_port=free_port(),
    )
    mtls = variant(
        settings,
        kafka_port=ssl_port,
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=client.cert,
        kafka_ssl_keyfile=client.key,
        kafka_sasl_mechanism=None,
        kafka_sasl_username=None,
        kafka_sasl_password=None,
    )
    security = services.BrokerSecurity(
        protocol="SSL",  # on mtls.kafka.port, also the inter-broker listener
        more_listeners={"SASL_SSL": sasl_port},
        properties={
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(ca.pkcs12(broker_cert, keystore_password)),
            "ssl.keystore.password": keystore_password,
            "ssl.key.password": keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(ca.cert),
            "listener.name.ssl.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": "SCRAM-SHA-256",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
        },
        scram=[f"SCRAM-SHA-256=[name={SCRAM_USER},password={scram_password}]"],
        client=_security(mtls),
    )
    try:
        services.kafka_up(mtls, security=security)
        services.postgres_up(
            settings, tls=services.PostgresTls(db_cert.cert, db_cert.key, client_cafile=ca.cert)
        )
        run_in_thread(migrate(settings.db.owner_dsn, settings.db.app_role))  # the owner migrates
        run_in_thread(ensure_topics(settings))  # over SASL_SSL
        key = ensure_dev_key(settings)
        run_in_thread(provision_dev(settings, key))
        yield Encrypted(settings=settings, mtls=mtls, ca=ca, key=key)
    finally:
        services.kafka_down(mtls)
        services.postgres_down(settings)
        shutil.rmtree(
            settings.provision.pg_data_path(settings.state_dir).parent, ignore_errors=True
        )
        shutil.rmtree(root, ignore_errors=True)


def _now(hours: float = 0) -> str:
    t = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)
    return t.replace(microsecond=0).isoformat()


async def test_events_stream_through_tls_only_kafka_and_postgres(
    encrypted: Encrypted, factory: EventFactory
) -> None:
    s = encrypted.settings
    children: list[Child] = []
    try:
        children.append(start_worker(s, name="tls-worker"))
        children.append(start_gateway(s))  # waits for /readyz: Kafka and the database answer
        wait_http(f"http://{s.worker.web_host}:{s.worker.web_port}/readyz", children[0], timeout=60)
        p = factory.patient(1)
        events = [
            factory.episode_started(p, at=_now(-48)),
            factory.pain(p, 3, _now(-2)),
            factory.symptom(p, _now(-1), red_flags=["saddle_anesthesia"]),
        ]
        resp = httpx.post(
            f"http://{s.gateway.host}:{s.gateway.port}/v1/events",
            json=events,
            headers={"Authorization": f"Bearer {encrypted.key}"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["accepted"] == 3

        conn = await asyncpg.connect(s.db.dsn)  # verify-full, client certificate
        try:

            async def stored_and_alerted() -> bool:
                n = await conn.fetchval(
                    "SELECT count(*) FROM event_ids WHERE event_id LIKE $1", factory.prefix + "%"
                )
                kinds = await conn.fetch(
                    "SELECT payload->>'kind' AS kind FROM alerts WHERE patient_id = $1", p
                )
                return n == 3 and any(r["kind"] == "red_flag" for r in kinds)

            await wait_for(stored_and_alerted, timeout=90, what="events stored, red flag fired")
            # every TCP connection to the cluster (the worker's and the gateway's pools, this
            # one) is TLS; the gateway and the worker hold some
            rows = await conn.fetch(
                "SELECT s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
                " WHERE a.client_addr IS NOT NULL AND a.datname = $1",
                s.db.database,
            )
            assert len(rows) >= 3
            assert all(r["ssl"] and r["version"] in ("TLSv1.2", "TLSv1.3") for r in rows)
        finally:
            await conn.close()

        # the alert went out on rtm.alerts: read back over the mutual-TLS listener
        published = await read_topic(encrypted.mtls, s.kafka.topic_alerts, expect=1, timeout=60)
        assert any(a.get("alert", a).get("kind") == "red_flag" for a in published), published
    finally:
        for child in children:
            child.stop()


async def _refused_by_kafka(encrypted: Encrypted, reason: str, **kwargs: Any) -> None:
    """The client gets no metadata, and the broker logs why it refused it on that port
    (aiokafka only says it could not bootstrap)."""
    log = encrypted.mtls.state_dir / "kafka" / "kafka.log"
    start = log.stat().st_size
    admin = AIOKafkaAdminClient(request_timeout_ms=5000, **kwargs)
    try:
        with pytest.raises(Exception):  # noqa: B017 - aiokafka's KafkaConnectionError
            await asyncio.wait_for(admin.start(), 30)
            await asyncio.wait_for(admin.list_topics(), 30)
    finally:
        await admin.close()
    port = kwargs["bootstrap_servers"].rsplit(":", 1)[1]

    async def logged() -> bool:
        lines = log.read_bytes()[start:].decode(errors="replace").splitlines()
        return any(
            "Failed authentication" in ln and f"127.0.0.1:{port}-" in ln and reason in ln
            for ln in lines
        )

    await wait_for(logged, timeout=15, what=f"the broker refusing {kwargs} ({reason})")


async def _refused_by_postgres(dsn: str) -> Exception:
    try:
        conn = await asyncpg.connect(dsn, timeout=15)
    except Exception as exc:
        return exc
    await conn.close()
    raise AssertionError(f"PostgreSQL took a connection it should refuse: {dsn}")


async def test_plaintext_and_unverified_clients_are_refused(encrypted: Encrypted) -> None:
    s, mtls = encrypted.settings, encrypted.mtls
    # Kafka: plaintext on either listener, TLS without the client certificate on the
    # mutual-TLS one, SCRAM with a wrong password
    for port in (mtls.kafka.port, s.kafka.port):
        await _refused_by_kafka(
            encrypted, "SSL handshake failed", bootstrap_servers=f"127.0.0.1:{port}"
        )
    no_cert = variant(mtls, kafka_ssl_certfile=None, kafka_ssl_keyfile=None)
    await _refused_by_kafka(encrypted, "SSL handshake failed", **kafka_client_kwargs(no_cert))
    wrong = variant(s, kafka_sasl_password=SecretStr("not-the-password"))
    await _refused_by_kafka(encrypted, "invalid credentials", **kafka_client_kwargs(wrong))

    # PostgreSQL: no TLS; the right CA but a host name the certificate does not name;
    # another CA; no client certificate
    plain = variant(s, pg_sslmode="disable", pg_sslrootcert=None, pg_sslcert=None, pg_sslkey=None)
    exc = await _refused_by_postgres(plain.db.dsn)
    assert "no encryption" in str(exc)
    exc = await _refused_by_postgres(variant(s, pg_host="localhost").db.dsn)
    assert "Hostname mismatch" in str(exc) or "localhost" in str(exc)
    other = ThrowawayCA(encrypted.ca.folder / "other", name="another CA")
    exc = await _refused_by_postgres(variant(s, pg_sslrootcert=other.cert).db.dsn)
    assert "certificate verify failed" in str(exc)
    exc = await _refused_by_postgres(variant(s, pg_sslcert=None, pg_sslkey=None).db.dsn)
    assert "certificate" in str(exc)

    # and the right settings are taken (the negative controls fail for their reason only)
    conn = await asyncpg.connect(s.db.dsn)
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(s))
    await admin.start()
    try:
        assert s.kafka.topic_events in await admin.list_topics()
    finally:
        await admin.close()
