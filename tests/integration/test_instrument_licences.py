"""Licence activations through the real CLI and PostgreSQL (issue 19 item 2): `rtm
instruments activate` appends a row (never changed: the table refuses UPDATE and DELETE),
audited in the OS user's name; `rtm instruments list` shows it and answers
usable_as_primary; an unknown organisation is refused and nothing is stored."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest
from click.testing import CliRunner

from rtm.cli.db import cli_actor
from rtm.cli.root import main
from streams.settings import Settings
from tests.integration.browser import fetch, provision
from tests.integration.conftest import run_in_thread

pytestmark = pytest.mark.integration


def _list(org: str) -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(main, ["instruments", "list", "--org", org])
    assert result.exit_code == 0, result.output
    return {o["id"]: o for o in map(json.loads, result.output.splitlines())}


def test_activate_list_audit_and_append_only(base_settings: Settings) -> None:
    org = "lic" + uuid.uuid4().hex[:8]
    run_in_thread(provision(base_settings, org, "Licence clinic", [], "lic"))
    before = _list(org)
    assert before["odi"]["usable_as_primary"] is False and before["odi"]["licence"] == "required"
    assert before["psfs"]["usable_as_primary"] is True and before["psfs"]["activations"] == []

    args = ["instruments", "activate", "--org", org, "--instrument", "odi"]
    result = CliRunner().invoke(main, [*args, "--licence-ref", "MAPI-2027-001"])
    assert result.exit_code == 0, result.output
    assert f"{org}: odi activated (licence MAPI-2027-001" in result.output

    after = _list(org)
    assert after["odi"]["usable_as_primary"] is True
    assert after["ndi"]["usable_as_primary"] is False
    [activation] = after["odi"]["activations"]  # type: ignore[misc]
    assert activation["licence_ref"] == "MAPI-2027-001"
    assert activation["activated_by"] == cli_actor() and activation["valid_until"] is None

    audit = run_in_thread(
        fetch(
            base_settings,
            "SELECT actor, detail::text AS d FROM audit_log WHERE org_id = $1"
            " AND action = 'instruments.activated'",
            org,
        )
    )
    assert [r["actor"] for r in audit] == [cli_actor()]
    assert json.loads(audit[0]["d"])["licence_ref"] == "MAPI-2027-001"

    # the application role may not change a row; not even the owner may (a trigger)
    for sql in (
        "UPDATE instrument_activations SET licence_ref = 'x' WHERE org_id = $1",
        "DELETE FROM instrument_activations WHERE org_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            run_in_thread(fetch(base_settings, sql, org))
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            run_in_thread(_as_owner(base_settings.db.owner_dsn, sql, org))
    rows = run_in_thread(
        fetch(base_settings, "SELECT 1 FROM instrument_activations WHERE org_id = $1", org)
    )
    assert len(rows) == 1


async def _as_owner(dsn: str, sql: str, org: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, org)
    finally:
        await conn.close()


def test_an_unknown_organisation_or_an_ended_licence_is_refused(base_settings: Settings) -> None:
    org = "nobody" + uuid.uuid4().hex[:8]
    args = ["instruments", "activate", "--org", org, "--instrument", "ndi", "--licence-ref", "R"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and f"no organisation {org!r}" in result.output
    past = CliRunner().invoke(main, [*args, "--until", "2001-01-01T00:00:00Z"])
    assert past.exit_code == 2 and "end before it starts" in past.output
    rows = run_in_thread(
        fetch(base_settings, "SELECT 1 FROM instrument_activations WHERE org_id = $1", org)
    )
    assert rows == []
