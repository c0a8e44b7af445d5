"""`rtm pathways publish` / `rtm pathways list` on the real database (issue 19 item 3): a
published version is stored and audited once, listed beside the built-in msk-default@1,
never changed (the same version with other content is refused, a built-in one too), and no
row can be updated or deleted, not even by the application role."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from pathways.model import builtin
from rtm.cli import main
from streams.db.access import add_org
from streams.settings import Settings
from tests.conftest import EventFactory

pytestmark = pytest.mark.integration


async def test_publish_and_list_pathway_versions(
    base_settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    org = f"{EventFactory().prefix}-org"
    await add_org(db, org, "Pathway clinic")
    v2 = builtin()["msk-default@1"].model_dump(mode="json")
    v2["version"] = 2
    v2["step_up"]["pain_at_least"] = 6
    draft = tmp_path / "v2.json"
    draft.write_text(json.dumps(v2))
    runner = CliRunner()

    async def rtm(*args: str) -> tuple[int, str]:
        res = await asyncio.to_thread(runner.invoke, main, list(args))
        return res.exit_code, res.output

    assert await rtm("pathways", "publish", str(draft), "--org", org) == (
        0,
        f"{org}: msk-default@2 published\n",
    )
    assert await rtm("pathways", "publish", str(draft), "--org", org) == (
        0,
        f"{org}: msk-default@2 published already\n",
    )
    v2["step_up"]["pain_at_least"] = 5
    draft.write_text(json.dumps(v2))
    code, out = await rtm("pathways", "publish", str(draft), "--org", org)
    assert code != 0 and "needs a new version" in out
    v2["version"] = 1  # msk-default@1 with other content: the built-in one never changes
    draft.write_text(json.dumps(v2))
    code, out = await rtm("pathways", "publish", str(draft), "--org", org)
    assert code != 0 and "msk-default@1 is published with other content" in out

    code, out = await rtm("pathways", "list", "--org", org)
    listed = [json.loads(line) for line in out.splitlines()]
    assert [(x["pathway"], x["version"], x["builtin"]) for x in listed] == [
        ("msk-default", 1, True),
        ("msk-default", 2, False),
    ]
    assert listed[1]["published_by"].startswith("cli:")
    audited = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE org_id = $1 AND action = 'pathways.published'",
        org,
    )
    assert audited == 1
    content = await db.fetchval(
        "SELECT content::text FROM pathway_versions WHERE org_id = $1 AND version = 2", org
    )
    assert json.loads(content)["step_up"]["pain_at_least"] == 6

    for sql in (
        "UPDATE pathway_versions SET content = '{}'::jsonb WHERE org_id = $1",
        "DELETE FROM pathway_versions WHERE org_id = $1",
    ):
        with pytest.raises(asyncpg.RaiseError, match="immutable"):
            await db.execute(sql, org)
