"""The local development stack, shared by `rtm up`/`down`/`status`, the demo, the
benchmark, `rtm chaos` and the test setup: the services (Kafka, TimescaleDB) and the
gateway and worker processes, the development key and the development users (RTM_ENV=dev).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from infra import services
from rtm.files import write_private
from streams.access import hash_password, key_digest, new_key, parse_key
from streams.db import access as db
from streams.db.pool import migrate
from streams.http.webassets import ensure_vendor
from streams.settings import Settings

DEV_KEY_FILE = "dev-api-key"
DEV_USERS_FILE = "dev-users.json"
DEV_ORG = "default"
KEPT_FILE = "running.json"  # gateway and worker that `rtm demo` leaves running


# --- the services -------------------------------------------------------------------------


def prepare(settings: Settings, log: Callable[[str], None]) -> None:
    """Services up (idempotent), schema migrated, topics declared, dev key provisioned."""
    # deferred: streams.kafka.topics pulls aiokafka (~0.2 s), only `rtm up` needs it
    from streams.kafka.topics import ensure_topics

    _refuse_tls_to_the_local_stack(settings, services.ServiceError)
    services.up(settings, log=log)
    log(
        f"dashboard libraries (npm ci, pinned by streams/http/web/package-lock.json):"
        f" {ensure_vendor(settings)}"
    )
    applied = asyncio.run(migrate(settings.db.owner_dsn, settings.db.app_role))
    created = asyncio.run(ensure_topics(settings))
    key = ensure_dev_key(settings)
    log(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
    log(f"topics created: {', '.join(created) or 'none (all exist)'}")
    if settings.env == "dev":
        users = asyncio.run(provision_dev(settings, key))
        log(
            f"dev sign-ins (RTM_ENV=dev only): {', '.join(sorted(users))};"
            f" passwords in {settings.state_dir / DEV_USERS_FILE}"
        )


def _refuse_tls_to_the_local_stack(settings: Settings, error: type[Exception]) -> None:
    """`rtm up` runs Kafka and PostgreSQL in plaintext on 127.0.0.1: settings that demand
    TLS of them would fail later with a handshake error; say so now."""
    wrong = []
    if settings.kafka.bootstrap is None and settings.kafka.security_protocol != "PLAINTEXT":
        wrong.append(f"RTM_KAFKA_SECURITY_PROTOCOL={settings.kafka.security_protocol}")
    if settings.db.url is None and settings.db.sslmode in (
        "require",
        "verify-ca",
        "verify-full",
    ):
        wrong.append(f"RTM_PG_SSLMODE={settings.db.sslmode}")
    if wrong:
        raise error(
            f"the local stack of `rtm up` is plaintext on {settings.kafka.host}: "
            f"{', '.join(wrong)} asks it for TLS; unset it, or point RTM_KAFKA_BOOTSTRAP / "
            "RTM_DATABASE_URL at servers with TLS"
        )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these same settings."""
    return {**os.environ, **settings.env_values()}


# --- the development key and users ------------------------------------------------------------


def dev_key_path(settings: Settings) -> Path:
    return settings.state_dir / DEV_KEY_FILE


def ensure_dev_key(settings: Settings) -> str:
    """The local development key that `rtm produce`, the demo and the tests use (a file in
    the state dir, made once; `rtm up` registers it in the database, in dev only)."""
    path = dev_key_path(settings)
    if path.exists():
        key = path.read_text().strip()
        if parse_key(key) is not None:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()[0]
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


DEV_USERS = (  # (username, role, clinician id)
    ("clinician", "clinician", "c-01"),
    ("billing", "billing", None),
    ("admin", "admin", None),
    ("operator", "operator", None),
    ("scheduler", "scheduler", None),
    ("manager", "manager", None),
)


async def provision_dev(settings: Settings, dev_key: str) -> dict[str, Any]:
    """RTM_ENV=dev only: register the development key (producer, integration, reader in
    the default organisation) and demo users with generated passwords, kept in
    ``<state dir>/dev-users.json`` (0600). Idempotent."""
    if settings.env != "dev":
        raise RuntimeError("demo users and the development key exist only with RTM_ENV=dev")
    parsed = parse_key(dev_key)
    assert parsed is not None, "the dev key file holds a key of the current format"
    key_id, secret = parsed
    path = settings.state_dir / DEV_USERS_FILE
    users: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        async with conn.transaction():
            if await db.key_record(conn, key_id) is None:
                salt = secrets.token_bytes(16)
                await db.delete_key(conn, key_id)  # a disabled dev key is made anew
                await db.add_key(
                    conn,
                    key_id,
                    DEV_ORG,
                    ["integration", "producer", "reader"],
                    "development key (RTM_ENV=dev)",
                    salt,
                    key_digest(salt, secret),
                )
            for username, role, clinician in DEV_USERS:
                entry = users.get(username) or {"password": secrets.token_urlsafe(12)}
                entry.update(role=role, org_id=DEV_ORG, clinician_id=clinician)
                users[username] = entry
                if not await db.set_password(conn, username, hash_password(entry["password"])):
                    await db.add_user(
                        conn, DEV_ORG, username, role, hash_password(entry["password"]), clinician
                    )
    finally:
        await conn.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(users, indent=2, sort_keys=True) + "\n")
    return users


# --- the gateway and worker processes ---------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL: Faust has known shutdown hangs, so this is bounded."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def spawn(
    settings: Settings, name: str, args: list[str], extra_env: Mapping[str, str] | None = None
) -> Child:
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    env = settings_env(settings)
    env.update(extra_env or {})
    out = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtm.cli", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    return Child(name, proc, log_path)


def wait_http(
    url: str, child: Child, timeout: float = 60.0, verify: bool | ssl.SSLContext = True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(
                f"{child.name} exited ({child.proc.returncode}); see {child.log_path}"
            )
        try:
            if httpx.get(url, timeout=2.0, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{child.name} not ready at {url} after {timeout}s; see {child.log_path}")


def start_gateway(settings: Settings) -> Child:
    child = spawn(settings, "gateway", ["api"])
    tls = settings.gateway.tls_certfile is not None
    wait_http(
        f"{'https' if tls else 'http'}://{settings.gateway.host}:{settings.gateway.port}/readyz",
        child,
        verify=(
            ssl.create_default_context(cafile=str(settings.gateway.tls_certfile)) if tls else True
        ),
    )
    return child


def start_worker(settings: Settings, name: str = "worker", restart: bool = False) -> Child:
    """A worker process; with ``restart`` under `rtm worker --restart`, which starts it
    again whenever it exits (the demo's worker: it outlives this command)."""
    args = ["worker", "--loglevel", settings.worker.loglevel]
    child = spawn(settings, name, [*args, "--restart"] if restart else args)
    wait_http(f"http://{settings.worker.web_host}:{settings.worker.web_port}/metrics", child)
    return child


def keep_running(settings: Settings, children: list[Child]) -> None:
    """Record children that outlive this command (`rtm down` stops them)."""
    path = settings.state_dir / KEPT_FILE
    path.write_text(json.dumps({c.name: c.proc.pid for c in children}) + "\n")


def kept_status(settings: Settings) -> list[tuple[str, int, bool, str]]:
    """(name, pid, running, health) of what `rtm demo` left running: the worker's and the
    gateway's /readyz answer beside whether the process is alive."""
    path = settings.state_dir / KEPT_FILE
    if not path.exists():
        return []
    out = []
    for name, pid in json.loads(path.read_text() or "{}").items():
        try:
            alive = b"rtm.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            alive = False
        url = (
            f"http://{settings.worker.web_host}:{settings.worker.web_port}/readyz"
            if "worker" in name
            else f"http://{settings.gateway.host}:{settings.gateway.port}/readyz"
        )
        health = "-"
        if alive:
            try:
                resp = httpx.get(url, timeout=2.0)
                health = "ready" if resp.status_code == 200 else f"not ready ({resp.text[:80]})"
            except httpx.HTTPError as exc:
                health = f"not answering ({type(exc).__name__})"
        out.append((name, int(pid), alive, health))
    return out


def stop_kept(settings: Settings, log: Callable[[str], None]) -> None:
    """Stop what `keep_running` recorded: SIGTERM, then SIGKILL after 20 s. A recorded pid
    is signalled only while it still runs `rtm.cli` (a pid can be reused after a reboot)."""
    path = settings.state_dir / KEPT_FILE
    if not path.exists():
        return
    kept: dict[str, int] = json.loads(path.read_text() or "{}")
    for name, pid in kept.items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # already gone
        if b"rtm.cli" not in cmdline:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break  # our own child, reaped
            except ChildProcessError:
                pass  # not our child: wait for /proc to drop it
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        log(f"stopped {name} (pid {pid})")
    path.unlink()
