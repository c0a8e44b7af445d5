"""`rtm orgs|users|keys|teams|audit`: organisations, accounts, machine keys, care teams and
the audit log. Every change is itself audited (actor ``cli:<OS user>``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import asyncpg
import click

from rtm.cli.db import audit_change, check_id, require_org, run_db
from rtm.cli.options import parse_instant
from schemas.events import TIME_ZONES
from streams.access import KEY_SCOPES, ROLES, hash_password, new_key
from streams.db import access as db


def _table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    click.echo("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        click.echo("  ".join(str(r[c]).ljust(width[c]) for c in cols))


@click.group()
def orgs() -> None:
    """Organisations (clinics): every user, key and patient belongs to one."""


def _zone(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if value not in TIME_ZONES:
        raise click.BadParameter(f"unknown IANA time zone {value!r} (e.g. America/Chicago)")
    return value


ZONE_HELP = "the clinic's IANA time zone: the dashboard shows every time in it"


@orgs.command("add")
@click.argument("org_id")
@click.option("--name", required=True)
@click.option("--timezone", default="UTC", show_default=True, callback=_zone, help=ZONE_HELP)
@click.pass_context
def orgs_add(ctx: click.Context, org_id: str, name: str, timezone: str) -> None:
    check_id(org_id, "ORG_ID")

    async def body(conn: asyncpg.Connection) -> bool:
        added = await db.add_org(conn, org_id, name, timezone)
        if added:
            await audit_change(conn, org_id, "access.org_add", {"name": name, "timezone": timezone})
        return added

    click.echo(f"organisation {org_id} " + ("added" if run_db(ctx, body) else "exists already"))


@orgs.command("timezone")
@click.argument("org_id")
@click.argument("timezone", callback=_zone)
@click.pass_context
def orgs_timezone(ctx: click.Context, org_id: str, timezone: str) -> None:
    """Set the clinic's time zone (the dashboard shows every time in it)."""

    async def body(conn: asyncpg.Connection) -> None:
        await require_org(conn, org_id)
        await db.set_org_timezone(conn, org_id, timezone)
        await audit_change(conn, org_id, "access.org_timezone", {"timezone": timezone})

    run_db(ctx, body)
    click.echo(f"organisation {org_id}: times shown in {timezone}")


@orgs.command("list")
@click.pass_context
def orgs_list(ctx: click.Context) -> None:
    rows = run_db(ctx, db.list_orgs)
    _table([{"org_id": r["org_id"], "name": r["name"], "timezone": r["timezone"]} for r in rows])


@click.group()
def users() -> None:
    """People who sign in: clinician, billing, admin, operator, scheduler, manager."""


@users.command("add")
@click.argument("username")
@click.option("--org", "org_id", required=True)
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option(
    "--clinician-id",
    default=None,
    help="the clinician id episodes name (required for the clinician role)",
)
@click.option("--password-stdin", is_flag=True, help="read the password from stdin")
@click.pass_context
def users_add(
    ctx: click.Context,
    username: str,
    org_id: str,
    role: str,
    clinician_id: str | None,
    password_stdin: bool,
) -> None:
    """Add a local account (the password is stored as an argon2id hash)."""
    check_id(username, "USERNAME")
    if role == "clinician" and not clinician_id:
        raise click.BadParameter("a clinician needs --clinician-id", param_hint="--clinician-id")
    if clinician_id:
        check_id(clinician_id, "--clinician-id")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(password) < 12:
        raise click.BadParameter("use at least 12 characters", param_hint="password")

    async def body(conn: asyncpg.Connection) -> None:
        await require_org(conn, org_id)
        try:
            await db.add_user(conn, org_id, username, role, hash_password(password), clinician_id)
        except asyncpg.UniqueViolationError:
            raise click.ClickException(f"user {username!r} exists already") from None
        await audit_change(
            conn,
            org_id,
            "access.user_add",
            {"username": username, "role": role, "clinician_id": clinician_id},
        )

    run_db(ctx, body)
    click.echo(f"user {username} ({role}) added to {org_id}")


@users.command("list")
@click.option("--org", "org_id", default=None)
@click.pass_context
def users_list(ctx: click.Context, org_id: str | None) -> None:
    rows = run_db(ctx, lambda c: db.list_users(c, org_id))
    _table(
        [
            {
                "username": r["username"],
                "org_id": r["org_id"],
                "role": r["role"],
                "clinician_id": r["clinician_id"] or "",
                "disabled": r["disabled"],
            }
            for r in rows
        ]
    )


@users.command("disable")
@click.argument("username")
@click.pass_context
def users_disable(ctx: click.Context, username: str) -> None:
    """Disable an account and end its sessions at once."""

    async def body(conn: asyncpg.Connection) -> str | None:
        org = await db.disable_user(conn, username)
        if org is not None:
            await audit_change(conn, org, "access.user_disable", {"username": username})
        return org

    if run_db(ctx, body) is None:
        raise click.ClickException(f"no user {username!r}")
    click.echo(f"user {username} disabled")


@users.command("sign-out")
@click.argument("username")
@click.pass_context
def users_sign_out(ctx: click.Context, username: str) -> None:
    """End every session of a user at once (the account stays usable)."""

    async def body(conn: asyncpg.Connection) -> tuple[str, int] | None:
        ended = await db.end_user_sessions(conn, username)
        if ended is not None:
            await audit_change(
                conn,
                ended[0],
                "access.user_sign_out",
                {"username": username, "sessions": ended[1]},
            )
        return ended

    ended = run_db(ctx, body)
    if ended is None:
        raise click.ClickException(f"no user {username!r}")
    click.echo(f"user {username} signed out ({ended[1]} session(s) ended)")


@click.group()
def keys() -> None:
    """Machine keys: producer (patient app), integration (EHR), reader (API reads)."""


@keys.command("add")
@click.option("--org", "org_id", required=True)
@click.option("--scope", "scopes", type=click.Choice(KEY_SCOPES), multiple=True, required=True)
@click.option("--label", default="", help="what the key is for (shown in keys list)")
@click.pass_context
def keys_add(ctx: click.Context, org_id: str, scopes: tuple[str, ...], label: str) -> None:
    """Make a key; it is printed once (only a salted hash is stored)."""
    key, key_id, salt, digest = new_key()

    async def body(conn: asyncpg.Connection) -> None:
        await require_org(conn, org_id)
        await db.add_key(conn, key_id, org_id, sorted(set(scopes)), label, salt, digest)
        await audit_change(
            conn,
            org_id,
            "access.key_add",
            {"key_id": key_id, "scopes": sorted(set(scopes)), "label": label},
        )

    run_db(ctx, body)
    click.echo(
        f"key {key_id} ({','.join(sorted(set(scopes)))}) for {org_id}; shown once:", err=True
    )
    click.echo(key)


@keys.command("list")
@click.option("--org", "org_id", default=None)
@click.pass_context
def keys_list(ctx: click.Context, org_id: str | None) -> None:
    rows = run_db(ctx, lambda c: db.list_keys(c, org_id))
    _table(
        [
            {
                "key_id": r["key_id"],
                "org_id": r["org_id"],
                "scopes": ",".join(r["scopes"]),
                "label": r["label"],
                "disabled": r["disabled"],
            }
            for r in rows
        ]
    )


@keys.command("disable")
@click.argument("key_id")
@click.pass_context
def keys_disable(ctx: click.Context, key_id: str) -> None:
    async def body(conn: asyncpg.Connection) -> str | None:
        org = await db.disable_key(conn, key_id)
        if org is not None:
            await audit_change(conn, org, "access.key_disable", {"key_id": key_id})
        return org

    if run_db(ctx, body) is None:
        raise click.ClickException(f"no key {key_id!r}")
    click.echo(f"key {key_id} disabled")


@click.group()
def teams() -> None:
    """Care teams: members see the patients of each other's episodes."""


@teams.command("add")
@click.option("--org", "org_id", required=True)
@click.option("--team", required=True)
@click.option("--clinician-id", required=True)
@click.pass_context
def teams_add(ctx: click.Context, org_id: str, team: str, clinician_id: str) -> None:
    check_id(team, "--team")
    check_id(clinician_id, "--clinician-id")

    async def body(conn: asyncpg.Connection) -> None:
        await require_org(conn, org_id)
        await db.add_team_member(conn, org_id, team, clinician_id)
        await audit_change(
            conn, org_id, "access.team_add", {"team": team, "clinician_id": clinician_id}
        )

    run_db(ctx, body)
    click.echo(f"{clinician_id} is on team {team} of {org_id}")


@teams.command("remove")
@click.option("--org", "org_id", required=True)
@click.option("--team", required=True)
@click.option("--clinician-id", required=True)
@click.pass_context
def teams_remove(ctx: click.Context, org_id: str, team: str, clinician_id: str) -> None:
    async def body(conn: asyncpg.Connection) -> bool:
        gone = await db.remove_team_member(conn, org_id, team, clinician_id)
        if gone:
            await audit_change(
                conn, org_id, "access.team_remove", {"team": team, "clinician_id": clinician_id}
            )
        return gone

    if not run_db(ctx, body):
        raise click.ClickException(f"{clinician_id} is not on team {team} of {org_id}")
    click.echo(f"{clinician_id} removed from team {team} of {org_id}")


@click.command("audit")
@click.option("--org", "org_id", default=None, help="one organisation (default: all)")
@click.option("--actor", default=None, help="e.g. user:alice, key:abc123def456, cli:root")
@click.option("--patient", "patient_id", default=None)
@click.option("--action", default=None, help="e.g. read, acknowledge, export, access.key_add")
@click.option("--since", default=None, help="ISO timestamp with offset")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
def audit_cmd(
    ctx: click.Context,
    org_id: str | None,
    actor: str | None,
    patient_id: str | None,
    action: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The audit log, newest first: who read or changed what, when, which patients."""
    when = parse_instant(since, param_hint="--since") if since else None
    rows = run_db(
        ctx,
        lambda c: db.query_audit(
            c,
            org_id=org_id,
            actor=actor,
            patient_id=patient_id,
            action=action,
            since=when,
            limit=limit,
        ),
    )
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, sort_keys=True))
        return
    _table(
        [
            {
                "at": r["at"][:19],
                "org": r["org_id"],
                "actor": r["actor"],
                "action": r["action"],
                "resource": r["resource"],
                "patients": ",".join(r["patient_ids"][:5])
                + (f" (+{len(r['patient_ids']) - 5})" if len(r["patient_ids"]) > 5 else ""),
            }
            for r in rows
        ]
    )


COMMANDS: tuple[click.Command, ...] = (orgs, users, keys, teams, audit_cmd)
