"""`rtm bench|chaos`: the benchmark and the fault injection (rtm/bench.py, rtm/chaos.py)."""

from __future__ import annotations

import click

from rtm import bench, chaos

COMMANDS: tuple[click.Command, ...] = (bench.command, chaos.command)
