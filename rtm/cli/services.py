"""`rtm up|down|status|db|api|worker`: the local services, and the gateway and worker
processes."""

from __future__ import annotations

import asyncio
import sys

import click

from infra import services
from rtm.cli.options import settings_of
from rtm.devstack import kept_status, prepare, settings_env, stop_kept
from rtm.restarter import run_restarting, worker_argv
from streams.db.pool import migrate
from streams.settings import Settings


def _log(message: str) -> None:
    click.echo(message, err=True)


def _warn_cleartext(settings: Settings) -> None:
    """Outside RTM_ENV=dev, say where Kafka or PostgreSQL traffic would go unencrypted."""
    # deferred: streams.kafka.transport pulls faust and aiokafka (~0.2 s at CLI start)
    from streams.kafka.transport import cleartext_warnings

    for line in cleartext_warnings(settings):
        click.echo(line, err=True)


# --- local services -----------------------------------------------------------------------


@click.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """Start Kafka and TimescaleDB locally (idempotent), migrate, create topics, dev key."""
    settings = settings_of(ctx)
    try:
        prepare(settings, log=_log)
    except services.ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    _print_status(settings)


@click.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the gateway and worker `rtm demo` left running, then Kafka and TimescaleDB."""
    stop_kept(settings_of(ctx), log=_log)
    services.down(settings_of(ctx), log=_log)


@click.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Whether each local service runs, and its address."""
    if not _print_status(settings_of(ctx)):
        sys.exit(1)


def _print_status(settings: Settings) -> bool:
    ok = True
    for s in services.status(settings):
        state = "running" if s.running else "stopped"
        ok = ok and s.running
        click.echo(f"{s.name:<12} {state:<8} {s.address}  {s.detail}".rstrip())
    for name, pid, alive, health in kept_status(settings):  # what `rtm demo` left running
        ok = ok and alive
        click.echo(f"{name:<12} {'running' if alive else 'stopped':<8} pid {pid}  {health}")
    return ok


@click.group()
def db() -> None:
    """Database commands."""


@db.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply the versioned SQL migrations under infra/migrations (idempotent)."""
    settings = settings_of(ctx)
    applied = asyncio.run(migrate(settings.db.owner_dsn, settings.db.app_role))
    click.echo(f"applied: {', '.join(applied)}" if applied else "up to date")


# --- processes ----------------------------------------------------------------------------


@click.command()
@click.option("--port", type=int, default=None, help="override RTM_API_PORT")
@click.pass_context
def api(ctx: click.Context, port: int | None) -> None:
    """Run the ingest gateway and clinician API."""
    # deferred: uvicorn and the gateway (FastAPI, aiokafka) cost ~0.3 s at CLI start
    import uvicorn

    from streams.http.app import create_app

    settings = settings_of(ctx)
    if port is not None:
        settings = settings.but({"api_port": port})
    _warn_cleartext(settings)
    cert, key = settings.gateway.tls_certfile, settings.gateway.tls_keyfile
    if (cert is None) != (key is None):
        raise click.ClickException("set both RTM_API_TLS_CERTFILE and RTM_API_TLS_KEYFILE")
    if cert is None and settings.env != "dev":
        click.echo(
            f"warning: RTM_ENV={settings.env} without TLS; terminate TLS in front of "
            "the gateway or set RTM_API_TLS_CERTFILE/RTM_API_TLS_KEYFILE",
            err=True,
        )
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
    )


@click.command()
@click.option("--loglevel", default=None, help="override RTM_WORKER_LOGLEVEL")
@click.option(
    "--restart",
    is_flag=True,
    help="start the worker again (with backoff) whenever it exits, except for a"
    " configuration error (exit 78); restarts counted in rtm_worker_restarts_total",
)
@click.pass_context
def worker(ctx: click.Context, loglevel: str | None, restart: bool) -> None:
    """Run the Faust worker (all agents)."""
    settings = settings_of(ctx)
    _warn_cleartext(settings)
    if restart:
        ctx.exit(
            run_restarting(
                worker_argv(loglevel or settings.worker.loglevel),
                settings_env(settings),
                log=lambda m: click.echo(f"rtm worker --restart: {m}", err=True),
            )
        )
    # deferred: the worker (Faust, aiokafka, every agent) costs ~0.5 s at CLI start
    from agents.worker import run_worker

    sys.argv = [sys.argv[0]]  # Faust's Worker parses argv itself
    run_worker(settings, loglevel=loglevel or settings.worker.loglevel)


COMMANDS: tuple[click.Command, ...] = (up, down, status, db, api, worker)
