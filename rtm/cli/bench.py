"""`rtm bench|chaos`: the benchmark and the fault injection (``rtm.bench``); each prints a
table and, with --out, writes the JSON result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import orjson

from infra import services
from rtm.bench.chaos_report import QUICK, SCENARIOS, ChaosConfig
from rtm.bench.chaos_report import render_table as render_chaos_table
from rtm.bench.report import render_pages_table, render_table
from rtm.cli.options import settings_of


@click.command("bench")
@click.option(
    "--patients", type=int, default=400, show_default=True, help="cohort for floor and pipeline"
)
@click.option("--days", type=int, default=90, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--replay-patients", type=int, default=2000, show_default=True)
@click.option("--replay-days", type=int, default=90, show_default=True)
@click.option("--latency-seconds", type=float, default=25.0, show_default=True)
@click.option(
    "--rate",
    type=float,
    default=2000.0,
    show_default=True,
    help="events/s posted during the latency phase",
)
@click.option(
    "--history-patients",
    type=int,
    default=None,
    help="patients per history cohort; default: sized from the pipeline rate "
    "(about 45 s of history posting, 100-2000); 0 skips the phase",
)
@click.option(
    "--history-days",
    type=int,
    default=365,
    show_default=True,
    help="days of history of the long cohort",
)
@click.option(
    "--history-short-days",
    type=int,
    default=30,
    show_default=True,
    help="days of history of the short cohort",
)
@click.option(
    "--history-new-days",
    type=int,
    default=14,
    show_default=True,
    help="days of new events timed after each cohort's history",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="worker processes in one consumer group for pipeline and replay (their topics get "
    "at least as many partitions)",
)
@click.option(
    "--cpu-split/--no-cpu-split",
    "split",
    default=True,
    show_default=True,
    help="py-spy (if installed) on the worker during the pipeline phase, 50 Hz",
)
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="py-spy the worker and gateway during pipeline, replay, the paced latency phase "
    "and each history window into this folder (<phase>-worker.txt, <phase>-gateway.txt; "
    "h<days>-window<n>-worker.txt)",
)
@click.option(
    "--pages/--no-pages",
    "pages",
    default=False,
    show_default=True,
    help="also time the dashboard (worklist, patient page) over a seeded clinic (5-10 min)",
)
@click.option(
    "--pages-only", is_flag=True, default=False, help="run only the pages phase (implies --pages)"
)
@click.option("--pages-patients", type=int, default=5000, show_default=True)
@click.option("--pages-days", type=int, default=90, show_default=True)
@click.option(
    "--pages-requests",
    type=int,
    default=50,
    show_default=True,
    help="timed requests per page and user (patient pages: as many distinct patients)",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write JSON here")
@click.pass_context
def bench(
    ctx: click.Context,
    patients: int,
    days: int,
    seed: int,
    replay_patients: int,
    replay_days: int,
    latency_seconds: float,
    rate: float,
    history_patients: int | None,
    history_days: int,
    history_short_days: int,
    history_new_days: int,
    workers: int,
    split: bool,
    profile_dir: Path | None,
    pages: bool,
    pages_only: bool,
    pages_patients: int,
    pages_days: int,
    pages_requests: int,
    out: Path | None,
) -> None:
    """Benchmark the pipeline against a bare Kafka->COPY floor (prints a table)."""
    # deferred: the bench's runner pulls aiokafka and the Kafka admin (~0.2 s at CLI start)
    from rtm.bench.run import PagesOptions, run_bench, run_pages_only

    settings = settings_of(ctx)

    def log(message: str) -> None:
        click.echo(message, err=True)

    opts = PagesOptions(pages_patients, pages_days, pages_requests)
    if (pages or pages_only) and min(pages_patients, pages_days, pages_requests) < 1:
        raise click.BadParameter("--pages-patients, --pages-days, --pages-requests must be >= 1")
    if pages_only:
        try:
            result = run_pages_only(settings, opts, seed, log)
        except services.ServiceError as exc:
            raise click.ClickException(str(exc)) from None
        _emit(render_pages_table(result), result, out)
        return
    try:
        result = run_bench(
            settings,
            patients,
            days,
            seed,
            replay_patients,
            replay_days,
            latency_seconds,
            rate,
            profile_dir,
            log=log,
            history_patients=history_patients,
            history_days=history_days,
            history_short_days=history_short_days,
            history_new_days=history_new_days,
            split=split,
            pages=opts if pages else None,
            workers=workers,
        )
    except services.ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(render_table(result), result, out)


def _emit(table: str, result: dict[str, Any], out: Path | None) -> None:
    """The table on stdout; with --out, the whole result as JSON there too."""
    click.echo(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        click.echo(f"wrote {out}", err=True)


@click.command("chaos")
@click.option("--quick", is_flag=True, help="the CI sample: small cohort, short faults")
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(SCENARIOS))
@click.option("--patients", type=int, default=None)
@click.option("--days", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--kills", type=int, default=None, help="worker SIGKILLs (default 10)")
@click.option("--db-outage-s", type=float, default=None, help="default 60")
@click.option("--kafka-outage-s", type=float, default=None, help="default 30")
@click.option("--gateway-kills", type=int, default=None, help="default 5")
@click.option("--db-restarts", type=int, default=None, help="default 10")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON report")
@click.pass_context
def chaos(
    ctx: click.Context,
    quick: bool,
    scenarios: tuple[str, ...],
    patients: int | None,
    days: int | None,
    seed: int | None,
    kills: int | None,
    db_outage_s: float | None,
    kafka_outage_s: float | None,
    gateway_kills: int | None,
    db_restarts: int | None,
    out: Path | None,
) -> None:
    """Inject faults through the real services and report what was lost or doubled
    (stops and starts this machine's PostgreSQL and Kafka: use services of your own)."""
    # deferred: the chaos runner pulls aiokafka and the Faust producer (~0.3 s at CLI start)
    from rtm.bench.chaos import run_chaos

    config = QUICK if quick else ChaosConfig()
    over: dict[str, Any] = {
        "scenarios": scenarios or None,
        "patients": patients,
        "days": days,
        "seed": seed,
        "worker_kills": kills,
        "db_outage_s": db_outage_s,
        "kafka_outage_s": kafka_outage_s,
        "gateway_kills": gateway_kills,
        "db_restarts": db_restarts,
    }
    config = replace(config, **{k: v for k, v in over.items() if v is not None})
    try:
        result = run_chaos(settings_of(ctx), config, log=lambda m: click.echo(m, err=True))
    except services.ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(render_chaos_table(result), result, out)
    if not result["ok"]:
        ctx.exit(1)


COMMANDS: tuple[click.Command, ...] = (bench, chaos)
