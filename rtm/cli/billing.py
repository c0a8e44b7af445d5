"""`rtm billing`: the billing rules offline (``evaluate``); the claims, ledger and
submission commands are ``rtm.cli_billing``'s (registered on this group)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from billing.evaluate import run_evaluate
from rtm import cli_billing
from rtm.cli.options import parse_instant


@click.group()
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
    sys.exit(run_evaluate(events_path, parse_instant(as_of), include_open, sys.stdout))


cli_billing.register(billing)

COMMANDS: tuple[click.Command, ...] = (billing,)
