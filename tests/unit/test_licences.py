"""Licences of licence-gated instruments (issue 19 item 2): the pure answer to "may
instrument I be organisation O's pathway primary at T", and the CLI's refusals of a free or
unknown instrument (before any database is touched)."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

from outcomes.licences import Activation, LicenceError, activatable, licensed, usable_as_primary
from rtm.cli.root import main

T0 = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
ODI = Activation("org-a", "odi", "MAPI-123", T0, T0 + 30 * DAY)
NDI = Activation("org-a", "ndi", "NDI-9", T0)


@pytest.mark.parametrize("instrument", ["nprs", "psfs", "lefs"])
def test_a_free_instrument_is_always_usable(instrument: str) -> None:
    assert usable_as_primary(instrument, "org-z", T0 - 365 * DAY, [])


@pytest.mark.parametrize(
    ("instrument", "org", "at", "usable"),
    [
        ("odi", "org-a", T0 - dt.timedelta(seconds=1), False),  # before the activation
        ("odi", "org-a", T0, True),  # from the activation on
        ("odi", "org-a", T0 + 30 * DAY - dt.timedelta(seconds=1), True),
        ("odi", "org-a", T0 + 30 * DAY, False),  # valid_until is exclusive
        ("odi", "org-b", T0 + DAY, False),  # another organisation's licence
        ("ndi", "org-a", T0 + 3650 * DAY, True),  # no end
        ("quickdash", "org-a", T0 + DAY, False),  # never activated
        ("sf36", "org-a", T0 + DAY, False),  # unknown
    ],
)
def test_a_gated_instrument_needs_an_activation_covering_the_instant(
    instrument: str, org: str, at: dt.datetime, usable: bool
) -> None:
    assert usable_as_primary(instrument, org, at, [ODI, NDI]) is usable


def test_licensed_set_and_a_renewal() -> None:
    renewal = Activation("org-a", "odi", "MAPI-124", T0 + 30 * DAY)
    assert licensed("org-a", T0 + DAY, [ODI, NDI]) == {"odi", "ndi"}
    assert licensed("org-a", T0 + 40 * DAY, [ODI, NDI]) == {"ndi"}
    assert licensed("org-a", T0 + 40 * DAY, [ODI, NDI, renewal]) == {"odi", "ndi"}
    assert licensed("org-b", T0 + DAY, [ODI, NDI]) == frozenset()
    with pytest.raises(ValueError, match="timezone-aware"):
        usable_as_primary("odi", "org-a", dt.datetime(2027, 1, 2), [ODI])


def test_only_a_known_gated_instrument_can_be_activated() -> None:
    activatable("odi")
    with pytest.raises(LicenceError, match="free to use"):
        activatable("psfs")
    with pytest.raises(LicenceError, match="unknown instrument 'sf36'"):
        activatable("sf36")


@pytest.mark.parametrize(
    ("instrument", "message"),
    [("lefs", "lefs is free to use: there is nothing to activate"), ("x1", "unknown instrument")],
)
def test_the_cli_refuses_free_and_unknown_instruments(instrument: str, message: str) -> None:
    args = ["instruments", "activate", "--org", "org-a", "--instrument", instrument]
    result = CliRunner().invoke(main, [*args, "--licence-ref", "REF-1"])
    assert result.exit_code == 2
    assert message in result.output
