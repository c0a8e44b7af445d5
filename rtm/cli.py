"""`rtm`: the command line. Builds the one Settings object and passes it down."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from rtm.files import write_private
from streams.settings import Settings


def _settings(ctx: click.Context) -> Settings:
    obj: Settings = ctx.obj
    return obj


def _warn_cleartext(settings: Settings) -> None:
    """Outside RTM_ENV=dev, say where Kafka or PostgreSQL traffic would go unencrypted."""
    from streams.kafka.transport import cleartext_warnings

    for line in cleartext_warnings(settings):
        click.echo(line, err=True)


def _parse_ts(value: str) -> dt.datetime:
    ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise click.BadParameter(
            "timestamp needs an explicit UTC offset, e.g. 2027-03-01T00:00:00Z"
        )
    return ts


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """RTM event streaming: ingest, adherence, alerts and billing on Kafka + TimescaleDB."""
    try:
        ctx.obj = Settings()
    except Exception as exc:  # a clear one-line configuration error, not a traceback
        raise click.ClickException(f"configuration: {exc}") from None


# --- local services -----------------------------------------------------------------------


@main.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """Start Kafka and TimescaleDB locally (idempotent), migrate, create topics, dev key."""
    from infra.services import ServiceError
    from rtm.devstack import prepare

    settings = _settings(ctx)
    try:
        prepare(settings, log=lambda m: click.echo(m, err=True))
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    _print_status(settings)


@main.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the gateway and worker `rtm demo` left running, then Kafka and TimescaleDB."""
    from infra import services
    from rtm.devstack import stop_kept

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    stop_kept(_settings(ctx), log=log)
    services.down(_settings(ctx), log=log)


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Whether each local service runs, and its address."""
    if not _print_status(_settings(ctx)):
        sys.exit(1)


def _print_status(settings: Settings) -> bool:
    from infra import services
    from rtm.devstack import kept_status

    ok = True
    for s in services.status(settings):
        state = "running" if s.running else "stopped"
        ok = ok and s.running
        click.echo(f"{s.name:<12} {state:<8} {s.address}  {s.detail}".rstrip())
    for name, pid, alive, health in kept_status(settings):  # what `rtm demo` left running
        ok = ok and alive
        click.echo(f"{name:<12} {'running' if alive else 'stopped':<8} pid {pid}  {health}")
    return ok


@main.group()
def db() -> None:
    """Database commands."""


@db.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply the versioned SQL migrations under infra/migrations (idempotent)."""
    from streams.db.events import migrate

    settings = _settings(ctx)
    applied = asyncio.run(migrate(settings.owner_dsn, settings.app_role))
    click.echo(f"applied: {', '.join(applied)}" if applied else "up to date")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=None)
def schema(out: Path | None) -> None:
    """Write the JSON Schema of the event contract (for producers)."""
    from schemas.events import json_schema

    text = orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    if out:
        out.write_text(text + "\n")
    else:
        click.echo(text)


# --- processes ----------------------------------------------------------------------------


@main.command()
@click.option("--port", type=int, default=None, help="override RTM_API_PORT")
@click.pass_context
def api(ctx: click.Context, port: int | None) -> None:
    """Run the ingest gateway and clinician API."""
    import uvicorn

    from streams.http.app import create_app

    settings = _settings(ctx)
    if port is not None:
        settings = settings.model_copy(update={"api_port": port})
    _warn_cleartext(settings)
    cert, key = settings.api_tls_certfile, settings.api_tls_keyfile
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
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
    )


@main.command()
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
    from agents.worker import run_worker

    settings = _settings(ctx)
    _warn_cleartext(settings)
    if restart:
        from rtm.devstack import settings_env
        from rtm.restarter import run_restarting, worker_argv

        ctx.exit(
            run_restarting(
                worker_argv(loglevel or settings.worker_loglevel),
                settings_env(settings),
                log=lambda m: click.echo(f"rtm worker --restart: {m}", err=True),
            )
        )
    sys.argv = [sys.argv[0]]  # Faust's Worker parses argv itself
    run_worker(settings, loglevel=loglevel or settings.worker_loglevel)


# --- producer tools -----------------------------------------------------------------------


@main.command()
@click.option("--patients", type=int, default=200, show_default=True)
@click.option("--days", type=int, default=45, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--invalid-ratio", type=float, default=0.0, show_default=True)
@click.option(
    "--demographics-out",
    type=click.Path(path_type=Path),
    default=None,
    help="also write clearly synthetic demographics of the cohort (CSV for"
    " `rtm billing demographics load`)",
)
def simulate(
    patients: int,
    days: int,
    seed: int,
    out: Path,
    invalid_ratio: float,
    demographics_out: Path | None,
) -> None:
    """Write a synthetic cohort as JSONL, in arrival order."""
    from rtm.simulate import demographics_csv, synthetic_demographics, write_jsonl
    from rtm.simulate import simulate as run

    events = list(run(patients, days, seed, invalid_ratio=invalid_ratio))
    n = write_jsonl(events, out)
    click.echo(f"wrote {n} events to {out}", err=True)
    if demographics_out is not None:
        ids = {e["patient_id"] for e in events if isinstance(e.get("patient_id"), str)}
        write_private(demographics_out, demographics_csv(synthetic_demographics(ids, seed)))
        click.echo(
            f"wrote synthetic demographics of {len(ids)} patients to {demographics_out}", err=True
        )


@main.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--url", default=None, help="gateway base URL (default from settings)")
@click.option("--batch", type=int, default=500, show_default=True)
@click.option("--concurrency", type=int, default=4, show_default=True)
@click.pass_context
def produce(ctx: click.Context, file: Path, url: str | None, batch: int, concurrency: int) -> None:
    """Post a JSONL file through the gateway in batches."""
    from rtm.produce import produce_file

    settings = _settings(ctx)
    result = asyncio.run(produce_file(settings, file, url, batch, concurrency, progress=True))
    click.echo(orjson.dumps(result.as_dict()).decode())


@main.command()
@click.option("--patients", type=int, default=200, show_default=True)
@click.option("--days", type=int, default=45, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.pass_context
def demo(ctx: click.Context, patients: int, days: int, seed: int) -> None:
    """Main job end to end: services, worker, gateway, a cohort posted, a summary printed."""
    from rtm.demo import run_demo

    sys.exit(run_demo(_settings(ctx), patients, days, seed))


# --- offline evaluation (same engine as the stream) -----------------------------------------


@main.group()
def alerts() -> None:
    """Alert rules."""


@alerts.command("tick")
@click.option(
    "--now", "now", default=None, help="'now' for the time-driven rules (default: wall clock)"
)
@click.pass_context
def alerts_tick(ctx: click.Context, now: str | None) -> None:
    """Send a timer tick to every partition (replays, backfills, tests)."""
    from streams.kafka.producer import EventProducer

    settings = _settings(ctx)
    when = _parse_ts(now) if now else dt.datetime.now(dt.UTC)

    async def send() -> int:
        producer = EventProducer(settings)
        await producer.start()
        try:
            return await producer.send_ticks(when)
        finally:
            await producer.stop()

    click.echo(f"ticked {asyncio.run(send())} partitions at {when.isoformat()}")


@alerts.command("webhook")
@click.option("--clinician-id", default=None, help="a clinician id, or '*' for the organisation")
@click.option("--org", "org_id", default="default", show_default=True, help="organisation")
@click.option("--url", default=None, help="http(s) URL the alert changes are POSTed to")
@click.option(
    "--secret",
    default=None,
    help="shared secret for the HMAC-SHA256 signature (visible in ps: prefer --secret-stdin)",
)
@click.option("--secret-stdin", is_flag=True, help="read the shared secret from stdin")
@click.option("--test", "test", is_flag=True, help="POST a signed ping and report the answer")
@click.option("--remove", is_flag=True, help="remove the webhook (its queue is dropped)")
@click.option("--list", "list_", is_flag=True, help="list the webhooks (never the secrets)")
@click.pass_context
def alerts_webhook(
    ctx: click.Context,
    clinician_id: str | None,
    org_id: str,
    url: str | None,
    secret: str | None,
    secret_stdin: bool,
    test: bool,
    remove: bool,
    list_: bool,
) -> None:
    """Set, test, list or remove where a clinician's (or, with '*', the organisation's)
    alerts are POSTed. A new webhook receives the alert changes from now on, not history."""
    from agents.delivery import Destinations, validate_url

    settings = _settings(ctx)
    if secret_stdin:
        if secret is not None:
            raise click.UsageError("--secret and --secret-stdin exclude each other")
        secret = sys.stdin.readline().rstrip("\n") or None
    if list_:
        if clinician_id or url or secret or test or remove:
            raise click.UsageError("--list takes only --org")
        _print_webhooks(settings, org_id)
        return
    if not clinician_id:
        raise click.UsageError("--clinician-id is required (or --list)")
    if remove and (url or secret or test):
        raise click.UsageError("--remove takes only --clinician-id and --org")
    if not (remove or test) and not (url and secret):
        raise click.UsageError("setting a webhook needs --url and --secret")
    if (url is None) != (secret is None):
        raise click.UsageError("--url and --secret go together")
    if url is not None:
        try:
            validate_url(url)
            Destinations.from_settings(settings).check_now(url)
        except ValueError as exc:
            raise click.BadParameter(f"{url!r} {exc}", param_hint="'--url'") from None
    if remove:
        _remove_webhook(settings, org_id, clinician_id)
        return
    if url is not None and secret is not None:
        _set_webhook(settings, org_id, clinician_id, url, secret)
    if test:
        _ping_webhook(settings, org_id, clinician_id)


@alerts.command("webhooks")
@click.option("--org", "org_id", default="default", show_default=True, help="organisation")
@click.pass_context
def alerts_webhooks(ctx: click.Context, org_id: str) -> None:
    """List the webhooks of an organisation (never the secrets)."""
    _print_webhooks(_settings(ctx), org_id)


_T = TypeVar("_T")


def _with_db(settings: Settings, fn: Callable[[Any], Awaitable[_T]]) -> _T:
    """Run one database step with its own connection (the CLI holds no pool)."""
    import asyncpg

    async def run() -> _T:
        conn = await asyncpg.connect(settings.dsn)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def _set_webhook(settings: Settings, org_id: str, clinician_id: str, url: str, secret: str) -> None:
    import asyncpg

    from streams.db.alerts import set_webhook
    from streams.secrets import secret_box

    sealed = secret_box(settings).seal(secret)  # encrypted at rest
    try:
        new = _with_db(settings, lambda c: set_webhook(c, clinician_id, url, sealed, org_id))
    except asyncpg.ForeignKeyViolationError:
        raise click.ClickException(f"unknown organisation {org_id!r}") from None
    who = "the organisation (clinic-wide)" if clinician_id == "*" else clinician_id
    click.echo(
        f"webhook {'added' if new else 'changed'} for {who} in {org_id}"
        + (": alert changes from now on are sent there (no history)" if new else "")
    )


def _remove_webhook(settings: Settings, org_id: str, clinician_id: str) -> None:
    from streams.db.alerts import remove_webhook

    dropped = _with_db(settings, lambda c: remove_webhook(c, clinician_id, org_id))
    if dropped is None:
        raise click.ClickException(f"no webhook for {clinician_id} in {org_id}")
    click.echo(
        f"webhook removed for {clinician_id} in {org_id}"
        f" ({dropped} undelivered changes dropped, marked no_webhook)"
    )


def _ping_webhook(settings: Settings, org_id: str, clinician_id: str) -> None:
    from agents.delivery import Destinations, redact_url, send_ping
    from streams.db.alerts import webhook_for

    hook = _with_db(settings, lambda c: webhook_for(c, clinician_id, org_id))
    if hook is None:
        raise click.ClickException(f"no webhook for {clinician_id} in {org_id}")
    from streams.secrets import secret_box

    url, stored = hook
    delivered = asyncio.run(
        send_ping(
            url,
            secret_box(settings).open(stored),
            settings.webhook_timeout_s,
            Destinations.from_settings(settings),
        )
    )
    # only this: a status, an error type or a time would make the command a port scanner
    click.echo(f"ping {redact_url(url)}: {'delivered' if delivered else 'not delivered'}")
    if not delivered:
        sys.exit(1)


def _print_webhooks(settings: Settings, org_id: str) -> None:
    from agents.delivery import redact_url
    from streams.db.alerts import list_webhooks

    hooks = _with_db(settings, lambda c: list_webhooks(c, org_id))
    if not hooks:
        click.echo(f"no webhooks in {org_id}")
        return
    click.echo("org\tclinician\turl\tadded\tundelivered\toldest undelivered\tfailures")
    for h in hooks:
        oldest = h.oldest_undelivered.isoformat(timespec="seconds") if h.oldest_undelivered else "-"
        click.echo(
            f"{h.org_id}\t{h.clinician_id}\t{redact_url(h.url)}"
            f"\t{h.created_at.isoformat(timespec='seconds')}\t{h.undelivered}"
            f"\t{oldest}\t{h.failures}"
        )


@alerts.command("evaluate")
@click.option(
    "--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True
)
@click.option(
    "--as-of", "as_of", required=True, help="'now' for the rules, e.g. 2027-01-01T00:00:00Z"
)
def alerts_evaluate(events_path: Path, as_of: str) -> None:
    """Print one JSON object per alert fired by the rules over a JSONL file."""
    from alerts.evaluate import run_alerts_evaluate

    sys.exit(run_alerts_evaluate(events_path, _parse_ts(as_of), sys.stdout))


@main.group()
def adherence() -> None:
    """Adherence."""


@adherence.command("evaluate")
@click.option(
    "--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True
)
def adherence_evaluate(events_path: Path) -> None:
    """Print daily adherence rows (CSV) for a JSONL file."""
    from alerts.evaluate import run_adherence_evaluate

    sys.exit(run_adherence_evaluate(events_path, sys.stdout))


@main.group()
def billing() -> None:
    """RTM billing."""


@billing.command("evaluate")
@click.option(
    "--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True
)
@click.option("--as-of", "as_of", required=True)
@click.option("--include-open", is_flag=True)
def billing_evaluate(events_path: Path, as_of: str, include_open: bool) -> None:
    """Print the claims CSV the rules give for a JSONL file, periods closed as of --as-of."""
    from billing.evaluate import run_evaluate

    sys.exit(run_evaluate(events_path, _parse_ts(as_of), include_open, sys.stdout))


def _register_plugins() -> None:
    """Command groups that live beside their adapters (billing export, reconcile, bench)."""
    from rtm import bench, chaos, cli_access, cli_billing, cli_fhir, cli_intake, cli_rollups

    cli_billing.register(billing)
    cli_access.register(main)
    cli_fhir.register(main)
    cli_intake.register(main)
    cli_rollups.register(main)
    main.add_command(bench.command)
    main.add_command(chaos.command)


_register_plugins()

if __name__ == "__main__":
    main()
