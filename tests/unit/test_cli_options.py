"""What the command families share (rtm/cli/options.py): one parser for the instants given
on the command line (`--as-of`, `--now`, `--since`), and the Settings of a command; and
the command line as the dev stack starts it (`python -m rtm.cli`)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rtm.cli import main
from rtm.cli.options import parse_instant, settings_of
from streams.settings import Settings


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2027-03-01T00:00:00Z", dt.datetime(2027, 3, 1, tzinfo=dt.UTC)),
        ("2027-03-01T00:00:00z", dt.datetime(2027, 3, 1, tzinfo=dt.UTC)),
        ("2027-03-01T00:00:00+00:00", dt.datetime(2027, 3, 1, tzinfo=dt.UTC)),
        ("2027-02-28T19:00:00-05:00", dt.datetime(2027, 3, 1, tzinfo=dt.UTC)),
        ("2027-03-01T00:00:00.250Z", dt.datetime(2027, 3, 1, 0, 0, 0, 250000, tzinfo=dt.UTC)),
    ],
)
def test_parse_instant_takes_rfc3339_with_an_offset(text: str, expected: dt.datetime) -> None:
    got = parse_instant(text)
    assert got == expected and got.utcoffset() is not None


@pytest.mark.parametrize(
    "text, message",
    [
        ("2027-03-01T00:00:00", "explicit UTC offset"),
        ("2027-03-01", "explicit UTC offset"),
        ("yesterday", "is not an RFC 3339 timestamp"),
        ("", "is not an RFC 3339 timestamp"),
    ],
)
def test_parse_instant_refuses_what_has_no_offset_or_does_not_parse(
    text: str, message: str
) -> None:
    with pytest.raises(click.BadParameter, match=message) as info:
        parse_instant(text, param_hint="--as-of")
    assert info.value.param_hint == "--as-of"


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "--since", "2027-03-01T00:00:00"],
        ["alerts", "evaluate", "--events", "EVENTS", "--as-of", "soon"],
        ["billing", "evaluate", "--events", "EVENTS", "--as-of", "2027-03-01T00:00:00"],
        ["alerts", "tick", "--now", "2027-03-01T00:00:00"],
    ],
)
def test_commands_refuse_a_bad_instant_before_any_work(args: list[str], tmp_path: Path) -> None:
    """Exit 2 with the reason, nothing else: no database (RTM_PG_PORT=1 would fail
    differently), no broker, no output."""
    events = tmp_path / "events.jsonl"
    events.write_text("")
    args = [str(events) if a == "EVENTS" else a for a in args]
    result = CliRunner().invoke(main, args, env={"RTM_PG_PORT": "1", "RTM_KAFKA_PORT": "1"})
    assert result.exit_code == 2, result.output
    assert "UTC offset" in result.output or "RFC 3339" in result.output


def test_settings_of_a_command_is_the_root_groups_else_the_environments() -> None:
    built = Settings(api_port=1234)
    assert settings_of(click.Context(main, obj=built)) is built
    assert isinstance(settings_of(click.Context(main, obj=None)), Settings)


def test_python_m_rtm_cli_is_the_command_line() -> None:
    """How the dev stack, the bench and the restarter start gateway and worker processes."""
    out = subprocess.run(
        [sys.executable, "-m", "rtm.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("Usage: python -m rtm.cli [OPTIONS] COMMAND [ARGS]...")
    for command in ("api", "worker", "alerts", "bench", "chaos", "orgs", "billing", "rollups"):
        assert f"\n  {command} " in out, command


@pytest.mark.parametrize(
    "args",
    [
        ["orgs", "add", "clinic-x", "--name", "X", "--timezone", "Mars/Olympus"],
        ["orgs", "timezone", "clinic-x", "CST"],
    ],
)
def test_an_organisations_time_zone_must_be_an_iana_name(args: list[str]) -> None:
    """Refused with the reason before the database (RTM_PG_PORT=1 would fail otherwise)."""
    result = CliRunner().invoke(main, args, env={"RTM_PG_PORT": "1", "RTM_KAFKA_PORT": "1"})
    assert result.exit_code == 2, result.output
    assert "unknown IANA time zone" in result.output
