"""What the command families share: the Settings a command runs with, and the instants
given on the command line."""

from __future__ import annotations

import datetime as dt

import click

from streams.settings import Settings


def settings_of(ctx: click.Context) -> Settings:
    """The Settings the root group built (``rtm``), or from the environment when a command
    runs on its own (a test invoking one command object)."""
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


def parse_instant(value: str, param_hint: str | None = None) -> dt.datetime:
    """An RFC 3339 instant given on the command line ('Z' or an explicit offset); a bad
    parameter (exit 2) when it does not parse or has no UTC offset."""
    try:
        ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an RFC 3339 timestamp", param_hint=param_hint
        ) from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise click.BadParameter(
            "timestamp needs an explicit UTC offset, e.g. 2027-03-01T00:00:00Z",
            param_hint=param_hint,
        )
    return ts
