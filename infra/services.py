"""Local real services for development, tests and CI: Kafka (KRaft) and PostgreSQL + TimescaleDB.

No Docker engine is assumed. Everything comes from the registries this project may use:

* Kafka: the broker classpath is resolved from Maven Central with
  ``maven-dependency-plugin:3.8.1:copy-dependencies`` (``infra/kafka/pom.xml``) into
  ``<cache_dir>/kafka-<version>/libs`` and run as ``java -cp 'libs/*' kafka.Kafka``.
  Config, data, log and pid file live in ``<state_dir>/kafka``.
* PostgreSQL 15 from Debian (``apt-get install`` when missing) and TimescaleDB built from
  Debian trixie's source package (Apache-2 only build). The build is installed into
  ``<cache_dir>/timescaledb-<version>-pg15/root`` (``DESTDIR``) and copied into ``/``;
  later runs only copy. The cluster lives in ``ProvisionSettings.pg_data_path`` (outside the clone,
  owned by ``postgres``) next to its log file ``postgres.log`` and its socket folder.

Public API (used by ``rtm up`` / ``rtm down`` / ``rtm status``)::

    up(settings, log=print) -> None
    down(settings, log=print) -> None
    status(settings) -> list[ServiceStatus]

and, for a variant with encrypted listeners on its own ports and state dir (the transport
test; ``rtm up`` itself stays plaintext on 127.0.0.1)::

    kafka_up(settings, log=print, security=BrokerSecurity(...)) / kafka_down(settings)
    postgres_up(settings, log=print, tls=PostgresTls(...)) / postgres_down(settings)

Errors are raised as :class:`ServiceError` with a one-line message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import pwd
import shutil
import signal
import socket
import string
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg

from infra.provision import ProvisionSettings

__all__ = [
    "BrokerSecurity",
    "PostgresTls",
    "ServiceError",
    "ServiceStatus",
    "down",
    "kafka_down",
    "kafka_up",
    "pg_data_path",
    "postgres_down",
    "postgres_up",
    "status",
    "up",
]

Log = Callable[[str], None]
T = TypeVar("T")


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class _KafkaSection(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def topic_partitions(self) -> int: ...


class _DbSection(Protocol):
    @property
    def dsn(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def password(self) -> _Secret: ...
    @property
    def owner_user(self) -> str: ...
    @property
    def owner_password(self) -> _Secret: ...
    @property
    def database(self) -> str: ...
    @property
    def ssl_params(self) -> Mapping[str, str]: ...


class Settings(Protocol):
    """What provisioning reads of the project's settings (``streams.settings.Settings``
    has these): infra imports no project package, the CLI passes its settings in; the
    provisioning fields are infra's own (``infra/provision.py``)."""

    @property
    def state_dir(self) -> Path: ...
    @property
    def kafka(self) -> _KafkaSection: ...
    @property
    def db(self) -> _DbSection: ...
    @property
    def provision(self) -> ProvisionSettings: ...


HERE = Path(__file__).resolve().parent
KAFKA_POM = HERE / "kafka" / "pom.xml"
KAFKA_PROPS_TEMPLATE = HERE / "kafka" / "server.properties"
KAFKA_LOG4J = HERE / "kafka" / "log4j.properties"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"

PG_MAJOR = "15"
PG_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
PG_LIB = Path(f"/usr/lib/postgresql/{PG_MAJOR}/lib")
PG_SHARE = Path(f"/usr/share/postgresql/{PG_MAJOR}")
TSDB_SOURCES_FILE = Path("/etc/apt/sources.list.d/rtm-timescaledb-src.sources")
TSDB_SOURCES = """\
# Added by rtm-stream infra/services.py: Debian trixie source packages, used only to build
# TimescaleDB for PostgreSQL 15 on bookworm (`apt-get source --download-only timescaledb`).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
TSDB_CMAKE_FLAGS = [
    "-DAPACHE_ONLY=1",
    "-DREGRESS_CHECKS=OFF",
    "-DTAP_CHECKS=OFF",
    "-DWARNINGS_AS_ERRORS=OFF",
    "-DSEND_TELEMETRY_DEFAULT=OFF",
    "-DUSE_TELEMETRY=OFF",
]

KAFKA_READY_TIMEOUT_S = 120.0
KAFKA_STOP_TIMEOUT_S = 30.0
PG_START_TIMEOUT_S = 60


class ServiceError(RuntimeError):
    """A local service could not be provisioned, started or stopped (one-line message)."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    address: str
    detail: str


@dataclass(frozen=True)
class BrokerSecurity:
    """How the broker's client listeners speak. The default is the local stack's: one
    PLAINTEXT listener on ``settings.kafka.port``. ``protocol`` is the listener on
    ``kafka_port`` (also the inter-broker one); ``more_listeners`` adds listeners by
    protocol name and port (e.g. ``{"SASL_SSL": 19096}``); ``properties`` go into
    server.properties (``ssl.keystore.*``, ``sasl.enabled.mechanisms``, ...); ``scram``
    entries create SCRAM users when the storage is formatted (KRaft: ``--add-scram``, e.g.
    ``SCRAM-SHA-256=[name=rtm,password=...]``); ``client`` are the aiokafka keyword
    arguments (``security_protocol``, ``ssl_context``, ...) of the readiness poll."""

    protocol: str = "PLAINTEXT"
    more_listeners: Mapping[str, int] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    scram: Sequence[str] = ()
    client: Mapping[str, Any] = field(default_factory=dict)


PLAINTEXT_BROKER = BrokerSecurity()


@dataclass(frozen=True)
class PostgresTls:
    """TLS for a cluster: ``ssl = on`` with this server certificate and key (PEM), and
    TCP connections only over TLS (``hostssl`` lines in pg_hba.conf, no ``host`` ones).
    With ``client_cafile`` a client certificate signed by that CA is required as well
    (``clientcert=verify-ca``) besides the password."""

    certfile: Path
    keyfile: Path
    client_cafile: Path | None = None


# --------------------------------------------------------------------------- helpers


def _run(
    cmd: list[str],
    *,
    timeout: float,
    what: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    log_file: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; raise ServiceError with the tail of its output when it fails."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except FileNotFoundError as exc:
        raise ServiceError(f"{what}: command not found: {cmd[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"{what}: timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n")
    if proc.returncode != 0:
        tail = " | ".join(line for line in proc.stdout.strip().splitlines()[-5:])
        where = f" (full output: {log_file})" if log_file else ""
        raise ServiceError(f"{what} failed (exit {proc.returncode}){where}: {tail}")
    return proc


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ServiceError(f"prerequisite missing: `{tool}` not on PATH ({hint})")
    return path


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code, also when the caller already has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(factory())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# --------------------------------------------------------------------------- Kafka


def pg_data_path(settings: Settings) -> Path:
    """The PostgreSQL cluster's folder (``RTM_PG_DATA_DIR``, else one per state dir)."""
    return settings.provision.pg_data_path(settings.state_dir)


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64, never starting with "-" (the
    storage tool would read it as an option; Kafka's own Uuid.randomUuid skips those too)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _kafka_dir(settings: Settings) -> Path:
    return settings.state_dir / "kafka"


def _kafka_libs(settings: Settings) -> Path:
    return settings.provision.cache_dir / f"kafka-{settings.provision.kafka_version}" / "libs"


def _kafka_address(settings: Settings) -> str:
    return f"{settings.kafka.host}:{settings.kafka.port}"


def kafka_pid(settings: Settings) -> int | None:
    """PID of our broker if it runs (pid file, process alive and really kafka.Kafka)."""
    pid = _read_pid(_kafka_dir(settings) / "kafka.pid")
    if pid is None or not _pid_alive(pid):
        return None
    if "kafka.Kafka" not in _cmdline(pid):
        return None
    return pid


async def _kafka_metadata(bootstrap: str, timeout: float, **client: Any) -> int:
    """Ask the cluster for its metadata; return the number of brokers. ``client``: the
    security arguments of aiokafka's client (a broker with TLS or SASL listeners)."""
    # deferred: aiokafka costs ~0.2 s at every CLI start; only the broker probe needs it
    from aiokafka import AIOKafkaClient

    # aiokafka logs every refused connection at ERROR; while polling that is expected noise.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    kafka = AIOKafkaClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **client
    )
    try:
        await asyncio.wait_for(kafka.bootstrap(), timeout)
        brokers = kafka.cluster.brokers()
        if not brokers:
            raise ConnectionError("metadata lists no broker yet")
        return len(brokers)
    finally:
        await kafka.close()
        quiet.setLevel(level)


def _kafka_answers(settings: Settings, timeout: float = 5.0) -> bool:
    try:
        _run_async(lambda: _kafka_metadata(_kafka_address(settings), timeout))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return False


def _kafka_classpath(settings: Settings, log: Log) -> Path:
    libs = _kafka_libs(settings)
    stamp = libs.parent / ".complete"
    if stamp.exists() and any(libs.glob("kafka_2.13-*.jar")):
        log(f"kafka: classpath cached at {libs}")
        return libs
    _require("java", "install OpenJDK 17: apt-get install openjdk-17-jre-headless")
    _require("mvn", "install Maven: apt-get install maven")
    log(
        f"kafka: resolving kafka_2.13:{settings.provision.kafka_version} from Maven Central"
        f" into {libs}"
    )
    t0 = time.monotonic()
    tmp = libs.parent / f"libs.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(KAFKA_POM),
            f"-Dkafka.version={settings.provision.kafka_version}",
            DEPENDENCY_PLUGIN,
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
        timeout=900,
        what="maven copy-dependencies for Kafka",
        log_file=libs.parent / "mvn.log",
    )
    if not any(tmp.glob("kafka_2.13-*.jar")):
        raise ServiceError(f"maven resolved no kafka_2.13 jar into {tmp}")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    stamp.write_text(f"{settings.provision.kafka_version}\n")
    log(
        f"kafka: classpath ready ({len(list(libs.glob('*.jar')))} jars, "
        f"{time.monotonic() - t0:.1f} s)"
    )
    return libs


def _java_cmd(libs: Path, log4j: Path, main: str, *args: str, heap: str = "-Xmx1g") -> list[str]:
    java = _require("java", "install OpenJDK 17: apt-get install openjdk-17-jre-headless")
    return [
        java,
        heap,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def _kafka_listeners(settings: Settings, security: BrokerSecurity) -> dict[str, int]:
    return {security.protocol: settings.kafka.port, **security.more_listeners}


def _kafka_write_config(
    settings: Settings, kdir: Path, security: BrokerSecurity = PLAINTEXT_BROKER
) -> Path:
    template = string.Template(KAFKA_PROPS_TEMPLATE.read_text())
    listeners = _kafka_listeners(settings, security)
    props = template.substitute(
        host=settings.kafka.host,
        controller_port=settings.provision.kafka_controller_port,
        data_dir=kdir / "data",
        partitions=settings.kafka.topic_partitions,
        listeners=",".join(f"{p}://{settings.kafka.host}:{port}" for p, port in listeners.items()),
        inter_broker=security.protocol,
        protocol_map=",".join(f"{p}:{p}" for p in listeners),
    )
    if security.properties:
        props += "\n# Listener security (infra.services.BrokerSecurity)\n" + "".join(
            f"{key}={value}\n" for key, value in security.properties.items()
        )
    path = kdir / "server.properties"
    path.write_text(props)
    shutil.copyfile(KAFKA_LOG4J, kdir / "log4j.properties")
    return path


def _kafka_start(
    settings: Settings, log: Log, security: BrokerSecurity = PLAINTEXT_BROKER
) -> int | None:
    """Start the broker detached; return its pid, or None if it was already running."""
    address = _kafka_address(settings)
    pid = kafka_pid(settings)
    if pid is not None:
        log(f"kafka: already running (pid {pid}) on {address}")
        return None
    ports = [
        *_kafka_listeners(settings, security).values(),
        settings.provision.kafka_controller_port,
    ]
    for port in ports:
        if _port_open(settings.kafka.host, port):
            raise ServiceError(
                f"kafka: port {settings.kafka.host}:{port} is taken by another process "
                f"(not the broker of {_kafka_dir(settings)}); stop it or set RTM_KAFKA_PORT / "
                f"RTM_KAFKA_CONTROLLER_PORT"
            )
    libs = _kafka_classpath(settings, log)
    kdir = _kafka_dir(settings)
    (kdir / "data").mkdir(parents=True, exist_ok=True)
    props = _kafka_write_config(settings, kdir, security)
    log4j = kdir / "log4j.properties"

    if not (kdir / "data" / "meta.properties").exists():
        cid_file = kdir / "cluster.id"
        if not cid_file.exists() or cid_file.read_text().startswith("-"):
            cid_file.write_text(_cluster_id() + "\n")
        cid = cid_file.read_text().strip()
        log(f"kafka: formatting storage in {kdir / 'data'} (cluster id {cid})")
        _run(
            _java_cmd(
                libs,
                log4j,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cid,
                "-c",
                str(props),
                "--ignore-formatted",
                *[arg for entry in security.scram for arg in ("--add-scram", entry)],
                heap="-Xmx256m",
            ),
            timeout=120,
            what="kafka storage format",
            log_file=kdir / "format.log",
        )

    log_file = kdir / "kafka.log"
    cmd = _java_cmd(libs, log4j, "kafka.Kafka", str(props))
    # Double fork through sh: the broker is reparented to init (no zombie in a long-lived
    # caller), gets its own session (setsid) and survives the caller; sh prints its pid.
    with log_file.open("a") as fh:
        fh.write(f"\n===== rtm up {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)}\n")
    launcher = subprocess.run(
        [
            "sh",
            "-c",
            'log="$1"; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!',
            "sh",
            str(log_file),
            *cmd,
        ],
        cwd=kdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
    )
    try:
        pid = int(launcher.stdout.strip())
    except ValueError as exc:
        raise ServiceError(
            f"kafka: could not launch the broker: {launcher.stderr.strip()}"
        ) from exc
    (kdir / "kafka.pid").write_text(f"{pid}\n")
    log(f"kafka: started broker pid {pid}, log {log_file}")
    return pid


def _kafka_wait_ready(
    settings: Settings, pid: int, log: Log, client: Mapping[str, Any] | None = None
) -> None:
    address = _kafka_address(settings)
    log_file = _kafka_dir(settings) / "kafka.log"
    deadline = time.monotonic() + KAFKA_READY_TIMEOUT_S
    t0 = time.monotonic()
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            raise ServiceError(
                f"kafka: broker exited during startup; see {log_file}: {_tail(log_file, 3)}"
            )
        try:
            n = _run_async(lambda: _kafka_metadata(address, 5.0, **(client or {})))
            log(f"kafka: ready on {address} ({n} broker, {time.monotonic() - t0:.1f} s)")
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            time.sleep(0.5)
    raise ServiceError(
        f"kafka: no metadata from {address} after {KAFKA_READY_TIMEOUT_S:.0f} s "
        f"({type(last).__name__}: {last}); see {log_file}"
    )


def _kafka_stop(settings: Settings, log: Log) -> None:
    pid_file = _kafka_dir(settings) / "kafka.pid"
    pid = kafka_pid(settings)
    if pid is None:
        log("kafka: not running")
        pid_file.unlink(missing_ok=True)
        return
    log(f"kafka: stopping pid {pid}")
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + KAFKA_STOP_TIMEOUT_S
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        log(f"kafka: still running after {KAFKA_STOP_TIMEOUT_S:.0f} s, sending SIGKILL")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    log(f"kafka: stopped ({time.monotonic() - t0:.1f} s)")


def _kafka_status(settings: Settings) -> ServiceStatus:
    address = _kafka_address(settings)
    pid = kafka_pid(settings)
    log_file = _kafka_dir(settings) / "kafka.log"
    if pid is None:
        return ServiceStatus("kafka", False, address, "not running")
    if not _kafka_answers(settings):
        return ServiceStatus(
            "kafka", False, address, f"pid {pid} alive but metadata not answered; see {log_file}"
        )
    return ServiceStatus(
        "kafka",
        True,
        address,
        f"pid {pid}, Kafka {settings.provision.kafka_version} KRaft, log {log_file}",
    )


# --------------------------------------------------------------------------- PostgreSQL


def _pg_local_dsn(settings: Settings) -> str:
    """DSN of the local cluster; equals settings.db.dsn unless RTM_DATABASE_URL overrides it
    (with the same TLS parameters: sslmode, sslrootcert, ...)."""
    pw = settings.db.password.get_secret_value()
    return (
        f"postgresql://{settings.db.user}:{pw}@{settings.db.host}:{settings.db.port}/"
        f"{settings.db.database}?{urllib.parse.urlencode(settings.db.ssl_params, safe='/')}"
    )


def _pg_base(settings: Settings) -> Path:
    return pg_data_path(settings).parent


def _pg_socket_dir(settings: Settings) -> Path:
    return _pg_base(settings) / "socket"


def _pg_log(settings: Settings) -> Path:
    return _pg_base(settings) / "postgres.log"


def _as_postgres(cmd: list[str]) -> list[str]:
    """Run as the postgres user when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() == 0:
        runuser = _require("runuser", "part of util-linux: apt-get install util-linux")
        return [runuser, "-u", "postgres", "--", *cmd]
    return cmd


def _pg_pid(settings: Settings) -> int | None:
    pid = _read_pid(pg_data_path(settings) / "postmaster.pid")
    if pid is None or not _pid_alive(pid):
        return None
    if "postgres" not in _cmdline(pid):
        return None
    return pid


class _Apt:
    """apt-get with one `apt-get update` per `up`, run just before the first install."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.updated = False

    def _check(self) -> None:
        _require("apt-get", "this needs Debian's apt-get to install PostgreSQL 15")
        if os.geteuid() != 0:
            raise ServiceError("installing Debian packages needs root (apt-get); rerun as root")

    def env(self) -> dict[str, str]:
        return {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def update(self) -> None:
        if self.updated:
            return
        self._check()
        self.log("apt: apt-get update")
        t0 = time.monotonic()
        _run(
            ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "update"],
            timeout=600,
            what="apt-get update",
            env=self.env(),
        )
        self.updated = True
        self.log(f"apt: updated ({time.monotonic() - t0:.1f} s)")

    def install(self, *packages: str) -> None:
        missing = [p for p in packages if not _dpkg_installed(p)]
        if not missing:
            return
        self.update()
        self.log(f"apt: installing {' '.join(missing)}")
        t0 = time.monotonic()
        _run(
            [
                "apt-get",
                "-q",
                "-y",
                "--no-install-recommends",
                "-o",
                "DPkg::Lock::Timeout=300",
                "-o",
                "Dpkg::Options::=--force-confold",
                "install",
                *missing,
            ],
            timeout=900,
            what=f"apt-get install {' '.join(missing)}",
            env=self.env(),
        )
        self.log(f"apt: installed ({time.monotonic() - t0:.1f} s)")


def _dpkg_installed(package: str) -> bool:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}", package],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            timeout=30,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "installed"


def _pg_install(apt: _Apt, log: Log) -> None:
    if (PG_BIN / "postgres").exists() and (PG_BIN / "initdb").exists():
        return
    log(f"postgres: PostgreSQL {PG_MAJOR} not found, installing it from Debian")
    # Install postgresql-common first and switch off the automatic "main" cluster on 5432:
    # the project runs its own cluster on its own port.
    apt.install("postgresql-common")
    conf = Path("/etc/postgresql-common/createcluster.conf")
    if conf.exists():
        text = conf.read_text()
        if "create_main_cluster = false" not in text:
            conf.write_text(text.rstrip("\n") + "\ncreate_main_cluster = false\n")
    apt.install(f"postgresql-{PG_MAJOR}")
    if not (PG_BIN / "postgres").exists():
        raise ServiceError(f"postgres: {PG_BIN / 'postgres'} missing after apt-get install")


def _tsdb_installed(settings: Settings) -> bool:
    return (PG_LIB / "timescaledb.so").exists() and (
        PG_LIB / f"timescaledb-{settings.provision.timescaledb_version}.so"
    ).exists()


def _tsdb_cache(settings: Settings) -> Path:
    return (
        settings.provision.cache_dir
        / f"timescaledb-{settings.provision.timescaledb_version}-pg{PG_MAJOR}"
    )


def _tsdb_add_sources(log: Log) -> None:
    if TSDB_SOURCES_FILE.exists():
        return
    if os.geteuid() != 0:
        raise ServiceError(f"timescaledb: adding {TSDB_SOURCES_FILE} needs root")
    log(f"apt: adding Debian trixie deb-src list {TSDB_SOURCES_FILE}")
    TSDB_SOURCES_FILE.write_text(TSDB_SOURCES)


def _tsdb_install(settings: Settings, apt: _Apt, log: Log) -> None:
    version = settings.provision.timescaledb_version
    if _tsdb_installed(settings):
        log(f"timescaledb: {version} already installed in {PG_LIB}")
        return
    cache = _tsdb_cache(settings)
    root = cache / "root"
    stamp = cache / ".complete"
    if not stamp.exists():
        _tsdb_build(settings, apt, cache, log)
    log(f"timescaledb: installing {version} from cache {root}")
    _run(
        ["cp", "-a", "--no-preserve=ownership", f"{root}/.", "/"],
        timeout=120,
        what="copy the TimescaleDB build into /",
    )
    if not _tsdb_installed(settings):
        raise ServiceError(
            f"timescaledb: {PG_LIB}/timescaledb-{version}.so missing after install"
            f" (cache {root} incomplete? remove {cache} and rerun)"
        )


def _tsdb_build(settings: Settings, apt: _Apt, cache: Path, log: Log) -> None:
    version = settings.provision.timescaledb_version
    for tool, hint in (
        ("cmake", "apt-get install cmake"),
        ("gcc", "apt-get install gcc"),
        ("make", "apt-get install make"),
    ):
        _require(tool, hint)
    log(
        f"timescaledb: building {version} for PostgreSQL {PG_MAJOR} from Debian's source "
        f"package (once; cached in {cache})"
    )
    t0 = time.monotonic()
    if not TSDB_SOURCES_FILE.exists():
        _tsdb_add_sources(log)
        apt.updated = False  # the new source list needs its index
    apt.install(f"postgresql-server-dev-{PG_MAJOR}", "dpkg-dev")
    apt.update()  # `apt-get source` needs the trixie Sources index even if nothing was missing

    shutil.rmtree(cache, ignore_errors=True)
    src = cache / "src"
    src.mkdir(parents=True)
    build_log = cache / "build.log"
    _run(
        ["apt-get", "source", "--download-only", "timescaledb"],
        cwd=src,
        timeout=600,
        what="apt-get source timescaledb",
        log_file=build_log,
        env=apt.env(),
    )
    dscs = sorted(src.glob("timescaledb_*.dsc"))
    if not dscs:
        raise ServiceError(f"timescaledb: no .dsc downloaded into {src}")
    dsc = dscs[-1]
    if f"_{version}" not in dsc.name:
        raise ServiceError(
            f"timescaledb: Debian serves {dsc.name}, not {version}; set RTM_TIMESCALEDB_VERSION"
        )
    _run(
        ["dpkg-source", "--no-check", "-x", dsc.name, "tree"],
        cwd=src,
        timeout=300,
        what="dpkg-source -x",
        log_file=build_log,
    )
    tree = src / "tree"
    env = {**os.environ, "PATH": f"{PG_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    _run(
        ["./bootstrap", *TSDB_CMAKE_FLAGS, f"-DPG_CONFIG={PG_BIN / 'pg_config'}"],
        cwd=tree,
        timeout=600,
        what="timescaledb ./bootstrap (cmake)",
        env=env,
        log_file=build_log,
    )
    jobs = str(max(2, os.cpu_count() or 2))
    _run(
        ["make", "-C", "build", f"-j{jobs}"],
        cwd=tree,
        timeout=1800,
        what="timescaledb make",
        env=env,
        log_file=build_log,
    )
    root = cache / "root"
    _run(
        ["make", "-C", "build", "install", f"DESTDIR={root}"],
        cwd=tree,
        timeout=600,
        what="timescaledb make install",
        env=env,
        log_file=build_log,
    )
    so = root / PG_LIB.relative_to("/") / f"timescaledb-{version}.so"
    if not so.exists():
        raise ServiceError(f"timescaledb: build produced no {so}; see {build_log}")
    shutil.rmtree(src, ignore_errors=True)  # keep only the installed tree and the log
    (cache / ".complete").write_text(f"{version}\n")
    log(f"timescaledb: built {version} in {time.monotonic() - t0:.1f} s")


def _pg_conf(settings: Settings) -> str:
    return f"""\
# Written by rtm-stream infra/services.py on every `rtm up`; edits are overwritten.
listen_addresses = '{settings.db.host}'
port = {settings.db.port}
unix_socket_directories = '{_pg_socket_dir(settings)}'
max_connections = 200

# pg_stat_statements: per-statement times, for profiling the worker (docs/benchmarks.md)
shared_preload_libraries = 'timescaledb,pg_stat_statements'
timescaledb.telemetry_level = off
timescaledb.max_background_workers = 8
max_worker_processes = 16
max_parallel_workers = 2
max_parallel_workers_per_gather = 1
max_locks_per_transaction = 256

# Sized for a 2-core / 24 GiB development and CI machine.
shared_buffers = 2GB
effective_cache_size = 8GB
work_mem = 16MB
maintenance_work_mem = 512MB
wal_buffers = 16MB
max_wal_size = 4GB
min_wal_size = 512MB
checkpoint_completion_target = 0.9
random_page_cost = 1.1
effective_io_concurrency = 200
jit = off

# Durable defaults: fsync and synchronous_commit stay on.
fsync = on
synchronous_commit = on

log_timezone = 'UTC'
timezone = 'UTC'
log_min_duration_statement = 1000
log_line_prefix = '%m [%p] %q%u@%d '
"""


def _pg_tls_setup(settings: Settings, tls: PostgresTls) -> str:
    """Copy the certificate files into the cluster (PostgreSQL wants its key owned by it,
    mode 0600), allow TCP only over TLS; the rtm.conf lines that switch TLS on."""
    data = pg_data_path(settings)
    files = {"server.crt": tls.certfile, "server.key": tls.keyfile}
    if tls.client_cafile is not None:
        files["client-ca.crt"] = tls.client_cafile
    for name, source in files.items():
        shutil.copyfile(source, data / name)
        os.chmod(data / name, 0o600)
        _pg_chown(data / name)
    client = " clientcert=verify-ca" if tls.client_cafile is not None else ""
    hba = data / "pg_hba.conf"
    hba.write_text(
        "# Written by rtm-stream infra/services.py (PostgresTls): TCP only over TLS.\n"
        "local all all peer\n"
        f"hostssl all all 127.0.0.1/32 scram-sha-256{client}\n"
        f"hostssl all all ::1/128 scram-sha-256{client}\n"
    )
    _pg_chown(hba)
    conf = (
        "\n# TLS (infra.services.PostgresTls)\n"
        "ssl = on\n"
        "ssl_cert_file = 'server.crt'\n"
        "ssl_key_file = 'server.key'\n"
        "ssl_min_protocol_version = 'TLSv1.2'\n"
    )
    if tls.client_cafile is not None:
        conf += "ssl_ca_file = 'client-ca.crt'\n"
    return conf


def _pg_init(settings: Settings, log: Log) -> None:
    data = pg_data_path(settings)
    base = _pg_base(settings)
    if (data / "PG_VERSION").exists():
        return
    log(f"postgres: initdb in {data}")
    base.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    os.chmod(data, 0o700)
    pwfile = base / ".initdb-pw"
    pwfile.write_text(uuid.uuid4().hex + "\n")  # superuser password; local access is peer
    try:
        _pg_chown(base, data, pwfile)
        _run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                ]
            ),
            timeout=300,
            what="initdb",
            cwd=base,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    with (data / "postgresql.conf").open("a") as fh:
        fh.write("\ninclude_if_exists = 'rtm.conf'\n")


def _pg_chown(*paths: Path) -> None:
    """Give the postgres user the folders and files it must own (when we are root)."""
    if os.geteuid() != 0:
        return
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServiceError(
            "postgres: system user `postgres` missing (install postgresql-15)"
        ) from exc
    for path in paths:
        if path.exists():
            os.lchown(path, pw.pw_uid, pw.pw_gid)


async def _pg_query(dsn: str, timeout: float) -> dict[str, str | None]:
    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        await conn.fetchval("SELECT 1", timeout=timeout)
        ext = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", timeout=timeout
        )
        lic = None
        if ext is not None:
            lic = await conn.fetchval("SHOW timescaledb.license", timeout=timeout)
        server = await conn.fetchval("SHOW server_version", timeout=timeout)
        return {"timescaledb": ext, "license": lic, "server": server}
    finally:
        await conn.close()


def _pg_psql(settings: Settings, database: str, sql: str, variables: dict[str, str]) -> None:
    cmd = [
        str(PG_BIN / "psql"),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        str(_pg_socket_dir(settings)),
        "-p",
        str(settings.db.port),
        "-U",
        "postgres",
        "-d",
        database,
    ]
    for key, value in variables.items():
        cmd += ["-v", f"{key}={value}"]
    _run(
        _as_postgres(cmd + ["-f", "-"]),
        input=sql,
        timeout=120,
        cwd=_pg_base(settings),
        what=f"psql setup of database {database}",
    )


_PG_ROLE_SQL = """\
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \\gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'role', :'pw') \\gexec
"""


def _pg_provision(settings: Settings, log: Log) -> None:
    """The owner role (runs the migrations, owns the database) and the application role
    (gateway, worker, CLI: granted by each migration run, streams/db/roles.py), each with
    its password; the database; the timescaledb extension. Idempotent."""
    roles = [(settings.db.owner_user, settings.db.owner_password.get_secret_value())]
    if settings.db.user != settings.db.owner_user:
        roles.append((settings.db.user, settings.db.password.get_secret_value()))
    for role, pw in roles:
        _pg_psql(settings, "postgres", _PG_ROLE_SQL, {"role": role, "pw": pw})
    _pg_psql(
        settings,
        "postgres",
        """\
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \\gexec
""",
        {"db": settings.db.database, "role": settings.db.owner_user},
    )
    _pg_psql(settings, settings.db.database, "CREATE EXTENSION IF NOT EXISTS timescaledb;\n", {})
    log(
        f"postgres: roles {' and '.join(r for r, _ in roles)} (owner first), database "
        f"{settings.db.database} and extension timescaledb in place"
    )


def _pg_wait_ready(settings: Settings, log: Log, timeout: float = 30.0) -> dict[str, str | None]:
    dsn = _pg_local_dsn(settings)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return _run_async(lambda: _pg_query(dsn, 5.0))
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            time.sleep(0.5)
    raise ServiceError(
        f"postgres: SELECT 1 over {settings.db.host}:{settings.db.port} failed "
        f"after {timeout:.0f} s ({type(last).__name__}: {last}); "
        f"see {_pg_log(settings)}"
    )


def _pg_up(settings: Settings, log: Log, tls: PostgresTls | None = None) -> None:
    address = f"{settings.db.host}:{settings.db.port}"
    pid = _pg_pid(settings)
    if pid is not None:
        _pg_provision(settings, log)  # roles added since the cluster was made (idempotent)
        info = _pg_wait_ready(settings, log, timeout=10)
        log(
            f"postgres: already running (pid {pid}) on {address}, timescaledb "
            f"{info['timescaledb']} ({info['license']})"
        )
        return
    if _port_open(settings.db.host, settings.db.port):
        raise ServiceError(
            f"postgres: port {address} is taken by another process (not the "
            f"cluster in {pg_data_path(settings)}); stop it or set RTM_PG_PORT"
        )
    apt = _Apt(log)
    if not _tsdb_installed(settings) and not _tsdb_cache(settings).joinpath(".complete").exists():
        _tsdb_add_sources(log)  # before the one `apt-get update`
    _pg_install(apt, log)
    _tsdb_install(settings, apt, log)
    _pg_init(settings, log)
    sock = _pg_socket_dir(settings)
    sock.mkdir(parents=True, exist_ok=True)
    conf = pg_data_path(settings) / "rtm.conf"
    conf.write_text(_pg_conf(settings) + (_pg_tls_setup(settings, tls) if tls else ""))
    _pg_chown(sock, conf)
    pg_log = _pg_log(settings)
    pg_log.touch()
    _pg_chown(pg_log)
    log(f"postgres: starting on {address}, log {pg_log}")
    t0 = time.monotonic()
    cmd = _as_postgres(
        [
            str(PG_BIN / "pg_ctl"),
            "start",
            "-D",
            str(pg_data_path(settings)),
            "-l",
            str(pg_log),
            "-w",
            "-t",
            str(PG_START_TIMEOUT_S),
        ]
    )
    size = pg_log.stat().st_size
    try:
        _run(cmd, timeout=PG_START_TIMEOUT_S + 30, what="pg_ctl start", cwd=_pg_base(settings))
    except ServiceError as exc:
        if pg_log.stat().st_size == size:
            raise
        raise ServiceError(f"{exc}; see {pg_log}: {_tail(pg_log, 3)}") from exc
    _pg_provision(settings, log)
    info = _pg_wait_ready(settings, log)
    log(
        f"postgres: ready on {address} ({time.monotonic() - t0:.1f} s), PostgreSQL "
        f"{info['server']}, timescaledb {info['timescaledb']} ({info['license']})"
    )


def _pg_down(settings: Settings, log: Log) -> None:
    if _pg_pid(settings) is None:
        log("postgres: not running")
        return
    log("postgres: stopping (pg_ctl stop -m fast)")
    t0 = time.monotonic()
    _run(
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "stop",
                "-D",
                str(pg_data_path(settings)),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
            ]
        ),
        timeout=90,
        what="pg_ctl stop",
        cwd=_pg_base(settings),
    )
    log(f"postgres: stopped ({time.monotonic() - t0:.1f} s)")


def _pg_status(settings: Settings) -> ServiceStatus:
    dsn = _pg_local_dsn(settings)
    pid = _pg_pid(settings)
    if pid is None:
        return ServiceStatus("timescaledb", False, dsn, "not running")
    try:
        info = _run_async(lambda: _pg_query(dsn, 5.0))
    except Exception as exc:  # noqa: BLE001
        return ServiceStatus(
            "timescaledb",
            False,
            dsn,
            f"pid {pid} alive but SELECT 1 failed: {type(exc).__name__}: {exc}",
        )
    return ServiceStatus(
        "timescaledb",
        True,
        dsn,
        f"pid {pid}, PostgreSQL {info['server']}, timescaledb {info['timescaledb']} "
        f"({info['license']}), data {pg_data_path(settings)}, log {_pg_log(settings)}",
    )


# --------------------------------------------------------------------------- public API


@contextlib.contextmanager
def _lock(settings: Settings, log: Log):  # type: ignore[no-untyped-def]
    """Serialize concurrent up/down calls on this machine (ports and caches are shared)."""
    settings.provision.cache_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.provision.cache_dir / "services.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another `rtm up/down` on this machine to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def up(settings: Settings, log: Log = print) -> None:
    """Provision and start Kafka and PostgreSQL+TimescaleDB; idempotent."""
    t0 = time.monotonic()
    with _lock(settings, log):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        # Start the broker first so that its JVM boots while PostgreSQL is prepared.
        kafka_pid = _kafka_start(settings, log)
        _pg_up(settings, log)
        if kafka_pid is not None:
            _kafka_wait_ready(settings, kafka_pid, log)
        elif not _kafka_answers(settings):
            raise ServiceError(
                f"kafka: process runs but {_kafka_address(settings)} answers no "
                f"metadata; see {_kafka_dir(settings) / 'kafka.log'}"
            )
    log(f"up: done in {time.monotonic() - t0:.1f} s")


def kafka_up(
    settings: Settings, log: Log = print, security: BrokerSecurity = PLAINTEXT_BROKER
) -> None:
    """Start only the broker, with these listeners (a variant on its own ports and state
    dir: the transport test's TLS and SASL_SSL broker); waits until it answers metadata."""
    with _lock(settings, log):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        pid = _kafka_start(settings, log, security)
    if pid is not None:
        _kafka_wait_ready(settings, pid, log, security.client)


def kafka_down(settings: Settings, log: Log = print) -> None:
    with _lock(settings, log):
        _kafka_stop(settings, log)


def postgres_up(settings: Settings, log: Log = print, tls: PostgresTls | None = None) -> None:
    """Start only a PostgreSQL + TimescaleDB cluster (``pg_data_path(settings)``), with TLS
    when given; role, database and extension provisioned as by ``up``."""
    with _lock(settings, log):
        _pg_up(settings, log, tls)


def postgres_down(settings: Settings, log: Log = print) -> None:
    with _lock(settings, log):
        _pg_down(settings, log)


def down(settings: Settings, log: Log = print) -> None:
    """Stop Kafka and PostgreSQL; idempotent. Data and caches are kept."""
    errors: list[str] = []
    with _lock(settings, log):
        for stop in (_kafka_stop, _pg_down):
            try:
                stop(settings, log)
            except ServiceError as exc:
                errors.append(str(exc))
    if errors:
        raise ServiceError("; ".join(errors))


def status(settings: Settings) -> list[ServiceStatus]:
    """Real state of each service: process alive and the port answers its protocol."""
    return [_kafka_status(settings), _pg_status(settings)]
