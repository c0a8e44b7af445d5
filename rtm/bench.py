"""`rtm bench`: floor vs pipeline throughput, latency under load, replay."""

from __future__ import annotations

import click


@click.command("bench")
def command() -> None:
    """Benchmark the pipeline against a bare Kafka->COPY floor (prints a table)."""
    raise click.ClickException("not implemented yet")
