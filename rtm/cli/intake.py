"""`rtm intake`: the intake rules offline (issue 18; docs/intake-rules.md).

``rtm intake evaluate --events FILE.jsonl --as-of TS [--rules RULES.json]`` prints one JSON
object per intake (``intake.evaluate``, the same engine the worker will run). Invalid lines
are reported on stderr (line number and the field-naming messages) and skipped; exit code 0
if every line was valid, 1 if some were skipped (the output is still complete for the valid
ones), 2 for a bad argument. The rule set's version goes to stderr, so stdout stays the
documented format.

``rtm intake rules show --org O`` prints the organisation's rule set in force (its newest
stored version, else the built-in ``intake-v1``, said on stderr); ``rtm intake rules set --org
O --file F`` stores a new version (validated; a version is immutable: the same version with
other rules is refused), audited. The worker takes an organisation's new rule set within 30 s
(``streams.services.ingest.Ingest``); every routing records the version it used.
"""

from __future__ import annotations

import sys
from pathlib import Path

import asyncpg
import click
from pydantic import ValidationError

from intake.evaluate import evaluate, render
from intake.rules import DEFAULT_RULES, IntakeRules, load_rules
from rtm.cli.db import audit_change, cli_actor, require_org, run_db
from rtm.cli.options import parse_instant
from streams.db.intake_rules import RuleSetConflict, current_rules, store_rules


@click.group()
def intake() -> None:
    """Intake screening, triage and routing (the front door)."""


@intake.command("evaluate")
@click.option(
    "--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True
)
@click.option(
    "--as-of",
    "as_of",
    required=True,
    help="'now' for intakes without a contact, e.g. 2026-11-05T00:00:00Z",
)
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="a rule set as JSON (default: intake-v1)",
)
def intake_evaluate(events_path: Path, as_of: str, rules_path: Path | None) -> None:
    """Print one JSON object per intake of a JSONL file: route, reasons, STarT Back,
    due time, first contact, breached (sorted by intake_id, then patient_id)."""
    when = parse_instant(as_of)
    rules = DEFAULT_RULES
    if rules_path is not None:
        try:
            rules = load_rules(rules_path.read_bytes())
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'rules'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise click.BadParameter(problems, param_hint="'--rules'") from None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--rules'") from None
    with events_path.open("rb") as fh:
        results, errors = evaluate(fh, when, rules)
    for err in errors:
        click.echo(f"{events_path}:{err.line_no}: skipped: {err.message}", err=True)
    click.echo(f"rules: {rules.version}", err=True)
    for r in results:
        sys.stdout.write(render(r) + "\n")
    sys.exit(1 if errors else 0)


@intake.group("rules")
def intake_rules() -> None:
    """Per-organisation intake rule sets (versioned data)."""


@intake_rules.command("show")
@click.option("--org", "org_id", required=True)
@click.pass_context
def intake_rules_show(ctx: click.Context, org_id: str) -> None:
    """Print the organisation's rule set in force as JSON."""

    async def body(conn: asyncpg.Connection) -> IntakeRules | None:
        await require_org(conn, org_id)
        return (await current_rules(conn)).get(org_id)

    rules = run_db(ctx, body)
    if rules is None:
        click.echo(
            f"{org_id} has no rule set of its own: the worker's (default intake-v1)", err=True
        )
        rules = DEFAULT_RULES
    click.echo(rules.model_dump_json(indent=1))


@intake_rules.command("set")
@click.option("--org", "org_id", required=True)
@click.option(
    "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.pass_context
def intake_rules_set(ctx: click.Context, org_id: str, path: Path) -> None:
    """Store a rule set (JSON, as --rules of evaluate) as the organisation's newest."""
    try:
        rules = load_rules(path.read_bytes())
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise click.BadParameter(str(exc).splitlines()[0], param_hint="'--file'") from None

    async def body(conn: asyncpg.Connection) -> bool:
        await require_org(conn, org_id)
        try:
            stored = await store_rules(conn, org_id, rules, cli_actor())
        except RuleSetConflict as exc:
            raise click.ClickException(str(exc)) from None
        if stored:
            await audit_change(conn, org_id, "intake.rules_set", {"version": rules.version})
        return stored

    stored = run_db(ctx, body)
    click.echo(f"{org_id}: rule set {rules.version} " + ("stored" if stored else "stored already"))


COMMANDS: tuple[click.Command, ...] = (intake,)
