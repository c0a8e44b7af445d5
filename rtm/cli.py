"""`rtm`: the command line. Builds the one Settings object and passes it down."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
import click
import orjson

from streams.settings import Settings


def _settings(ctx: click.Context) -> Settings:
    obj: Settings = ctx.obj
    return obj


def _parse_ts(value: str) -> dt.datetime:
    ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise click.BadParameter("timestamp needs an explicit UTC offset, e.g. 2027-03-01T00:00:00Z")
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
    from rtm.local import prepare

    settings = _settings(ctx)
    try:
        prepare(settings, log=lambda m: click.echo(m, err=True))
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    _print_status(settings)


@main.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the local Kafka and TimescaleDB."""
    from infra import services

    services.down(_settings(ctx), log=lambda m: click.echo(m, err=True))


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Whether each local service runs, and its address."""
    if not _print_status(_settings(ctx)):
        sys.exit(1)


def _print_status(settings: Settings) -> bool:
    from infra import services

    ok = True
    for s in services.status(settings):
        state = "running" if s.running else "stopped"
        ok = ok and s.running
        click.echo(f"{s.name:<12} {state:<8} {s.address}  {s.detail}".rstrip())
    return ok


@main.group()
def db() -> None:
    """Database commands."""


@db.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply the versioned SQL migrations under infra/migrations (idempotent)."""
    from streams.db.events import migrate

    applied = asyncio.run(migrate(_settings(ctx).dsn))
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

    from streams.gateway import create_app

    settings = _settings(ctx)
    if port is not None:
        settings = settings.model_copy(update={"api_port": port})
    app = create_app(settings)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning",
                access_log=False)


@main.command()
@click.option("--loglevel", default=None, help="override RTM_WORKER_LOGLEVEL")
@click.pass_context
def worker(ctx: click.Context, loglevel: str | None) -> None:
    """Run the Faust worker (all agents)."""
    from agents.worker import run_worker

    settings = _settings(ctx)
    sys.argv = [sys.argv[0]]  # Faust's Worker parses argv itself
    run_worker(settings, loglevel=loglevel or settings.worker_loglevel)


# --- producer tools -----------------------------------------------------------------------


@main.command()
@click.option("--patients", type=int, default=200, show_default=True)
@click.option("--days", type=int, default=45, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--invalid-ratio", type=float, default=0.0, show_default=True)
def simulate(patients: int, days: int, seed: int, out: Path, invalid_ratio: float) -> None:
    """Write a synthetic cohort as JSONL, in arrival order."""
    from rtm.simulate import simulate as run, write_jsonl

    n = write_jsonl(run(patients, days, seed, invalid_ratio=invalid_ratio), out)
    click.echo(f"wrote {n} events to {out}", err=True)


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
@click.option("--now", "now", default=None, help="'now' for the time-driven rules (default: wall clock)")
@click.pass_context
def alerts_tick(ctx: click.Context, now: str | None) -> None:
    """Send a timer tick to every partition (replays, backfills, tests)."""
    from streams.producer import EventProducer

    settings = _settings(ctx)
    when = _parse_ts(now) if now else dt.datetime.now(dt.timezone.utc)

    async def send() -> int:
        producer = EventProducer(settings)
        await producer.start()
        try:
            return await producer.send_ticks(when)
        finally:
            await producer.stop()

    click.echo(f"ticked {asyncio.run(send())} partitions at {when.isoformat()}")


@alerts.command("webhook")
@click.option("--clinician-id", required=True, help="a clinician id, or '*' for the clinic")
@click.option("--url", required=True)
@click.option("--secret", required=True, help="shared secret for the HMAC-SHA256 signature")
@click.pass_context
def alerts_webhook(ctx: click.Context, clinician_id: str, url: str, secret: str) -> None:
    """Set where a clinician's (or the clinic's) alerts are POSTed."""
    import asyncpg

    from streams.db.alerts import set_webhook

    async def run() -> None:
        conn = await asyncpg.connect(_settings(ctx).dsn)
        try:
            await set_webhook(conn, clinician_id, url, secret)
        finally:
            await conn.close()

    asyncio.run(run())
    click.echo(f"webhook set for {clinician_id}")


@alerts.command("evaluate")
@click.option("--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--as-of", "as_of", required=True, help="'now' for the rules, e.g. 2027-01-01T00:00:00Z")
def alerts_evaluate(events_path: Path, as_of: str) -> None:
    """Print one JSON object per alert fired by the rules over a JSONL file."""
    from alerts.evaluate import run_alerts_evaluate

    sys.exit(run_alerts_evaluate(events_path, _parse_ts(as_of), sys.stdout))


@main.group()
def adherence() -> None:
    """Adherence."""


@adherence.command("evaluate")
@click.option("--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True)
def adherence_evaluate(events_path: Path) -> None:
    """Print daily adherence rows (CSV) for a JSONL file."""
    from alerts.evaluate import run_adherence_evaluate

    sys.exit(run_adherence_evaluate(events_path, sys.stdout))


@main.group()
def billing() -> None:
    """RTM billing."""


@billing.command("evaluate")
@click.option("--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--as-of", "as_of", required=True)
@click.option("--include-open", is_flag=True)
def billing_evaluate(events_path: Path, as_of: str, include_open: bool) -> None:
    """Print the claims CSV the rules give for a JSONL file, periods closed as of --as-of."""
    from billing.evaluate import run_evaluate

    sys.exit(run_evaluate(events_path, _parse_ts(as_of), include_open, sys.stdout))


def _register_plugins() -> None:
    """Command groups that live beside their adapters (billing export, reconcile, bench)."""
    from rtm import bench, cli_access, cli_billing

    cli_billing.register(billing)
    cli_access.register(main)
    main.add_command(bench.command)


_register_plugins()

if __name__ == "__main__":
    main()
