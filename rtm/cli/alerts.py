"""`rtm alerts|adherence`: timer ticks, clinicians' webhooks, and the rules offline (the
same engine as the stream)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click

from alerts.evaluate import run_adherence_evaluate, run_alerts_evaluate
from alerts.models import AlertChange, AlertConfig
from alerts.state import PatientState
from pathways.alerting import pathway_alerts
from rtm.cli.options import parse_instant, settings_of
from rtm.cli.pathways import PATHWAY_FILES, versions_with
from schemas.events import Event, PatientKey
from streams.clock import clock_for
from streams.db.deliveries import list_webhooks, remove_webhook, set_webhook, webhook_for
from streams.secrets import secret_box
from streams.settings import Settings

_T = TypeVar("_T")


@click.group()
def alerts() -> None:
    """Alert rules."""


@alerts.command("tick")
@click.option(
    "--now", "now", default=None, help="'now' for the time-driven rules (default: wall clock)"
)
@click.pass_context
def alerts_tick(ctx: click.Context, now: str | None) -> None:
    """Send a timer tick to every partition (replays, backfills, tests)."""
    # deferred: streams.kafka.producer pulls aiokafka (~0.2 s at CLI start)
    from streams.kafka.producer import EventProducer

    settings = settings_of(ctx)
    when = parse_instant(now) if now else clock_for(settings).now()

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
    # deferred: agents.delivery pulls the Faust app (faust, aiokafka: ~0.5 s at CLI start)
    from agents.delivery import Destinations, validate_url

    settings = settings_of(ctx)
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
    _print_webhooks(settings_of(ctx), org_id)


def _with_db(settings: Settings, fn: Callable[[Any], Awaitable[_T]]) -> _T:
    """Run one database step with its own connection (the CLI holds no pool)."""

    async def run() -> _T:
        conn = await asyncpg.connect(settings.db.dsn)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def _set_webhook(settings: Settings, org_id: str, clinician_id: str, url: str, secret: str) -> None:
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
    dropped = _with_db(settings, lambda c: remove_webhook(c, clinician_id, org_id))
    if dropped is None:
        raise click.ClickException(f"no webhook for {clinician_id} in {org_id}")
    click.echo(
        f"webhook removed for {clinician_id} in {org_id}"
        f" ({dropped} undelivered changes dropped, marked no_webhook)"
    )


def _ping_webhook(settings: Settings, org_id: str, clinician_id: str) -> None:
    # deferred: agents.delivery pulls the Faust app (faust, aiokafka: ~0.5 s at CLI start)
    from agents.delivery import Destinations, redact_url, send_ping

    hook = _with_db(settings, lambda c: webhook_for(c, clinician_id, org_id))
    if hook is None:
        raise click.ClickException(f"no webhook for {clinician_id} in {org_id}")
    url, stored = hook
    delivered = asyncio.run(
        send_ping(
            url,
            secret_box(settings).open(stored),
            settings.webhooks.timeout_s,
            Destinations.from_settings(settings),
        )
    )
    # only this: a status, an error type or a time would make the command a port scanner
    click.echo(f"ping {redact_url(url)}: {'delivered' if delivered else 'not delivered'}")
    if not delivered:
        sys.exit(1)


def _print_webhooks(settings: Settings, org_id: str) -> None:
    # deferred: agents.delivery pulls the Faust app (faust, aiokafka: ~0.5 s at CLI start)
    from agents.delivery import redact_url

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
@PATHWAY_FILES
@click.pass_context
def alerts_evaluate(
    ctx: click.Context, events_path: Path, as_of: str, pathway_files: tuple[Path, ...]
) -> None:
    """Print one JSON object per alert fired by the rules over a JSONL file (with the
    worker's escalation offsets, RTM_ESCALATE_*_AFTER_S, so the two agree), the care
    pathway's task_overdue and step_up included (episodes on a version other than the
    built-in ones need its --pathway file, as the worker needs it published)."""
    w = settings_of(ctx).worker
    config = AlertConfig(
        escalate_care_team_after=dt.timedelta(seconds=w.escalate_care_team_after_s),
        escalate_org_after=dt.timedelta(seconds=w.escalate_org_after_s),
    )
    versions = versions_with(pathway_files)

    def after(
        events: list[Event], states: dict[PatientKey, PatientState], at: dt.datetime
    ) -> list[AlertChange]:
        return pathway_alerts(events, states, at, versions)

    sys.exit(
        run_alerts_evaluate(events_path, parse_instant(as_of), sys.stdout, config, after=after)
    )


@click.group()
def adherence() -> None:
    """Adherence."""


@adherence.command("evaluate")
@click.option(
    "--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True
)
def adherence_evaluate(events_path: Path) -> None:
    """Print daily adherence rows (CSV) for a JSONL file."""
    sys.exit(run_adherence_evaluate(events_path, sys.stdout))


COMMANDS: tuple[click.Command, ...] = (alerts, adherence)
